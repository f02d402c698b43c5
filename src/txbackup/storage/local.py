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

import contextlib
import errno
import io
import logging
import os
import secrets
import shutil
import stat as statmod
import time
from collections.abc import Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

from txbackup.errors import (
    AlreadyExistsError,
    NotFoundError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
    UsageError,
)
from txbackup.safepaths import Writeback, create_private, name_problem, shown, sync_folder
from txbackup.storage.base import (
    RESERVED_PREFIX,
    ObjectInfo,
    RangeReader,
    WriterBase,
    check_name,
    check_prefix,
    check_range,
    storage_error,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger("txbackup.storage")

TMP_PREFIX = RESERVED_PREFIX
"""Files being written; never listed, renamed to their real name once complete."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block


def from_url(url: str, options: Mapping[str, Any]) -> LocalStorage:
    """The local folder of a bare path or a ``file:///path`` URL (registry factory)."""
    if options:
        unknown = ", ".join(sorted(options))
        raise UsageError(f"storage {shown(url)}: option(s) {unknown} do not apply to a local folder")
    if "://" not in url:
        return LocalStorage(url)
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path or parts.query or parts.fragment:
        raise UsageError(f"storage {shown(url)}: expected file:///absolute/path")
    return LocalStorage(unquote(parts.path))


class _Missing(Exception):
    """A folder on the way to a name does not exist (or is a file)."""


class LocalStorage:
    """A folder holding backup sets; created on the first write."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def describe(self) -> str:
        return self.root  # also recorded in catalog rows: keep it stable

    def open_write(self, name: str, *, if_absent: bool = False) -> LocalWriter:
        check_name(name)
        return LocalWriter(self, name, if_absent)

    def open_read(self, name: str, offset: int = 0, length: int | None = None) -> IO[bytes]:
        *folders, leaf = check_name(name).split("/")
        check_range(str(self.root), name, offset, length)
        try:
            with self._folder(folders, name) as dir_fd:
                fd = os.open(leaf, _FILE_FLAGS, dir_fd=dir_fd)
        except (_Missing, FileNotFoundError) as exc:
            raise storage_error(NotFoundError, self.root, "read", name, "not found") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._symlink(name, name) from None
            raise self._error(exc, "read", name) from exc
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode):
                raise storage_error(NotFoundError, self.root, "read", name, "not a regular file")
            os.set_blocking(fd, True)
            if offset:
                os.lseek(fd, offset, os.SEEK_SET)
            if length is None:
                return os.fdopen(fd, "rb")
            return cast(IO[bytes], io.BufferedReader(RangeReader(os.fdopen(fd, "rb", buffering=0), length)))
        except BaseException:
            os.close(fd)
            raise

    def stat(self, name: str) -> ObjectInfo | None:
        *folders, leaf = check_name(name).split("/")
        try:
            with self._folder(folders, name) as dir_fd:
                st = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
        except (_Missing, FileNotFoundError):
            return None
        except OSError as exc:
            raise self._error(exc, "stat", name) from exc
        if statmod.S_ISLNK(st.st_mode):
            raise self._symlink(name, name)
        if not statmod.S_ISREG(st.st_mode) or leaf.startswith(TMP_PREFIX):
            return None
        return ObjectInfo(name, st.st_size, st.st_mtime)

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = check_prefix(prefix)[: prefix.rfind("/") + 1]
        folders = folder.rstrip("/").split("/") if folder else []
        found = []
        try:
            with self._folder(folders, prefix or "/") as top:
                for dirpath, dirs, files, dir_fd in os.fwalk(".", dir_fd=top, onerror=_raise_unless_gone):
                    rel = folder + dirpath.removeprefix(".").lstrip("/")
                    base = rel if not rel or rel.endswith("/") else rel + "/"
                    for f in files:
                        if f.startswith(TMP_PREFIX) or not (base + f).startswith(prefix):
                            continue
                        st = _lstat_or_none(f, dir_fd)
                        if st is None:
                            continue  # removed (or renamed into place) since the folder was read
                        if statmod.S_ISREG(st.st_mode):
                            found.append(ObjectInfo(base + f, st.st_size, st.st_mtime))
                        elif statmod.S_ISLNK(st.st_mode):
                            log.warning("storage %s: %s%s is a symbolic link: ignored", self.root, base, f)
                    # fwalk does not enter linked folders (follow_symlinks=False); say so
                    for d in dirs:
                        st = _lstat_or_none(d, dir_fd)
                        if st is not None and statmod.S_ISLNK(st.st_mode):
                            log.warning("storage %s: %s%s is a symbolic link: ignored", self.root, base, d)
        except (_Missing, FileNotFoundError):
            return
        except OSError as exc:
            raise self._error(exc, "list", prefix or "/") from exc
        yield from sorted(found, key=lambda info: info.name)

    def remove(self, name: str) -> None:
        *folders, leaf = check_name(name).split("/")
        self._unlink(folders, leaf, name)

    def _unlink(self, folders: list[str], leaf: str, name: str) -> None:
        try:
            with self._folder(folders, name) as dir_fd:
                os.unlink(leaf, dir_fd=dir_fd)  # a link is removed itself, never followed
                os.fsync(dir_fd)
        except (_Missing, FileNotFoundError):
            pass
        except OSError as exc:
            raise self._error(exc, "remove", name) from exc

    def remove_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise StorageError(f"storage {self.root}: remove {shown(prefix)}: not a folder (no trailing '/')")
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
            raise self._error(exc, "remove", prefix) from exc

    def temporaries(self, older_than_s: float) -> Iterator[ObjectInfo]:
        """Temporary files (being written, or left by a writer that died) last
        written more than ``older_than_s`` seconds ago; named by their path."""
        cutoff = time.time() - older_than_s
        found = []
        for dirpath, _dirs, files in os.walk(self.root):  # never follows symlinks
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for f in (f for f in files if f.startswith(TMP_PREFIX)):
                with contextlib.suppress(OSError):  # gone meanwhile: renamed into place
                    st = os.lstat(os.path.join(dirpath, f))
                    if statmod.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                        name = ("" if rel == "." else rel + "/") + f
                        found.append(ObjectInfo(name, st.st_size, st.st_mtime))
        yield from sorted(found, key=lambda info: info.name)

    def remove_temporary(self, name: str) -> None:
        *folders, leaf = name.split("/")
        if folders:
            check_name("/".join(folders))
        if not leaf.startswith(TMP_PREFIX) or name_problem(leaf) is not None:
            raise StorageError(f"storage {self.root}: remove temporary {shown(name)}: not a temporary file")
        self._unlink(folders, leaf, name)

    @contextlib.contextmanager
    def _folder(self, folders: list[str], name: str) -> Iterator[int]:
        """A descriptor of the existing folder ``root/folders`` (``_Missing`` if absent)."""
        fd = self._open_folder(folders, name, create=False)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_folder(self, folders: list[str], name: str, create: bool) -> int:
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
        return PermanentStorageError(
            f"storage {self.root}: {link} is a symbolic link; refusing to follow it for {name}"
        )

    def _error(self, exc: OSError, operation: str, name: str) -> StorageError:
        reason = exc.strerror or str(exc)
        reason = reason[:1].lower() + reason[1:]
        cls: type[StorageError] = StorageError
        if exc.errno in _PERMANENT:
            cls = PermanentStorageError
        elif exc.errno in _TRANSIENT:
            cls = TransientStorageError
        return storage_error(cls, self.root, operation, name, reason)


_PERMANENT = {errno.EACCES, errno.EPERM, errno.EROFS}
_TRANSIENT = {errno.ETIMEDOUT, errno.EAGAIN, errno.ESTALE, errno.ECONNRESET}
"""Errors of network file systems (NFS, FUSE) that a retry may get past."""


class LocalWriter(WriterBase):
    """Writes into a private temporary file beside the name (``O_EXCL``, 0600),
    fsyncs it, then publishes it: ``rename`` (replace) or, with ``if_absent``,
    ``link`` (which fails if the name exists: atomic, never overwrites) and
    ``unlink`` of the temporary name; then fsyncs the folder."""

    def __init__(self, storage: LocalStorage, name: str, if_absent: bool) -> None:
        super().__init__(storage.root, name)
        self._storage = storage
        self._if_absent = if_absent
        *folders, self._leaf = name.split("/")
        self._tmp = TMP_PREFIX + secrets.token_hex(8)
        self._size = 0
        self._dir_fd: int | None = None
        self._fd: int | None = None
        try:
            self._dir_fd = storage._open_folder(folders, name, create=True)
            self._fd = create_private(self._tmp, dir_fd=self._dir_fd)
            self._writeback = Writeback(self._fd)
        except OSError as exc:
            self._abort()
            raise storage._error(exc, "write", name) from exc
        except BaseException:
            self._abort()
            raise

    def _write(self, data: ReadableBuffer) -> int:
        assert self._fd is not None
        view = memoryview(data).cast("B")
        total = len(view)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise self._storage._error(exc, "write", self.name) from exc
        self._writeback.wrote(total)
        self._size += total
        return total

    def _commit(self) -> ObjectInfo:
        assert self._fd is not None and self._dir_fd is not None
        tmp, leaf, dir_fd = self._tmp, self._leaf, self._dir_fd
        try:
            os.fsync(self._fd)
            mtime = os.fstat(self._fd).st_mtime
            os.close(self._fd)
            self._fd = None
            if self._if_absent:
                try:
                    os.link(tmp, leaf, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                except FileExistsError:
                    raise storage_error(
                        AlreadyExistsError, self.where, "create", self.name, "already exists"
                    ) from None
                except OSError as exc:
                    if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                        raise storage_error(
                            PermanentStorageError, self.where, "create", self.name,
                            f"no hard links here, needed for an atomic create ({exc.strerror})",
                        ) from exc
                    raise
                try:  # published: a temporary name left behind is cleanup's business
                    os.unlink(tmp, dir_fd=dir_fd)
                except OSError as exc:
                    log.warning("storage %s: create %s: removing %s: %s", self.where, self.name, tmp, exc)
            else:
                os.replace(tmp, leaf, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        except OSError as exc:
            raise self._storage._error(exc, "write", self.name) from exc
        os.close(dir_fd)
        self._dir_fd = None
        return ObjectInfo(self.name, self._size, mtime)

    def _abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._dir_fd is not None:
            try:
                os.unlink(self._tmp, dir_fd=self._dir_fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("storage %s: abort %s: removing %s: %s", self.where, self.name, self._tmp, exc)
            with contextlib.suppress(OSError):
                os.close(self._dir_fd)
            self._dir_fd = None


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
    sync_folder(parent)


def _lstat_or_none(name: str, dir_fd: int) -> os.stat_result | None:
    """``name`` in ``dir_fd`` stat'ed (not followed), or None if it is gone: a listing
    runs while other writers rename and remove their files, and must not fail for it."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _raise_unless_gone(exc: OSError) -> None:
    """fwalk's error handler: a sub-folder removed while walking is skipped, not fatal."""
    if not isinstance(exc, FileNotFoundError):
        raise exc
