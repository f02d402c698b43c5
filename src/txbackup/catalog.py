"""The catalog: an SQLite index of backup sets, rebuildable from storage.

Storage is the truth: a set exists when its manifest does. The catalog adds
the sets that are running or failed, and makes listing fast. A set becomes
COMPLETE only through ``complete()``, called after its manifest is written;
a process killed mid-backup leaves a RUNNING row that never reads complete
(``begin`` records who runs it, so ``txbackup cleanup`` can tell it is gone).

The file holds backup history and is created 0600 (with its -wal and -shm
files) whatever the umask. It is read as untrusted input: a file that is not
a catalog is one error line suggesting ``txbackup list --rebuild`` (which
moves it aside and rebuilds from storage); a malformed row is skipped with a
warning in ``problems``.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sqlite3
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from txbackup.clock import iso_ms, utc_now
from txbackup.engine.manifest import (
    Manifest,
    check_set_id,
    list_set_ids,
    manifest_path,
    read_manifest,
    set_prefix,
)
from txbackup.errors import StorageError, TxbackupError
from txbackup.repository.config import is_repository_id
from txbackup.repository.crypto import KeyRequired, Keyring
from txbackup.storage.base import Storage

RUNNING = "running"
FAILED = "failed"
COMPLETE = "complete"
STATUSES = (RUNNING, FAILED, COMPLETE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sets (
    set_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    targets_json TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    manifest_path TEXT,
    restore_point TEXT
)"""
_COLUMNS = "set_id, status, created_at, finished_at, targets_json, error, manifest_path, restore_point"
# added later: who runs a RUNNING set (JSON: owner, storage, lock id); a warning on a complete set;
# the id of the repository the set belongs to
_ADDED_COLUMNS = {"run_json": "TEXT", "warning": "TEXT", "repository_id": "TEXT"}
_ALL_COLUMNS = _COLUMNS + ", " + ", ".join(_ADDED_COLUMNS)
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


class CatalogCorrupt(StorageError):
    """The catalog file is not a txbackup catalog (garbage, or a damaged database)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"catalog {path}: {reason}; move it aside and rebuild it from storage with "
            "'txbackup list --rebuild'"
        )
        self.path = path


@dataclass(frozen=True)
class SetRow:
    """One backup set as the catalog knows it."""

    set_id: str
    status: str
    created_at: str
    finished_at: str | None
    targets: list[str]
    error: str | None
    manifest_path: str | None
    restore_point: str | None
    run: dict[str, Any] | None = None
    """Who makes (made) the set: ``{"owner": {...}, "storage": ..., "lock_id": ...}``."""
    warning: str | None = None
    """A complete set's caveat (e.g. a pause window some endpoint could not confirm)."""
    repository_id: str | None = None
    """The repository the set belongs to (None: a storage without repository config)."""


class Catalog:
    """The index file at ``path`` (created with its folder if missing).

    ``problems`` collects one line per malformed row skipped by ``list()``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: builtins.list[str] = []
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"catalog {path}: {exc.strerror}") from exc
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(sets)")}
            missing = [c.strip() for c in _COLUMNS.split(",") if c.strip() not in columns]
            if missing:
                raise CatalogCorrupt(path, f"not a txbackup catalog (table sets has no {missing[0]})")
            for column, kind in _ADDED_COLUMNS.items():
                if column not in columns:
                    try:
                        db.execute(f"ALTER TABLE sets ADD COLUMN {column} {kind}")
                    except sqlite3.OperationalError as exc:  # another process added it meanwhile
                        if "duplicate column" not in str(exc):
                            raise

    def begin(
        self,
        set_id: str,
        created_at: datetime | str,
        targets: Sequence[str],
        run: Mapping[str, Any] | None = None,
        repository_id: str | None = None,
    ) -> None:
        """Record a set being made (RUNNING), by whom (``run``), in which repository."""
        created = created_at if isinstance(created_at, str) else iso_ms(created_at)
        run_json = None if run is None else json.dumps(run)
        with self._db() as db:
            db.execute(
                "INSERT INTO sets (set_id, status, created_at, targets_json, run_json, repository_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (set_id, RUNNING, created, json.dumps(list(targets)), run_json, repository_id),
            )

    def warn(self, set_id: str, warning: str) -> None:
        """Attach a one-line caveat to a set (shown by ``list``)."""
        with self._db() as db:
            db.execute("UPDATE sets SET warning = ? WHERE set_id = ?", (warning, set_id))

    def fail(self, set_id: str, error: str) -> None:
        """Mark a set FAILED with its one-line error (a complete set stays complete)."""
        with self._db() as db:
            db.execute(
                "UPDATE sets SET status = ?, error = ? WHERE set_id = ? AND status != ?",
                (FAILED, error, set_id, COMPLETE),
            )

    def complete(self, manifest: Manifest) -> None:
        """Mark a set COMPLETE; call only once its manifest is in storage."""
        with self._db() as db:
            _upsert_complete(db, manifest)

    def list(self) -> builtins.list[SetRow]:
        """Every well-formed set, oldest first; a malformed row is skipped (see ``problems``)."""
        with self._db() as db:
            raw = db.execute(f"SELECT {_ALL_COLUMNS} FROM sets ORDER BY created_at, set_id").fetchall()
        rows = []
        for r in raw:
            try:
                rows.append(_row(r))
            except ValueError as exc:
                self.problems.append(f"catalog {self.path}: skipped set {_shown(r[0])}: {exc}")
        return rows

    def get(self, set_id: str) -> SetRow | None:
        with self._db() as db:
            row = db.execute(f"SELECT {_ALL_COLUMNS} FROM sets WHERE set_id = ?", (set_id,)).fetchone()
        if row is None:
            return None
        try:
            return _row(row)
        except ValueError as exc:
            raise StorageError(f"catalog {self.path}: set {_shown(set_id)}: malformed row: {exc}") from None

    def delete(self, set_id: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM sets WHERE set_id = ?", (set_id,))

    def rebuild(self, storage: Storage, keyring: Keyring | None = None) -> builtins.list[str]:
        """Index every manifest in storage as COMPLETE and drop COMPLETE rows
        whose manifest is gone; RUNNING and FAILED rows are kept. Returns one
        line per manifest that could not be read (those sets are skipped). An
        encrypted repository's manifests need its unlocked ``keyring``."""
        set_ids = list_set_ids(storage)
        manifests, problems = [], []
        for set_id in set_ids:
            try:
                manifests.append(read_manifest(storage, set_id, keyring=keyring))
            except KeyRequired:
                raise  # not one bad set: none can be read without the key
            except TxbackupError as exc:
                problems.append(str(exc))
        with self._db() as db:
            for manifest in manifests:
                _upsert_complete(db, manifest)
            complete = db.execute("SELECT set_id FROM sets WHERE status = ?", (COMPLETE,))
            gone = [(row[0],) for row in complete if row[0] not in set_ids]
            db.executemany("DELETE FROM sets WHERE set_id = ?", gone)
        return problems

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)


@contextmanager
def transaction(path: str) -> Iterator[sqlite3.Connection]:
    """A connection to the catalog file in a transaction (committed on success), then closed."""
    _private_file(path)
    try:
        conn = sqlite3.connect(path, timeout=30)
    except sqlite3.Error as exc:
        raise _error(path, exc) from exc
    try:
        with conn:
            yield conn
    except sqlite3.Error as exc:
        raise _error(path, exc) from exc
    finally:
        conn.close()


def _error(path: str, exc: sqlite3.Error) -> StorageError:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return CatalogCorrupt(path, str(exc))
    return StorageError(f"catalog {path}: {exc}")


def _private_file(path: str) -> None:
    """Create the catalog 0600 whatever the umask (SQLite gives its -wal and -shm the
    same mode); tighten an older, more open catalog of ours to 0600."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        for name in (path, path + "-wal", path + "-shm"):
            with contextlib.suppress(OSError):
                st = os.stat(name)
                if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
                    os.chmod(name, stat.S_IMODE(st.st_mode) & 0o700)
        return
    except OSError as exc:
        raise StorageError(f"catalog {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def move_aside(path: str) -> str:
    """Rename a corrupt catalog (and its -wal/-shm) to ``PATH.corrupt-<UTC time>``; return the new name."""
    aside = f"{path}.corrupt-{utc_now():%Y%m%dT%H%M%SZ}"
    try:
        os.rename(path, aside)
    except OSError as exc:
        raise StorageError(f"catalog {path}: cannot move it aside: {exc.strerror}") from exc
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.rename(path + suffix, aside + suffix)
    return aside


def delete_set(storage: Storage, catalog: Catalog, set_id: str) -> None:
    """Delete a set: its manifest first (so a crash midway leaves no set that
    looks complete), then its artifacts, then its catalog row."""
    storage.remove(manifest_path(set_id))
    storage.remove_prefix(set_prefix(set_id))
    catalog.delete(set_id)


def _upsert_complete(db: sqlite3.Connection, manifest: Manifest) -> None:
    db.execute(
        "INSERT INTO sets (set_id, status, created_at, finished_at, targets_json, error,"
        " manifest_path, restore_point, repository_id) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)"
        " ON CONFLICT (set_id) DO UPDATE SET status = excluded.status,"
        " created_at = excluded.created_at, finished_at = excluded.finished_at,"
        " targets_json = excluded.targets_json, error = NULL,"
        " manifest_path = excluded.manifest_path, restore_point = excluded.restore_point,"
        " repository_id = excluded.repository_id",
        (
            manifest.set_id,
            COMPLETE,
            manifest.created_at,
            manifest.finished_at,
            json.dumps([t.name for t in manifest.targets]),
            manifest_path(manifest.set_id),
            manifest.restore_point,
            manifest.repository_id,
        ),
    )


def _row(row: Sequence[object]) -> SetRow:
    """A row read from the file (untrusted: any cell may hold any type); ValueError if malformed."""
    (set_id, status, created_at, finished_at, targets_json, error, path, restore_point, run_json,
     warning, repository_id) = row  # fmt: skip
    if not isinstance(set_id, str):
        raise ValueError("set id is not text")
    try:
        check_set_id(set_id)
    except TxbackupError as exc:
        raise ValueError(str(exc)) from None
    if status not in STATUSES:
        raise ValueError(f"unknown status {_shown(status)}")
    if not isinstance(created_at, str):
        raise ValueError("created_at is not text")
    for name, value in (("finished_at", finished_at), ("error", error), ("manifest_path", path),
                        ("restore_point", restore_point), ("warning", warning)):  # fmt: skip
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} is not text")
    if repository_id is not None and not is_repository_id(repository_id):
        raise ValueError(f"repository_id {_shown(repository_id)} is not a repository id")
    try:
        targets = json.loads(targets_json) if isinstance(targets_json, str | bytes) else None
    except (ValueError, RecursionError):
        targets = None
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError("targets_json is not a JSON list of target names")
    run: Any = None
    if isinstance(run_json, str):
        with contextlib.suppress(ValueError, RecursionError):
            run = json.loads(run_json)
    return SetRow(
        set_id, str(status), created_at, finished_at, targets, error, path, restore_point,  # type: ignore[arg-type]
        run if isinstance(run, dict) else None, warning, repository_id,  # type: ignore[arg-type]
    )  # fmt: skip


def _shown(value: object) -> str:
    """A cell value for a one-line message: repr, bounded."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
