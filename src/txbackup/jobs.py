"""Restore jobs whose progress survives a crash: ``txbackup restore --resume JOB``.

A restore run is a job in the catalog's SQLite file. Each target records the
steps it has completed in its ``Journal``; a resumed job skips them. Steps are
free-text names scoped to a target (``"restored"``, ``"orders/alias-backup"``)
and may carry a small JSON document (an ARN, a table name...). A step is
marked done only after it has taken effect, so every step must be idempotent:
a crash between acting and marking repeats the action on resume.

A job's parameters never hold a secret: ``create`` refuses one (destinations
name ``password_env``/``password_file``, never a password), and rows recorded
before that rule are shown redacted (:func:`txbackup.secrets.redact`).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from txbackup.catalog import transaction
from txbackup.clock import iso_ms, utc_now
from txbackup.errors import StorageError, UsageError
from txbackup.secrets import dsn_secret, redact

log = logging.getLogger("txbackup.jobs")

RUNNING = "running"
FAILED = "failed"
COMPLETE = "complete"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS restore_jobs (
    job_id TEXT PRIMARY KEY,
    set_id TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS restore_steps (
    job_id TEXT NOT NULL,
    target TEXT NOT NULL,
    step TEXT NOT NULL,
    data TEXT,
    done_at TEXT NOT NULL,
    PRIMARY KEY (job_id, target, step)
);
"""


class StepJournal(Protocol):
    """The completed steps of one target in one restore job."""

    def is_done(self, step: str) -> bool: ...

    def data(self, step: str) -> dict[str, Any] | None: ...

    def mark_done(self, step: str, data: Mapping[str, Any] | None = None) -> None: ...


class MemoryJournal:
    """A journal that lives as long as the process (restores run as a library)."""

    def __init__(self) -> None:
        self._steps: dict[str, dict[str, Any]] = {}

    def is_done(self, step: str) -> bool:
        return step in self._steps

    def data(self, step: str) -> dict[str, Any] | None:
        return self._steps.get(step)

    def mark_done(self, step: str, data: Mapping[str, Any] | None = None) -> None:
        self._steps[step] = dict(data or {})


def _now() -> str:
    return iso_ms(utc_now())


@dataclass(frozen=True)
class JobRow:
    job_id: str
    set_id: str
    params: dict[str, Any]
    status: str
    error: str | None
    created_at: str
    updated_at: str


class JobStore:
    """Restore jobs and their steps, in the catalog's SQLite file."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        except OSError as exc:
            raise StorageError(f"catalog {path}: {exc.strerror}") from None
        with self._db() as db:
            db.executescript(_SCHEMA)
        self._scrub()

    def _scrub(self) -> None:
        """Redact, in the file itself, the secrets that rows of older versions hold (a DSN
        with its password): overwritten in place, not left in free pages or the WAL."""
        with self._db() as db:
            rows = db.execute("SELECT job_id, params, error FROM restore_jobs").fetchall()
            dirty = []
            for job_id, params, error in rows:
                clean = (
                    params if not isinstance(params, str) or dsn_secret(params) is None
                    else json.dumps(_redacted(_loads(params)))
                )
                clean_error = redact(error) if isinstance(error, str) else error
                if (clean, clean_error) != (params, error):
                    dirty.append((clean, clean_error, job_id))
            if not dirty:
                return
            db.execute("PRAGMA secure_delete = ON")
            db.executemany("UPDATE restore_jobs SET params = ?, error = ? WHERE job_id = ?", dirty)
        with self._db() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)

    def create(self, set_id: str, params: Mapping[str, Any]) -> str:
        """Record a new running job; ``params`` must hold no secret (refused, naming where)."""
        for where, text in _strings(params):
            found = dsn_secret(text)
            if found is not None:
                raise UsageError(
                    f"restore parameter {where} holds {found}: secrets are never recorded; "
                    "give the password with password_env/password_file"
                )
        job_id = f"restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        now = _now()
        with self._db() as db:
            db.execute(
                "INSERT INTO restore_jobs VALUES (?, ?, ?, ?, NULL, ?, ?)",
                (job_id, set_id, json.dumps(dict(params)), RUNNING, now, now),
            )
        return job_id

    def get(self, job_id: str) -> JobRow:
        with self._db() as db:
            row = db.execute("SELECT * FROM restore_jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise UsageError(f"restore job {job_id}: no such job (see txbackup restore --jobs)")
        try:
            params = json.loads(row[2])
        except (TypeError, ValueError, RecursionError):
            params = None
        if not isinstance(params, dict) or not all(isinstance(c, str | None) for c in row):
            raise StorageError(f"restore job {job_id}: malformed row in the catalog {self.path}")
        error = None if row[4] is None else redact(row[4])
        return JobRow(row[0], row[1], _redacted(params), row[3], error, row[5], row[6])

    def list(self) -> list[JobRow]:
        """Every job, oldest first; a malformed row is skipped with a warning."""
        with self._db() as db:
            ids = [r[0] for r in db.execute("SELECT job_id FROM restore_jobs ORDER BY created_at")]
        rows = []
        for job_id in ids:
            try:
                rows.append(self.get(str(job_id)))
            except StorageError as exc:
                log.warning("%s (skipped)", exc)
        return rows

    def set_status(self, job_id: str, status: str, error: str | None = None) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE restore_jobs SET status = ?, error = ?, updated_at = ? WHERE job_id = ?",
                (status, None if error is None else redact(error), _now(), job_id),
            )

    def steps(self, job_id: str) -> dict[str, builtins.list[str]]:
        """Target -> the steps of job ``job_id`` it has completed."""
        with self._db() as db:
            rows = db.execute(
                "SELECT target, step FROM restore_steps WHERE job_id = ? ORDER BY done_at", (job_id,)
            ).fetchall()
        found: dict[str, builtins.list[str]] = {}
        for target, step in rows:
            found.setdefault(str(target), []).append(str(step))
        return found

    def delete(self, job_id: str) -> None:
        """Forget a job that did nothing (a refusal): there is nothing to resume."""
        with self._db() as db:
            db.execute("DELETE FROM restore_steps WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM restore_jobs WHERE job_id = ?", (job_id,))

    def journal(self, job_id: str, target: str) -> Journal:
        return Journal(self, job_id, target)


def _strings(value: Any, where: str = "") -> list[tuple[str, str]]:
    """Every string inside a JSON-like value, with where it is (``destinations.ledger.dsn``)."""
    if isinstance(value, str):
        return [(where or "value", value)]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in _strings(v, f"{where}.{k}".lstrip("."))]
    if isinstance(value, list | tuple):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{where}[{i}]")]
    return []


def _loads(text: str) -> Any:
    """JSON, or the text itself when it is not (a malformed row stays one, redacted whole)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _redacted(value: Any) -> Any:
    """``value`` with every string that holds a secret redacted (rows of older versions)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


class Journal:
    """The persisted ``StepJournal`` of one target in one job."""

    def __init__(self, store: JobStore, job_id: str, target: str) -> None:
        self.store = store
        self.job_id = job_id
        self.target = target

    def _row(self, step: str) -> tuple[str | None] | None:
        with self.store._db() as db:
            row: tuple[str | None] | None = db.execute(
                "SELECT data FROM restore_steps WHERE job_id = ? AND target = ? AND step = ?",
                (self.job_id, self.target, step),
            ).fetchone()
        return row

    def is_done(self, step: str) -> bool:
        return self._row(step) is not None

    def data(self, step: str) -> dict[str, Any] | None:
        row = self._row(step)
        if row is None:
            return None
        loaded: dict[str, Any] = json.loads(row[0] or "{}")
        return loaded

    def mark_done(self, step: str, data: Mapping[str, Any] | None = None) -> None:
        with self.store._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO restore_steps VALUES (?, ?, ?, ?, ?)",
                (self.job_id, self.target, step, json.dumps(dict(data or {})), _now()),
            )
