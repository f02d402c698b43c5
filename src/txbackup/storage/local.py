"""Storage on a local folder (the default): durable, atomic saves.

Names are untrusted (they come from manifests, agent requests and listings),
and so is what the folder holds: whoever can write into it may have planted a
symbolic link such as ``sets/<id> -> /etc``. So every operation walks the name
one folder at a time with descriptors opened ``O_NOFOLLOW`` below the root: a
symbolic link is never followed, whether to read, stat, list or delete through
it (listing skips links; removing one removes the link itself, never what it
points to). The root itself is the operator's choice and is taken as it is.

Files are created 0600 and folders 0700, whatever the umask: a backup holds
the databases' contents.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import logging
import os
import secrets
import shutil
import stat as statmod
import time
from collections.abc import Iterator
from typing import IO

from txbackup.errors import StorageError
from txbackup.safepaths import create_private
from txbackup.storage.base import CHUNK, check_name, check_prefix

log = logging.getLogger("txbackup.storage")

TMP_PREFIX = ".txbackup-tmp-"
"""Files being saved; never listed, renamed to their real name once complete."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block


class _Missing(Exception):
    """A folder on the way to a name does not exist (or is a file)."""


class LocalStorage:
    """A folder holding backup sets; created on the first save."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def describe(self) -> str:
        return self.root

    def save(self, name: str, stream: IO[bytes]) -> int:
        *folders, leaf = check_name(name).split("/")
        tmp = TMP_PREFIX + secrets.token_hex(8)
        dir_fd: int | None = None
        try:
            try:
                dir_fd = self._open_folder(folders, name, create=True)
                size = _write_file(tmp, dir_fd, stream)
                os.replace(tmp, leaf, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                os.fsync(dir_fd)
            except OSError as exc:
                raise self._error(exc, "writing", name) from exc
        except BaseException:
            if dir_fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
            raise
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        return size

    def load(self, name: str) -> IO[bytes]:
        *folders, leaf = check_name(name).split("/")
        try:
            with self._folder(folders, name) as dir_fd:
                fd = os.open(leaf, _FILE_FLAGS, dir_fd=dir_fd)
        except (_Missing, FileNotFoundError) as exc:
            raise StorageError(f"storage {self.root}: {name} not found") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._symlink(name, name) from None
            raise self._error(exc, "reading", name) from exc
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode):
                raise StorageError(f"storage {self.root}: {name} is not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def stat(self, name: str) -> int | None:
        *folders, leaf = check_name(name).split("/")
        try:
            with self._folder(folders, name) as dir_fd:
                st = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
        except (_Missing, FileNotFoundError):
            return None
        except OSError as exc:
            raise self._error(exc, "reading", name) from exc
        if statmod.S_ISLNK(st.st_mode):
            raise self._symlink(name, name)
        return st.st_size if statmod.S_ISREG(st.st_mode) else None

    def list(self, prefix: str) -> list[str]:
        folder = check_prefix(prefix)[: prefix.rfind("/") + 1]
        folders = folder.rstrip("/").split("/") if folder else []
        names = []
        try:
            with self._folder(folders, prefix or "/") as top:
                for dirpath, dirs, files, dir_fd in os.fwalk(".", dir_fd=top, onerror=_raise_unless_gone):
                    rel = folder + dirpath.removeprefix(".").lstrip("/")
                    base = rel if not rel or rel.endswith("/") else rel + "/"
                    for f in files:
                        if f.startswith(TMP_PREFIX):
                            continue
                        mode = _mode_or_none(f, dir_fd)
                        if mode is None:
                            continue  # removed (or renamed into place) since the folder was read
                        if statmod.S_ISREG(mode):
                            names.append(base + f)
                        elif statmod.S_ISLNK(mode):
                            log.warning("storage %s: %s%s is a symbolic link: ignored", self.root, base, f)
                    # fwalk does not enter linked folders (follow_symlinks=False); say so
                    for d in dirs:
                        if statmod.S_ISLNK(_mode_or_none(d, dir_fd) or 0):
                            log.warning("storage %s: %s%s is a symbolic link: ignored", self.root, base, d)
        except (_Missing, FileNotFoundError):
            return []
        except OSError as exc:
            raise self._error(exc, "listing", prefix or "/") from exc
        return sorted(n for n in names if n.startswith(prefix))

    def remove(self, name: str) -> None:
        *folders, leaf = check_name(name).split("/")
        try:
            with self._folder(folders, name) as dir_fd:
                os.unlink(leaf, dir_fd=dir_fd)  # a link is removed itself, never followed
                os.fsync(dir_fd)
        except (_Missing, FileNotFoundError):
            pass
        except OSError as exc:
            raise self._error(exc, "removing", name) from exc

    def remove_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise StorageError(f"storage {self.root}: {prefix!r} is not a folder (no trailing '/')")
        *folders, leaf = check_name(prefix.removesuffix("/")).split("/")
        try:
            with self._folder(folders, prefix) as dir_fd:
                mode = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False).st_mode
                if statmod.S_ISLNK(mode):
                    os.unlink(leaf, dir_fd=dir_fd)  # the link goes, what it points to stays
                else:
                    # with dir_fd, rmtree works on descriptors and never follows a link
                    shutil.rmtree(leaf, dir_fd=dir_fd)
                os.fsync(dir_fd)
        except (_Missing, FileNotFoundError):
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


    @contextlib.contextmanager
    def _folder(self, folders: builtins.list[str], name: str) -> Iterator[int]:
        """A descriptor of the existing folder ``root/folders`` (``_Missing`` if absent)."""
        fd = self._open_folder(folders, name, create=False)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_folder(self, folders: builtins.list[str], name: str, create: bool) -> int:
        """Open ``root/folders`` one segment at a time, refusing symbolic links below
        the root; with ``create``, make the missing ones (0700, durably)."""
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                raise _Missing(name) from None
            _makedirs(self.root)
            fd = os.open(self.root, _DIR_FLAGS)
        for i, part in enumerate(folders):
            try:
                try:
                    child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise _Missing(name) from None
                    child = _make_folder(part, fd)
                except OSError as exc:
                    if exc.errno == errno.ELOOP or (
                        exc.errno == errno.ENOTDIR
                        and statmod.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
                    ):
                        raise self._symlink(name, "/".join(folders[: i + 1])) from None
                    if exc.errno == errno.ENOTDIR and not create:
                        raise _Missing(name) from None
                    raise
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            fd = child
        return fd

    def _symlink(self, name: str, link: str) -> StorageError:
        return StorageError(
            f"storage {self.root}: {link} is a symbolic link; refusing to follow it for {name}"
        )

    def _error(self, exc: OSError, doing: str, name: str) -> StorageError:
        reason = exc.strerror or str(exc)
        reason = reason[:1].lower() + reason[1:]
        return StorageError(f"storage {self.root}: {reason} while {doing} {name}")


def _write_file(name: str, dir_fd: int, stream: IO[bytes]) -> int:
    """Copy ``stream`` into the new private file ``name`` of folder ``dir_fd``; fsync it."""
    fd = create_private(name, dir_fd=dir_fd)
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


def _make_folder(name: str, parent_fd: int) -> int:
    """Create folder ``name`` in ``parent_fd`` (0700, durable) and open it; a folder
    created meanwhile by someone else is opened as it is."""
    created = True
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        created = False
    fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
    if created:
        os.fchmod(fd, 0o700)
        os.fsync(parent_fd)
    return fd


def _makedirs(folder: str) -> None:
    """Create ``folder`` and missing parents, durably (each parent fsynced), 0700."""
    if os.path.isdir(folder):
        return
    parent = os.path.dirname(folder)
    _makedirs(parent)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        return
    os.chmod(folder, 0o700)
    _fsync_dir(parent)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mode_or_none(name: str, dir_fd: int) -> int | None:
    """The mode of ``name`` in ``dir_fd`` (not followed), or None if it is gone: a listing
    runs while other writers rename and remove their files, and must not fail for it."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None


def _raise_unless_gone(exc: OSError) -> None:
    """fwalk's error handler: a sub-folder removed while walking is skipped, not fatal."""
    if not isinstance(exc, FileNotFoundError):
        raise exc
