"""One backup set: preflight -> pause -> capture -> unpause -> export -> commit.

The engine knows the flow and nothing of any database:

1. **preflight**: lock the storage (one backup at a time; this also proves
   it is writable), clean what killed runs left (``engine.cleanup``), read
   the repository config (``repository.config``), then every application
   answers and is serving, every target is reachable with its credentials
   (and its agents see the same repository id). Nothing is paused if this fails.
2. **pause** the fleet, **capture** every target in parallel under a deadline
   (constant-time snapshot handles), hold the pause for ``min_pause`` if
   configured, check that we still hold the lock and that every application
   is still paused (CheckPaused: the window is verified, not assumed),
   **unpause** (always: error, deadline, signal).
3. **export** every capture in parallel, compressed, checksummed, and encrypted
   to the repository's public recipient when its config has one.
4. **commit**: the manifest is written last; only then is the set complete in
   the catalog. On any failure the set is marked FAILED and its partial
   artifacts are removed. The first set committed into a storage without a
   repository config writes one (``repository.config``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from txbackup.admin.fleet import Fleet, cancel_on_signals, paused, received_signal
from txbackup.catalog import Catalog
from txbackup.clock import iso_ms, utc_now
from txbackup.engine.artifacts import SetWriter
from txbackup.engine.cleanup import clean
from txbackup.engine.immutable import retain_set
from txbackup.engine.manifest import (
    Manifest,
    PauseWindow,
    TargetRecord,
    Timings,
    new_set_id,
    set_prefix,
    write_manifest,
)
from txbackup.engine.progress import Reporter, SilentReporter
from txbackup.engine.threads import in_thread
from txbackup.errors import AlreadyExistsError, PauseError, TargetError, TxbackupError
from txbackup.locks import LockInfo, StorageLock, acquire
from txbackup.owner import Owner
from txbackup.repository.config import RepositoryAware, open_config
from txbackup.repository.crypto import Keyring, backup_keyring
from txbackup.storage.base import Storage
from txbackup.targets.base import Capture, Target


@dataclass
class BackupPlan:
    """What one backup run does (built from the cluster file by the CLI)."""

    fleet: Fleet
    targets: Sequence[Target]
    storage: Storage
    catalog: Catalog
    wait_outstanding: bool = True
    max_pause_wait_ms: int | None = None
    capture_deadline_s: float = 30.0
    min_pause_s: float = 0.0
    lock_wait_s: float = 0.0
    """How long to wait for another backup's storage lock (0: fail at once)."""
    reporter: Reporter = field(default_factory=SilentReporter)
    coordinator: tuple[str, str] | None = None
    """(target name, namespace): where the cluster file's ``[scalardb]`` table places
    ScalarDB's coordinator; preflight refuses the set if that target does not find it."""


class _Exports:
    """The export threads of one run; a failure stops them before cleaning up.

    Threads cannot be cancelled, so every write of an export checks ``abort``
    and fails fast once it is set; ``stop()`` then waits for the threads, so
    no late artifact lands in storage after the partial set was removed."""

    def __init__(self, reporter: Reporter, keyring: Keyring | None = None) -> None:
        self.reporter = reporter
        self.keyring = keyring
        self.abort = threading.Event()
        self.threads: list[threading.Thread] = []

    def check(self) -> None:
        if self.abort.is_set():
            raise TxbackupError("export aborted")

    def stop(self, timeout: float = 60.0) -> None:
        self.abort.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _CountingStream:
    """Pass writes through to ``inner``, reporting their size; fail once aborted."""

    def __init__(self, inner: IO[bytes], target: str, exports: _Exports) -> None:
        self._inner = inner
        self._target = target
        self._exports = exports

    def write(self, data: bytes) -> int:
        self._exports.check()
        written = self._inner.write(data)
        self._exports.reporter.bytes_done(self._target, len(data))
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _ReportingWriter:
    """An ArtifactWriter that reports exported bytes and stops when the run aborts."""

    def __init__(self, inner: SetWriter, target: str, exports: _Exports) -> None:
        self.inner = inner
        self.target = target
        self.exports = exports

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        self.exports.check()
        with self.inner.open(name) as stream:
            yield _CountingStream(stream, self.target, self.exports)  # type: ignore[misc]

    def add_file(self, name: str, path: str) -> None:
        self.exports.check()
        self.inner.add_file(name, path)
        self.exports.check()
        with contextlib.suppress(OSError):
            self.exports.reporter.bytes_done(self.target, os.path.getsize(path))


def required_pause(plan: BackupPlan) -> float:
    """The shortest pause this plan needs: the configured one, or longer if a target asks."""
    return max([plan.min_pause_s, *(getattr(t, "min_pause_s", 0.0) for t in plan.targets)])


def capture_deadline(plan: BackupPlan) -> float:
    """The configured deadline, plus the longest wait a target needs before it can
    capture (``capture_delay_s``, e.g. DynamoDB's settle time before CreateBackup)."""
    return plan.capture_deadline_s + max([0.0, *(getattr(t, "capture_delay_s", 0.0) for t in plan.targets)])


def _ms(since: float) -> int:
    return round((time.monotonic() - since) * 1000)


async def _lock(plan: BackupPlan) -> StorageLock:
    """Take the storage lock (waiting up to ``lock_wait_s``), then clean what dead runs left."""
    report = plan.reporter
    shown: list[str] = []

    def warn(message: str) -> None:
        report.event("warning", message=message)

    def waiting(holder: LockInfo, left: float) -> None:
        if not shown or shown[-1] != holder.lock_id or len(shown) % 30 == 0:
            where = plan.storage.describe()
            warn(f"storage {where} is locked by {holder.describe()}; waiting up to {left:.0f}s")
        shown.append(holder.lock_id)

    lock = await acquire(plan.storage, "backup", wait_s=plan.lock_wait_s, warn=warn, waiting=waiting)
    report.event("lock", lock=lock.lock_id, storage=plan.storage.describe())
    try:
        await in_thread(lambda: clean(plan.storage, plan.catalog, lock, on_action=warn), "cleanup")
    except BaseException:
        lock.release()
        raise
    return lock


async def _preflight(plan: BackupPlan) -> None:
    report = plan.reporter
    statuses = await plan.fleet.status()
    problems = [f"{s.endpoint}: {s.error}" for s in statuses if s.error]
    problems += [f"{s.endpoint}: already paused (another backup running?)" for s in statuses if s.paused]
    if problems:
        raise PauseError("preflight: application " + "; ".join(problems))
    results = await asyncio.gather(
        *(in_thread(t.preflight, f"preflight-{t.name}") for t in plan.targets), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    for exc in errors:
        if not isinstance(exc, Exception):
            raise exc
    if errors:
        raise errors[0] if len(errors) == 1 else TargetError("; ".join(str(e) for e in errors))
    _check_coordinator(plan)
    for t in plan.targets:
        report.event("target", name=t.name, phase="reachable", kind=t.kind)


def _check_coordinator(plan: BackupPlan) -> None:
    """The coordinator exists where ``[scalardb]`` places it. Targets take ScalarDB's
    namespaces where they exist (in multi-storage the coordinator lives in one storage
    only), so without this a set whose coordinator is missing (a wrong database, a
    renamed namespace) would back up fine and restore into data no reader can resolve.
    Kinds that demand every configured name anyway (DynamoDB tables, Cosmos DB
    databases) or hold everything (SQLite) have no ``scalardb_found``."""
    if plan.coordinator is None:
        return
    name, namespace = plan.coordinator
    target = next((t for t in plan.targets if t.name == name), None)
    found = getattr(target, "scalardb_found", None)
    if target is None or not callable(found):
        return
    if namespace not in found():
        raise TargetError(
            f'preflight: target "{name}": ScalarDB\'s coordinator namespace "{namespace}" does not exist '
            "there, where the cluster file's [scalardb] coordinator_target places it; without it no "
            "restored record can be resolved"
        )


async def _capture_all(plan: BackupPlan, set_id: str, captures: dict[str, Capture]) -> None:
    """Capture every target in parallel; each capture is kept as soon as it exists."""

    async def capture_one(target: Target) -> None:
        started = time.monotonic()
        captures[target.name] = await in_thread(lambda: target.capture(set_id), f"capture-{target.name}")
        plan.reporter.event("target", name=target.name, phase="captured", ms=_ms(started))

    deadline = capture_deadline(plan)
    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(capture_one(t) for t in plan.targets))
    except TimeoutError:
        late = sorted(t.name for t in plan.targets if t.name not in captures)
        raise TargetError(
            f"capture deadline of {deadline:g}s passed; no snapshot from: {', '.join(late)}"
        ) from None


async def _export_all(
    plan: BackupPlan, set_id: str, captures: dict[str, Capture], exports: _Exports
) -> dict[str, SetWriter]:
    writers = {name: SetWriter(plan.storage, set_id, name, exports.keyring) for name in captures}

    async def export_one(name: str) -> None:
        started = time.monotonic()
        writer = _ReportingWriter(writers[name], name, exports)
        await in_thread(lambda: captures[name].export(writer), f"export-{name}", exports.threads)
        size = sum(r.size for r in writers[name].records)
        plan.reporter.event("target", name=name, phase="exported", ms=_ms(started), bytes=size)

    results = await asyncio.gather(*(export_one(n) for n in captures), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0] if len(errors) == 1 else TargetError("; ".join(str(e) for e in errors))
    return writers


async def _release_all(captures: dict[str, Capture]) -> None:
    for capture in captures.values():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(in_thread(capture.release, "release"), timeout=30)


async def _close_all(targets: Sequence[Target]) -> None:
    """Let targets drop what preflight prepared for a capture that may never come."""
    for target in targets:
        close = getattr(target, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(in_thread(close, f"close-{target.name}"), timeout=30)


async def run_backup(plan: BackupPlan) -> Manifest:
    """Take one backup set; returns its manifest (already committed).

    SIGINT/SIGTERM at any phase cancel the run: the applications are unpaused,
    the set is marked FAILED and its partial artifacts removed."""
    task = asyncio.current_task()
    assert task is not None
    with cancel_on_signals(task):
        return await _run_backup(plan)


async def _run_backup(plan: BackupPlan) -> Manifest:
    plan.reporter.event("phase", name="preflight")
    lock = await _lock(plan)
    try:
        return await _locked_backup(plan, lock)
    finally:
        lock.release()


def _first_config(plan: BackupPlan) -> None:
    """Make a storage without config a repository, after its first committed set (the set
    is complete whatever happens here: a failure is a warning, retried by the next run)."""
    try:
        made = open_config(plan.storage, create=True)
    except Exception as exc:  # never fails the committed set (whose files a failure would remove)
        problem = " ".join(str(exc).split()) or type(exc).__name__
        plan.reporter.event("warning", message=f"repository config not written: {problem}")
    else:
        if made is not None:
            plan.reporter.event("repository", repository_id=made.repository_id, created=True)


def _retain(plan: BackupPlan, manifest: Manifest, warning: str | None) -> str | None:
    """Make the committed set immutable when the storage is configured to (S3 Object Lock,
    ``engine.immutable``). A failure does not undo the set (it is complete, and retained
    objects could not be removed anyway): it is a warning, recorded with the set."""
    try:
        retained = retain_set(plan.storage, manifest)
    except Exception as exc:
        problem = " ".join(str(exc).split()) or type(exc).__name__
        message = f"set not made immutable (object lock): {problem}"
        plan.reporter.event("warning", message=message)
        return message if warning is None else f"{warning}; {message}"
    if retained is not None:
        count, until = retained
        plan.reporter.event("retained", objects=count, until=iso_ms(datetime.fromtimestamp(until, UTC)))
    return warning


def _free_set_id(plan: BackupPlan, created: datetime) -> str:
    """A set id no set of the catalog or the storage has: ids are the second plus 16 random
    bits, so two sets made in the same second collide once in 65,536 (seen in a test that
    takes ten backups in a few seconds). We hold the storage's backup lock, so nobody else
    takes an id meanwhile."""
    for _ in range(32):
        set_id = new_set_id(created)
        taken = plan.catalog.get(set_id) is not None
        if not taken and next(plan.storage.iterate(set_prefix(set_id)), None) is None:
            return set_id
    raise TxbackupError(f"no free set id for {iso_ms(created)} in 32 tries (catalog {plan.catalog.path})")


async def _locked_backup(plan: BackupPlan, lock: StorageLock) -> Manifest:
    report = plan.reporter
    # the repository config, checked; a storage without one (from before) gets it once
    # this set is committed, so a run that fails leaves the storage as it found it
    config = open_config(plan.storage)
    repository_id = None if config is None else config.repository_id
    keyring = backup_keyring(config)
    for target in plan.targets:
        if isinstance(target, RepositoryAware):  # its agents must see this same repository
            target.expect_repository(repository_id)  # (and, encrypted, hold its blob key)
    await _preflight(plan)
    created = utc_now()
    set_id = _free_set_id(plan, created)
    run = {"owner": Owner.current().to_dict(), "storage": plan.storage.describe(), "lock_id": lock.lock_id}
    plan.catalog.begin(set_id, created, [t.name for t in plan.targets], run, repository_id)
    captures: dict[str, Capture] = {}
    exports = _Exports(report, keyring)
    try:
        report.event("phase", name="pause", set_id=set_id, endpoints=len(plan.fleet.endpoints))
        pause_started = time.monotonic()
        async with paused(plan.fleet, plan.wait_outstanding, plan.max_pause_wait_ms) as window:
            confirmed = time.monotonic()
            drain_ms = _ms(pause_started)
            report.event("phase", name="capture", drain_ms=drain_ms)
            capture_started = time.monotonic()
            await _capture_all(plan, set_id, captures)
            capture_ms = _ms(capture_started)
            # the recorded window runs from the last confirmation, in whole ms: hold a hair longer
            held = time.monotonic() - confirmed
            if held < required_pause(plan):
                await asyncio.sleep(required_pause(plan) - held + 0.003)
            lock.check()  # lost it (another backup took it as stale)? its pause may overlap ours
        report.event(
            "phase", name="unpaused", pause_ms=window.duration_ms, restore_point=iso_ms(window.midpoint)
        )
        warning = None
        if window.unverified:
            warning = (
                f"pause window not verified on {', '.join(window.unverified)}"
                " (older server without CheckPaused: its pause is assumed, not checked)"
            )
            report.event("warning", message=warning)
        report.event("phase", name="export")
        export_started = time.monotonic()
        writers = await _export_all(plan, set_id, captures, exports)
        export_ms = _ms(export_started)
        manifest = Manifest(
            set_id=set_id,
            created_at=iso_ms(created),
            finished_at=iso_ms(utc_now()),
            pause=PauseWindow(
                started_at=iso_ms(window.started_at),
                ended_at=iso_ms(window.ended_at),
                midpoint=iso_ms(window.midpoint),
                unverified=list(window.unverified),
            ),
            applications=[str(e) for e in plan.fleet.endpoints],
            timings=Timings(
                drain_ms=drain_ms,
                capture_ms=capture_ms,
                pause_ms=window.duration_ms or 0,
                export_ms=export_ms,
            ),
            targets=[
                TargetRecord(
                    name=t.name,
                    kind=t.kind,
                    description=dict(t.describe()),
                    position=dict(captures[t.name].position()),
                    artifacts=list(writers[t.name].records),
                )
                for t in plan.targets
            ],
            repository_id=repository_id,
        )
        report.event("phase", name="commit")
        lock.check()
        write_manifest(plan.storage, manifest, keyring=keyring)
        plan.catalog.complete(manifest)
        if config is None:
            _first_config(plan)
        warning = _retain(plan, manifest, warning)
        if warning is not None:
            plan.catalog.warn(set_id, warning)
        report.event("done", set_id=set_id)
        return manifest
    except BaseException as exc:
        if isinstance(exc, TxbackupError):
            message = str(exc)
        elif isinstance(exc, asyncio.CancelledError):
            signum = received_signal()
            message = f"interrupted by {signal.Signals(signum).name}" if signum else "interrupted"
        else:
            message = f"{type(exc).__name__}: {exc}"
        exports.stop()
        if not isinstance(exc, AlreadyExistsError):  # else the set is another run's: keep it
            with contextlib.suppress(Exception):
                plan.storage.remove_prefix(set_prefix(set_id))
        with contextlib.suppress(Exception):
            plan.catalog.fail(set_id, message)
        raise
    finally:
        await _release_all(captures)
        await _close_all(plan.targets)
        await plan.fleet.close()
