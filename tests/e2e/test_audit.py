"""``txbackup audit`` end to end: sets of ScalarDB-shaped SQLite stores (three databases,
the coordinator in the third) written by Consensus Commit's steps while transfers run.
txbackup's sets, taken through the pause, are clean; copies taken one database after
the other while transfers run are torn, and the audit says which records and why."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import sqlite_targets
from tests.scalardb_shaped import COMMITTED, ShapedBank, Write, copy_file, create_store
from tests.servers.processes import txbackup
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.config import build_target
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.storage import LocalStorage
from txbackup.targets.base import ArtifactReader, Capture, Recorded, Target

NAMESPACES = ["bank_a", "bank_b"]
ACCOUNTS = 20


def make_bank(folder: Path) -> tuple[ShapedBank, list[Path]]:
    paths = [folder / "a.db", folder / "b.db", folder / "c.db"]
    create_store(paths[0], "bank_a", ACCOUNTS)
    create_store(paths[1], "bank_b", ACCOUNTS)
    create_store(paths[2], "ledger", 2, coordinator=True)
    bank = ShapedBank(paths[:2], NAMESPACES, paths[2])
    for namespace in ("bank_a", "bank_b", "ledger"):
        bank.decide(f"setup-{namespace}")
    return bank, paths


def writes(step: int) -> list[Write]:
    a, b = step % ACCOUNTS, (step * 7) % ACCOUNTS
    return [Write(0, a, -1), Write(1, b, 1)] if step % 2 else [Write(1, b, -1), Write(0, a, 1)]


async def backup(app: SampleServer, paths: list[Path], folder: Path) -> str:
    targets = [
        build_target({"name": p.stem, "kind": "sqlite", "path": str(p)}, i) for i, p in enumerate(paths)
    ]
    plan = BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=targets,
        storage=LocalStorage(str(folder / "store")),
        catalog=Catalog(str(folder / "catalog.db")),
        capture_deadline_s=5,
    )
    manifest = await run_backup(plan)
    return manifest.set_id


def audit(folder: Path, set_id: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = txbackup("audit", "--storage", str(folder / "store"), set_id, "--json", *extra)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


async def test_txbackup_sets_taken_while_transfers_run_are_clean(app: SampleServer, tmp_path: Path) -> None:
    bank, paths = make_bank(tmp_path)
    stop = asyncio.Event()
    done = 0

    async def transfers() -> None:
        # every transfer is one application request: the pause waits for it to finish
        nonlocal done
        while not stop.is_set():
            async with app.gate.request():
                tx = str(uuid.uuid4())
                step = writes(done)
                bank.prepare(tx, step)
                await asyncio.sleep(0.001)
                bank.decide(tx)
                await asyncio.sleep(0.001)
                bank.commit_records(tx, step)
            done += 1
            await asyncio.sleep(0)

    writer = asyncio.create_task(transfers())
    try:
        sets = []
        for _ in range(3):
            await asyncio.sleep(0.1)
            sets.append(await backup(app, paths, tmp_path))
    finally:
        stop.set()
        await writer
        bank.close()
    assert done > 20
    for set_id in sets:
        code, report, _ = audit(tmp_path, set_id)
        assert code == 0 and report["clean"], report["findings"][:5]
        assert report["records"] == 2 * ACCOUNTS + 2 and report["coordinator_rows"] > 3
        assert report["not_audited"] == []
    # people read the same verdict
    result = txbackup("audit", "--storage", str(tmp_path / "store"), sets[0])
    assert result.returncode == 0 and f"set {sets[0]}: clean" in result.stdout, result.stdout + result.stderr


async def test_naive_copies_taken_while_transfers_run_are_torn(app: SampleServer, tmp_path: Path) -> None:
    """The coordinator's database copied first, then the others, one after the other,
    while transfers keep running (no pause): the copies are made into a set and audited."""
    live = tmp_path / "live"
    live.mkdir()
    bank, paths = make_bank(live)
    stop = threading.Event()
    committed: list[str] = []

    def transfers() -> None:
        step = 0
        while not stop.is_set():
            tx = str(uuid.uuid4())
            with bank.lock:
                bank.prepare(tx, writes(step))
                bank.decide(tx)
                bank.commit_records(tx, writes(step))
                committed.append(tx)
            step += 1
            time.sleep(0.001)

    writer = threading.Thread(target=transfers)
    writer.start()
    copies = tmp_path / "naive"
    copies.mkdir()
    try:
        with bank.lock:  # so that `seen` counts exactly the transfers the copy holds
            copy_file(paths[2], copies / "c.db")
            seen = len(committed)
        while len(committed) < seen + 3:  # transfers commit between the copies
            time.sleep(0.005)
        copy_file(paths[0], copies / "a.db")
        copy_file(paths[1], copies / "b.db")
    finally:
        stop.set()
        writer.join()
        bank.close()
    set_id = await backup(app, [copies / "a.db", copies / "b.db", copies / "c.db"], tmp_path)
    code, report, _ = audit(tmp_path, set_id)
    assert code == 1 and not report["clean"]
    torn = [f for f in report["findings"] if f["check"] == "committed-without-coordinator"]
    assert torn, report["counts"]
    for finding in torn:
        assert finding["level"] == "torn" and finding["exact"] is True
        assert finding["target"] in ("a", "b") and finding["table"] in ("bank_a.accounts", "bank_b.accounts")
        assert set(finding["key"]) == {"id"} and finding["tx_id"] in committed[seen:]
    result = txbackup("audit", "--storage", str(tmp_path / "store"), set_id)
    assert result.returncode == 1 and "NOT clean" in result.stdout and "[torn]" in result.stdout
    # the copies read in place, without making a set of them
    config = tmp_path / "copies.toml"
    config.write_text(
        '[applications]\nendpoints = ["127.0.0.1:1"]\n[storage]\npath = "store"\n'
        + sqlite_targets(copies, "a", "b", "c")
    )
    result = txbackup("audit", "-c", str(config), "--live", "--json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["counts"] == report["counts"]


async def test_copy_between_prepare_and_commit_is_split(app: SampleServer, tmp_path: Path) -> None:
    """One store copied while a transfer is PREPARED, the coordinator before it commits, the
    other store after: after a restore, lazy recovery would roll the first back while the
    second keeps the transfer."""
    live = tmp_path / "live"
    live.mkdir()
    bank, paths = make_bank(live)
    copies = tmp_path / "naive"
    copies.mkdir()
    tx = "tx-in-flight"
    step = [Write(0, 3, -50), Write(1, 4, 50)]
    bank.prepare(tx, step)
    copy_file(paths[0], copies / "a.db")
    copy_file(paths[2], copies / "c.db")
    bank.decide(tx, COMMITTED)
    bank.commit_records(tx, step)
    copy_file(paths[1], copies / "b.db")
    bank.close()
    set_id = await backup(app, [copies / "a.db", copies / "b.db", copies / "c.db"], tmp_path)
    code, report, _ = audit(tmp_path, set_id)
    assert code == 1
    found = {(f["check"], f["target"], f["key"]["id"], f["tx_id"]) for f in report["findings"]}
    assert found == {
        ("prepared", "a", 3, tx),
        ("split-transaction", "a", 3, tx),
        ("committed-without-coordinator", "b", 4, tx),
    }


class Ordered:
    """A real SQLite target whose capture waits for ``before`` and, once captured, runs
    ``then`` and sets ``done``: the captures of one no-wait pause in a chosen order, with
    a transaction admitted before the pause moving on between them."""

    def __init__(self, inner: Target, before: threading.Event | None, then: Callable[[], None]) -> None:
        self.inner, self.before, self.then = inner, before, then
        self.name, self.kind = inner.name, inner.kind
        self.done = threading.Event()

    def describe(self) -> Mapping[str, Any]:
        return self.inner.describe()

    def preflight(self) -> None:
        self.inner.preflight()

    def check_record(self, record: Recorded) -> None:
        self.inner.check_record(record)

    def capture(self, set_id: str) -> Capture:
        if self.before is not None:
            assert self.before.wait(5)
        capture = self.inner.capture(set_id)
        self.then()
        self.done.set()
        return capture

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        self.inner.restore(src, dest, force)


async def test_no_wait_pause_with_a_transaction_in_flight_is_torn(app: SampleServer, tmp_path: Path) -> None:
    """A pause that does not wait for in-flight requests: a transfer admitted before it
    commits while the databases are captured. Coordinator captured first, then store a
    (the transfer PREPARED), then the transfer commits, then store b: lazy recovery would
    roll a back while b keeps the transfer."""
    bank, paths = make_bank(tmp_path)
    tx, step = "tx-admitted-before-the-pause", [Write(0, 5, -40), Write(1, 6, 40)]
    release = asyncio.Event()
    prepared = asyncio.Event()

    async def transfer() -> None:
        async with app.gate.request():
            bank.prepare(tx, step)
            prepared.set()
            await release.wait()

    def commit() -> None:  # the in-flight transfer goes on during the captures
        bank.decide(tx)
        bank.commit_records(tx, step)

    in_flight = asyncio.create_task(transfer())
    await prepared.wait()
    a, b, c = (
        build_target({"name": p.stem, "kind": "sqlite", "path": str(p)}, i) for i, p in enumerate(paths)
    )
    coordinator = Ordered(c, None, lambda: None)
    store_a = Ordered(a, coordinator.done, commit)
    store_b = Ordered(b, store_a.done, lambda: None)
    plan = BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=[coordinator, store_a, store_b],
        storage=LocalStorage(str(tmp_path / "store")),
        catalog=Catalog(str(tmp_path / "catalog.db")),
        capture_deadline_s=10,
        wait_outstanding=False,
    )
    try:
        set_id = (await run_backup(plan)).set_id
    finally:
        release.set()
        await in_flight
        bank.close()
    code, report, _ = audit(tmp_path, set_id)
    assert code == 1
    found = {(f["check"], f["target"], f["key"]["id"], f["tx_id"]) for f in report["findings"]}
    assert found == {
        ("prepared", "a", 5, tx),
        ("split-transaction", "a", 5, tx),
        ("committed-without-coordinator", "b", 6, tx),
    }


def test_audit_usage_errors(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    result = txbackup("audit", "--storage", store, "20261127T101500Z-3f9a", "--scratch", "x")
    assert result.returncode == 2 and "--scratch: expected NAME=DSN" in result.stderr
    result = txbackup(
        "audit", "--storage", store, "20261127T101500Z-3f9a", "--scratch", "x=postgresql://u:pw-xyzzy@h/"
    )
    assert result.returncode == 2 and "--scratch-password-env x=" in result.stderr, result.stderr
    assert "xyzzy" not in result.stderr
    result = txbackup("audit", "--storage", store, "not a set")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    result = txbackup("audit", "--storage", store)
    assert result.returncode == 2 and "give its ID" in result.stderr, result.stderr
    result = txbackup("audit", "--storage", store, "--live")
    assert result.returncode == 2 and "--live needs the cluster file" in result.stderr, result.stderr


@pytest.mark.parametrize("flag", ["--help"])
def test_help_says_which_checks_are_exact(flag: str) -> None:
    result = txbackup("audit", flag)
    assert result.returncode == 0
    for word in ("exact", "heuristic", "committed-without-coordinator", "split-transaction", "--scratch"):
        assert word in result.stdout
