"""Retries of transient storage errors, around any backend (restic's RetryBackend).

Only ``TransientStorageError`` is retried (a timeout, a 5xx answer,
throttling, a reset connection), with capped exponential backoff and full
jitter; anything else surfaces at once. What is retried:

- ``stat``, ``remove``, ``remove_prefix``, ``remove_temporary``: idempotent,
  retried as a whole.
- ``iterate``, ``temporaries``: a listing that fails midway starts again and
  skips the names already yielded (listings are sorted by name).
- ``open_read``: the open, and a read that fails midway, which re-opens the
  object at the offset already read (a ranged read) and goes on.
- ``open_write``: only the open (nothing has been sent yet). Once bytes went
  out a ``Writer`` cannot be replayed, so its ``write`` and ``commit`` are not
  retried here: retrying parts and the commit of a multipart upload is the
  backend's business, and a failed upload surfaces to the caller.
- ``save_bytes`` (whose data is in memory) retries the whole
  open -> write -> commit. When an ``if_absent`` save meets
  ``AlreadyExistsError`` after an attempt whose commit failed transiently,
  that commit may have landed: if the object holds exactly our data the save
  succeeded, otherwise the conflict is real and raised.
"""

from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, TypeVar

from txbackup.errors import AlreadyExistsError, StorageError, TransientStorageError
from txbackup.storage.base import CHUNK, ObjectInfo, Storage, Writer, load_bytes

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("txbackup.storage")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; before try n+1 sleep a random time in
    [0, min(cap_s, base_s * 2**n)] (full jitter: retries of many clients spread out)."""

    attempts: int = 6
    base_s: float = 0.25
    cap_s: float = 8.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        """The pause after failed try number ``attempt`` (0-based)."""
        return random.uniform(0.0, min(self.cap_s, self.base_s * (2**attempt)))

    def backoff(self, what: str, attempt: int, exc: TransientStorageError) -> int:
        """Sleep before the next try, or re-raise ``exc`` when the tries are spent."""
        if attempt + 1 >= self.attempts:
            raise exc
        delay = self.delay(attempt)
        log.warning("%s (retrying %s in %.1fs, try %d of %d)", exc, what, delay, attempt + 2, self.attempts)
        self.sleep(delay)
        return attempt + 1

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, its transient errors retried (a backend's own idempotent steps too,
        such as the parts and the commit of an upload)."""
        attempt = 0
        while True:
            try:
                return fn()
            except TransientStorageError as exc:
                attempt = self.backoff(what, attempt, exc)


class RetryStorage:
    """``inner`` with its transient errors retried (see the module docstring)."""

    def __init__(self, inner: Storage, policy: RetryPolicy | None = None) -> None:
        self.inner = inner
        self.policy = policy or RetryPolicy()

    def describe(self) -> str:
        return self.inner.describe()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return self.policy.call(what, fn)

    def _backoff(self, what: str, attempt: int, exc: TransientStorageError) -> int:
        return self.policy.backoff(what, attempt, exc)

    def open_write(self, name: str, *, if_absent: bool = False) -> Writer:
        return self._call(f"open {name}", lambda: self.inner.open_write(name, if_absent=if_absent))

    def save_bytes(self, name: str, data: bytes, *, if_absent: bool = False) -> ObjectInfo:
        attempt = 0
        uncertain = False  # an earlier commit failed transiently: it may have landed
        while True:
            try:
                with self.inner.open_write(name, if_absent=if_absent) as writer:
                    writer.write(data)
                    return writer.commit()
            except AlreadyExistsError:
                if uncertain and self._holds(name, data):
                    info = self.inner.stat(name)
                    if info is not None:
                        return info
                raise
            except TransientStorageError as exc:
                uncertain = True
                attempt = self._backoff(f"write {name}", attempt, exc)

    def _holds(self, name: str, data: bytes) -> bool:
        try:
            return self._call(f"read {name}", lambda: load_bytes(self.inner, name, len(data))) == data
        except StorageError:
            return False

    def open_read(self, name: str, offset: int = 0, length: int | None = None) -> IO[bytes]:
        stream = self._call(f"read {name}", lambda: self.inner.open_read(name, offset, length))
        return io.BufferedReader(_ResumingReader(self, name, offset, length, stream), CHUNK)

    def stat(self, name: str) -> ObjectInfo | None:
        return self._call(f"stat {name}", lambda: self.inner.stat(name))

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        return self._resume(f"list {prefix or '/'}", lambda: self.inner.iterate(prefix))

    def temporaries(self, older_than_s: float) -> Iterator[ObjectInfo]:
        return self._resume("list temporaries", lambda: self.inner.temporaries(older_than_s))

    def _resume(self, what: str, listing: Callable[[], Iterator[ObjectInfo]]) -> Iterator[ObjectInfo]:
        """Yield ``listing()``; on a transient error list again from the start and
        skip up to the last name yielded (listings are sorted)."""
        last: str | None = None
        attempt = 0
        while True:
            try:
                for info in listing():
                    if last is None or info.name > last:
                        last = info.name
                        attempt = 0  # progress: the budget is per stall, not per listing
                        yield info
                return
            except TransientStorageError as exc:
                attempt = self._backoff(what, attempt, exc)

    def remove(self, name: str) -> None:
        self._call(f"remove {name}", lambda: self.inner.remove(name))

    def remove_prefix(self, prefix: str) -> None:
        self._call(f"remove {prefix}", lambda: self.inner.remove_prefix(prefix))

    def remove_temporary(self, name: str) -> None:
        self._call(f"remove {name}", lambda: self.inner.remove_temporary(name))


class _ResumingReader(io.RawIOBase):
    """Reads ``name`` from ``offset``; a read that fails transiently re-opens the
    rest of the range where it stopped (the budget of tries is per stall)."""

    def __init__(
        self, retry: RetryStorage, name: str, offset: int, length: int | None, stream: IO[bytes]
    ) -> None:
        self._retry = retry
        self._name = name
        self._offset = offset
        self._length = length
        self._stream: IO[bytes] | None = stream
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        attempt = 0
        while True:
            try:
                if self._stream is None:
                    left = None if self._length is None else self._length - self._read
                    self._stream = self._retry.inner.open_read(self._name, self._offset + self._read, left)
                data = self._stream.read(len(view))
                break
            except TransientStorageError as exc:
                self._drop()
                attempt = self._retry._backoff(f"read {self._name}", attempt, exc)
        view[: len(data)] = data
        self._read += len(data)
        return len(data)

    def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except StorageError as exc:
                log.debug("closing %s after an error: %s", self._name, exc)

    def close(self) -> None:
        if not self.closed:
            self._drop()
        super().close()


def retrying(storage: Storage, policy: RetryPolicy | None = None) -> Storage:
    """``storage`` wrapped in ``RetryStorage`` (once: a wrapped one is returned as it is)."""
    if isinstance(storage, RetryStorage):
        return storage
    return RetryStorage(storage, policy)
