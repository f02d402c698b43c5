"""``txbackup init --scalardb-config`` against real servers: a multi-storage ScalarDB layout
(PostgreSQL default storage holding the coordinator, MariaDB holding a mapped namespace, each
with its own system namespace); the written cluster file loads, passes preflight and backs up
through the engine, with the coordinator and both system namespaces in the set; a file that
leaves either out is refused before anything is paused."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.cli import main
from txbackup.config import load_cluster
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.errors import TargetError, UsageError
from txbackup.storage import LocalStorage

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb]

# the shapes ScalarDB's JdbcAdmin gives its tables (a record's transaction columns, the
# coordinator's state table, the system namespace's metadata table)
RECORD = (
    "(id int PRIMARY KEY, amount int, tx_id text, tx_state int, tx_version int, tx_prepared_at bigint,"
    " tx_committed_at bigint, before_tx_id text, before_tx_state int, before_tx_version int,"
    " before_tx_prepared_at bigint, before_tx_committed_at bigint, before_amount int)"
)
METADATA = (
    "(full_table_name varchar(128), column_name varchar(128), data_type varchar(20), key_type varchar(20),"
    " clustering_order varchar(10), indexed boolean, ordinal_position int,"
    " PRIMARY KEY (full_table_name, column_name))"
)


def scalardb_layout(pg: PostgresServer, maria: MariaDBServer, suffix: str) -> tuple[str, dict[str, str]]:
    """A PostgreSQL database and MariaDB databases as ScalarDB (multi-storage) leaves them."""
    names = {k: f"{k}_{suffix}" for k in ("coord", "meta", "cust")}
    database = pg.create_database("sdb")
    coord, meta, cust = names["coord"], names["meta"], names["cust"]
    with psycopg.connect(pg.dsn(database), autocommit=True) as conn:
        for statement in (
            "CREATE SCHEMA ordr",
            f"CREATE TABLE ordr.orders {RECORD}",
            "INSERT INTO ordr.orders (id, amount, tx_id, tx_state) VALUES (1, 10, 'tx-1', 3)",
            f'CREATE SCHEMA "{coord}"',
            f'CREATE TABLE "{coord}".state (tx_id text PRIMARY KEY, tx_state int, tx_created_at bigint)',
            f"INSERT INTO \"{coord}\".state VALUES ('tx-1', 3, 1700000000000)",
            f'CREATE SCHEMA "{meta}"',
            f'CREATE TABLE "{meta}".metadata {METADATA}',
            f"INSERT INTO \"{meta}\".metadata VALUES"
            " ('ordr.orders', 'id', 'INT', 'PARTITION', NULL, false, 1)",
        ):
            conn.execute(statement.encode())
    for statement in (
        f"CREATE DATABASE `{cust}`",
        f"CREATE TABLE `{cust}`.customers {RECORD.replace('text', 'varchar(128)')}",
        f"INSERT INTO `{cust}`.customers (id, amount, tx_id, tx_state) VALUES (7, 70, 'tx-1', 3)",
        f"CREATE DATABASE `{meta}`",
        f"CREATE TABLE `{meta}`.metadata {METADATA}",
        f"INSERT INTO `{meta}`.metadata VALUES ('{cust}.customers', 'id', 'INT', 'PARTITION', NULL, 0, 1)",
    ):
        maria.execute(statement)
    return database, names


def properties(pg: PostgresServer, maria: MariaDBServer, database: str, names: dict[str, str]) -> str:
    prefix = "scalar.db.multi_storage.storages"
    return "\n".join(
        [
            "# a ScalarDB server's database.properties (multi-storage)",
            "scalar.db.storage=multi-storage",
            "scalar.db.multi_storage.storages=postgresql,mariadb",
            f"{prefix}.postgresql.storage=jdbc",
            f"{prefix}.postgresql.contact_points=jdbc:postgresql://{pg.host}:{pg.port}/{database}",
            f"{prefix}.postgresql.username={pg.user}",
            f"{prefix}.postgresql.password=${{env:SDB_TEST_PG_PASSWORD}}",
            f"{prefix}.mariadb.storage=jdbc",
            f"{prefix}.mariadb.contact_points=jdbc:mysql://{maria.host}:{maria.port}/",
            f"{prefix}.mariadb.username={maria.user}",
            f"{prefix}.mariadb.password={maria.password}",
            f"scalar.db.multi_storage.namespace_mapping={names['cust']}:mariadb,ordr:postgresql",
            "scalar.db.multi_storage.default_storage=postgresql",
            f"scalar.db.consensus_commit.coordinator.namespace={names['coord']}",
            f"scalar.db.system_namespace_name={names['meta']}",
            "scalar.db.consensus_commit.isolation_level=SERIALIZABLE",
        ]
    )


def init_from_properties(
    pg: PostgresServer, maria: MariaDBServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, str], Path]:
    """A fresh ScalarDB layout on both servers, its properties file, and the cluster file
    ``init --scalardb-config`` wrote from it (with the passwords it names in the environment):
    the PostgreSQL database, the namespace names, the cluster file."""
    database, names = scalardb_layout(pg, maria, uuid.uuid4().hex[:8])
    props = tmp_path / "database.properties"
    props.write_text(properties(pg, maria, database, names))
    out = tmp_path / "cluster.toml"
    assert main(["init", "--scalardb-config", str(props), "--output", str(out)]) == 0
    monkeypatch.setenv("SDB_TEST_PG_PASSWORD", pg.password)
    monkeypatch.setenv("TXBACKUP_MARIADB_PASSWORD", maria.password)
    return database, names, out


async def test_init_writes_a_cluster_file_that_backs_up_scalardb(
    postgres_server: PostgresServer,
    mariadb_server: MariaDBServer,
    app: SampleServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database, names = scalardb_layout(postgres_server, mariadb_server, uuid.uuid4().hex[:8])
    props = tmp_path / "database.properties"
    props.write_text(properties(postgres_server, mariadb_server, database, names))
    out = tmp_path / "cluster.toml"
    assert main(["init", "--scalardb-config", str(props), "--output", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["coordinator_target"] == "postgresql"
    assert "TXBACKUP_MARIADB_PASSWORD" in captured.err  # the literal password was not copied
    assert mariadb_server.password not in out.read_text()

    monkeypatch.setenv("SDB_TEST_PG_PASSWORD", postgres_server.password)
    monkeypatch.setenv("TXBACKUP_MARIADB_PASSWORD", mariadb_server.password)
    config = load_cluster(out)
    assert [t.name for t in config.targets] == ["postgresql", "mariadb"]
    assert config.scalardb is not None and config.scalardb["coordinator_target"] == "postgresql"
    plan = BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=config.targets,
        storage=LocalStorage(str(tmp_path / "store")),
        catalog=Catalog(str(tmp_path / "catalog.db")),
        capture_deadline_s=30,
    )
    manifest = await run_backup(plan)  # preflight, pause, capture, unpause, export, commit
    records = {t.name: t for t in manifest.targets}
    # PostgreSQL: the whole default-storage database (namespaces, coordinator, system namespace)
    assert [a.name for a in records["postgresql"].artifacts] == [f"{database}.dump"]
    assert records["postgresql"].description["coordinator_namespace"] == names["coord"]
    assert records["postgresql"].description["system_namespace"] == names["meta"]
    # MariaDB: the mapped namespace and its own system namespace, no coordinator (it lives in PostgreSQL)
    maria = {a.name for a in records["mariadb"].artifacts}
    assert {f"{names['cust']}.sql", f"{names['meta']}.sql"} <= maria
    assert f"{names['coord']}.sql" not in maria
    assert records["mariadb"].description["coordinator_database"] == ""


def test_a_set_without_the_coordinator_or_a_system_namespace_is_refused(
    postgres_server: PostgresServer,
    mariadb_server: MariaDBServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, names, out = init_from_properties(postgres_server, mariadb_server, tmp_path, monkeypatch)
    written = out.read_text()
    out.write_text(written.replace('coordinator_target = "postgresql"\n', ""))
    with pytest.raises(UsageError, match=f"the coordinator namespace '{names['coord']}' is in no target"):
        load_cluster(out)
    out.write_text(written.replace(f'system_database = "{names["meta"]}"', 'system_database = ""'))
    with pytest.raises(UsageError, match=r"target 'mariadb': system_database = \"\" leaves out"):
        load_cluster(out)
    # the coordinator in a target that cannot hold it under that name
    given = f'coordinator_namespace = "{names["coord"]}"   #'
    out.write_text(written.replace(given, 'coordinator_namespace = "x"   #'))
    with pytest.raises(UsageError, match="but \\[scalardb\\] places the coordinator namespace"):
        load_cluster(out)
    # through the CLI: one line, exit 2, before anything is paused
    out.write_text(written.replace('coordinator_target = "postgresql"\n', ""))
    assert main(["backup", "-c", str(out)]) == 2


async def test_a_coordinator_missing_where_scalardb_places_it_fails_preflight(
    postgres_server: PostgresServer,
    mariadb_server: MariaDBServer,
    app: SampleServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database, names, out = init_from_properties(postgres_server, mariadb_server, tmp_path, monkeypatch)
    postgres_server.execute(f'DROP SCHEMA "{names["coord"]}" CASCADE', database)
    config = load_cluster(out)
    assert config.coordinator() == ("postgresql", names["coord"])
    pauses = 0
    original = app.gate.pause

    async def counted(*args: object, **kwargs: object) -> None:
        nonlocal pauses
        pauses += 1
        await original(*args, **kwargs)  # type: ignore[arg-type]

    app.gate.pause = counted  # type: ignore[method-assign]
    plan = BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=config.targets,
        storage=LocalStorage(str(tmp_path / "store")),
        catalog=Catalog(str(tmp_path / "catalog.db")),
        coordinator=config.coordinator(),
    )
    with pytest.raises(TargetError, match=f'coordinator namespace "{names["coord"]}" does not exist there'):
        await run_backup(plan)
    assert pauses == 0 and plan.catalog.list() == []
    # the MariaDB target does not hold it and does not demand it: it alone backs up
    maria = [t for t in config.targets if t.name == "mariadb"]
    plan.targets, plan.coordinator = maria, None
    manifest = await run_backup(plan)
    assert pauses == 1 and [t.name for t in manifest.targets] == ["mariadb"]
