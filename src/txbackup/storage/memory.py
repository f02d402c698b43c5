"""An in-memory storage with fault injection, for tests (kopia's blobtesting).

``MemoryStorage`` keeps objects in a dict and follows the whole contract of
``base.Storage`` (it passes the conformance suite), so the engine can be
tested against it. A ``FaultInjector`` makes chosen calls fail the way real
backends do: the Nth call of an operation, or every call whose name matches
a pattern, raises a transient or permanent error, cuts a read short, or
fails a commit; every call is counted.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Literal

from txbackup.errors import (
    AlreadyExistsError,
    NotFoundError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
)
from txbackup.storage.base import (
    ObjectInfo,
    WriterBase,
    check_name,
    check_prefix,
    storage_error,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

Operation = Literal[
    "open_write", "write", "commit", "open_read", "read", "stat", "iterate", "remove",
    "remove_prefix", "temporaries", "remove_temporary",
]  # fmt: skip
"""The calls a fault can target (``write``/``read``: each call on a writer/stream)."""

Effect = Literal["transient", "permanent", "short_read", "transient_after"]
"""What a fault does: raise ``TransientStorageError``/``PermanentStorageError``;
``short_read`` (``read`` only): end the stream early, as a connection cut
mid-body would; ``transient_after`` (``commit`` only): the object is published,
then the answer is lost (a timeout after the server did the work)."""


@dataclass
class Fault:
    """One planned failure: of ``operation``, at its ``nth`` call (1-based, counted
    across names), at every ``every``-th call, or at every call whose name matches
    ``pattern`` (fnmatch); ``times`` limits how often it fires (None: always)."""

    operation: Operation
    effect: Effect = "transient"
    nth: int | None = None
    pattern: str | None = None
    times: int | None = 1
    every: int | None = None
    fired: int = 0

    def matches(self, operation: str, count: int, name: str) -> bool:
        if operation != self.operation or (self.times is not None and self.fired >= self.times):
            return False
        if (self.nth is not None and count != self.nth) or (self.every and count % self.every):
            return False
        return self.pattern is None or fnmatch.fnmatchcase(name, self.pattern)


@dataclass
class FaultInjector:
    """Counts calls per operation and fires the planned faults."""

    faults: list[Fault] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        operation: Operation,
        effect: Effect = "transient",
        *,
        nth: int | None = None,
        pattern: str | None = None,
        times: int | None = 1,
        every: int | None = None,
    ) -> Fault:
        """Plan a fault (see ``Fault``); with no ``nth``, ``every`` or ``pattern`` it hits the next call."""
        fault = Fault(operation, effect, nth, pattern, times, every)
        with self._lock:
            self.faults.append(fault)
        return fault

    def check(self, where: str, operation: Operation, name: str) -> Effect | None:
        """Count the call; raise the fault planned for it, or return the effects the
        caller carries out (``short_read``, ``transient_after``)."""
        with self._lock:
            self.calls[operation] += 1
            fault = next(
                (f for f in self.faults if f.matches(operation, self.calls[operation], name)), None
            )
            if fault is None:
                return None
            fault.fired += 1
        if fault.effect in ("short_read", "transient_after"):
            return fault.effect
        cls = TransientStorageError if fault.effect == "transient" else PermanentStorageError
        raise injected(cls, where, operation, name, fault.effect)


def injected(cls: type[StorageError], where: str, operation: str, name: str, effect: str) -> StorageError:
    return storage_error(cls, where, operation.replace("_", " "), name, f"injected {effect} fault")


@dataclass
class _Object:
    data: bytes
    mtime: float
    checksum: str


class MemoryStorage:
    """Objects in a dict; thread-safe. ``faults`` injects failures (see module doc)."""

    def __init__(self, label: str = "test", faults: FaultInjector | None = None) -> None:
        self.label = label
        self.faults = faults or FaultInjector()
        self.objects: dict[str, _Object] = {}
        self.pending: dict[str, _Pending] = {}  # temporaries, by their id
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def describe(self) -> str:
        return f"memory://{self.label}"

    def _fault(self, operation: Operation, name: str) -> Effect | None:
        return self.faults.check(self.describe(), operation, name)

    def open_write(self, name: str, *, if_absent: bool = False) -> MemoryWriter:
        check_name(name)
        self._fault("open_write", name)
        writer = MemoryWriter(self, name, if_absent, f"{name}#upload-{next(self._ids)}")
        with self._lock:
            self.pending[writer.upload] = writer.pending
        return writer

    def open_read(self, name: str, offset: int = 0, length: int | None = None) -> IO[bytes]:
        check_name(name)
        if offset < 0 or (length is not None and length < 0):
            raise StorageError(f"storage {self.describe()}: read {name}: negative range {offset}+{length}")
        self._fault("open_read", name)
        with self._lock:
            obj = self.objects.get(name)
        if obj is None:
            raise storage_error(NotFoundError, self.describe(), "read", name, "not found")
        end = len(obj.data) if length is None else offset + length
        return _FaultyReader(self, name, obj.data[offset:end])

    def stat(self, name: str) -> ObjectInfo | None:
        check_name(name)
        self._fault("stat", name)
        with self._lock:
            obj = self.objects.get(name)
        return None if obj is None else ObjectInfo(name, len(obj.data), obj.mtime, obj.checksum)

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        self._fault("iterate", prefix)
        with self._lock:
            found = [
                ObjectInfo(n, len(o.data), o.mtime, o.checksum)
                for n, o in self.objects.items()
                if n.startswith(prefix)
            ]
        yield from sorted(found, key=lambda info: info.name)

    def remove(self, name: str) -> None:
        check_name(name)
        self._fault("remove", name)
        with self._lock:
            self.objects.pop(name, None)

    def remove_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise StorageError(f"storage {self.describe()}: remove {prefix}: not a folder (no trailing '/')")
        check_prefix(prefix)
        self._fault("remove_prefix", prefix)
        with self._lock:
            for name in [n for n in self.objects if n.startswith(prefix)]:
                del self.objects[name]

    def temporaries(self, older_than_s: float) -> Iterator[ObjectInfo]:
        self._fault("temporaries", "")
        cutoff = time.time() - older_than_s
        with self._lock:
            found = [
                ObjectInfo(upload, p.size, p.mtime) for upload, p in self.pending.items() if p.mtime < cutoff
            ]
        yield from sorted(found, key=lambda info: info.name)

    def remove_temporary(self, name: str) -> None:
        self._fault("remove_temporary", name)
        with self._lock:
            self.pending.pop(name, None)


@dataclass
class _Pending:
    """An upload in progress (or left by a writer that died without aborting)."""

    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    mtime: float = field(default_factory=time.time)


class MemoryWriter(WriterBase):
    """Buffers the parts; ``commit`` publishes them under the storage's lock."""

    def __init__(self, storage: MemoryStorage, name: str, if_absent: bool, upload: str) -> None:
        super().__init__(storage.describe(), name)
        self._storage = storage
        self._if_absent = if_absent
        self.upload = upload
        self.pending = _Pending()

    def _write(self, data: ReadableBuffer) -> int:
        self._storage._fault("write", self.name)
        chunk = bytes(data)
        self.pending.parts.append(chunk)
        self.pending.size += len(chunk)
        self.pending.mtime = time.time()
        return len(chunk)

    def _commit(self) -> ObjectInfo:
        storage = self._storage
        effect = storage._fault("commit", self.name)
        data = b"".join(self.pending.parts)
        obj = _Object(data, time.time(), hashlib.md5(data, usedforsecurity=False).hexdigest())
        with storage._lock:
            if self._if_absent and self.name in storage.objects:
                raise storage_error(AlreadyExistsError, self.where, "create", self.name, "already exists")
            storage.objects[self.name] = obj
            storage.pending.pop(self.upload, None)
        if effect == "transient_after":
            raise injected(TransientStorageError, self.where, "commit", self.name, effect)
        return ObjectInfo(self.name, len(data), obj.mtime, obj.checksum)

    def _abort(self) -> None:
        with self._storage._lock:
            self._storage.pending.pop(self.upload, None)

    def die(self) -> None:
        """Stop without aborting, as a killed writer would: its upload stays a temporary."""
        self._done = True


class _FaultyReader(io.BytesIO):
    """The object's bytes; a ``read`` fault raises, or ends the stream early."""

    def __init__(self, storage: MemoryStorage, name: str, data: bytes) -> None:
        super().__init__(data)
        self._storage = storage
        self._name = name

    def read(self, size: int | None = -1) -> bytes:
        if self._storage._fault("read", self._name) == "short_read":
            self.seek(0, io.SEEK_END)
            return b""
        return super().read(size)

    def readinto(self, buffer: WriteableBuffer) -> int:
        data = self.read(memoryview(buffer).nbytes)
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)
