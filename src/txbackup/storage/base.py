"""The storage interface: WHERE bytes live (a folder, a bucket), nothing of WHAT.

One door for every backend (local folder, in-memory, object stores), its
contract written here and enforced by one shared suite
(``tests/storage/conformance.py``). Shaped after restic's ``backend.Backend``
and kopia's blob storage, but push-based: the producer writes, the backend
decides how bytes leave (a temporary file, a multipart upload).

**Names** are ``/``-separated relative paths such as
``sets/<id>/manifest.json``, checked by ``check_name`` (they also come from
manifests and agent requests: untrusted). There are no folders, only names;
a prefix ending in ``/`` plays the part of one. A name that is also the
folder of other names (``a`` and ``a/b``) is not portable (a local folder
cannot hold both); txbackup's layout never makes one.

**Atomicity.** Nothing is visible under a name until ``Writer.commit``
returns; a name then holds the complete object, never a part of it. A
writer that is aborted, or whose process dies, leaves nothing visible under
its name; what it may leave behind (a temporary file, an incomplete
multipart upload) is listed by ``temporaries`` and never by ``iterate``.

**Errors** are ``StorageError`` subclasses from ``txbackup.errors``:
``NotFoundError`` (the object does not exist), ``AlreadyExistsError`` (an
``if_absent`` commit lost), ``TransientStorageError`` (worth retrying:
timeouts, 5xx, throttling, a reset connection), ``PermanentStorageError``
(retrying will not help: permission denied, bad credentials, missing
bucket). A plain ``StorageError`` is neither (a full disk, a symbolic link
refused): not retried. Messages are one line, ``storage <where>: <operation>
<name>: <cause>`` (``storage_error``), and never hold a secret.

Backends also guarantee: they never follow a symbolic link (or its
equivalent) out of their root, and what they create is private to its owner.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO, TYPE_CHECKING, Protocol, Self, TypeVar, runtime_checkable

from txbackup.errors import (
    AlreadyExistsError,
    NotFoundError,
    StorageError,
    TransientStorageError,
)
from txbackup.safepaths import name_problem, shown

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

CHUNK = 1 << 20
"""Read and write in chunks of this many bytes (constant memory)."""

MAX_NAME = 4096
"""The longest storage name (characters); a segment is at most 255 UTF-8 bytes."""

RESERVED_PREFIX = ".txbackup-tmp-"
"""No segment of a name starts with this: backends name their temporaries so."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend knows of one stored object."""

    name: str
    """Its storage name (``/``-separated); for a temporary, see ``Storage.temporaries``."""
    size: int
    """Its size in bytes."""
    mtime: float
    """When it was last written, seconds since the epoch (the backend's clock)."""
    checksum: str | None = None
    """The backend's own fingerprint (ETag, MD5...), opaque: equal values mean the
    same content, for change detection only (never an integrity check); None if
    the backend has none."""
    sha256: str | None = None
    """The SHA-256 (hex) of the stored bytes as the backend computed it when it received
    them, if it keeps one for the whole object (S3 objects written in one PutObject with
    ``ChecksumAlgorithm=SHA256``); None otherwise. Unlike ``checksum`` it can be compared
    with a digest we recorded: it tells that the object is the one we wrote without
    reading it back (not that the backend's media still hold it: that takes a read)."""
    retain_until: float | None = None
    """Until when (seconds since the epoch) the backend refuses to delete or overwrite
    the object (S3 Object Lock retention), if this answer says so; None when the
    object has no retention or the backend did not report it (listings usually do not)."""


class Writer(Protocol):
    """A push-based upload of one object, from ``Storage.open_write``.

    Use it as a context manager; leaving the block without ``commit`` (an
    exception, a forgotten commit) aborts::

        with storage.open_write(name) as w:
            w.write(data)
            w.commit()

    Memory use is bounded by the backend (a part buffer at most), whatever
    the object's size. A Writer is used from one thread at a time.
    """

    def write(self, data: ReadableBuffer) -> int:
        """Send all of ``data``; return its size in bytes. ``data`` may be reused by
        the caller once this returns: a backend that buffers copies it. A backend
        error stops the upload (later calls raise too); the caller then aborts."""
        ...

    def commit(self) -> ObjectInfo:
        """Publish what was written under the name, atomically, and return its info.

        Without ``if_absent``, an existing object is replaced (atomically: a
        reader sees the old or the new one). With ``if_absent=True``,
        ``AlreadyExistsError`` is raised if the name exists (or comes to exist
        before the commit): the existing object is never overwritten, and of two
        concurrent writers exactly one wins. On any error nothing new is visible
        and the writer is aborted. Calling it twice is an error."""
        ...

    def abort(self) -> None:
        """Drop the upload: nothing becomes visible under the name, temporaries
        are removed (best effort: a failure to remove them is logged, not
        raised). Idempotent; a no-op after ``commit``."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Abort unless committed (the exception, if any, propagates)."""
        ...


class Storage(Protocol):
    """Where backup sets live: a local folder, an object store...

    Every method checks its names with ``check_name``/``check_prefix`` first.
    Implementations are safe to call from several threads at once.
    """

    def describe(self) -> str:
        """Where this storage is, for messages: ``/backups``, ``s3://bucket/prefix``.
        Never a secret (no credentials, no query string)."""
        ...

    def open_write(self, name: str, *, if_absent: bool = False) -> Writer:
        """A writer for a new version of ``name`` (see ``Writer.commit`` for
        ``if_absent``). Opening it creates nothing visible."""
        ...

    def open_read(self, name: str, offset: int = 0, length: int | None = None) -> IO[bytes]:
        """A readable stream of ``name`` from byte ``offset``, at most ``length``
        bytes (None: to the end). The caller closes it (``with``); it need not
        be seekable, and a read may return fewer bytes than asked before EOF.
        A range past the end is cut at the end (an offset at or past it reads
        nothing): callers that expect a size compare it themselves.
        ``NotFoundError`` if ``name`` does not exist (checked on open, before
        the first read). A read that fails midway raises a StorageError (a
        transient one if resuming may work), never a silent early EOF when the
        backend can tell."""
        ...

    def stat(self, name: str) -> ObjectInfo | None:
        """The info of ``name``, or None if no object has exactly that name (a
        prefix of other names, a temporary, a folder: None)."""
        ...

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose name starts with ``prefix`` (``""``: all), sorted by
        name (code-point order); never a temporary. ``prefix`` need not end in
        ``/`` (``sets/ab`` matches ``sets/abc/x``). A missing prefix yields nothing."""
        ...

    def remove(self, name: str) -> None:
        """Remove the object ``name`` durably; a missing one is not an error."""
        ...

    def remove_prefix(self, prefix: str) -> None:
        """Remove every object under the folder-like ``prefix`` (it must end in
        ``/``; ``StorageError`` otherwise); nothing there is not an error."""
        ...

    def temporaries(self, older_than_s: float) -> Iterator[ObjectInfo]:
        """What writers left, whose ``mtime`` is more than ``older_than_s`` seconds
        ago: local temporary files (``mtime``: their last write), incomplete
        multipart uploads (``mtime``: when the upload began, all a store tells).
        A running writer's upload is listed too once old enough: callers remove
        them only when no writer can be running (``txbackup cleanup`` holds the
        storage lock) or with a margin longer than any upload. The name is an
        opaque id for ``remove_temporary``, whose part before the last ``/`` is
        the folder of the object being written (``sets/<id>/.txbackup-tmp-1f2e``,
        ``sets/<id>/manifest.json#<upload>``)."""
        ...

    def remove_temporary(self, name: str) -> None:
        """Remove a temporary listed by ``temporaries``; a missing one is not an error."""
        ...


@dataclass(frozen=True)
class Retention:
    """How long committed objects are kept immutable (S3 Object Lock): ``mode`` is
    ``COMPLIANCE`` (nobody can shorten or remove it, the root account included) or
    ``GOVERNANCE`` (a principal with ``s3:BypassGovernanceRetention`` can)."""

    mode: str
    days: int


@runtime_checkable
class Retaining(Protocol):
    """A storage that can put a retention date on objects (only S3 today)."""

    @property
    def retention(self) -> Retention | None:
        """The configured retention of committed sets, None when not configured."""
        ...

    def retain(self, name: str, until: float) -> float:
        """Keep ``name`` immutable at least until ``until`` (seconds since the epoch):
        a retention ending earlier is extended, a later one kept. Returns the date the
        object is now retained until. ``NotFoundError`` if it is missing."""
        ...


def retaining(storage: Storage) -> Retaining | None:
    """The storage (under the retry wrapper) if it can retain objects, else None."""
    inner = getattr(storage, "inner", storage)  # retry.RetryStorage keeps the backend there
    return inner if isinstance(inner, Retaining) else None


@runtime_checkable
class SavesBytes(Protocol):
    """A storage with its own whole-object save (the retry wrapper replays it)."""

    def save_bytes(self, name: str, data: bytes, *, if_absent: bool = False) -> ObjectInfo: ...


# ---------------------------------------------------------------- names


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid storage name, else raise StorageError.

    Names also come from manifests and agent requests (untrusted): the rules
    are those of ``txbackup.safepaths`` (no empty, ``.`` or ``..`` segment, no
    backslash, NUL or control character, valid UTF-8, bounded lengths), and
    no segment may start with ``RESERVED_PREFIX`` (a backend's temporaries)."""
    problem = name_problem(name, max_name=MAX_NAME, max_segment=255)
    if problem is None and any(part.startswith(RESERVED_PREFIX) for part in name.split("/")):
        problem = f"a segment starts with {RESERVED_PREFIX!r}, reserved for temporary files"
    if problem is not None:
        raise StorageError(
            f"storage name {shown(name)}: must be a relative path without '.' or '..' ({problem})"
        )
    return name


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is empty or a valid name, optionally ending in ``/``."""
    if prefix:
        check_name(prefix.removesuffix("/"))
    return prefix


# ---------------------------------------------------------------- errors

E = TypeVar("E", bound=StorageError)
_SPACES = re.compile(r"\s+")


def storage_error(cls: type[E], where: str, operation: str, name: str, cause: object) -> E:
    """``cls("storage <where>: <operation> <name>: <cause>")``, one line: the cause's
    whitespace is folded and it is cut to 300 characters; a hostile name is quoted."""
    text = _SPACES.sub(" ", str(cause)).strip() or type(cause).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    shown_name = name if name and check_ok(name) else shown(name)
    return cls(f"storage {where}: {operation} {shown_name}: {text}")


def check_range(where: str, name: str, offset: int, length: int | None) -> None:
    """``open_read``'s range: no negative offset or length (StorageError naming both)."""
    if offset < 0 or (length is not None and length < 0):
        raise StorageError(f"storage {where}: read {name}: negative range {offset}+{length}")


def check_ok(name: str) -> bool:
    """Whether ``name`` is a valid storage name (or prefix ending in ``/``)."""
    try:
        check_name(name.removesuffix("/"))
    except StorageError:
        return False
    return True


# ---------------------------------------------------------------- writers


class WriterBase:
    """The context-manager and once-only bookkeeping every Writer shares.

    A backend subclasses it and implements ``_write``, ``_commit`` and
    ``_abort``; this class makes ``commit`` run once, ``abort`` idempotent and
    a failed ``write``/``commit`` abort the upload."""

    def __init__(self, where: str, name: str) -> None:
        self.where = where
        self.name = name
        self._done = False  # committed or aborted
        self._failed = False

    def write(self, data: ReadableBuffer) -> int:
        if self._done or self._failed:
            raise StorageError(f"storage {self.where}: write {self.name}: writer already closed")
        try:
            return self._write(data)
        except BaseException:
            self._failed = True
            raise

    def commit(self) -> ObjectInfo:
        if self._done or self._failed:
            raise StorageError(f"storage {self.where}: commit {self.name}: writer already closed")
        try:
            info = self._commit()
        except BaseException:
            self._failed = True
            self.abort()
            raise
        self._done = True
        return info

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    def _write(self, data: ReadableBuffer) -> int:
        raise NotImplementedError

    def _commit(self) -> ObjectInfo:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- helpers


def save_bytes(storage: Storage, name: str, data: bytes, *, if_absent: bool = False) -> ObjectInfo:
    """Store ``data`` as ``name`` in one write; a storage with its own
    ``save_bytes`` (the retry wrapper, which can replay it) does it instead."""
    if isinstance(storage, SavesBytes):
        return storage.save_bytes(name, data, if_absent=if_absent)
    with storage.open_write(name, if_absent=if_absent) as writer:
        writer.write(data)
        return writer.commit()


def list_names(storage: Storage, prefix: str = "") -> list[str]:
    """The names under ``prefix``, sorted (for small listings: locks, tests)."""
    return [info.name for info in storage.iterate(prefix)]


def copy_stream(storage: Storage, name: str, stream: IO[bytes], *, if_absent: bool = False) -> ObjectInfo:
    """Store ``stream``, read to EOF in ``CHUNK`` pieces, as ``name``. Not retried
    as a whole (a stream cannot be rewound): a transient error surfaces."""
    with storage.open_write(name, if_absent=if_absent) as writer:
        while chunk := stream.read(CHUNK):
            writer.write(chunk)
        return writer.commit()


def load_bytes(storage: Storage, name: str, limit: int) -> bytes:
    """The whole content of ``name``; refused (StorageError) when it is over
    ``limit`` bytes, before reading it (and again if it grew meanwhile), so a
    hostile object cannot exhaust memory. ``NotFoundError`` if it is missing."""
    info = storage.stat(name)
    if info is None:
        raise storage_error(NotFoundError, storage.describe(), "read", name, "not found")
    if info.size > limit:
        raise storage_error(
            StorageError, storage.describe(), "read", name, f"{info.size} bytes, over the limit of {limit}"
        )
    with storage.open_read(name) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise storage_error(
            StorageError, storage.describe(), "read", name, f"over the limit of {limit} bytes"
        )
    return data


class RangeReader(io.RawIOBase):
    """At most ``length`` bytes of ``raw`` (already at the range's start); closes it."""

    def __init__(self, raw: IO[bytes], length: int | None) -> None:
        self._raw = raw
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._left is not None:
            view = view[: self._left]
        if not view:
            return 0
        n = self._raw.readinto(view)  # type: ignore[attr-defined]
        n = n or 0
        if self._left is not None:
            self._left -= n
        return int(n)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


__all__ = [
    "CHUNK",
    "AlreadyExistsError",
    "NotFoundError",
    "ObjectInfo",
    "Retaining",
    "Retention",
    "Storage",
    "TransientStorageError",
    "Writer",
    "WriterBase",
    "check_name",
    "check_prefix",
    "copy_stream",
    "list_names",
    "load_bytes",
    "retaining",
    "save_bytes",
    "storage_error",
]
