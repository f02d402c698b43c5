"""``txbackup drill`` on real PostgreSQL and MariaDB servers: a ScalarDB-shaped set (the
coordinator and the system namespace in PostgreSQL, a namespace in MariaDB) restored into
drill databases next to production on the same servers (renamed), timed, audited clean,
checked by SQL and by a command that gets the places in its environment, then dropped.
A drill place that is production under another spelling is refused before anything."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_audit_scratch import META
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.processes import txbackup
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.config import load_cluster
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.jobs import JobStore
from txbackup.secrets import REDACTED
from txbackup.storage import LocalStorage

CHECKER = """\
import os, sys
dsn = os.environ["TXBACKUP_DRILL_LEDGER_DSN"]
assert "dbname=drill_" in dsn and "password" not in dsn, dsn
assert os.environ["TXBACKUP_DRILL_ORDERS_DATABASES"].startswith("drill_"), os.environ
print("orders password:", os.environ["TXBACKUP_DRILL_ORDERS_PASSWORD"])
"""


COLUMNS = "id, balance, tx_id, tx_state, tx_version, tx_prepared_at, tx_committed_at"


def _rows(tx: str, at: int) -> str:
    return ", ".join(f"({i}, 100, '{tx}', 3, 1, {at}, {at})" for i in range(10))


def pg_databases(pg: PostgresServer) -> set[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        return {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database")}


def maria_databases(maria: MariaDBServer) -> set[str]:
    conn = maria.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES")
            return {str(r[0]) for r in cur.fetchall()}
    finally:
        conn.close()


@pytest.mark.postgres
@pytest.mark.mariadb
async def test_drill_on_postgres_and_mariadb(
    app: SampleServer,
    postgres_server: PostgresServer,
    postgres_db: str,
    mariadb_server: MariaDBServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pg, maria = postgres_server, mariadb_server
    at = 1_700_000_000_000
    bank_m = maria.create_database("bank_m")
    pg.execute("CREATE SCHEMA bank; CREATE SCHEMA coordinator; CREATE SCHEMA scalardb", postgres_db)
    for sql in (
        f"CREATE TABLE bank.accounts (id INT PRIMARY KEY, balance INT, {META.format(text='TEXT')})",
        f"INSERT INTO bank.accounts ({COLUMNS}) VALUES {_rows('t-pg', at)}",
        "CREATE TABLE coordinator.state (tx_id TEXT PRIMARY KEY, tx_child_ids TEXT, tx_state INT,"
        " tx_created_at BIGINT)",
        f"INSERT INTO coordinator.state VALUES ('t-pg', NULL, 3, {at}), ('t-my', NULL, 3, {at})",
        "CREATE TABLE scalardb.metadata (full_table_name TEXT, column_name TEXT, data_type TEXT,"
        " key_type TEXT, clustering_order TEXT, indexed BOOLEAN, ordinal_position INT,"
        " PRIMARY KEY (full_table_name, column_name))",
        "INSERT INTO scalardb.metadata VALUES ('bank.accounts', 'id', 'INT', 'PARTITION', NULL, FALSE, 1),"
        f" ('{bank_m}.accounts', 'id', 'INT', 'PARTITION', NULL, FALSE, 1)",
    ):  # fmt: skip
        pg.execute(sql, postgres_db)
    meta = META.format(text="VARCHAR(128)")
    maria.execute(f"CREATE TABLE accounts (id INT PRIMARY KEY, balance INT, {meta})", bank_m)
    maria.execute(f"INSERT INTO accounts ({COLUMNS}) VALUES {_rows('t-my', at)}", bank_m)
    monkeypatch.setenv("TXB_PG_PW", pg.password)
    monkeypatch.setenv("TXB_MARIA_PW", maria.password)
    (tmp_path / "checker.py").write_text(CHECKER)
    head = (
        '[applications]\nendpoints = ["127.0.0.1:1"]\n[storage]\npath = "store"\n'
        '[catalog]\npath = "catalog.db"\n'
        f'[[targets]]\nname = "ledger"\nkind = "postgres"\nhost = "{pg.host}"\nport = {pg.port}\n'
        f'user = "{pg.user}"\npassword_env = "TXB_PG_PW"\ndatabases = ["{postgres_db}"]\n'
        f'[[targets]]\nname = "orders"\nkind = "mysql"\nhost = "{maria.host}"\nport = {maria.port}\n'
        f'user = "{maria.user}"\npassword_env = "TXB_MARIA_PW"\ndatabases = ["{bank_m}"]\n'
        'coordinator_database = ""\nsystem_database = ""\n'
    )  # fmt: skip
    drill_pg, drill_my = f"drill_{postgres_db}", f"drill_{bank_m}"
    places = (
        f'[drill]\ncommand = ["{sys.executable}", "{tmp_path / "checker.py"}"]\n'
        f'[drill.targets.ledger]\ndsn = "host={pg.host} port={pg.port} dbname={drill_pg}"\n'
        f'[drill.targets.orders]\ndsn = "mysql://{maria.user}@{maria.host}:{maria.port}"\n'
        f'rename = {{ {bank_m} = "{drill_my}" }}\n'
        '[[drill.checks]]\nname = "pg-accounts"\ntarget = "ledger"\n'
        'sql = "SELECT count(*) FROM bank.accounts"\nexpect = "10"\n'
        f'[[drill.checks]]\nname = "my-money"\ntarget = "orders"\ndatabase = "{bank_m}"\n'
        'sql = "SELECT sum(balance) FROM accounts"\nexpect = "1000"\n'
    )  # fmt: skip
    config = tmp_path / "cluster.toml"
    config.write_text(head + places)
    cluster = load_cluster(config)
    manifest = await run_backup(
        BackupPlan(
            fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
            targets=cluster.targets,
            storage=LocalStorage(str(tmp_path / "store")),
            catalog=Catalog(str(tmp_path / "catalog.db")),
            capture_deadline_s=10,
        )
    )
    env = dict(os.environ)
    result = txbackup("drill", "-c", str(config), "--latest", "--json", env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] and answer["set_id"] == manifest.set_id, answer["failures"]
    targets = answer["restore"]["targets"]
    assert targets["ledger"]["restore_seconds"] > 0 and targets["orders"]["restore_seconds"] > 0
    assert f"{bank_m}->{drill_my}" in targets["orders"]["destination"]
    assert answer["audit"]["clean"] and answer["audit"]["records"] == 20, answer["audit"]
    assert answer["audit"]["coordinator_rows"] == 2
    assert [c["answer"] for c in answer["checks"]] == ["10", "1000"]
    assert answer["command"]["exit_code"] == 0
    assert f"orders password: {REDACTED}" in answer["command"]["output"], answer["command"]
    assert maria.password not in result.stdout + result.stderr and pg.password not in result.stdout
    assert answer["cleanup"]["targets"] == {
        "ledger": {"removed": [drill_pg]}, "orders": {"removed": [drill_my]}
    }  # fmt: skip
    assert drill_pg not in pg_databases(pg) and drill_my not in maria_databases(maria), "not dropped"
    with psycopg.connect(pg.dsn(postgres_db)) as conn:
        assert conn.execute("SELECT count(*) FROM bank.accounts").fetchone() == (10,), "production intact"

    # --keep: the drill databases stay, and are what the audit read
    result = txbackup("drill", "-c", str(config), manifest.set_id, "--keep", env=env, timeout=180)
    assert result.returncode == 0 and "PASSED" in result.stdout, result.stderr
    assert drill_pg in pg_databases(pg) and drill_my in maria_databases(maria)
    # ... and a failing check fails the next drill, which overwrites them and cleans up, even
    # with a session left open on the PostgreSQL copy
    failing = places.replace('expect = "1000"', 'expect = "999"')
    config.write_text(head + failing)
    with psycopg.connect(pg.dsn(drill_pg)):
        result = txbackup("drill", "-c", str(config), manifest.set_id, env=env, timeout=180)
    assert result.returncode == 1, result.stderr
    assert (
        "txbackup: drill failed: step check, target orders: check my-money: answered '1000', expected '999'"
        in result.stderr
    ), result.stderr
    assert drill_pg not in pg_databases(pg) and drill_my not in maria_databases(maria)

    # production under other spellings: refused before anything (no job, nothing dropped)
    jobs = len(JobStore(str(tmp_path / "catalog.db")).list())
    for bad, says in (
        (places.replace(f"host={pg.host} port={pg.port} dbname={drill_pg}",
                        f"host=localhost port={pg.port} dbname={postgres_db}"),
         f"target ledger: the drill place host=localhost port={pg.port} dbname={postgres_db} is its own"),
        (places.replace(f'rename = {{ {bank_m} = "{drill_my}" }}\n', ""),
         f"is its own production place (mysql localhost:{maria.port} database {bank_m})"),
    ):  # fmt: skip
        config.write_text(head + bad)
        result = txbackup("drill", "-c", str(config), "--latest", env=env, timeout=60)
        assert result.returncode == 2 and says in result.stderr, result.stderr
    assert len(JobStore(str(tmp_path / "catalog.db")).list()) == jobs
    assert postgres_db in pg_databases(pg) and bank_m in maria_databases(maria)
    maria.execute(f"DROP DATABASE `{bank_m}`")
