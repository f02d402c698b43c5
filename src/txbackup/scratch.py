"""Local temporary copies in one private folder per run, never left behind.

Targets copy plaintext database data to local disk on their way to storage (a
SQLite page copy, a ``pg_dump -Fd`` folder). Each such copy lives in a folder
made by ``private_dir()`` inside this run's folder::

    $TMPDIR/txbackup-<uid>/run-<pid>-<start>-<machine>/

Both levels are 0700 and checked to be ours (not a symlink, not another
user's), so nobody else can read the copies or plant files. The run folder is
removed when the copy is done and, whatever happened, when the process exits
(normally, on an error, on SIGINT/SIGTERM). A process killed outright cannot
clean up: its folder names its pid and start time, so ``remove_dead_runs()``
(``txbackup cleanup``, and the start of every backup) can tell it is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator

from txbackup.errors import StorageError
from txbackup.owner import machine_tag, process_gone, process_start

_RUN = re.compile(r"^run-(?P<pid>\d{1,10})-(?P<started>\d{1,20})-(?P<machine>[0-9a-f]{8}|x)$")
_lock = threading.Lock()
_run: tuple[int, str] | None = None  # (pid that made it, path)


def root() -> str:
    """This user's folder for txbackup's temporary files."""
    return os.path.join(tempfile.gettempdir(), f"txbackup-{os.getuid()}")


def _private_folder(path: str) -> str:
    """Create ``path`` 0700, or check an existing one is a folder of ours that nobody else can read."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StorageError(f"temporary folder {path}: {exc.strerror}") from None
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise StorageError(f"temporary folder {path}: not a folder (a symlink?); remove it or set TMPDIR")
        if st.st_uid != os.getuid():
            raise StorageError(f"temporary folder {path}: owned by uid {st.st_uid}, not us; set TMPDIR")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise StorageError(f"temporary folder {path}: {exc.strerror}") from None
    return path


def run_name(pid: int, started: int | None) -> str:
    return f"run-{pid}-{started or 0}-{machine_tag()}"


def run_folder() -> str:
    """This process's private folder (made on first use, removed at exit)."""
    global _run
    with _lock:
        if _run is not None and _run[0] == os.getpid():
            return _run[1]
        pid = os.getpid()
        path = os.path.join(_private_folder(root()), run_name(pid, process_start(pid)))
        _private_folder(path)
        _run = (pid, path)
        atexit.register(remove_run_folder)
        return path


def remove_run_folder() -> None:
    """Remove this process's private folder and everything in it (idempotent)."""
    global _run
    with _lock:
        run, _run = _run, None
    if run is not None and run[0] == os.getpid():  # a forked child never removes its parent's
        shutil.rmtree(run[1], ignore_errors=True)


@contextlib.contextmanager
def private_dir(prefix: str = "tmp-") -> Iterator[str]:
    """A fresh private folder inside this run's folder, removed after the ``with`` body."""
    path = tempfile.mkdtemp(prefix=prefix, dir=run_folder())
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def dead_runs() -> list[tuple[str, str]]:
    """(folder, reason) for each run folder of this machine whose process is gone."""
    top = root()
    try:
        names = os.listdir(top)
        st = os.lstat(top)
    except OSError:
        return []
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return []
    found = []
    for name in sorted(names):
        match = _RUN.match(name)
        if match is None or match["machine"] != machine_tag():
            continue  # not ours to judge: another machine or pid namespace sharing this folder
        pid, started = int(match["pid"]), int(match["started"]) or None
        if pid == os.getpid():
            continue
        reason = process_gone(pid, started)
        if reason is not None:
            found.append((os.path.join(top, name), reason))
    return found


def remove_dead_runs() -> list[tuple[str, str]]:
    """Remove the folders of runs whose process is gone; returns (folder, reason) of each."""
    removed = []
    for path, reason in dead_runs():
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path)
                removed.append((path, reason))
    return removed
