"""The content-addressed store of SSTable files: each file stored once, by its SHA-256.

SSTables are immutable: a file that one backup set stored is the same bytes in
every later set that still has it. So a Cassandra file is stored, zstd
compressed, as ``<store>/<sha256 of its data>`` (the store of a cluster is
``cassandra/<cluster name>/sstables``) and a backup set only *references* it:
a later set uploads just the files that are new since (differential, like
Medusa). Uploads are atomic (the storage writer's ``commit``), so an upload
cut in the middle leaves either nothing or a complete blob; blobs stored before the cut
are reused by the next backup, which is how an interrupted upload resumes.

A blob is checked when it is fetched: its stored size, the zstd frame, then
the SHA-256 and size of the data against the name and the record.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, cast

import zstandard

from txbackup.errors import IntegrityError, StorageError
from txbackup.safepaths import create_private, shown
from txbackup.storage.base import CHUNK, Storage, check_name

ZSTD_LEVEL = 3
_SHA = re.compile(r"^[0-9a-f]{64}$")
_CLUSTER = re.compile(r"[^A-Za-z0-9_.-]+")
_STORE = re.compile(r"^cassandra/[A-Za-z0-9_.-]{1,200}/sstables$")


def store_prefix(cluster_name: str) -> str:
    """The store of one Cassandra cluster: ``cassandra/<cluster>/sstables``."""
    safe = _CLUSTER.sub("_", cluster_name).strip("._") or "cluster"
    return f"cassandra/{safe}/sstables"


def blob_name(store: str, sha256: str) -> str:
    """``<store>/<sha256>``; both come from a set's position and file lists (untrusted),
    so the store must have the shape ``store_prefix`` gives and the digest be one."""
    if not isinstance(store, str) or not _STORE.match(store):
        raise IntegrityError(f"{shown(store)} is not a blob store (cassandra/<cluster>/sstables)")
    if not isinstance(sha256, str) or not _SHA.match(sha256):
        raise IntegrityError(f"{shown(sha256)} is not a SHA-256")
    return check_name(f"{store}/{sha256}")


@dataclass(frozen=True)
class Stored:
    """One file put in the store: its data's digest and size, the blob's size,
    and whether this call uploaded it (False: it was there already)."""

    sha256: str
    size: int
    stored_size: int
    uploaded: bool


def file_sha256(path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class _Compressing(io.RawIOBase):
    """The zstd-compressed bytes of a file, read as a stream (for ``put_file``),
    digesting the plain data on the way."""

    def __init__(self, src: IO[bytes]) -> None:
        self._digest = hashlib.sha256()
        self._size = 0
        self._reader = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).stream_reader(
            cast(IO[bytes], _Tap(src, self)), read_size=CHUNK
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._reader.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seen(self, data: bytes) -> None:
        self._digest.update(data)
        self._size += len(data)

    def plain(self) -> tuple[str, int]:
        return self._digest.hexdigest(), self._size


class _Tap:
    def __init__(self, src: IO[bytes], sink: _Compressing) -> None:
        self._src = src
        self._sink = sink

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size)
        self._sink.seen(data)
        return data


def put_file(storage: Storage, store: str, path: str) -> Stored:
    """Store the local file ``path`` unless a blob with its content exists already.

    The file is hashed first; if it changes while it is compressed (it must
    not: snapshot files are hard links to immutable SSTables) the upload is
    aborted before it is published and ``StorageError`` raised.
    """
    sha, size = file_sha256(path)
    name = blob_name(store, sha)
    existing = storage.stat(name)
    if existing is not None:
        return Stored(sha, size, existing.size, False)
    with open(path, "rb") as src, storage.open_write(name) as writer:
        stream = _Compressing(src)
        while chunk := stream.read(CHUNK):
            writer.write(chunk)
        if stream.plain() != (sha, size):
            raise StorageError(f"{path} changed while it was being stored")  # aborts the upload
        stored = writer.commit().size
    return Stored(sha, size, stored, True)


def fetch_file(
    storage: Storage,
    store: str,
    sha256: str,
    size: int,
    dest: str,
    what: str,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write the data of blob ``sha256`` to the new file ``dest``, verified.

    ``what`` names the file for messages (e.g. ``bank/accounts nb-1-big-Data.db``).
    Raises ``IntegrityError`` naming it when the blob is missing, truncated or
    corrupt; ``dest`` then does not exist. ``dest`` is created 0600 and never
    written through a symbolic link.
    """
    name = blob_name(store, sha256)
    if storage.stat(name) is None:
        raise IntegrityError(f"{what}: blob {name} missing from storage {storage.describe()}")
    partial = dest + ".txbackup-partial"
    digest = hashlib.sha256()
    written = 0
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)  # left by an interrupted run (a link goes, not its target)
        with storage.open_read(name) as src, os.fdopen(create_private(partial), "wb") as out:
            reader = zstandard.ZstdDecompressor().stream_reader(src, read_size=CHUNK, read_across_frames=True)
            try:
                # never more than one byte past the recorded size: a zstd bomb stops here
                while chunk := reader.read(min(CHUNK, size + 1 - written)):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                    if written > size:
                        raise IntegrityError(
                            f"{what}: blob {name} holds more than the recorded {size} bytes (corrupt)"
                        )
                    if progress is not None:
                        progress(len(chunk))
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"{what}: blob {name} is corrupt ({exc})") from None
        if (digest.hexdigest(), written) != (sha256, size):
            raise IntegrityError(f"{what}: blob {name} does not match its checksum (corrupt)")
        os.replace(partial, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def referenced(files: list[dict[str, Any]]) -> set[str]:
    """The SHA-256s a node's file list references (for garbage collection)."""
    return {str(f["sha256"]) for f in files if isinstance(f, dict) and "sha256" in f}
