"""The catalog: an SQLite index of backup sets, rebuildable from storage.

Storage is the truth: a set exists when its manifest does. The catalog adds
the sets that are running or failed, and makes listing fast. A set becomes
COMPLETE only through ``complete()``, called after its manifest is written;
a process killed mid-backup leaves a RUNNING row that never reads complete.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime

from txbackup.clock import iso_ms
from txbackup.engine.manifest import (
    Manifest,
    list_set_ids,
    manifest_path,
    read_manifest,
    set_prefix,
)
from txbackup.errors import StorageError, TxbackupError
from txbackup.storage.base import Storage

RUNNING = "running"
FAILED = "failed"
COMPLETE = "complete"

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


class Catalog:
    """The index file at ``path`` (created with its folder if missing)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        except OSError as exc:
            raise StorageError(f"catalog {path}: {exc.strerror}") from exc
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def begin(self, set_id: str, created_at: datetime | str, targets: Sequence[str]) -> None:
        """Record a set being made (RUNNING)."""
        created = created_at if isinstance(created_at, str) else iso_ms(created_at)
        with self._db() as db:
            db.execute(
                "INSERT INTO sets (set_id, status, created_at, targets_json) VALUES (?, ?, ?, ?)",
                (set_id, RUNNING, created, json.dumps(list(targets))),
            )

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
        """Every set, oldest first."""
        with self._db() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM sets ORDER BY created_at, set_id")
            return [_row(r) for r in rows]

    def get(self, set_id: str) -> SetRow | None:
        with self._db() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM sets WHERE set_id = ?", (set_id,)).fetchone()
            return None if row is None else _row(row)

    def delete(self, set_id: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM sets WHERE set_id = ?", (set_id,))

    def rebuild(self, storage: Storage) -> builtins.list[str]:
        """Index every manifest in storage as COMPLETE and drop COMPLETE rows
        whose manifest is gone; RUNNING and FAILED rows are kept. Returns one
        line per manifest that could not be read (those sets are skipped)."""
        set_ids = list_set_ids(storage)
        manifests, problems = [], []
        for set_id in set_ids:
            try:
                manifests.append(read_manifest(storage, set_id))
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
    try:
        conn = sqlite3.connect(path, timeout=30)
    except sqlite3.Error as exc:
        raise StorageError(f"catalog {path}: {exc}") from exc
    try:
        with conn:
            yield conn
    except sqlite3.Error as exc:
        raise StorageError(f"catalog {path}: {exc}") from exc
    finally:
        conn.close()


def delete_set(storage: Storage, catalog: Catalog, set_id: str) -> None:
    """Delete a set: its manifest first (so a crash midway leaves no set that
    looks complete), then its artifacts, then its catalog row."""
    storage.remove(manifest_path(set_id))
    storage.remove_prefix(set_prefix(set_id))
    catalog.delete(set_id)


def _upsert_complete(db: sqlite3.Connection, manifest: Manifest) -> None:
    db.execute(
        "INSERT INTO sets (set_id, status, created_at, finished_at, targets_json, error,"
        " manifest_path, restore_point) VALUES (?, ?, ?, ?, ?, NULL, ?, ?)"
        " ON CONFLICT (set_id) DO UPDATE SET status = excluded.status,"
        " created_at = excluded.created_at, finished_at = excluded.finished_at,"
        " targets_json = excluded.targets_json, error = NULL,"
        " manifest_path = excluded.manifest_path, restore_point = excluded.restore_point",
        (
            manifest.set_id,
            COMPLETE,
            manifest.created_at,
            manifest.finished_at,
            json.dumps([t.name for t in manifest.targets]),
            manifest_path(manifest.set_id),
            manifest.restore_point,
        ),
    )


def _row(row: tuple[str, str, str, str | None, str, str | None, str | None, str | None]) -> SetRow:
    set_id, status, created_at, finished_at, targets_json, error, path, restore_point = row
    return SetRow(
        set_id, status, created_at, finished_at, json.loads(targets_json), error, path, restore_point
    )
