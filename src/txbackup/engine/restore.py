"""Restore a backup set: manifest -> verify every artifact -> restore each target.

Nothing is written to any destination before the manifest has been checked
(every artifact name fits its target's layout, see ``engine.manifest``; every
database, table, keyspace, file or account a chosen target's record names is
one its configuration covers, see ``check_scope``) and every artifact of the
chosen targets has been re-read against its checksum: a corrupt or tampered set
is refused whole, naming the file.

Each restore run is a job (``txbackup.jobs``): a target fully restored is
marked done, and a target with several steps journals each of them, so an
interrupted restore resumes where it stopped (``txbackup restore --resume``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from txbackup.engine.artifacts import SetReader, verify_set
from txbackup.engine.manifest import Manifest, TargetRecord, check_manifest
from txbackup.engine.progress import Reporter, SilentReporter
from txbackup.errors import IntegrityError, TxbackupError, UsageError
from txbackup.jobs import COMPLETE, FAILED, RUNNING, JobStore
from txbackup.repository.crypto import Keyring
from txbackup.secrets import resolve_secret
from txbackup.storage.base import Storage
from txbackup.targets.base import Recorded, Target

TARGET_DONE = "restored"  # the journal step that marks a whole target restored


@dataclass
class RestorePlan:
    storage: Storage
    manifest: Manifest
    targets: Sequence[Target]  # from the cluster file: how to reach each database
    jobs: JobStore
    only: Sequence[str] = ()  # restore just these target names (default: all)
    # NAME -> DSN/path, or destination settings ({"dsn": ...} or {"host": ..., "port": ...})
    destinations: Mapping[str, str | Mapping[str, str]] = field(default_factory=dict)
    # NAME -> where the destination's password is ({"password_env": VAR} or {"password_file": path})
    credentials: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    force: bool = False
    job_id: str | None = None  # resume this job instead of starting one
    reporter: Reporter = field(default_factory=SilentReporter)
    keyring: Keyring | None = None  # an encrypted repository's, unlocked

    def params(self) -> dict[str, Any]:
        """What the job records (no secret: credentials are where to read them)."""
        return {
            "only": list(self.only),
            "destinations": dict(self.destinations),
            "credentials": dict(self.credentials),
            "force": self.force,
        }

    def destination(self, name: str) -> dict[str, str] | None:
        """What target ``name`` restores into (None: its own database), password read now."""
        given = self.destinations.get(name)
        dest = {"dsn": given} if isinstance(given, str) else dict(given or {})
        password = resolve_secret(self.credentials.get(name, {}), culprit=f"restore of {name}")
        if password is not None:
            dest["password"] = password
        return dest or None


def check_scope(set_id: str, record: TargetRecord, target: Target) -> None:
    """Refuse (IntegrityError naming the set, the target and the foreign name) a record
    of the set that names anything ``target``'s configuration does not cover: a
    tampered manifest must not make a restore write into databases the target does
    not own (see ``targets.base``). Contacts nothing."""
    try:
        target.check_record(
            Recorded(tuple(a.name for a in record.artifacts), record.position, record.description)
        )
    except IntegrityError as exc:
        raise IntegrityError(f"refusing to restore set {set_id}: {exc}") from None


def _chosen(plan: RestorePlan) -> list[tuple[TargetRecord, Target]]:
    configured = {t.name: t for t in plan.targets}
    names = list(plan.only) or [t.name for t in plan.manifest.targets]
    for name in [*plan.destinations, *plan.credentials]:
        if name not in names:
            raise UsageError(
                f"restore destination {name!r}: not a target being restored ({', '.join(names)})"
            )
    chosen = []
    for name in names:
        record = plan.manifest.target(name)
        target = configured.get(name)
        if target is None:
            raise UsageError(f"target {name!r} of set {plan.manifest.set_id} is not in the cluster file")
        if target.kind != record.kind:
            raise UsageError(
                f"target {name!r}: the set holds a {record.kind} backup, the cluster file says {target.kind}"
            )
        chosen.append((record, target))
    for record, target in chosen:  # every one before verify reads anything
        check_scope(plan.manifest.set_id, record, target)
    return chosen


def restore_set(plan: RestorePlan) -> tuple[str, list[str]]:
    """Verify, then restore the chosen targets; returns (job id, restored names)."""
    report = plan.reporter
    check_manifest(plan.manifest)  # before any name of it is used: see engine.manifest
    chosen = _chosen(plan)
    report.event("phase", name="verify", set_id=plan.manifest.set_id)
    subset = dataclasses.replace(plan.manifest, targets=[record for record, _ in chosen])
    problems = verify_set(plan.storage, subset, keyring=plan.keyring)
    if problems:
        extra = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"refusing to restore set {plan.manifest.set_id}: {problems[0]}{extra}")
    job_id = plan.job_id or plan.jobs.create(plan.manifest.set_id, plan.params())
    plan.jobs.set_status(job_id, RUNNING)
    report.event("phase", name="restore", job_id=job_id)
    try:
        for record, target in chosen:
            journal = plan.jobs.journal(job_id, record.name)
            if journal.is_done(TARGET_DONE):
                report.event("target", name=record.name, phase="skipped", reason="done before resume")
                continue
            started = time.monotonic()
            reader = SetReader(
                plan.storage,
                plan.manifest.set_id,
                record.name,
                record.artifacts,
                restore_point=plan.manifest.restore_point,
                position=record.position,
                journal=journal,
                keyring=plan.keyring,
            )
            target.restore(reader, plan.destination(record.name), plan.force)
            journal.mark_done(TARGET_DONE)
            ms = round((time.monotonic() - started) * 1000)
            report.event("target", name=record.name, phase="restored", ms=ms)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, TxbackupError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, IntegrityError) and plan.manifest.set_id not in message:  # name the set
            message = f"set {plan.manifest.set_id}: {message}"
        plan.jobs.set_status(job_id, FAILED, message or "interrupted")
        if isinstance(exc, TxbackupError):
            raise type(exc)(f"{message} (restore job {job_id}: resume with --resume {job_id})") from exc
        raise
    plan.jobs.set_status(job_id, COMPLETE)
    return job_id, [record.name for record, _ in chosen]
