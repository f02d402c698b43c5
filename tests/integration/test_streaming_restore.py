"""Restore in one read: faults that show only while an artifact streams into the database.

Every artifact is read once, verified as it streams (``engine.restore``). Each fault
below passes the cheap pre-check (the object is there with its recorded stored size) and
shows mid-stream: a flipped byte at the start, the middle or the end (the zstd checksum:
all the data right, the check wrong), a read cut at a chunk boundary (a connection cut
that the client took for the end), a manifest recording a data size one byte off either
way. Each one, for postgres (-Fc and -Fd), mysql and sqlite, must fail the restore in one
line naming the artifact, leave the job failed and the set as it was, leave the
destination as the message says, and a resume once the artifact is fixed must restore
everything. A stored size that does not match is refused by the pre-check: no job.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.config import build_target
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.engine.manifest import ArtifactRecord, Manifest, TargetRecord
from txbackup.engine.restore import RestorePlan, restore_set
from txbackup.errors import IntegrityError
from txbackup.jobs import JobStore
from txbackup.procs import find_tool
from txbackup.storage.base import CHUNK
from txbackup.storage.memory import MemoryStorage
from txbackup.targets.base import Target
from txbackup.targets.mysql.target import has_sandbox

KINDS = [
    pytest.param("pg-fc", marks=pytest.mark.postgres),
    pytest.param("pg-fd", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mariadb),
    "sqlite",
]
FAULTS = ["flip-start", "flip-middle", "flip-end", "cut-at-chunk", "size-larger", "size-smaller"]
BLOB_BYTES = 3 * CHUNK // 2  # random, so that every artifact holding it is stored in 2+ chunks


class CutStorage(MemoryStorage):
    """A store whose reads of the objects in ``cut`` end early, at the byte given
    (a connection cut mid-body that the client library took for the end)."""

    def __init__(self) -> None:
        super().__init__("streaming")
        self.cut: dict[str, int] = {}
        self.reads: list[str] = []  # every object opened for reading, in order

    def open_read(self, name: str, offset: int = 0, length: int | None = None) -> IO[bytes]:
        self.reads.append(name)
        stream = super().open_read(name, offset, length)
        if name not in self.cut:
            return stream
        return io.BytesIO(stream.read()[: self.cut[name]])


@dataclasses.dataclass
class Case:
    """One target kind: its target, where a restore puts it, and how to read it back."""

    target: Target
    destination: Callable[[], str]  # a fresh destination for one restore
    contents: Callable[[str], Any]  # what a destination holds (None: nothing)
    source: Any  # what the backed-up database held


def blob() -> bytes:
    return os.urandom(BLOB_BYTES)


def pg_case(server: PostgresServer, monkeypatch: pytest.MonkeyPatch, jobs: int) -> Case:
    db = server.create_database("src")
    with psycopg.connect(server.dsn(db), autocommit=True) as conn:
        conn.execute("CREATE TABLE big (k int PRIMARY KEY, v bytea)")
        conn.execute("CREATE TABLE small (k int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO big VALUES (1, %s)", (blob(),))
        conn.execute("INSERT INTO small SELECT g, 'row ' || g FROM generate_series(1, 500) g")
    monkeypatch.setenv("TXB_PG_PW", server.password)
    conf = {"name": "pg", "kind": "postgres", "host": server.host, "port": server.port,
            "user": server.user, "password_env": "TXB_PG_PW", "databases": [db], "jobs": jobs}  # fmt: skip

    def contents(dest: str) -> Any:
        try:
            conn = psycopg.connect(server.dsn(dest), autocommit=True)
        except psycopg.OperationalError:
            return None  # no such database
        with conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind = 'r' AND n.nspname = 'public'"
            ).fetchone()
            if not tables or not tables[0]:
                return None
            return (
                conn.execute("SELECT k, md5(v) FROM big ORDER BY k").fetchall(),
                conn.execute("SELECT k, v FROM small ORDER BY k").fetchall(),
            )

    def destination() -> str:
        return server.dsn(f"dst_{uuid.uuid4().hex[:8]}", with_password=False)

    def named(dsn: str) -> Any:
        return contents(str(conninfo_to_dict(dsn)["dbname"]))

    case = Case(build_target(conf, 0), destination, named, None)
    case.source = contents(db)
    return case


def mysql_case(server: MariaDBServer, monkeypatch: pytest.MonkeyPatch) -> Case:
    db = server.create_database("src")
    server.execute("CREATE TABLE big (k int PRIMARY KEY, v longblob)", db)
    server.execute("CREATE TABLE small (k int PRIMARY KEY, v text)", db)
    with server.connect(db) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO big VALUES (1, %s)", (blob(),))
        cur.executemany("INSERT INTO small VALUES (%s, %s)", [(i, f"row {i}") for i in range(500)])
        conn.commit()
    monkeypatch.setenv("TXB_MARIA_PW", server.password)
    conf = {"name": "my", "kind": "mysql", "host": server.host, "port": server.port,
            "user": server.user, "password_env": "TXB_MARIA_PW", "databases": [db]}  # fmt: skip

    def contents(dest: str) -> Any:
        found = server.rows("information_schema", f"SELECT 1 FROM schemata WHERE schema_name = '{dest}'")
        tables = server.rows(dest, "SHOW TABLES") if found else []
        if len(tables) < 2:
            return None if not tables else ("partial", tables)
        big = server.rows(dest, "SELECT k, md5(v) FROM big ORDER BY k")
        return big, server.rows(dest, "SELECT k, v FROM small ORDER BY k")

    def destination() -> str:
        return f"mysql://{server.user}@{server.host}:{server.port}/dst_{uuid.uuid4().hex[:8]}"

    case = Case(build_target(conf, 0), destination, lambda dsn: contents(dsn.rsplit("/", 1)[1]), None)
    case.source = contents(db)
    return case


def sqlite_case(tmp_path: Path) -> Case:
    path = tmp_path / "src.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE big (k INTEGER PRIMARY KEY, v BLOB)")
        conn.execute("INSERT INTO big VALUES (1, ?)", (blob(),))
    conn.close()

    def contents(dest: str) -> Any:
        if not os.path.exists(dest):
            return None
        with sqlite3.connect(dest) as db:
            rows = db.execute("SELECT k, v FROM big").fetchall()
        db.close()
        return rows

    case = Case(
        build_target({"name": "lite", "kind": "sqlite", "path": str(path)}, 0),
        lambda: str(tmp_path / f"dst-{uuid.uuid4().hex[:8]}.db"),
        contents,
        None,
    )
    case.source = contents(str(path))
    return case


@pytest.fixture
def case(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    kind = request.param
    if kind.startswith("pg"):
        return pg_case(request.getfixturevalue("postgres_server"), monkeypatch, 2 if kind == "pg-fd" else 1)
    if kind == "mysql":
        return mysql_case(request.getfixturevalue("mariadb_server"), monkeypatch)
    return sqlite_case(tmp_path)


async def backup(app: SampleServer, case: Case, storage: MemoryStorage, tmp_path: Path) -> Manifest:
    plan = BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=[case.target],
        storage=storage,
        catalog=Catalog(str(tmp_path / "catalog.db")),
        capture_deadline_s=5,
    )
    return await run_backup(plan)


def resized(manifest: Manifest, victim: ArtifactRecord, size: int) -> Manifest:
    """``manifest`` with ``victim``'s recorded data size replaced (a tampered record)."""
    (record,) = manifest.targets
    artifacts = [dataclasses.replace(a, size=size) if a is victim else a for a in record.artifacts]
    target: TargetRecord = dataclasses.replace(record, artifacts=artifacts)
    return dataclasses.replace(manifest, targets=[target])


def flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("case", KINDS, indirect=True)
async def test_a_fault_while_streaming_fails_the_job_and_a_resume_after_the_fix_restores(
    app: SampleServer, case: Case, fault: str, tmp_path: Path
) -> None:
    storage = CutStorage()
    manifest = await backup(app, case, storage, tmp_path)
    victim = max(manifest.targets[0].artifacts, key=lambda a: a.stored_size)
    assert victim.stored_size > CHUNK  # the cut lands on a chunk boundary inside the stream
    good = storage.objects[victim.path]
    faulty = manifest
    if fault.startswith("flip"):
        at = {"flip-start": 64, "flip-middle": len(good.data) // 2, "flip-end": len(good.data) - 2}[fault]
        storage.objects[victim.path] = dataclasses.replace(good, data=flipped(good.data, at))
    elif fault == "cut-at-chunk":
        storage.cut[victim.path] = CHUNK
    else:
        faulty = resized(manifest, victim, victim.size + (1 if fault == "size-larger" else -1))
    stored = {name: obj.data for name, obj in storage.objects.items()}
    jobs = JobStore(str(tmp_path / "jobs.db"))
    dest = case.destination()
    name = case.target.name

    with pytest.raises(IntegrityError) as err:
        restore_set(RestorePlan(storage, faulty, [case.target], jobs, destinations={name: dest}))
    text = str(err.value)
    (job,) = jobs.list()
    assert job.status == "failed" and "\n" not in text
    assert text.startswith(f"refusing to restore set {manifest.set_id}: artifact {victim.path}: "), text
    assert f"--resume {job.job_id}" in text
    assert {n: o.data for n, o in storage.objects.items()} == stored  # the set as it was
    left = case.contents(dest)
    if case.target.kind == "sqlite":
        assert left is None and ": untouched" in text  # renamed into place only once verified
    else:
        assert "holds part of the set" in text
        if case.target.kind == "postgres" and case.target.jobs == 1:  # type: ignore[attr-defined]
            assert left is None  # one transaction: it cannot commit without the last byte
    assert left != case.source

    # fixed (the object copied back, the read no longer cut, the record right): resumed
    storage.objects[victim.path] = good
    storage.cut.clear()
    again = RestorePlan(storage, manifest, [case.target], jobs, destinations={name: dest}, job_id=job.job_id)
    assert restore_set(again) == (job.job_id, [name])
    assert jobs.get(job.job_id).status == "complete"
    assert case.contents(dest) == case.source


@pytest.mark.parametrize("case", [KINDS[0], "sqlite"], indirect=True)
async def test_a_wrong_stored_size_is_refused_before_any_job(
    app: SampleServer, case: Case, tmp_path: Path
) -> None:
    storage = CutStorage()
    manifest = await backup(app, case, storage, tmp_path)
    victim = max(manifest.targets[0].artifacts, key=lambda a: a.stored_size)
    good = storage.objects[victim.path]
    storage.objects[victim.path] = dataclasses.replace(good, data=good.data[:-CHUNK])
    jobs = JobStore(str(tmp_path / "jobs.db"))
    dest = case.destination()
    with pytest.raises(IntegrityError, match="truncated or corrupt") as err:
        destinations = {case.target.name: dest}
        restore_set(RestorePlan(storage, manifest, [case.target], jobs, destinations=destinations))
    assert str(err.value).startswith(f"refusing to restore set {manifest.set_id}: artifact {victim.path}: ")
    assert jobs.list() == [] and case.contents(dest) is None


@pytest.mark.parametrize("case", KINDS, indirect=True)
async def test_each_artifact_is_read_once(app: SampleServer, case: Case, tmp_path: Path) -> None:
    """What "restore in one read" means: one read of each artifact, none before (issue 11)."""
    storage = CutStorage()
    manifest = await backup(app, case, storage, tmp_path)
    jobs = JobStore(str(tmp_path / "jobs.db"))
    dest = case.destination()
    storage.reads.clear()
    restore_set(RestorePlan(storage, manifest, [case.target], jobs, destinations={case.target.name: dest}))
    paths = sorted(a.path for a in manifest.targets[0].artifacts)
    if case.target.kind == "mysql":
        client = find_tool("mariadb", alternatives=("mysql",), culprit="test")
        if not has_sandbox(client, culprit="test"):
            paths = sorted(paths * 2)  # without --sandbox every dump is checked before any runs
    assert sorted(name for name in storage.reads if name.startswith("sets/")) == paths
    assert case.contents(dest) == case.source


@pytest.mark.parametrize("case", [KINDS[2], "sqlite"], indirect=True)
async def test_verify_first_refuses_a_corrupt_set_before_any_job(
    app: SampleServer, case: Case, tmp_path: Path
) -> None:
    """``--verify-first``: the set read whole first (two reads), nothing written, no job."""
    storage = CutStorage()
    manifest = await backup(app, case, storage, tmp_path)
    victim = max(manifest.targets[0].artifacts, key=lambda a: a.stored_size)
    good = storage.objects[victim.path]
    storage.objects[victim.path] = dataclasses.replace(good, data=flipped(good.data, len(good.data) // 2))
    jobs = JobStore(str(tmp_path / "jobs.db"))
    dest = case.destination()
    plan = RestorePlan(storage, manifest, [case.target], jobs, destinations={case.target.name: dest})
    with pytest.raises(IntegrityError) as err:
        restore_set(dataclasses.replace(plan, verify_first=True))
    assert str(err.value).startswith(f"refusing to restore set {manifest.set_id}: artifact {victim.path}: ")
    assert jobs.list() == [] and case.contents(dest) is None
