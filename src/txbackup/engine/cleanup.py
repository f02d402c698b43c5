"""What killed runs leave behind, found and removed.

A backup killed outright (SIGKILL, a lost host) cannot clean up: its catalog
row says "running" for ever, its partial set and half-saved files stay in
storage, its local copies of database data stay on disk. ``clean`` removes
them; ``txbackup cleanup`` runs it, and so does every backup before it pauses.

It runs with the storage lock held, so no other backup of this storage is
running: a RUNNING row of this storage that is not ours belongs to a dead run
(or to an older txbackup that took no lock: those are judged by age). A
partial set without a manifest is removed; a set whose manifest was written
just before the kill is complete, and recorded so. Half-saved files
(``.txbackup-tmp-*``) are removed once older than ``min_age_s`` (a writer that
is not a backup, such as a Cassandra agent still uploading, keeps its file
fresh). Rows of another storage sharing the catalog are only marked failed
when their process is known to be gone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from txbackup import scratch
from txbackup.catalog import RUNNING, Catalog, SetRow
from txbackup.clock import as_utc, utc_now
from txbackup.engine.manifest import manifest_path, read_manifest, set_prefix
from txbackup.errors import TxbackupError
from txbackup.locks import StorageLock, read_locks
from txbackup.owner import Owner
from txbackup.repository import layout
from txbackup.repository.crypto import KeyRequired
from txbackup.storage.base import Storage

LEFTOVER_AGE_S = 600.0
"""Half-saved files and owner-less running sets younger than this are left alone."""


@dataclass
class CleanupReport:
    """What ``clean`` did: one entry per thing removed or fixed, and what it could not do."""

    sets_failed: list[tuple[str, str]] = field(default_factory=list)
    sets_completed: list[str] = field(default_factory=list)
    partial_sets_removed: list[str] = field(default_factory=list)
    temporary_files_removed: list[str] = field(default_factory=list)
    locks_removed: list[tuple[str, str]] = field(default_factory=list)
    local_folders_removed: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "sets_failed": [{"set_id": s, "reason": r} for s, r in self.sets_failed],
            "sets_completed": self.sets_completed,
            "partial_sets_removed": self.partial_sets_removed,
            "temporary_files_removed": self.temporary_files_removed,
            "locks_removed": [{"lock": n, "reason": r} for n, r in self.locks_removed],
            "local_folders_removed": [{"folder": f, "reason": r} for f, r in self.local_folders_removed],
            "problems": self.problems,
        }

    def lines(self) -> list[str]:
        """One human line per action."""
        return [
            *(f"set {s} marked failed: {r}" for s, r in self.sets_failed),
            *(f"set {s} marked complete: its manifest was written before its run died"
              for s in self.sets_completed),
            *(f"removed partial set sets/{s}/ (no manifest)" for s in self.partial_sets_removed),
            *(f"removed half-saved file {n}" for n in self.temporary_files_removed),
            *(f"removed lock {n}: {r}" for n, r in self.locks_removed),
            *(f"removed local temporary folder {f}: {r}" for f, r in self.local_folders_removed),
        ]  # fmt: skip


def clean(
    storage: Storage,
    catalog: Catalog,
    lock: StorageLock,
    *,
    min_age_s: float = LEFTOVER_AGE_S,
    keep: Collection[str] = (),
    on_action: Callable[[str], None] | None = None,
) -> CleanupReport:
    """Remove what dead runs left (see the module docstring); ``lock`` must be held.

    ``keep``: set ids never touched (the caller's own). Each step goes on when
    another fails; its error is listed in ``problems``."""
    lock.check()
    report = CleanupReport()
    here = storage.describe()
    steps: list[Callable[[], None]] = [
        lambda: _locks(storage, lock, report),
        lambda: _running_rows(storage, catalog, here, keep, min_age_s, report),
        lambda: _temporary_files(storage, keep, min_age_s, report),
        lambda: _partial_sets(storage, catalog, keep, report),
        lambda: report.local_folders_removed.extend(scratch.remove_dead_runs()),
    ]
    for step in steps:
        try:
            step()
        except TxbackupError as exc:
            report.problems.append(str(exc))
    if on_action is not None:
        for line in report.lines():
            on_action(line)
    return report


def _locks(storage: Storage, lock: StorageLock, report: CleanupReport) -> None:
    found = read_locks(storage, lock.stale_after)
    for info, reason in found.stale:
        storage.remove(info.name)
        report.locks_removed.append((info.name, f"stale ({info.describe()}): {reason}"))
    for name, reason in found.unreadable:
        storage.remove(name)
        report.locks_removed.append((name, f"malformed: {reason}"))


def _running_rows(
    storage: Storage,
    catalog: Catalog,
    here: str,
    keep: Collection[str],
    min_age_s: float,
    report: CleanupReport,
) -> None:
    for row in catalog.list():
        if row.status != RUNNING or row.set_id in keep:
            continue
        reason = _dead(row, here, min_age_s)
        if reason is None:
            continue
        ours = _storage_of(row) in (None, here)
        if ours and storage.stat(manifest_path(row.set_id)) is not None:
            try:
                catalog.complete(read_manifest(storage, row.set_id))
                report.sets_completed.append(row.set_id)
                continue
            except KeyRequired:
                # committed, but encrypted: only a key holder can index it (list --rebuild);
                # never remove a complete set because this host cannot read it
                continue
            except TxbackupError as exc:
                reason += f"; its manifest is unreadable ({exc})"
        if ours:
            storage.remove_prefix(set_prefix(row.set_id))
        catalog.fail(row.set_id, f"abandoned: {reason}")
        report.sets_failed.append((row.set_id, reason))


def _storage_of(row: SetRow) -> str | None:
    storage = (row.run or {}).get("storage")
    return storage if isinstance(storage, str) else None


def _owner_of(row: SetRow) -> Owner | None:
    try:
        return Owner.from_dict((row.run or {}).get("owner"))
    except ValueError:
        return None


def _dead(row: SetRow, here: str, min_age_s: float) -> str | None:
    """Why the run that makes ``row`` is known to be gone, or None if it may be alive."""
    owner = _owner_of(row)
    if owner is None:
        try:
            created = as_utc(datetime.fromisoformat(row.created_at))
        except ValueError:
            return "left running by an older txbackup"
        if (utc_now() - created).total_seconds() < min_age_s:
            return None
        return "left running by an older txbackup"
    gone = owner.gone()
    if gone is not None:
        return f"its backup ({owner.describe()}) is gone: {gone}"
    if owner.local or _storage_of(row) != here:
        return None  # alive here, or another storage's backup we cannot judge
    return f"its backup ({owner.describe()}) no longer holds the storage lock"


def _temporary_files(
    storage: Storage, keep: Collection[str], min_age_s: float, report: CleanupReport
) -> None:
    for info in storage.temporaries(min_age_s):
        if layout.set_of(info.name) in keep:
            continue
        storage.remove_temporary(info.name)
        report.temporary_files_removed.append(info.name)


def _partial_sets(storage: Storage, catalog: Catalog, keep: Collection[str], report: CleanupReport) -> None:
    """Set folders without a manifest, of no live run (we hold the lock): leftovers."""
    files: dict[str, set[str]] = {}
    for name in report.temporary_files_removed:  # a set folder that held only half-saved files
        if (set_id := layout.set_of(name)) is not None:
            files.setdefault(set_id, set())
    for info in storage.iterate(layout.SETS):
        if (set_id := layout.set_of(info.name)) is not None:
            files.setdefault(set_id, set()).add(info.name)
    running = {row.set_id for row in catalog.list() if row.status == RUNNING}
    for set_id, names in sorted(files.items()):
        if layout.manifest_path(set_id) in names or set_id in keep or set_id in running:
            continue
        with contextlib.suppress(TxbackupError):
            storage.remove_prefix(set_prefix(set_id))
            report.partial_sets_removed.append(set_id)
