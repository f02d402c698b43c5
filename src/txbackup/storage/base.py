"""The storage interface: a few operations on named files (restic-like).

Names are ``/``-separated relative paths such as ``sets/<id>/manifest.json``;
absolute names, ``.``/``..`` components and control characters are refused.
A backend never follows a symbolic link (or its equivalent) out of its root,
and creates what it stores private to its owner. ``save`` is atomic: a
name holds either nothing or the complete file, never a partial one.
``StreamSaver`` turns ``save`` (which pulls from a stream) into a writable
stream, for producers that push.
"""

from __future__ import annotations

import builtins
import io
import os
import threading
from contextlib import AbstractContextManager
from typing import IO, TYPE_CHECKING, Protocol

from txbackup.errors import StorageError
from txbackup.safepaths import name_problem, shown

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

CHUNK = 1 << 20
"""Read and write in chunks of this many bytes (constant memory)."""


class Storage(Protocol):
    """Where backup sets live: a local folder, an object store..."""

    def save(self, name: str, stream: IO[bytes]) -> int:
        """Store ``stream``, read to EOF, as ``name``; return the bytes written.
        Atomic: written under a temporary name, then renamed; on any error the
        temporary file is removed and ``name`` keeps its previous state."""
        ...

    def load(self, name: str) -> AbstractContextManager[IO[bytes]]:
        """A readable stream of ``name``; ``StorageError`` if it does not exist."""
        ...

    def stat(self, name: str) -> int | None:
        """The size of ``name`` in bytes, or None if it does not exist."""
        ...

    def list(self, prefix: str) -> builtins.list[str]:
        """Every name starting with ``prefix`` (e.g. ``"sets/"``), sorted."""
        ...

    def remove(self, name: str) -> None:
        """Remove ``name`` durably; removing a missing name is not an error."""
        ...

    def remove_prefix(self, prefix: str) -> None:
        """Remove everything under the folder ``prefix`` (ends with ``/``)."""
        ...

    def describe(self) -> str:
        """Where this storage is, for messages (e.g. the folder path)."""
        ...


MAX_NAME = 4096
"""The longest storage name (characters); a segment is at most 255 UTF-8 bytes."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid storage name, else raise StorageError.

    Names also come from manifests and agent requests (untrusted): the rules
    are those of ``txbackup.safepaths`` (no empty, ``.`` or ``..`` segment, no
    backslash, NUL or control character, valid UTF-8, bounded lengths)."""
    problem = name_problem(name, max_name=MAX_NAME, max_segment=255)
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


class _Aborted(Exception):
    """The producer failed: the stream must not be saved."""


class _PipeSource(io.RawIOBase):
    """Read end of the pipe; EOF without ``commit`` raises ``_Aborted``."""

    def __init__(self, fd: int, saver: StreamSaver) -> None:
        self._fd = fd
        self._saver = saver

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        n = os.readv(self._fd, [buffer])
        if n == 0 and not self._saver.committed:
            raise _Aborted("stream aborted by its producer")
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class StreamSaver:
    """A writable stream into ``storage.save(name, ...)``, through a pipe.

    A thread runs ``save`` on the pipe's read end. ``commit()`` ends the
    stream and waits for ``save`` to finish (re-raising its error);
    ``abort()`` makes ``save`` fail, so nothing appears under ``name``.
    Memory use is the pipe buffer. If ``save`` fails early (full disk),
    the next ``write`` raises its error.
    """

    def __init__(self, storage: Storage, name: str) -> None:
        read_fd, self._write_fd = os.pipe()
        self._what = f"storage {storage.describe()}: saving {name}"
        self.committed = False
        self._closed = False
        self._size = 0
        self._error: BaseException | None = None
        source = io.BufferedReader(_PipeSource(read_fd, self), CHUNK)
        self._thread = threading.Thread(
            target=self._run, args=(storage, name, source), name=f"save {name}", daemon=True
        )
        self._thread.start()

    def _run(self, storage: Storage, name: str, source: IO[bytes]) -> None:
        try:
            self._size = storage.save(name, source)
        except BaseException as exc:  # handed over to the producer's thread
            self._error = exc
        finally:
            source.close()  # a producer still writing gets EPIPE

    def write(self, data: ReadableBuffer) -> int:
        """Write all of ``data``; raise the saver's error if it has stopped."""
        view = memoryview(data).cast("B")
        total = len(view)
        try:
            while view:
                view = view[os.write(self._write_fd, view) :]
        except BrokenPipeError:
            self._finish()
            raise StorageError(f"{self._what} stopped early") from None
        return total

    def commit(self) -> int:
        """End the stream; return the bytes saved once ``save`` has finished."""
        self.committed = True
        self._finish()
        return self._size

    def abort(self) -> None:
        """End the stream so that ``save`` fails and leaves nothing behind."""
        self._finish(raise_error=False)

    def _finish(self, raise_error: bool = True) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._write_fd)
        self._thread.join()
        if raise_error and self._error is not None:
            raise self._error
