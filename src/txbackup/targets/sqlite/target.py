"""SQLite database files (kind ``sqlite``).

Settings::

    [[targets]]
    name = "cache"
    kind = "sqlite"
    path = "/var/lib/app/cache.db"          # and/or
    paths = ["/var/lib/app/a.db", "/var/lib/app/b.db"]

**WAL mode is required.** The snapshot is an open read transaction on a
connection of our own, held from capture (inside the pause) until the export
(after the unpause) has copied the file. In WAL mode a reader never blocks the
application's writers, and it keeps seeing the database exactly as it was when
its transaction began. In rollback-journal mode the same read transaction would
hold a SHARED lock that blocks every writer for the whole export, so such a
database is refused at preflight; switch it once with
``sqlite3 FILE 'PRAGMA journal_mode=WAL'`` (the mode is persistent). We never
change an application's journal mode ourselves.

Export copies the database with SQLite's online-backup API *through the held
connection*: when the source connection already has a read transaction open,
``sqlite3_backup_step`` reuses it instead of starting a new one, so the copy is
the captured snapshot, not the current state (a test checks that rows written
after capture are absent). The copy goes to a temporary file (``TMPDIR``) and
becomes the artifact ``<file stem>.sqlite``: a plain SQLite database, checked
with ``PRAGMA quick_check`` before it is stored (a damaged database fails the
set, naming the file: its backup would restore the damage) and recorded as
checked in the set's position, so that a restore, whose file is verified
against the artifact's SHA-256 as it is extracted, does not check it again
(files of sets that do not record it are checked at restore). While the
snapshot is held no checkpoint can move past it, so the application's WAL file
grows until the export ends (checkpoints that must wait for readers, such as
``wal_checkpoint(TRUNCATE)``, wait for it too).

Restoring by hand: decompress the artifact and copy it into place while the
application is stopped, removing any stale ``-wal``/``-shm`` files of the old
database first.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from txbackup.errors import TargetError, UsageError
from txbackup.safepaths import copy_mode, make_private_dirs, printable, shown, sync_folder
from txbackup.scratch import private_dir
from txbackup.settings import COMMON_KEYS, Setting, Table
from txbackup.targets.base import ArtifactReader, ArtifactWriter, Recorded, Scope, refuse_unknown_destination

KIND = "sqlite"
SUFFIX = ".sqlite"
_SIDE_FILES = ("-wal", "-shm", "-journal")
CHECKED = "quick_check"
"""What a position's file records as ``checked`` once the backup checked its copy."""


def _artifact(path: str) -> str:
    return Path(path).stem + SUFFIX


class SqliteCapture:
    """Read transactions held open on every file of the target."""

    def __init__(self, target: SqliteTarget) -> None:
        self.target = target
        self.held: dict[str, sqlite3.Connection] = {}
        self._position: dict[str, Any] = {}

    def _open(self) -> None:
        for path in self.target.paths:
            conn = self.target.connect(path)
            self.held[path] = conn
            self.target.check_wal(conn, path)
            try:
                conn.execute("BEGIN")
                # the first read fixes the WAL snapshot of this transaction
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                schema = conn.execute("PRAGMA schema_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise self.target.error(f"{path}: cannot start a read transaction: {exc}") from None
            self._position[_artifact(path)] = {
                "path": path,
                "page_count": pages,
                "schema_version": schema,
            }

    def position(self) -> Mapping[str, Any]:
        return {"files": dict(self._position)}

    def export(self, out: ArtifactWriter) -> None:
        for path, conn in self.held.items():
            with private_dir("sqlite-") as tmp:
                copy = os.path.join(tmp, _artifact(path))
                dest = sqlite3.connect(copy)
                try:
                    # one step (pages=-1) inside the transaction opened at capture
                    conn.backup(dest, pages=-1)
                except sqlite3.Error as exc:
                    raise self.target.error(f"{path}: copy failed: {exc}") from None
                finally:
                    dest.close()
                verdict = quick_check(copy)
                if verdict != "ok":
                    raise self.target.error(
                        f"{path} is damaged (quick_check of the captured copy: {verdict}): "
                        "its backup would restore the damage; repair it (sqlite3 .recover)"
                    )
                out.add_file(_artifact(path), copy)
                # a restore of this file, verified against its SHA-256, need not check it again
                self._position[_artifact(path)]["checked"] = CHECKED

    def release(self) -> None:
        held, self.held = self.held, {}
        for conn in held.values():
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            conn.close()


class SqliteTarget:
    kind = KIND
    destination_is_path = True
    """``--to NAME=...`` is a path: made absolute where it is given, so that a resumed
    restore writes to the same file whatever its working directory."""

    def __init__(self, name: str, paths: list[str]) -> None:
        self.name = name
        self.paths = paths
        where = f" {paths[0]}" if len(paths) == 1 else ""
        self.label = f'target "{name}" (sqlite{where})'

    def error(self, message: str) -> TargetError:
        return TargetError(f"{self.label}: {message}")

    def describe(self) -> Mapping[str, Any]:
        return {"kind": KIND, "paths": list(self.paths)}

    def connect(self, path: str) -> sqlite3.Connection:
        """A connection to an existing database file (never creates one)."""
        if not os.path.isfile(path):
            raise self.error(f"{path}: no such file")
        uri = Path(path).absolute().as_uri() + "?mode=rw"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=10, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as exc:
            raise self.error(f"{path}: cannot open: {exc}") from None
        return conn

    def check_wal(self, conn: sqlite3.Connection, path: str) -> None:
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if mode != "wal":
            raise self.error(
                f"{path} uses journal_mode={mode}; txbackup needs WAL mode (a snapshot held in "
                f"rollback-journal mode blocks every writer during the export): switch once with "
                f"sqlite3 {path} 'PRAGMA journal_mode=WAL'"
            )

    def preflight(self) -> None:
        for path in self.paths:
            conn = self.connect(path)
            try:
                self.check_wal(conn, path)
            finally:
                conn.close()

    def capture(self, set_id: str) -> SqliteCapture:
        capture = SqliteCapture(self)
        try:
            capture._open()
        except BaseException:
            capture.release()
            raise
        return capture

    def _destinations(self, dest: Mapping[str, str] | None) -> dict[str, str]:
        """artifact name -> destination file.

        ``dest`` may give ``path`` (the file, for a single-file target), ``dir``
        (a folder receiving every file under its own name), or ``dsn`` (what
        ``--to NAME=...`` gives: a path for a single-file target, else a folder).
        """
        ours = {_artifact(p): p for p in self.paths}
        if not dest:
            return ours
        refuse_unknown_destination(dest, ("dsn", "path", "dir"), self.label)
        path, folder = dest.get("path"), dest.get("dir")
        if dest.get("dsn"):
            if len(self.paths) == 1:
                path = path or dest["dsn"]
            else:
                folder = folder or dest["dsn"]
        if path:
            if len(self.paths) != 1:
                raise UsageError(
                    f"{self.label}: restore to a single path needs a single-file target; "
                    "give a folder instead"
                )
            return {_artifact(self.paths[0]): os.path.abspath(path)}
        if folder:
            return {a: os.path.join(os.path.abspath(folder), Path(p).name) for a, p in ours.items()}
        return ours

    def placed(self, dest: Mapping[str, str] | None) -> SqliteTarget:
        """This target as a restore into ``dest`` leaves it: the destination files (a drill
        reads, checks and removes the copy through it)."""
        files = self._destinations(dest)
        return SqliteTarget(self.name, [files[_artifact(p)] for p in self.paths])

    def places(self) -> set[tuple[str, ...]]:
        """Where this target's data lives: a drill place equal to one of them is refused."""
        return {(KIND, os.path.realpath(p)) for p in self.paths}

    def check_record(self, record: Recorded) -> None:
        """Every file the set names (its artifacts, the position's files, the
        description's paths) is one of the configured paths, by its artifact name
        (``<file stem>.sqlite``): a restore writes only the configured paths (or, with
        ``--to``, the destination they are renamed to), never a path the set records."""
        scope = Scope(self.label, record)
        covered = {_artifact(p) for p in self.paths}
        for name in record.names:
            scope.covered(name, covered, f"artifact {shown(name, 80)}", "file")
        where = "the position's files"
        files = scope.mapping(record.position.get("files"), where, required=False)
        scope.all_covered(files, covered, where, "file")
        described = scope.description(KIND)
        if described is not None:
            for path in scope.sequence(described.get("paths"), "the description's paths"):
                where = f"the description's path {shown(path, 80)}"
                scope.covered(_artifact(scope.text(path, where)), covered, where, "file")

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        self.check_record(Recorded.of_reader(src))  # before anything is written
        targets = self._destinations(dest)
        names = src.names()
        unknown = [n for n in names if n not in targets]
        if unknown:
            raise self.error(f"artifact {shown(unknown[0])} does not belong to any configured path")
        # files already restored by an interrupted run of this job are skipped
        todo = [n for n in names if not src.journal.is_done(f"file/{n}")]
        # check every destination before touching any
        for name in todo:
            path = targets[name]
            if not force and _non_empty(path):
                raise self.error(
                    f"destination {path} exists and is not empty; use --force to overwrite it"
                )
        for name in todo:
            self._restore_one(src, name, targets[name])
            src.journal.mark_done(f"file/{name}", {"path": targets[name]})

    def _restore_one(self, src: ArtifactReader, name: str, path: str) -> None:
        """Restore one file: a new file is private (0600, new folders 0700); a file
        restored in place keeps the mode (and owner, when allowed) of the one it replaces."""
        folder = os.path.dirname(os.path.abspath(path))
        try:
            make_private_dirs(folder)
            fd, partial = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".restore", dir=folder)
        except OSError as exc:  # a destination under a file, a read-only folder: the user's input
            raise self.error(f"destination {path}: {exc.strerror or exc}") from None
        os.close(fd)
        try:
            # complete only once its size and SHA-256 matched, and on disk
            src.extract(name, partial, durable=True)
            verdict = "ok" if _checked_at_backup(src, name) else quick_check(partial)
            if verdict != "ok":
                raise self.error(f"artifact {name} is not a sound SQLite database: {verdict}")
            for side in _SIDE_FILES:
                # a stale WAL of the old database would be replayed onto the new one
                _remove(path + side)
            for side in _SIDE_FILES:
                _remove(partial + side)
            copy_mode(path, partial)
            try:
                os.replace(partial, path)
                sync_folder(folder)  # the rename too survives a crash, before the job says done
            except OSError as exc:  # e.g. a folder we may write to but not open (mode 0300)
                raise self.error(f"destination {path}: {exc.strerror or exc}") from None
        finally:
            _remove(partial)
            for side in _SIDE_FILES:
                _remove(partial + side)


def quick_check(path: str) -> str:
    """SQLite's ``PRAGMA quick_check`` of the file: "ok", or what is wrong, on one line
    (its messages name the file's own tables and columns: control characters escaped)."""
    check = sqlite3.connect(path)
    try:
        # the file may be untrusted: its schema's functions are not run while checking it
        check.execute("PRAGMA trusted_schema = OFF")
        verdict = str(check.execute("PRAGMA quick_check").fetchone()[0])
    except sqlite3.Error as exc:
        verdict = str(exc)
    finally:
        check.close()
    text = printable("; ".join(verdict.splitlines()))
    return text if len(text) <= 200 else text[:197] + "..."


def _checked_at_backup(src: ArtifactReader, name: str) -> bool:
    """Whether the backup checked the file it stored as ``name`` (older sets do not say
    so: their files are checked here): the extracted file, verified against its SHA-256,
    is that file."""
    files = src.position.get("files")
    entry = files.get(name) if isinstance(files, Mapping) else None
    return isinstance(entry, Mapping) and entry.get("checked") == CHECKED


def _non_empty(path: str) -> bool:
    return any(os.path.exists(p) and os.path.getsize(p) > 0 for p in (path, path + "-wal"))


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


SETTINGS = Table(
    "",
    (
        Setting("path", "path", help="the database file (WAL mode)"),
        Setting("paths", "names", help="several database files, backed up together"),
    ),
)
"""The settings of a ``[[targets]]`` table of kind sqlite."""


def from_config(name: str, conf: Mapping[str, Any]) -> SqliteTarget:
    culprit = f'target "{name}"'
    read = SETTINGS.read(conf, where=culprit, common=COMMON_KEYS)
    paths = [read["path"]] if read["path"] else []
    paths += [os.path.abspath(p) for p in read["paths"]]
    if not paths:
        raise UsageError(f"{culprit}: give the database file as path (or paths)")
    if len(set(paths)) != len(paths):
        raise UsageError(f"{culprit}: a database file is listed twice")
    artifacts = [_artifact(p) for p in paths]
    if len(set(artifacts)) != len(artifacts):
        raise UsageError(f"{culprit}: database files must have distinct names (before the suffix)")
    return SqliteTarget(name, paths)
