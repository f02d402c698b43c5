"""Restore through the engine on a real MariaDB and PostgreSQL: databases renamed on
restore next to their originals, and every refusal (a bad rename, a non-empty
destination) made before a single artifact is read and before a job exists, proven with
a storage that fails any artifact read."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.config import build_target
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.engine.manifest import Manifest
from txbackup.engine.restore import RestorePlan, check_request, restore_set
from txbackup.errors import StorageError, TargetError, UsageError
from txbackup.jobs import JobStore
from txbackup.storage.memory import Fault, FaultInjector, MemoryStorage
from txbackup.targets.base import Target


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


class Store:
    """A memory storage that refuses every artifact read while ``guard`` is on."""

    def __init__(self) -> None:
        self.faults = FaultInjector()
        self.storage = MemoryStorage(faults=self.faults)
        self.guard: Fault | None = None

    def forbid_artifact_reads(self, target: str) -> None:
        self.guard = self.faults.add("open_read", "permanent", pattern=f"sets/*/{target}/*", times=None)

    def allow(self) -> None:
        assert self.guard is not None
        self.guard.times = 0  # never fires again

    def artifact_reads(self) -> int:
        return 0 if self.guard is None else self.guard.fired


async def _backup(app: SampleServer, target: Target, store: Store, tmp: Path) -> Manifest:
    plan = BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=[target],
        storage=store.storage,
        catalog=Catalog(str(tmp / "catalog.db")),
        capture_deadline_s=10,
    )
    return await run_backup(plan)


def _plan(store: Store, manifest: Manifest, target: Target, jobs: JobStore, **extra: Any) -> RestorePlan:
    return RestorePlan(storage=store.storage, manifest=manifest, targets=[target], jobs=jobs, **extra)


# -- MariaDB ---------------------------------------------------------------------------------------
@pytest.fixture
def maria_case(mariadb_server: MariaDBServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("TXB_MARIA_PW", mariadb_server.password)
    a, b, coord = _unique("ns_a"), _unique("ns_b"), _unique("coord")
    for db in (a, b, coord):
        mariadb_server.execute(f"CREATE DATABASE `{db}`")
    mariadb_server.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)", a)
    mariadb_server.execute("INSERT INTO accounts VALUES (1, 100), (2, 200)", a)
    mariadb_server.execute("CREATE VIEW rich AS SELECT id FROM accounts WHERE balance > 150", a)
    mariadb_server.execute("CREATE TABLE stock (sku varchar(20) PRIMARY KEY, n int)", b)
    mariadb_server.execute("INSERT INTO stock VALUES ('x', 3)", b)
    mariadb_server.execute("CREATE TABLE state (tx_id varchar(64) PRIMARY KEY, s int)", coord)
    mariadb_server.execute("INSERT INTO state VALUES ('t1', 3)", coord)
    conf = {
        "name": "orders", "kind": "mysql", "host": mariadb_server.host, "port": mariadb_server.port,
        "user": mariadb_server.user, "password_env": "TXB_MARIA_PW", "databases": [a, b],
        "coordinator_database": coord,
    }  # fmt: skip
    return {"target": build_target(conf, 0), "a": a, "b": b, "coord": coord}



@pytest.mark.mariadb
async def test_mysql_databases_renamed_next_to_the_originals(
    app: SampleServer, mariadb_server: MariaDBServer, maria_case: dict[str, Any], tmp_path: Path
) -> None:
    target, a, b, coord = maria_case["target"], maria_case["a"], maria_case["b"], maria_case["coord"]
    store = Store()
    manifest = await _backup(app, target, store, tmp_path)
    mariadb_server.execute("UPDATE accounts SET balance = 999 WHERE id = 1", a)  # after the backup
    jobs = JobStore(str(tmp_path / "jobs.db"))
    store.forbid_artifact_reads("orders")

    def refused(error: type[Exception], match: str, **extra: Any) -> None:
        with pytest.raises(error, match=match) as caught:
            restore_set(_plan(store, manifest, target, jobs, **extra))
        assert "\n" not in str(caught.value) and "--resume" not in str(caught.value)

    new = {a: _unique("a2"), b: _unique("b2"), coord: _unique("c2")}
    hostile = [
        ({a: "x`; DROP DATABASE y"}, "a new name takes letters"),
        ({a: "../../etc"}, "a new name takes letters"),
        ({a: "two\nlines"}, "a new name takes letters"),
        ({a: "x" * 65}, "at most 64"),
        ({a: "mysql"}, "a system database"),
        ({a: "INFORMATION_SCHEMA"}, "a system database"),
        ({"nope": "x"}, "not one of the target's"),
        ({a: b}, "would both be restored into"),  # b keeps its name: a collision
        ({a: "same", b: "same"}, "would both be restored into"),
    ]
    for renames, message in hostile:
        refused(UsageError, message, renames={"orders": renames})
    # the same refusals before the storage is even read (what the CLI runs first)
    with pytest.raises(UsageError, match="a system database"):
        check_request([target], [], {}, {}, {"orders": {a: "sys"}})
    with pytest.raises(UsageError, match="--target 'other': no target named so"):
        check_request([target], ["other"], {}, {}, {"orders": {a: "x"}})
    with pytest.raises(UsageError, match="destination DSN must look like mysql://"):
        check_request([target], [], {"orders": "postgresql://h/db"}, {}, {})
    # only the renamed ones move: b, restored into itself, is not empty
    kept = f'destination database "({b}|{coord})" .* is not empty'
    refused(TargetError, kept, renames={"orders": {a: new[a]}})
    # every message names the set, the target and the destination as given
    with pytest.raises(TargetError) as caught:
        restore_set(_plan(store, manifest, target, jobs, renames={"orders": {a: new[a]}}))
    assert f"restore of set {manifest.set_id}, target orders into its own server (renaming" in str(
        caught.value
    )
    assert store.artifact_reads() == 0 and jobs.list() == []  # nothing read, no job
    # the guard does see artifact reads: a request that passes every check gets to them
    # (the restore reads each artifact once, as it loads it: a store failing then fails
    # the job, which resumes once the store answers)
    with pytest.raises(StorageError, match="injected permanent fault") as faulted:
        restore_set(_plan(store, manifest, target, jobs, renames={"orders": new}))
    (failed,) = jobs.list()
    assert store.artifact_reads() > 0 and failed.status == "failed"
    assert f"--resume {failed.job_id}" in str(faulted.value)

    store.allow()
    job_id, restored = restore_set(
        _plan(store, manifest, target, jobs, renames={"orders": new}, job_id=failed.job_id)
    )
    assert restored == ["orders"]
    assert mariadb_server.rows(new[a], "SELECT * FROM accounts ORDER BY id") == [(1, 100), (2, 200)]
    assert mariadb_server.rows(new[a], "SELECT * FROM rich") == [(2,)]  # the view follows
    assert mariadb_server.rows(new[b], "SELECT * FROM stock") == [("x", 3)]
    assert mariadb_server.rows(new[coord], "SELECT * FROM state") == [("t1", 3)]
    # the originals were not touched
    assert mariadb_server.rows(a, "SELECT * FROM accounts ORDER BY id") == [(1, 999), (2, 200)]
    (job,) = jobs.list()
    assert job.job_id == job_id and job.params["renames"] == {"orders": new}
    assert job.params["targets"] == ["orders"]
    # the journal records where each database went
    journal = jobs.journal(job_id, "orders")
    assert journal.data(f"database/{a}") == {"database": new[a]}


# -- PostgreSQL ------------------------------------------------------------------------------------
@pytest.mark.postgres
async def test_postgres_databases_renamed_next_to_the_originals(
    app: SampleServer, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TXB_PG_PW", postgres_server.password)
    one, two = postgres_server.create_database("one"), postgres_server.create_database("two")
    for db in (one, two):
        postgres_server.execute(
            f"CREATE TABLE items (id int PRIMARY KEY, db text); INSERT INTO items VALUES (1, '{db}')", db
        )
    conf = {
        "name": "ledger", "kind": "postgres", "port": postgres_server.port, "user": postgres_server.user,
        "password_env": "TXB_PG_PW", "databases": [one, two],
    }  # fmt: skip
    target = build_target(conf, 0)
    store = Store()
    manifest = await _backup(app, target, store, tmp_path)
    jobs = JobStore(str(tmp_path / "jobs.db"))
    store.forbid_artifact_reads("ledger")
    for renames, message in [
        ({one: "template1"}, "a system database"),
        ({one: "x" * 64}, "at most 63"),
        ({one: two}, "would both be restored into"),
        ({one: 'a"; DROP DATABASE b; --'}, "a new name takes letters"),
    ]:
        with pytest.raises(UsageError, match=message):
            restore_set(_plan(store, manifest, target, jobs, renames={"ledger": renames}))
    with pytest.raises(TargetError, match=f'"{two}" .* is not empty'):
        restore_set(_plan(store, manifest, target, jobs, renames={"ledger": {one: _unique("one2")}}))
    assert store.artifact_reads() == 0 and jobs.list() == []

    store.allow()
    new = {one: _unique("one2"), two: _unique("two2")}
    restore_set(_plan(store, manifest, target, jobs, renames={"ledger": new}))
    for old, copy in new.items():
        with psycopg.connect(postgres_server.dsn(copy)) as conn:
            assert conn.execute("SELECT id, db FROM items").fetchall() == [(1, old)]
    # pg_restore -d lands a database under any name: the dump names none
    assert len(jobs.list()) == 1

    # a job interrupted while loading a database: --resume finishes what it started
    again = {one: _unique("one3"), two: _unique("two3")}
    plan = _plan(store, manifest, target, jobs, renames={"ledger": again})
    plan.job_id = jobs.create(manifest.set_id, plan.params())
    postgres_server.execute(f"CREATE DATABASE {again[one]}")
    half = "CREATE TABLE items (id int PRIMARY KEY, db text); INSERT INTO items VALUES (7, 'half')"
    postgres_server.execute(half, again[one])
    with pytest.raises(TargetError, match=f'"{again[one]}" .* is not empty'):
        restore_set(plan)
    jobs.journal(plan.job_id, "ledger").mark_done(f"database/{one}/started", {"database": again[one]})
    restore_set(plan)
    with psycopg.connect(postgres_server.dsn(again[one])) as conn:
        assert conn.execute("SELECT id, db FROM items").fetchall() == [(1, one)]


@pytest.mark.mariadb
async def test_mysql_restore_resumed_into_a_database_it_had_started(
    app: SampleServer, mariadb_server: MariaDBServer, maria_case: dict[str, Any], tmp_path: Path
) -> None:
    """A restore interrupted while the client was loading a database leaves it half full:
    --resume finishes it (the dump replaces each of its objects) instead of refusing it as
    "not empty", which --resume (no --force) could never get past."""
    target, a = maria_case["target"], maria_case["a"]
    store = Store()
    manifest = await _backup(app, target, store, tmp_path)
    jobs = JobStore(str(tmp_path / "jobs.db"))
    new = {db: _unique("r") for db in (a, maria_case["b"], maria_case["coord"])}
    plan = _plan(store, manifest, target, jobs, renames={"orders": new})
    # what an interrupted run leaves: a job, the database created and half loaded
    plan.job_id = jobs.create(manifest.set_id, plan.params())
    mariadb_server.execute(f"CREATE DATABASE `{new[a]}`")
    mariadb_server.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)", new[a])
    mariadb_server.execute("INSERT INTO accounts VALUES (1, 100)", new[a])
    # not journaled as started by this job: someone else's data, refused
    with pytest.raises(TargetError, match=f'"{new[a]}" .* is not empty'):
        restore_set(plan)
    jobs.journal(plan.job_id, "orders").mark_done(f"database/{a}/started", {"database": new[a]})
    job_id, _ = restore_set(plan)
    assert job_id == plan.job_id and jobs.get(job_id).status == "complete"
    assert mariadb_server.rows(new[a], "SELECT * FROM accounts ORDER BY id") == [(1, 100), (2, 200)]
    assert mariadb_server.rows(new[a], "SELECT * FROM rich") == [(2,)]
