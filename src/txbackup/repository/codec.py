"""The one byte pipeline between data and the repository, both ways.

Writing: plain bytes -> SHA-256 and size of the data -> zstd -> [encryption]
-> SHA-256 and size of what is stored. Reading: the same in reverse, verified
as it streams. Set artifacts (``engine.artifacts``) and the content-addressed
SSTable blobs (``agent.blobs``) both go through here, so a stored byte is
produced and checked by one piece of code, whatever it belongs to.

Encryption (an encrypted repository, ``repository.crypto``) is the stage between
zstd and the stored digest: ``Encoder`` given a recipient hands the compressed
bytes to an age encryptor (``repository.age``) whose output is what is stored and
digested; ``Decoder`` given an identity decrypts what ``_StoredTap`` returns
before zstd sees it. Each 64 KiB chunk is authenticated before zstd sees a byte
of it, and the end of the age stream is checked too, so a tampered or truncated
object fails as ``IntegrityError`` naming it. The stored SHA-256 and size are
those of the ciphertext (what a listing or ``sha256sum`` of the object shows).

Reading never goes past the recorded sizes: a stored object that grew, or data
that decompresses to more than recorded (a zstd bomb), fails as soon as it
overflows instead of filling memory or disk. Every failure is ``IntegrityError``
naming the object (``label``: ``artifact sets/...``, ``ks.t f: blob cassandra/...``).

So that a restore reads each object once (verifying as it loads), the decoder
always holds at least one byte back until the end of the object has been read
and checked (nothing follows the zstd frame or the age stream, sizes and
SHA-256s): whoever holds the last byte of an object holds verified data, and a
reader that needs the end of its input to finish (``pg_restore
--single-transaction`` commits after the last byte, a file is renamed into
place at EOF) never finishes on a corrupt one.
"""

from __future__ import annotations

import collections
import hashlib
import io
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

import zstandard

from txbackup.errors import IntegrityError
from txbackup.repository.age import AgeError, Decryptor, Encryptor, Identity, NoIdentityMatch
from txbackup.storage.base import CHUNK

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

ZSTD_LEVEL = 3
"""zstd's default level: for data where it earns its cost (``choose_level``)."""
FAST_LEVEL = 1
"""The level for everything else. zstd's level 3 (the "dfast" strategy) spends 1.5 to 3
times level 1's CPU; on data with few long repeats it stores no less: a 32 MB LZ4
SSTable of Cassandra's took 170 ms at 3 and 51 ms at 1, both 96% of it; rows of hex
digests 0.672 s and 0.263 s per 58 MB, both 45%. On source code (a tar of Python's
library) it is 11% smaller for 1.8 times the CPU, and is kept."""
PROBE_BYTES = CHUNK
"""How much of an object the level is chosen on (objects shorter than that keep
``ZSTD_LEVEL``: they are cheap either way)."""
LEVEL_GAIN_MIN = 0.05
"""What ``ZSTD_LEVEL`` must save over ``FAST_LEVEL`` on the probe to be used: 5% of
the stored bytes (a backup is kept, and stored again by every copy, for about twice
the compressing CPU)."""


def choose_level(probe: bytes) -> int:
    """The zstd level for an object that starts with ``probe``: ``ZSTD_LEVEL`` when it
    compresses the probe at least ``LEVEL_GAIN_MIN`` smaller than ``FAST_LEVEL`` does,
    else ``FAST_LEVEL`` (about 8 ms per object). The choice only changes the CPU spent
    and the stored size: every level is the same zstd frame to a decoder (``zstd -d``
    included)."""
    if len(probe) < PROBE_BYTES:
        return ZSTD_LEVEL
    fast = len(zstandard.ZstdCompressor(level=FAST_LEVEL).compress(probe))
    default = len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(probe))
    return ZSTD_LEVEL if default <= (1 - LEVEL_GAIN_MIN) * fast else FAST_LEVEL

Progress = Callable[[int], None] | None
"""Called with the number of stored bytes read at each step."""


class Digest:
    """A running SHA-256 and byte count (the count only, without ``sha``)."""

    def __init__(self, sha: bool = True) -> None:
        self._sha = hashlib.sha256() if sha else None
        self.size = 0

    def update(self, data: ReadableBuffer) -> None:
        if self._sha is not None:
            self._sha.update(data)
        self.size += memoryview(data).nbytes

    def hexdigest(self) -> str:
        return "" if self._sha is None else self._sha.hexdigest()


@dataclass(frozen=True)
class Encoded:
    """What went through an ``Encoder``: the data's size and SHA-256, and those of
    the bytes handed to the sink (what is stored)."""

    size: int
    sha256: str
    stored_size: int
    stored_sha256: str


class _Tap(io.RawIOBase):
    """A writable stream that digests what goes through it on its way to ``sink``
    (no digest: it only hands the bytes on, e.g. from zstd to the cipher)."""

    def __init__(self, sink: Callable[[bytes], object], digest: Digest | None) -> None:
        self._sink = sink
        self._digest = digest

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        if self._digest is not None:
            self._digest.update(data)
        self._sink(data)  # type: ignore[arg-type]  # any bytes-like object
        return memoryview(data).nbytes


class Encoder:
    """Plain bytes in (``write``, or the buffered ``stream``), stored bytes out to
    ``sink`` (a storage writer's ``write``); ``finish`` ends the zstd frame (and the
    age stream, given a ``recipient``: a raw X25519 public key) and returns the
    digests. ``stored_sha=False``: the stored bytes are counted, not hashed (their
    ``stored_sha256`` is ""), for objects whose record keeps no stored digest (blobs).
    The zstd level is chosen on the first ``PROBE_BYTES`` (``choose_level``), held
    until then. Not thread-safe: one writer feeds it."""

    def __init__(
        self, sink: Callable[[bytes], object], recipient: bytes | None = None, *, stored_sha: bool = True
    ) -> None:
        self._plain, self._stored = Digest(), Digest(sha=stored_sha)
        stored = _Tap(sink, self._stored)
        self._cipher = None if recipient is None else Encryptor(recipient, stored.write)
        self._compressed = stored if self._cipher is None else _Tap(self._cipher.write, None)
        self._compressor: Any = None  # made once the level is chosen
        self._held = bytearray()  # the start of the data, until the level is chosen
        self.level: int | None = None
        """The zstd level chosen (None until ``PROBE_BYTES`` arrived or ``finish``)."""
        self.stream = io.BufferedWriter(_Tap(self._compress, self._plain), CHUNK)
        """The plain side as a buffered file object (what targets write to)."""

    def _start(self, level: int) -> None:
        self.level = level
        self._compressor = zstandard.ZstdCompressor(
            level=level, threads=0, write_checksum=True
        ).stream_writer(cast(IO[bytes], self._compressed), closefd=False)
        held, self._held = self._held, bytearray()
        if held:
            self._compressor.write(held)

    def _compress(self, data: ReadableBuffer) -> None:
        if self._compressor is None:
            # hold just the probe: a large write goes on to the compressor once it is made
            view = memoryview(data).cast("B")
            need = PROBE_BYTES - len(self._held)
            self._held += view[:need]
            if len(self._held) < PROBE_BYTES:
                return
            self._start(choose_level(bytes(self._held)))
            data = view[need:]
            if not data:
                return
        self._compressor.write(data)

    def write(self, data: ReadableBuffer) -> int:
        return self.stream.write(data)

    def finish(self) -> Encoded:
        if not self.stream.closed:
            self.stream.close()  # flushes into the compressor
        if self._compressor is None:  # shorter than the probe: choose_level's default
            self._start(choose_level(bytes(self._held)))
        self._compressor.flush(zstandard.FLUSH_FRAME)  # ends the zstd frame
        if self._cipher is not None:
            self._cipher.finish()  # the last (flagged) age chunk
        plain, stored = self._plain, self._stored
        return Encoded(plain.size, plain.hexdigest(), stored.size, stored.hexdigest())


@dataclass(frozen=True)
class Expected:
    """What a stored object must decode to. ``stored_sha256`` is None where it is
    not recorded (a blob is named by its data's digest only)."""

    size: int
    sha256: str | None
    """The data's SHA-256; not checked (nor computed) when None (its size still is)."""
    stored_size: int
    stored_sha256: str | None = None
    """Not checked (nor computed) when None. At least one of the two digests is given.
    Either says the data is the recorded data: zstd decodes the same stored bytes to the
    same data (and an encrypted object's chunks are authenticated besides). A restore
    checks one, the one over fewer bytes (``cheapest``): a second SHA-256 costs about
    half a pass more (twice what decrypting costs). ``verify --read-data`` checks both."""

    def __post_init__(self) -> None:
        if self.sha256 is None and self.stored_sha256 is None:
            raise ValueError("an expected object needs at least one SHA-256 to check")

    def cheapest(self) -> Expected:
        """The same expectation checking one digest: the stored bytes' when recorded and
        not more than the data (compressed data usually is less), else the data's."""
        if self.stored_sha256 is not None and self.stored_size <= self.size:
            return Expected(self.size, None, self.stored_size, self.stored_sha256)
        if self.sha256 is not None:
            return Expected(self.size, self.sha256, self.stored_size, None)
        return self


class _StoredTap:
    """Reads ``source``, digesting and reporting every byte read; refuses to read
    more than one byte past ``expected.stored_size``."""

    def __init__(self, source: IO[bytes], expected: Expected, label: str, progress: Progress) -> None:
        self._source = source
        self._expected = expected
        self._label = label
        self._progress = progress
        self.digest = Digest(sha=expected.stored_sha256 is not None)

    def read(self, size: int = -1) -> bytes:
        room = self._expected.stored_size + 1 - self.digest.size
        data = self._source.read(room if size < 0 else min(size, room))
        self.digest.update(data)
        if self.digest.size > self._expected.stored_size:
            raise IntegrityError(
                f"{self._label}: longer than the recorded {self._expected.stored_size} bytes (corrupt)"
            )
        if self._progress is not None and data:
            self._progress(len(data))
        return data


class _Decrypting:
    """The plaintext of the age stream in ``stored``: every chunk authenticated before
    it is returned; failures are IntegrityError naming the object."""

    def __init__(self, stored: _StoredTap, identity: Identity, label: str) -> None:
        self._label = label
        self._cipher = self._guard(lambda: Decryptor(stored.read, identity))

    def _guard(self, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except NoIdentityMatch as exc:
            problem = f"{exc} of this repository, or its header was altered (foreign or corrupt)"
            raise IntegrityError(f"{self._label}: {problem}") from None
        except AgeError as exc:
            raise IntegrityError(f"{self._label}: {exc} (corrupt)") from None

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._guard(lambda: self._cipher.read(size))
        return data


READ_AHEAD_MIN = 4 * CHUNK
"""Objects stored in more bytes than this are read and decoded by threads of their own,
a few chunks ahead of their reader (see ``Decoder``)."""
_AHEAD_CHUNKS = 4
_JOIN_S = 30.0


class _Stopped(Exception):
    """The stage feeding this one was stopped (its reader is closing)."""


class _ReadAhead:
    """Runs ``step`` (the next piece of data, b"" at the end) in a thread of its own, up
    to ``_AHEAD_CHUNKS`` pieces ahead of ``get``; each piece comes with ``count()``'s
    growth since the previous piece (since 0 for the first). A failure is handed over in
    its place."""

    def __init__(self, step: Callable[[], bytes], count: Callable[[], int] = lambda: 0) -> None:
        self._step = step
        self._count = count
        self._queue: queue.Queue[tuple[bytes, int, BaseException | None]] = queue.Queue(_AHEAD_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="txbackup-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen = 0
        try:
            while not self._stop.is_set():
                data = self._step()
                now = self._count()
                self._put((data, now - seen, None))
                seen = now
                if not data:
                    return
        except _Stopped:
            return
        except BaseException as exc:  # handed to the reader, raised there
            self._put((b"", 0, exc))

    def _put(self, item: tuple[bytes, int, BaseException | None]) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> tuple[bytes, int]:
        while True:
            try:
                data, counted, failure = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise _Stopped() from None
        if failure is not None:
            raise failure
        return data, counted

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop the thread (it finishes the step under way) before the source is closed."""
        self._stop.set()
        self._thread.join(_JOIN_S)


class _Prefetched:
    """A readable stream of what ``read`` returns, read by a thread of its own ahead of us."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.ahead = _ReadAhead(lambda: read(CHUNK))
        self._rest = b""
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        if not self._rest and not self._ended:
            self._rest = self.ahead.get()[0]
            self._ended = not self._rest
        if size < 0 or size >= len(self._rest):
            data, self._rest = self._rest, b""
            return data
        data, self._rest = self._rest[:size], self._rest[size:]
        return data


class Decoder(io.RawIOBase):
    """The plain data of a stored object read from ``source``, checked as it streams
    and, at EOF, against ``expected`` (sizes and digests). Given an ``identity``
    (an encrypted repository's), the stored bytes are an age file decrypted first.

    An object stored in more than ``READ_AHEAD_MIN`` bytes is decoded by two threads of
    its own a few chunks ahead of the reader, one reading, digesting (and decrypting)
    the stored bytes, one decompressing (hashlib, zstd, the ciphers and the storage
    reads release the GIL): a restore's reading, hashing and decompression overlap with
    each other and with what the reader does with the data (writing it, feeding a tool,
    the dump guard). ``close`` stops them; the last byte is still handed over only once
    the end was verified."""

    def __init__(
        self,
        source: IO[bytes],
        expected: Expected,
        label: str,
        progress: Progress = None,
        identity: Identity | None = None,
    ) -> None:
        self._expected = expected
        self._label = label
        self._read_ahead = expected.stored_size > READ_AHEAD_MIN
        # with threads, progress is reported by the reader's thread (as pieces arrive)
        self._progress = progress if self._read_ahead else None
        self._stored = _StoredTap(source, expected, label, None if self._read_ahead else progress)
        self._plain = Digest(sha=expected.sha256 is not None)
        self._compressed: _StoredTap | _Decrypting = self._stored
        if identity is not None:
            self._compressed = _Decrypting(self._stored, identity, label)
        self._compressed_in: _StoredTap | _Decrypting | _Prefetched = self._compressed
        self._data: Any = None  # the zstd reader, made by the first step (in its thread)
        self._stages: list[_ReadAhead] = []
        self._done = False  # the end was read and verified
        self._failure: BaseException | None = None
        self._held: collections.deque[bytes] = collections.deque()  # not handed over yet
        self._held_size = 0
        self._offset = 0  # bytes of the first held piece already handed over

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        # Read ahead until more is held than asked for, or the end is read and verified:
        # at least one byte stays held back until then, so whoever holds the last byte
        # holds verified data (see the module doc).
        while not self._done and self._held_size <= len(view):
            data = self._next()
            if not data:
                self._done = True
                break
            self._held.append(data)
            self._held_size += len(data)
        count = min(len(view), self._held_size)
        copied = 0
        while copied < count:
            piece = self._held[0]
            take = min(count - copied, len(piece) - self._offset)
            view[copied : copied + take] = memoryview(piece)[self._offset : self._offset + take]
            copied += take
            self._offset += take
            if self._offset == len(piece):
                self._held.popleft()
                self._offset = 0
        self._held_size -= count
        return count

    def _next(self) -> bytes:
        """The next piece of data (b"" once the end is read and verified)."""
        if self._failure is not None:
            raise self._failure  # the same failure for every later read
        try:
            if not self._read_ahead:
                return self._step()
            if not self._stages:
                prefetched = _Prefetched(self._compressed.read)
                self._compressed_in = prefetched
                self._stages = [prefetched.ahead, _ReadAhead(self._step, lambda: self._stored.digest.size)]
            data, stored = self._stages[-1].get()
        except BaseException as exc:
            self._failure = exc
            raise
        if self._progress is not None and stored:
            self._progress(stored)
        return data

    def _step(self) -> bytes:
        if self._data is None:
            self._data = zstandard.ZstdDecompressor().stream_reader(
                cast(IO[bytes], self._compressed_in), read_size=CHUNK, read_across_frames=True, closefd=False
            )
        # never more than one byte past the recorded size: a bomb stops here
        data = self._decompress(min(CHUNK, self._expected.size + 1 - self._plain.size))
        if not data:
            self._verify()
            return b""
        self._plain.update(data)
        if self._plain.size > self._expected.size:
            recorded = self._expected.size
            problem = f"decompresses to more than the recorded {recorded} bytes (corrupt)"
            raise IntegrityError(f"{self._label}: {problem}")
        return data

    def close(self) -> None:
        for stage in self._stages:
            stage.stop()
        for stage in reversed(self._stages):
            stage.close()
        super().close()

    def _decompress(self, size: int) -> bytes:
        try:
            data: bytes = self._data.read(size)
            return data
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{self._label}: corrupt ({exc})") from None

    def _verify(self) -> None:
        while self._compressed_in.read(CHUNK):  # bytes after the zstd frame count too
            pass
        while self._stored.read(CHUNK):  # and after the age stream
            pass
        stored, plain, expected = self._stored.digest, self._plain, self._expected
        stored_sha = expected.stored_sha256
        stored_ok = stored.size == expected.stored_size and stored_sha in (None, stored.hexdigest())
        plain_ok = plain.size == expected.size and expected.sha256 in (None, plain.hexdigest())
        if not (stored_ok and plain_ok):
            raise IntegrityError(f"{self._label}: checksum mismatch (corrupt)")


def decoded(
    source: IO[bytes],
    expected: Expected,
    label: str,
    progress: Progress = None,
    identity: Identity | None = None,
) -> IO[bytes]:
    """``Decoder`` buffered: what readers of an artifact or blob are handed."""
    return io.BufferedReader(Decoder(source, expected, label, progress, identity), CHUNK)
