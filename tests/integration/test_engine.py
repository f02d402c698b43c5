"""The backup engine end to end on SQLite targets, with faults injected where they hurt."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from txbackup.admin.client import AdminClient, Endpoint
from txbackup.admin.fleet import Fleet, PauseWindowBroken
from txbackup.catalog import Catalog
from txbackup.config import build_target
from txbackup.demo.sample_service import SampleServer, start_sample_server
from txbackup.engine.artifacts import verify_set
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.engine.manifest import Manifest, read_manifest
from txbackup.engine.restore import RestorePlan, restore_set
from txbackup.errors import (
    AlreadyExistsError,
    IntegrityError,
    PauseError,
    PermanentStorageError,
    StorageError,
    TargetError,
    TxbackupError,
)
from txbackup.jobs import JobStore
from txbackup.locks import LockBusy
from txbackup.storage import LocalStorage
from txbackup.storage.base import list_names, load_bytes, save_bytes
from txbackup.storage.local import LocalWriter
from txbackup.storage.memory import FaultInjector, MemoryStorage, MemoryWriter
from txbackup.storage.retry import RetryPolicy, RetryStorage
from txbackup.targets.base import ArtifactReader, Capture, Recorded, Target

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def make_db(path: Path, rows: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)")
    db.executemany("INSERT INTO accounts VALUES (?, ?)", [(i, 100) for i in range(rows)])
    db.commit()
    db.close()


def count(path: Path | str) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM accounts").fetchone()[0])
    finally:
        db.close()


class PauseCounter:
    """Wraps a server's gate to count pauses (so 'nothing was paused' is checked, not assumed)."""

    def __init__(self, server: SampleServer) -> None:
        self.pauses = 0
        gate = server.gate
        original = gate.pause

        async def counted(*args: Any, **kwargs: Any) -> None:
            self.pauses += 1
            await original(*args, **kwargs)

        gate.pause = counted  # type: ignore[method-assign]


@pytest.fixture
def dbs(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.db", tmp_path / "b.db"]
    for i, p in enumerate(paths):
        make_db(p, 10 + i)
    return paths


def sqlite_targets(paths: list[Path]) -> list[Target]:
    return [build_target({"name": p.stem, "kind": "sqlite", "path": str(p)}, i) for i, p in enumerate(paths)]


def plan_for(app: SampleServer, targets: list[Target], tmp: Path, storage: Any = None) -> BackupPlan:
    return BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=targets,
        storage=storage or LocalStorage(str(tmp / "store")),
        catalog=Catalog(str(tmp / "catalog.db")),
        capture_deadline_s=5,
    )


async def test_backup_verify_restore_round_trip(app: SampleServer, dbs: list[Path], tmp_path: Path) -> None:
    counter = PauseCounter(app)
    plan = plan_for(app, sqlite_targets(dbs), tmp_path)
    manifest = await run_backup(plan)
    assert counter.pauses == 1 and not app.gate.paused
    assert plan.catalog.get(manifest.set_id).status == "complete"  # type: ignore[union-attr]
    assert manifest.pause.started_at and manifest.restore_point
    assert verify_set(plan.storage, manifest) == []
    again = read_manifest(plan.storage, manifest.set_id)
    assert again == manifest
    out = tmp_path / "restored"
    out.mkdir()
    job_id, names = restore_set(
        RestorePlan(
            storage=plan.storage,
            manifest=manifest,
            targets=plan.targets,
            jobs=JobStore(str(tmp_path / "catalog.db")),
            destinations={"a": str(out / "a.db"), "b": str(out / "b.db")},
        )
    )
    assert names == ["a", "b"] and job_id.startswith("restore-")
    assert count(out / "a.db") == 10 and count(out / "b.db") == 11


async def test_unreachable_target_at_preflight_pauses_nothing(
    app: SampleServer, dbs: list[Path], tmp_path: Path
) -> None:
    counter = PauseCounter(app)
    targets = [*sqlite_targets(dbs), *sqlite_targets([tmp_path / "missing" / "c.db"])]
    plan = plan_for(app, targets, tmp_path)
    with pytest.raises(TargetError, match=r"missing/c\.db"):
        await run_backup(plan)
    assert counter.pauses == 0 and plan.catalog.list() == []


async def test_unreachable_application_at_preflight(dbs: list[Path], tmp_path: Path) -> None:
    server = await start_sample_server()
    port = server.port
    await server.stop()
    plan = plan_for(server, sqlite_targets(dbs), tmp_path)
    with pytest.raises(PauseError, match=f"127.0.0.1:{port}: connection refused"):
        await run_backup(plan)
    assert plan.catalog.list() == []


class FailingTarget:
    """Wraps a real target and fails at one phase (fault injection)."""

    def __init__(self, inner: Target, phase: str, delay: float = 1.0) -> None:
        self.inner, self.phase, self.delay = inner, phase, delay
        self.name, self.kind = inner.name, inner.kind
        self.released = False

    def describe(self) -> Mapping[str, Any]:
        return self.inner.describe()

    def preflight(self) -> None:
        self.inner.preflight()

    def check_record(self, record: Recorded) -> None:
        self.inner.check_record(record)

    def capture(self, set_id: str) -> Capture:
        if self.phase == "capture":
            raise TargetError(f"target {self.name!r}: capture failed (injected)")
        if self.phase == "hang":
            time.sleep(30)
        if self.phase == "slow":  # a capture that takes its time, inside the pause
            time.sleep(self.delay)
        return _FailingCapture(self.inner.capture(set_id), self)

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        self.inner.restore(src, dest, force)


class _FailingCapture:
    def __init__(self, inner: Capture, owner: FailingTarget) -> None:
        self.inner, self.owner = inner, owner

    def position(self) -> Mapping[str, Any]:
        return self.inner.position()

    def export(self, out: Any) -> None:
        if self.owner.phase == "export":
            with out.open("partial.bin") as stream:
                stream.write(b"x" * 1000)
                raise TargetError(f"target {self.owner.name!r}: connection lost during export (injected)")
        self.inner.export(out)

    def release(self) -> None:
        self.owner.released = True
        self.inner.release()


@pytest.mark.parametrize("phase", ["capture", "export"])
async def test_target_failure_marks_failed_and_cleans_up(
    app: SampleServer, dbs: list[Path], tmp_path: Path, phase: str
) -> None:
    a, b = sqlite_targets(dbs)
    broken = FailingTarget(b, phase)
    plan = plan_for(app, [a, broken], tmp_path)
    with pytest.raises(TargetError, match="injected"):
        await run_backup(plan)
    assert not app.gate.paused
    [row] = plan.catalog.list()
    assert row.status == "failed" and "injected" in (row.error or "")
    assert list_names(plan.storage, "sets/") == []
    if phase == "export":
        assert broken.released


async def test_capture_deadline_unpauses(app: SampleServer, dbs: list[Path], tmp_path: Path) -> None:
    a, b = sqlite_targets(dbs)
    plan = plan_for(app, [a, FailingTarget(b, "hang")], tmp_path)
    plan.capture_deadline_s = 0.5
    with pytest.raises(TargetError, match=r"capture deadline of 0.5s passed; no snapshot from: b"):
        await run_backup(plan)
    assert not app.gate.paused
    assert plan.catalog.list()[0].status == "failed"


class FullDisk(LocalStorage):
    """A local folder whose disk fills up after ``room`` bytes of saves."""

    def __init__(self, root: str, room: int) -> None:
        super().__init__(root)
        self.room = room

    def open_write(self, name: str, *, if_absent: bool = False) -> LocalWriter:
        return _FullDiskWriter(self, name, if_absent)


class _FullDiskWriter(LocalWriter):
    def __init__(self, storage: FullDisk, name: str, if_absent: bool) -> None:
        super().__init__(storage, name, if_absent)
        self._disk = storage

    def _write(self, data: ReadableBuffer) -> int:
        self._disk.room -= memoryview(data).nbytes
        if self._disk.room < 0:
            raise StorageError(f"storage {self.where}: write {self.name}: no space left on device")
        return super()._write(data)


async def test_full_disk_during_export(app: SampleServer, tmp_path: Path) -> None:
    big = tmp_path / "big.db"
    make_db(big, 50_000)
    plan = plan_for(app, sqlite_targets([big]), tmp_path, FullDisk(str(tmp_path / "store"), 10_000))
    with pytest.raises(StorageError, match="no space left"):
        await run_backup(plan)
    assert not app.gate.paused
    assert plan.catalog.list()[0].status == "failed"
    assert list_names(plan.storage, "") == []


async def test_backup_and_restore_through_a_flaky_store(
    app: SampleServer, dbs: list[Path], tmp_path: Path
) -> None:
    """Reads, listings and removals that fail now and then are retried: nothing shows."""
    faults = FaultInjector()
    for operation in ("stat", "open_read", "read", "iterate", "remove", "open_write"):
        faults.add(operation, "transient", every=3, times=None)  # type: ignore[arg-type]
    storage = RetryStorage(MemoryStorage(faults=faults), RetryPolicy(sleep=lambda s: None))
    plan = plan_for(app, sqlite_targets(dbs), tmp_path, storage)
    manifest = await run_backup(plan)
    assert verify_set(storage, manifest) == [] and read_manifest(storage, manifest.set_id) == manifest
    assert faults.calls["stat"] > 2 and faults.calls["read"] > 2
    out = tmp_path / "restored"
    out.mkdir()
    restore_set(
        RestorePlan(
            storage=storage,
            manifest=manifest,
            targets=plan.targets,
            jobs=JobStore(str(tmp_path / "catalog.db")),
            destinations={"a": str(out / "a.db"), "b": str(out / "b.db")},
        )
    )
    assert count(out / "a.db") == 10 and count(out / "b.db") == 11


async def test_a_manifest_commit_that_fails_leaves_no_set(
    app: SampleServer, dbs: list[Path], tmp_path: Path
) -> None:
    faults = FaultInjector()
    faults.add("commit", "permanent", pattern="sets/*/manifest.json")
    plan = plan_for(app, sqlite_targets(dbs), tmp_path, MemoryStorage(faults=faults))
    message = r"commit sets/.*/manifest\.json: injected permanent fault"
    with pytest.raises(PermanentStorageError, match=message):
        await run_backup(plan)
    assert not app.gate.paused and plan.catalog.list()[0].status == "failed"
    assert list_names(plan.storage, "") == [] and list(plan.storage.temporaries(-60)) == []


class _Raced(MemoryStorage):
    """Another run commits the same set's manifest just before ours."""

    def open_write(self, name: str, *, if_absent: bool = False) -> MemoryWriter:
        if name.endswith("/manifest.json") and if_absent:
            save_bytes(self, name, b"theirs")
        return super().open_write(name, if_absent=if_absent)


async def test_a_set_lost_to_another_commit_is_left_to_its_winner(
    app: SampleServer, dbs: list[Path], tmp_path: Path
) -> None:
    plan = plan_for(app, sqlite_targets(dbs), tmp_path, _Raced())
    with pytest.raises(AlreadyExistsError):
        await run_backup(plan)
    names = list_names(plan.storage, "sets/")
    assert len(names) == 3 and names[-1].endswith("/manifest.json")  # 2 artifacts, the winner's manifest
    assert load_bytes(plan.storage, names[-1], 100) == b"theirs"


async def test_corrupt_artifact_refused_by_verify_and_restore(
    app: SampleServer, dbs: list[Path], tmp_path: Path
) -> None:
    plan = plan_for(app, sqlite_targets(dbs), tmp_path)
    manifest = await run_backup(plan)
    victim = manifest.targets[1].artifacts[0]
    stored = tmp_path / "store" / victim.path
    good = stored.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    problems = verify_set(plan.storage, manifest)
    assert len(problems) == 1 and victim.path in problems[0]
    out = tmp_path / "restored"
    out.mkdir()
    jobs = JobStore(str(tmp_path / "catalog.db"))

    def restore(job_id: str | None = None) -> tuple[str, list[str]]:
        return restore_set(
            RestorePlan(
                storage=plan.storage,
                manifest=manifest,
                targets=plan.targets,
                jobs=jobs,
                destinations={"a": str(out / "a.db"), "b": str(out / "b.db")},
                job_id=job_id,
            )
        )

    # same size: the pre-check passes, the flip shows while b streams (one read):
    # a is restored, b's file never appears, the job fails naming all of it
    with pytest.raises(IntegrityError, match=victim.path) as err:
        restore()
    (job,) = jobs.list()
    assert job.status == "failed"
    assert [p.name for p in out.iterdir()] == ["a.db"] and count(out / "a.db") == count(dbs[0])
    text = str(err.value)
    assert f"refusing to restore set {manifest.set_id}: artifact {victim.path}: " in text
    assert "target b into" in text and ": untouched; restored before it: a" in text
    assert f"--resume {job.job_id}" in text and "\n" not in text
    stored.write_bytes(good)  # the artifact fixed (e.g. copied back from a replica)
    assert restore(job.job_id) == (job.job_id, ["a", "b"])
    assert count(out / "b.db") == count(dbs[1]) and jobs.get(job.job_id).status == "complete"


async def test_non_empty_destination_refused_untouched(
    app: SampleServer, dbs: list[Path], tmp_path: Path
) -> None:
    plan = plan_for(app, sqlite_targets(dbs), tmp_path)
    manifest = await run_backup(plan)
    with pytest.raises(TxbackupError, match="not empty"):
        restore_set(
            RestorePlan(
                storage=plan.storage,
                manifest=manifest,
                targets=plan.targets,
                jobs=JobStore(str(tmp_path / "catalog.db")),
                only=["a"],
                destinations={"a": str(dbs[1])},
            )
        )
    assert count(dbs[1]) == 11


def window(manifest: Manifest) -> tuple[str, str]:
    assert manifest.pause.started_at and manifest.pause.ended_at
    return manifest.pause.started_at, manifest.pause.ended_at


async def test_two_concurrent_backups_one_fails_on_the_lock(
    app: SampleServer, dbs: list[Path], tmp_path: Path
) -> None:
    """Both start at once (both preflights see the application serving): only one may pause."""
    a, b = sqlite_targets(dbs)
    plans = [plan_for(app, [a, FailingTarget(b, "slow", 0.5)], tmp_path) for _ in range(2)]
    results = await asyncio.gather(*(run_backup(p) for p in plans), return_exceptions=True)
    done = [r for r in results if isinstance(r, Manifest)]
    refused = [r for r in results if isinstance(r, LockBusy)]
    assert len(done) == 1 and len(refused) == 1, results
    assert "locked by txbackup backup, pid" in str(refused[0])
    assert [r.status for r in plans[0].catalog.list()] == ["complete"]  # the refused one began nothing
    assert list_names(plans[0].storage, "locks/") == [] and not app.gate.paused


async def test_two_backups_waiting_for_the_lock_take_disjoint_windows(
    app: SampleServer, dbs: list[Path], tmp_path: Path
) -> None:
    a, b = sqlite_targets(dbs)
    plans = [plan_for(app, [a, FailingTarget(b, "slow", 0.5)], tmp_path) for _ in range(2)]
    for plan in plans:
        plan.lock_wait_s = 30
    first, second = sorted(await asyncio.gather(*(run_backup(p) for p in plans)), key=window)
    assert window(first)[1] < window(second)[0]  # the second paused after the first unpaused
    assert [r.status for r in plans[0].catalog.list()] == ["complete", "complete"]


async def unpause_when_paused(app: SampleServer) -> None:
    """A third party (another operator, a script) unpausing the application mid-window."""
    while not app.gate.paused:
        await asyncio.sleep(0.01)
    async with AdminClient(Endpoint("127.0.0.1", app.port)) as client:
        await client.unpause()


async def test_third_party_unpause_mid_window_fails_the_set(
    app: SampleServer, dbs: list[Path], tmp_path: Path
) -> None:
    a, b = sqlite_targets(dbs)
    plan = plan_for(app, [a, FailingTarget(b, "slow")], tmp_path)
    intruder = asyncio.create_task(unpause_when_paused(app))
    with pytest.raises(PauseWindowBroken) as info:
        await run_backup(plan)
    await intruder
    message = str(info.value)
    assert f"127.0.0.1:{app.port}: no longer paused" in message and "\n" not in message
    [row] = plan.catalog.list()
    assert row.status == "failed" and f"127.0.0.1:{app.port}" in (row.error or "")
    assert list_names(plan.storage, "") == [] and not app.gate.paused


async def test_pause_lease_expiring_mid_window_fails_the_set(dbs: list[Path], tmp_path: Path) -> None:
    server = await start_sample_server(lease_seconds=0.3)
    try:
        a, b = sqlite_targets(dbs)
        plan = plan_for(server, [a, FailingTarget(b, "slow", 0.8)], tmp_path)
        with pytest.raises(PauseWindowBroken, match=f"127.0.0.1:{server.port}: no longer paused"):
            await run_backup(plan)
        assert plan.catalog.list()[0].status == "failed" and list_names(plan.storage, "sets/") == []
    finally:
        await server.stop()


async def test_old_server_window_kept_but_marked_unverified(dbs: list[Path], tmp_path: Path) -> None:
    from tests.integration.test_fleet import start_old_server

    server, port, old = await start_old_server()
    try:
        plan = BackupPlan(
            fleet=Fleet([Endpoint("127.0.0.1", port)]),
            targets=sqlite_targets(dbs),
            storage=LocalStorage(str(tmp_path / "store")),
            catalog=Catalog(str(tmp_path / "catalog.db")),
        )
        manifest = await run_backup(plan)
        [row] = plan.catalog.list()
        assert row.status == "complete" and not old.paused
        assert row.warning and f"not verified on 127.0.0.1:{port}" in row.warning
        assert manifest.restore_point
    finally:
        await server.stop(None)


async def test_unwritable_storage_fails_before_anything_is_paused(
    app: SampleServer, dbs: list[Path], tmp_path: Path
) -> None:
    counter = PauseCounter(app)
    (tmp_path / "file").write_text("not a folder")
    plan = plan_for(app, sqlite_targets(dbs), tmp_path, LocalStorage(str(tmp_path / "file" / "store")))
    with pytest.raises(StorageError) as info:
        await run_backup(plan)
    assert str(tmp_path / "file" / "store") in str(info.value) and "\n" not in str(info.value)
    assert counter.pauses == 0 and plan.catalog.list() == []
