"""Restore a PostgreSQL directory-format archive (``pg_restore -Fd -j N``) straight from
the repository: each table's data file is a named pipe that the artifact streams into
the moment pg_restore opens it, so there is no extraction to a temporary folder first.

Extracting first cost a full write and read of the data on local disk, and the
decompression ran alone before pg_restore started; here decompressing, verifying and
loading overlap, one feeding thread per data file pg_restore has open (``jobs`` at once).

What is a pipe: only table data files (``<dump id>.dat``), which pg_restore reads once,
from start to end, in the worker that loads the table. Everything else (``toc.dat``,
large objects' ``blob_*.dat`` and ``blobs*.toc``) is small and extracted as a regular
file (verified before it appears, ``ArtifactReader.extract``).

A data file is plain COPY text with no end marker: a pipe closed early would load part
of a table as if it were all of it. So an artifact that fails verification
(``IntegrityError``: the codec holds its last bytes back until it verified them) kills
pg_restore's process group *before* its pipe is closed; the table's COPY dies with its
connection (rolled back). Tables loaded before stay: the restore job is failed and its
resume restores the database again with ``--clean --if-exists``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from txbackup.errors import TargetError
from txbackup.procs import start, widen_pipe
from txbackup.safepaths import join_inside, shown
from txbackup.scratch import private_dir
from txbackup.storage.base import CHUNK
from txbackup.targets.base import ArtifactReader, iter_chunks

if TYPE_CHECKING:
    from txbackup.procs import _Tool

DATA_FILE = re.compile(r"[0-9]{1,10}\.dat")
"""A table's data in an uncompressed (``pg_dump -Z0``) directory archive."""
POLL_S = 0.005
"""How often the pipes nobody reads yet are tried (a few system calls each time)."""


def restore_directory(
    src: ArtifactReader, names: Sequence[str], argv: Sequence[str], *, culprit: str, env: Mapping[str, str]
) -> None:
    """Run ``argv`` + [folder] (``pg_restore ... -Fd -j N``) on a private folder holding
    the artifacts ``<db>.dir/<file>`` (see :func:`stage_directory`), feeding its pipes."""
    with private_dir("pg-") as folder:
        pipes = stage_directory(src, names, folder, culprit)
        _Feeding(src, pipes, culprit).run([*argv, folder], env)


def stage_directory(src: ArtifactReader, names: Sequence[str], folder: str, culprit: str) -> dict[str, str]:
    """Lay the artifacts ``<db>.dir/<file>`` out in ``folder`` (made private, 0700) as
    ``folder/<file>``: data files as pipes (0600; returned, path -> artifact name), the
    rest extracted (0600). The names come from the manifest (untrusted): each file must
    be a plain file name that stays inside ``folder``."""
    os.chmod(folder, 0o700)
    pipes: dict[str, str] = {}
    for name in names:
        head, _, rest = name.partition("/")
        if not head.endswith(".dir") or "/" in rest:
            raise TargetError(f"{culprit}: unexpected artifact {shown(name)} (not <database>.dir/<file>)")
        path = join_inside(folder, rest, what=f"{culprit}: artifact {shown(name)}: file")
        if DATA_FILE.fullmatch(rest):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a name given twice: the last one wins, as for extract
            os.mkfifo(path, 0o600)
            pipes[path] = name
        else:
            src.extract(name, path)
    return pipes


class _Feeding:
    def __init__(self, src: ArtifactReader, pipes: Mapping[str, str], culprit: str) -> None:
        self._src = src
        self._pending = dict(pipes)
        self._culprit = culprit
        self._failure: BaseException | None = None
        self._stopped = False  # we killed pg_restore: its broken pipes say nothing of the data
        self._lock = threading.Lock()

    def run(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        tool = start(argv, culprit=self._culprit, env=env)
        feeders: list[threading.Thread] = []
        try:
            while tool.proc.poll() is None:
                for path in list(self._pending):
                    fd = _writer(path, self._culprit)
                    if fd is None:
                        continue
                    name = self._pending.pop(path)
                    feeder = threading.Thread(
                        target=self._feed, args=(name, fd, tool), name=f"pg-feed-{name}", daemon=True
                    )
                    feeder.start()
                    feeders.append(feeder)
                if not self._pending:
                    tool.proc.wait()
                    break
                time.sleep(POLL_S)
        except BaseException:
            self._stopped = True
            tool.kill()
            raise
        finally:
            for feeder in feeders:
                feeder.join()
        if self._failure is not None:
            raise self._failure  # it killed pg_restore: that is not pg_restore's failure
        tool.finish()  # TargetError naming pg_restore's complaint
        # pg_restore needed none of these (no such table in its list): still verified, so
        # that a restore that ends well read every byte of the set
        for name in self._pending.values():
            with self._src.open(name) as stream:
                for _ in iter_chunks(stream, CHUNK):
                    pass

    def _feed(self, name: str, fd: int, tool: _Tool) -> None:
        try:
            with self._src.open(name) as stream:
                try:
                    for chunk in iter_chunks(stream, CHUNK):
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                except BrokenPipeError:
                    # pg_restore stopped reading: it failed, and its exit status says why,
                    # unless the rest of the artifact shows that it was fed bad data (not
                    # worth reading when we stopped it ourselves)
                    while not (self._stopped or self._failure) and stream.read(CHUNK):
                        pass
        except BaseException as exc:
            with self._lock:
                if self._failure is None:
                    self._failure = exc
            self._stopped = True
            tool.kill()  # before the pipe closes: see the module doc
        finally:
            os.close(fd)


def _writer(path: str, culprit: str) -> int | None:
    """The write end of the pipe ``path`` once pg_restore opened it (None before), blocking."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader yet
            return None
        raise TargetError(f"{culprit}: cannot open the pipe {path}: {exc.strerror}") from None
    os.set_blocking(fd, True)
    widen_pipe(fd)
    return fd
