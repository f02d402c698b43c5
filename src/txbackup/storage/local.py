"""Storage on a local folder (the default): durable, atomic saves."""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import shutil
import stat as statmod
import time
from typing import IO

from txbackup.errors import StorageError
from txbackup.storage.base import CHUNK, check_name, check_prefix

TMP_PREFIX = ".txbackup-tmp-"
"""Files being saved; never listed, renamed to their real name once complete."""


class LocalStorage:
    """A folder holding backup sets; created on the first save."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def describe(self) -> str:
        return self.root

    def save(self, name: str, stream: IO[bytes]) -> int:
        path = self._path(name)
        folder = os.path.dirname(path)
        tmp = os.path.join(folder, TMP_PREFIX + secrets.token_hex(8))
        try:
            try:
                _makedirs(folder)
                size = _write_file(tmp, stream)
                os.replace(tmp, path)
                _fsync_dir(folder)
            except OSError as exc:
                raise self._error(exc, "writing", name) from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return size

    def load(self, name: str) -> IO[bytes]:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError as exc:
            raise StorageError(f"storage {self.root}: {name} not found") from exc
        except OSError as exc:
            raise self._error(exc, "reading", name) from exc

    def stat(self, name: str) -> int | None:
        try:
            st = os.stat(self._path(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._error(exc, "reading", name) from exc
        return st.st_size if statmod.S_ISREG(st.st_mode) else None

    def list(self, prefix: str) -> list[str]:
        folder = check_prefix(prefix)[: prefix.rfind("/") + 1]
        top = self._path(folder.rstrip("/")) if folder else self.root
        if not os.path.isdir(top):
            return []
        names = []
        try:
            for dirpath, _dirs, files in os.walk(top, onerror=_raise):
                rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                base = "" if rel == "." else rel + "/"
                names += [base + f for f in files if not f.startswith(TMP_PREFIX)]
        except OSError as exc:
            raise self._error(exc, "listing", prefix or "/") from exc
        return sorted(n for n in names if n.startswith(prefix))

    def remove(self, name: str) -> None:
        path = self._path(name)
        try:
            os.unlink(path)
            _fsync_dir(os.path.dirname(path))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error(exc, "removing", name) from exc

    def remove_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise StorageError(f"storage {self.root}: {prefix!r} is not a folder (no trailing '/')")
        path = self._path(prefix.removesuffix("/"))
        try:
            shutil.rmtree(path)
            _fsync_dir(os.path.dirname(path))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error(exc, "removing", prefix) from exc

    def temporary_files(self) -> builtins.list[tuple[str, float]]:
        """(name, seconds since last written) of every file being saved, or left by a
        writer that died; read-only (``txbackup cleanup`` removes old ones with ``remove``)."""
        now = time.time()
        found = {}
        for dirpath, _dirs, files in os.walk(self.root):  # never follows symlinks
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for f in (f for f in files if f.startswith(TMP_PREFIX)):
                with contextlib.suppress(OSError):  # gone meanwhile: renamed into place
                    age = max(0.0, now - os.lstat(os.path.join(dirpath, f)).st_mtime)
                    found[("" if rel == "." else rel + "/") + f] = age
        return sorted(found.items())

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *check_name(name).split("/"))

    def _error(self, exc: OSError, doing: str, name: str) -> StorageError:
        reason = exc.strerror or str(exc)
        reason = reason[:1].lower() + reason[1:]
        return StorageError(f"storage {self.root}: {reason} while {doing} {name}")


def _write_file(path: str, stream: IO[bytes]) -> int:
    """Copy ``stream`` into the new file ``path`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    try:
        size = 0
        while chunk := stream.read(CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            size += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def _makedirs(folder: str) -> None:
    """Create ``folder`` and missing parents, durably (each parent fsynced)."""
    if os.path.isdir(folder):
        return
    parent = os.path.dirname(folder)
    _makedirs(parent)
    try:
        os.mkdir(folder)
    except FileExistsError:
        return
    _fsync_dir(parent)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _raise(exc: OSError) -> None:
    raise exc
