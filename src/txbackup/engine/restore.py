"""Restore a backup set: manifest -> cheap pre-check -> restore each target, reading
every artifact once and verifying it as it streams.

Nothing is written to any destination before the manifest has been checked
(every artifact name fits its target's layout, see ``engine.manifest``; every
database, table, keyspace, file or account a chosen target's record names is
one its configuration covers, see ``check_scope``) and every artifact of the
chosen targets has been found in storage with its recorded size (and SHA-256,
where the backend keeps one: ``stat_set``, plain verify's level). A missing,
cut or replaced artifact is refused then, naming the file, with no job.

The data itself is verified while it streams into the destination
(``engine.artifacts``, ``repository.codec``): each artifact is read once, and
its last bytes are handed over only once its end has been read and its sizes
and SHA-256 checked (age authenticates every chunk of an encrypted one before
it is decompressed). A mismatch stops the restore at once: the tool loading it is
killed, the job is marked failed, and the one-line error names the artifact,
says what the destinations hold (targets restored before it; the current one
untouched, or holding part of it) and how to retry (``--resume``, once the
artifact is fixed). ``verify_first`` reads the whole set first instead (two
reads), refusing a corrupt one before a job exists. What each kind leaves is in its module: a ``sqlite`` file
is renamed into place only once verified (untouched); ``postgres -Fc`` loads
in one transaction that cannot commit without the last byte (the database is
created, and empty); ``postgres -Fd`` and ``mysql`` load as they read (part of
the data; the resumed job cleans and reloads it).

Each restore run is a job (``txbackup.jobs``): a target fully restored is
marked done, and a target with several steps journals each of them, so an
interrupted restore resumes where it stopped (``txbackup restore --resume``).

A refusal creates no job: what the user gave (destinations, renames) is checked
before the storage is read (:func:`check_request`), then against the set, and a
target that can (``CheckedDestination``: postgres, mysql) reaches its
destination and refuses a non-empty one before the set is checked and the job
created. Every error of a restore names the set, the target and the destination.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from txbackup.engine.artifacts import SetReader, stat_set, verify_set
from txbackup.engine.manifest import Manifest, TargetRecord, check_manifest
from txbackup.engine.progress import Reporter, SilentReporter
from txbackup.errors import IntegrityError, TxbackupError, UsageError
from txbackup.jobs import COMPLETE, FAILED, RUNNING, JobStore
from txbackup.repository.crypto import Keyring
from txbackup.safepaths import shown
from txbackup.secrets import resolve_secret
from txbackup.storage.base import Storage
from txbackup.targets.base import RENAME, CheckedDestination, DestinationCheck, Recorded, Target
from txbackup.targets.sql.restore_points import is_point, refusal

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
    # NAME -> database of the set -> the database it is restored as (--rename-db)
    renames: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    force: bool = False
    # read every artifact against its record before writing anything (two reads: a corrupt
    # set is refused before a job exists; the default verifies while restoring)
    verify_first: bool = False
    job_id: str | None = None  # resume this job instead of starting one
    reporter: Reporter = field(default_factory=SilentReporter)
    keyring: Keyring | None = None  # an encrypted repository's, unlocked

    def params(self) -> dict[str, Any]:
        """What the job records (no secret: credentials are where to read them)."""
        return {
            "only": list(self.only),
            "targets": [t.name for t in self.manifest.targets if not self.only or t.name in self.only],
            "destinations": dict(self.destinations),
            "credentials": dict(self.credentials),
            "renames": {name: dict(r) for name, r in self.renames.items()},
            "force": self.force,
        }

    def given(self, name: str) -> dict[str, str] | None:
        """The destination of target ``name`` as given, renames included, without password."""
        return given_destination(self.destinations.get(name), self.renames.get(name))

    def destination(self, name: str) -> dict[str, str] | None:
        """What target ``name`` restores into (None: its own database), password read now."""
        dest = self.given(name) or {}
        password = resolve_secret(self.credentials.get(name, {}), culprit=f"restore of {name}")
        if password is not None:
            dest["password"] = password
        return dest or None

    def where(self, name: str) -> str:
        """Target ``name``'s destination for a message (never a secret: a DSN holding one is
        refused before it gets here)."""
        return describe_destination(self.destinations.get(name), self.renames.get(name))


def given_destination(
    given: str | Mapping[str, str] | None, renames: Mapping[str, str] | None
) -> dict[str, str] | None:
    """A destination (a DSN or settings) and a rename map as the target reads them: settings,
    with one ``rename.OLD`` key per renamed database."""
    dest = {"dsn": given} if isinstance(given, str) else dict(given or {})
    for old, new in (renames or {}).items():
        dest[RENAME + old] = new
    return dest or None


def describe_destination(given: str | Mapping[str, str] | None, renames: Mapping[str, str] | None) -> str:
    """``postgresql://u@h/db``, ``host=h port=5433``, or the target's own place (the cluster
    file's); renames after."""
    if isinstance(given, str):
        text = given
    elif given:
        text = " ".join(f"{k}={v}" for k, v in given.items())
    else:
        text = "its own server" if renames else "its own databases"
    if renames:
        text += " (renaming " + ", ".join(f"{old}->{new}" for old, new in renames.items()) + ")"
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 200 else text[:197] + "..."


def rename_databases(target: Target) -> list[str]:
    """The databases of ``target`` a restore can rename (none for kinds without databases)."""
    return target.rename_databases() if isinstance(target, CheckedDestination) else []


def check_request(
    targets: Sequence[Target],
    only: Sequence[str],
    destinations: Mapping[str, str | Mapping[str, str]],
    credentials: Mapping[str, Mapping[str, str]],
    renames: Mapping[str, Mapping[str, str]],
) -> None:
    """Refuse (UsageError, one line naming the flag's target) what a restore was asked that
    the cluster file alone shows to be wrong: a destination, credentials or renames for a
    target that is not configured or not among ``only``, renames for a kind that has no
    databases to rename, a destination or rename its target refuses (checked offline).
    Reads no storage, contacts nothing: run before anything else."""
    configured = {t.name: t for t in targets}
    for name in only:
        if name not in configured:
            raise UsageError(
                f"--target {shown(name, 80)}: no target named so in the cluster file "
                f"({', '.join(configured)})"
            )
    for name in {**destinations, **credentials, **renames}:
        if name not in configured:
            raise UsageError(
                f"restore destination {shown(name, 80)}: no target named so in the cluster file "
                f"({', '.join(configured)})"
            )
        if only and name not in only:
            raise UsageError(
                f"restore destination {name!r}: not a target being restored (--target {' '.join(only)})"
            )
    for name, target in configured.items():
        if name not in destinations and name not in renames:
            continue
        if renames.get(name) and not isinstance(target, CheckedDestination):
            raise UsageError(f"target {name!r} ({target.kind}): it has no databases to rename")
        if isinstance(target, DestinationCheck):
            target.check_destination(given_destination(destinations.get(name), renames.get(name)))


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
    for name in [*plan.destinations, *plan.credentials, *plan.renames]:
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
        if is_point(record.position):  # nothing stored to restore: say where the point is
            raise UsageError(refusal(plan.manifest.set_id, name, len(plan.manifest.targets) > 1))
        chosen.append((record, target))
    for record, target in chosen:  # every one before the storage is read
        check_scope(plan.manifest.set_id, record, target)
        if plan.renames.get(record.name) and not isinstance(target, CheckedDestination):
            raise UsageError(f"target {record.name!r} ({target.kind}): it has no databases to rename")
        if isinstance(target, DestinationCheck):
            recorded = Recorded(tuple(a.name for a in record.artifacts), record.position)
            _named(plan, record.name, target.check_destination, plan.given(record.name), recorded)
    return chosen


def _named(plan: RestorePlan, name: str, call: Callable[..., None], *args: Any) -> None:
    """``call(*args)``; a TxbackupError it raises is raised again (same class) with the
    set, target ``name`` and its destination (what the user gave) in front."""
    try:
        call(*args)
    except TxbackupError as exc:
        raise type(exc)(_in_context(plan, name, str(exc))) from None


def _in_context(plan: RestorePlan, name: str, message: str) -> str:
    set_id = plan.manifest.set_id
    context = f"restore of set {set_id}, target {name} into {plan.where(name)}"
    return f"{context}: {message}"


def _probe(plan: RestorePlan, chosen: list[tuple[TargetRecord, Target]]) -> None:
    """Reach every destination that can be reached beforehand and refuse a non-empty one
    (unless --force): before the set is checked and before a job exists, so such a refusal
    leaves nothing and needs no --resume."""
    for record, target in chosen:
        if isinstance(target, CheckedDestination):
            recorded = Recorded(tuple(a.name for a in record.artifacts), record.position)
            dest = plan.destination(record.name)
            _named(plan, record.name, target.probe_destination, dest, plan.force, recorded)


def restore_set(plan: RestorePlan) -> tuple[str, list[str]]:
    """Check, then restore the chosen targets; returns (job id, restored names)."""
    report = plan.reporter
    check_manifest(plan.manifest)  # before any name of it is used: see engine.manifest
    chosen = _chosen(plan)
    if plan.job_id is None:  # a resumed job's destinations hold what it restored already
        report.event("phase", name="destinations", set_id=plan.manifest.set_id)
        _probe(plan, chosen)
    report.event("phase", name="verify", set_id=plan.manifest.set_id)  # the stat check (drill times it)
    subset = dataclasses.replace(plan.manifest, targets=[record for record, _ in chosen])
    check = verify_set if plan.verify_first else stat_set
    problems = check(plan.storage, subset, keyring=plan.keyring)
    if problems:
        extra = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"refusing to restore set {plan.manifest.set_id}: {problems[0]}{extra}")
    job_id = plan.job_id or plan.jobs.create(plan.manifest.set_id, plan.params())
    plan.jobs.set_status(job_id, RUNNING)
    report.event("phase", name="restore", job_id=job_id)
    current = ""
    try:
        for record, target in chosen:
            current = record.name
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
    except IntegrityError as exc:
        # the data did not match its record while it streamed (see the module doc)
        message = f"refusing to restore set {plan.manifest.set_id}: {exc}; " + _left(plan, job_id, current)
        plan.jobs.set_status(job_id, FAILED, message)
        raise IntegrityError(
            f"{message} (restore job {job_id} failed: fix or replace that artifact, then --resume {job_id})"
        ) from exc
    except BaseException as exc:
        message = str(exc) if isinstance(exc, TxbackupError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, TxbackupError) and current:
            message = _in_context(plan, current, message)
        if isinstance(exc, UsageError) and plan.job_id is None and not plan.jobs.steps(job_id):
            # a refusal of what the user gave, before this new job did anything: no job
            # to resume (the user fixes the command and runs it again)
            plan.jobs.delete(job_id)
            raise UsageError(message) from None
        plan.jobs.set_status(job_id, FAILED, message or "interrupted")
        if isinstance(exc, TxbackupError):
            raise type(exc)(f"{message} (restore job {job_id}: resume with --resume {job_id})") from exc
        raise
    plan.jobs.set_status(job_id, COMPLETE)
    return job_id, [record.name for record, _ in chosen]


def _left(plan: RestorePlan, job_id: str, current: str) -> str:
    """What the destinations of a restore stopped while target ``current`` streamed hold,
    read from the job's journal: targets done, and whether ``current`` wrote anything."""
    steps = plan.jobs.steps(job_id)
    done = [name for name, marks in steps.items() if TARGET_DONE in marks and name != current]
    text = f"target {current} into {plan.where(current)}: "
    if steps.get(current):
        text += "holds part of the set (the resumed job loads it again)"
    else:
        text += "untouched"
    if done:
        text += f"; restored before it: {', '.join(done)}"
    return text
