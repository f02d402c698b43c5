"""``audit`` of PostgreSQL and MariaDB targets through a scratch restore (real servers):
ScalarDB-shaped namespaces (``bank``, the coordinator, the system namespace) with one
record committed by a transaction the coordinator never saw and one left PREPARED.
The set is restored into scratch databases, read, judged, and the scratch dropped."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import psycopg
import pytest

from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.processes import txbackup
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.config import build_target
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.audit import AuditOptions, AuditPlan, AuditReport, audit_live, audit_set
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.engine.manifest import read_manifest
from txbackup.errors import UsageError
from txbackup.storage import LocalStorage
from txbackup.targets.base import Target

META = (
    "tx_id {text}, tx_state INT, tx_version INT, tx_prepared_at BIGINT, tx_committed_at BIGINT,"
    " before_balance INT, before_tx_id {text}, before_tx_state INT, before_tx_version INT,"
    " before_tx_prepared_at BIGINT, before_tx_committed_at BIGINT"
)


def statements(bank: str, coordinator: str, system: str, text: str, quote: str) -> list[str]:
    """ScalarDB's tables (JDBC layout) with one torn record (10) and one PREPARED (11)."""
    q = quote
    now = int(time.time() * 1000)
    old = now - 60_000
    rows = [f"({i}, 100, 't-ok', 3, 1, {old}, {old})" for i in range(10)]
    rows += [f"(10, 90, 't-torn', 3, 2, {now}, {now})", f"(11, 80, 't-prep', 1, 2, {old}, NULL)"]
    return [
        f"CREATE TABLE {q}{bank}{q}.accounts (id INT PRIMARY KEY, balance INT, {META.format(text=text)})",
        f"INSERT INTO {q}{bank}{q}.accounts (id, balance, tx_id, tx_state, tx_version, tx_prepared_at,"
        f" tx_committed_at) VALUES {', '.join(rows)}",
        f"CREATE TABLE {q}{coordinator}{q}.state (tx_id {text} PRIMARY KEY, tx_child_ids {text},"
        " tx_state INT, tx_created_at BIGINT)",
        f"INSERT INTO {q}{coordinator}{q}.state VALUES ('t-ok', NULL, 3, {old})",
        f"CREATE TABLE {q}{system}{q}.metadata (full_table_name {text}, column_name {text},"
        " data_type VARCHAR(20), key_type VARCHAR(20), clustering_order VARCHAR(10), indexed BOOLEAN,"
        " ordinal_position INT, PRIMARY KEY (full_table_name, column_name))",
        f"INSERT INTO {q}{system}{q}.metadata VALUES ('{bank}.accounts', 'id', 'INT', 'PARTITION', NULL,"
        " FALSE, 1)",
    ]


async def backup(app: SampleServer, target: Target, folder: Path) -> tuple[LocalStorage, str]:
    storage = LocalStorage(str(folder / "store"))
    plan = BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=[target],
        storage=storage,
        catalog=Catalog(str(folder / "catalog.db")),
        capture_deadline_s=10,
    )
    return storage, (await run_backup(plan)).set_id


def check_findings(report: AuditReport, target: str, bank: str) -> None:
    found = {(f.check, f.target, f.table, tuple(f.key.items()), f.tx_id) for f in report.findings}
    assert found == {
        ("committed-without-coordinator", target, f"{bank}.accounts", (("id", 10),), "t-torn"),
        ("prepared", target, f"{bank}.accounts", (("id", 11),), "t-prep"),
    }, found
    assert report.records == 12 and report.coordinator_rows == 1 and not report.clean


@pytest.mark.postgres
async def test_postgres_through_a_scratch_restore(
    app: SampleServer, postgres_server: PostgresServer, postgres_db: str, tmp_path: Path, monkeypatch
) -> None:
    pg = postgres_server
    pg.execute("CREATE SCHEMA bank; CREATE SCHEMA coordinator; CREATE SCHEMA scalardb", postgres_db)
    for sql in statements("bank", "coordinator", "scalardb", "TEXT", '"'):
        pg.execute(sql, postgres_db)
    monkeypatch.setenv("TXB_PG_PW", pg.password)
    target = build_target(
        {"name": "ledger", "kind": "postgres", "host": pg.host, "port": pg.port, "user": pg.user,
         "password_env": "TXB_PG_PW", "databases": [postgres_db]}, 0,
    )  # fmt: skip
    storage, set_id = await backup(app, target, tmp_path)
    scratch_db = f"audit_{postgres_db}"
    plan = AuditPlan(
        storage=storage,
        manifest=read_manifest(storage, set_id),
        targets=[target],
        scratch={"ledger": {"dsn": pg.dsn(scratch_db, with_password=False), "password": pg.password}},
    )
    check_findings(audit_set(plan), "ledger", "bank")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (scratch_db,)).fetchone()
    assert row == (0,), "the scratch database is dropped after the audit"
    # the same through the command, the scratch password from the environment
    config = tmp_path / "cluster.toml"
    config.write_text(
        '[applications]\nendpoints = ["127.0.0.1:1"]\n[storage]\npath = "store"\n'
        f'[[targets]]\nname = "ledger"\nkind = "postgres"\nhost = "{pg.host}"\nport = {pg.port}\n'
        f'user = "{pg.user}"\npassword_env = "TXB_PG_PW"\ndatabases = ["{postgres_db}"]\n'
    )
    env = {**os.environ, "TXB_PG_PW": pg.password, "AUDIT_PW": pg.password}
    result = txbackup(
        "audit", "-c", str(config), set_id, "--json", "--scratch",
        f"ledger={pg.dsn(scratch_db, with_password=False)}", "--scratch-password-env", "ledger=AUDIT_PW",
        env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    answer = json.loads(result.stdout)
    assert answer["counts"] == {"committed-without-coordinator": 1, "prepared": 1}
    assert pg.password not in result.stdout + result.stderr
    result = txbackup("audit", "-c", str(config), set_id, env=env)
    assert result.returncode == 1 and "ledger: not audited (kind postgres" in result.stdout, result.stdout
    # the source database itself, read in place
    check_findings(audit_live([target], AuditOptions()), "ledger", "bank")
    result = txbackup("audit", "-c", str(config), "--live", "--json", env=env)
    assert result.returncode == 1 and json.loads(result.stdout)["counts"]["prepared"] == 1, result.stderr
    # without a scratch server the target is named, not silently skipped
    report = audit_set(AuditPlan(storage=storage, manifest=plan.manifest, targets=[target]))
    assert report.not_audited == [
        "ledger: not audited (kind postgres is read from a scratch restore: give --scratch ledger=DSN)"
    ] and not report.clean
    with pytest.raises(UsageError, match="no target 'nope'"):
        audit_set(AuditPlan(storage=storage, manifest=plan.manifest, targets=[target], scratch={"nope": {}}))


@pytest.mark.mariadb
async def test_mariadb_through_a_scratch_restore(
    app: SampleServer, mariadb_server: MariaDBServer, tmp_path: Path, monkeypatch
) -> None:
    maria = mariadb_server
    bank, coordinator, system = (maria.create_database(p) for p in ("bank", "coord", "sys"))
    for sql in statements(bank, coordinator, system, "VARCHAR(128)", "`"):
        maria.execute(sql)
    monkeypatch.setenv("TXB_MARIA_PW", maria.password)
    target = build_target(
        {"name": "orders", "kind": "mysql", "host": maria.host, "port": maria.port, "user": maria.user,
         "password_env": "TXB_MARIA_PW", "databases": [bank, system], "coordinator_database": coordinator},
        0,
    )  # fmt: skip
    storage, set_id = await backup(app, target, tmp_path)
    for db in (bank, coordinator, system):  # the scratch server is the same one: free the names
        maria.execute(f"DROP DATABASE `{db}`")
    server = f"mysql://{maria.user}@{maria.host}:{maria.port}"
    plan = AuditPlan(
        storage=storage,
        manifest=read_manifest(storage, set_id),
        targets=[target],
        scratch={"orders": {"dsn": server, "password": maria.password}},
        options=AuditOptions(coordinator_namespace=coordinator),
        system_namespace=system,
    )
    check_findings(audit_set(plan), "orders", bank)
    assert not databases(maria) & {bank, coordinator, system}, "the scratch databases are dropped"
    check_findings(audit_set(dataclasses.replace(plan, keep_scratch=True)), "orders", bank)
    assert databases(maria) >= {bank, coordinator, system}
    # what was kept is the restored copy: read in place, it says the same
    check_findings(audit_live([target], plan.options, system), "orders", bank)
    for db in (bank, coordinator, system):
        maria.execute(f"DROP DATABASE `{db}`")


def databases(maria: MariaDBServer) -> set[str]:
    conn = maria.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES")
            return {str(r[0]) for r in cur.fetchall()}
    finally:
        conn.close()
