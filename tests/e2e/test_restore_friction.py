"""`txbackup restore` as a user meets it, on real MariaDB and PostgreSQL servers: the
databases of a MySQL target restored under new names next to the originals (flags and a
[restore.NAME] rename table), everything given refused before the storage is read (the
storage is moved away meanwhile), a refusal that leaves no job and suggests no --resume,
errors naming what the user gave, and `restore --jobs` telling the jobs apart."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import backup_set_id, write_cluster
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.processes import sample_server_process, txbackup


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _one_error(result: Any, code: int) -> str:
    """The single ``txbackup:`` line of a refused command (exit ``code``); the others are
    progress (``==> phase``)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("txbackup:")]
    assert result.returncode == code and len(errors) == 1, (result.returncode, result.stderr)
    assert all(line.startswith("==> ") for line in lines if line not in errors), result.stderr
    return str(errors[0])


def _jobs(config: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    listed = txbackup("restore", "-c", str(config), "--jobs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    jobs: list[dict[str, Any]] = json.loads(listed.stdout)
    return jobs


@pytest.fixture
def maria(mariadb_server: MariaDBServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    a, b, coord = _unique("ns_a"), _unique("ns_b"), _unique("coord")
    for db in (a, b, coord):
        mariadb_server.execute(f"CREATE DATABASE `{db}`")
    mariadb_server.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)", a)
    mariadb_server.execute("INSERT INTO accounts VALUES (1, 100), (2, 200)", a)
    mariadb_server.execute("CREATE TABLE stock (sku varchar(20) PRIMARY KEY, n int)", b)
    mariadb_server.execute("INSERT INTO stock VALUES ('x', 3)", b)
    mariadb_server.execute("CREATE TABLE state (tx_id varchar(64) PRIMARY KEY, s int)", coord)
    mariadb_server.execute("INSERT INTO state VALUES ('t1', 3)", coord)
    env = os.environ | {"TXB_MARIA_PW": mariadb_server.password}
    with sample_server_process("--lease", "4s") as (_, endpoint):
        rest = f"""
[catalog]
path = "catalog.db"

[[targets]]
name = "orders"
kind = "mysql"
port = {mariadb_server.port}
user = "{mariadb_server.user}"
password_env = "TXB_MARIA_PW"
databases = ["{a}", "{b}"]
coordinator_database = "{coord}"
"""
        config = write_cluster(tmp_path / "cluster.toml", endpoint, 'path = "store"', rest)
        set_id = backup_set_id(config, env)
        yield {"config": config, "env": env, "set_id": set_id, "a": a, "b": b, "coord": coord}



@pytest.mark.mariadb
def test_mysql_target_restored_under_new_names_next_to_the_originals(
    maria: dict[str, Any], mariadb_server: MariaDBServer
) -> None:
    config, env, set_id = maria["config"], maria["env"], maria["set_id"]
    a, b, coord = maria["a"], maria["b"], maria["coord"]
    restore = ["restore", "-c", str(config), set_id]
    store = config.parent / "store"

    # everything given is refused before the storage is read: it is not even there
    store.rename(config.parent / "store.away")
    for argv, message in [
        (["--to", "orders=postgresql://h/db"], "destination DSN must look like mysql://"),
        (["--to", "nosuch=mysql://u@h/db"], "'nosuch': no target named so in the cluster file"),
        (["--target", "orders", "--to", "other=x"], "'other': no target named so"),
        (["--rename-db", f"{a}=mysql"], "a system database"),
        (["--rename-db", f"{a}=x`; DROP DATABASE {b}; --"], "a new name takes letters"),
        (["--rename-db", f"{a}=../../x"], "a new name takes letters"),
        (["--rename-db", f"{a}={b}"], f"would both be restored into '{b}'"),
        (["--rename-db", f"{a}=x", "--rename-db", f"{b}=x"], "would both be restored into 'x'"),
        (["--rename-db", "nope=x"], "no postgres or mysql target being restored has database 'nope'"),
        (["--rename-db", f"{a}=x", "--rename-db", f"orders:{a}=y"], "given twice"),
        (["--rename-db", "=x"], "expected OLD=NEW"),
        (["--rename-db", f"ghost:{a}=x"], "'ghost': no target named so"),
    ]:
        line = _one_error(txbackup(*restore, *argv, env=env), 2)
        assert message in line and "--resume" not in line, (argv, line)
    # (with nothing wrong given, the missing storage is what stops it)
    missing = txbackup(*restore, "--rename-db", f"{a}=fine", env=env)
    assert missing.returncode != 0 and "store" in _one_error(missing, missing.returncode)
    store.parent.joinpath("store.away").rename(store)
    assert _jobs(config, env) == []

    # a destination that is not empty: refused after reaching the server, before the set is
    # verified and before a job exists; the message names the set, target and destination
    line = _one_error(txbackup(*restore, "--rename-db", f"{a}={_unique('a2')}", env=env), 1)
    assert f"restore of set {set_id}, target orders into its own server (renaming {a}->" in line
    assert "is not empty" in line and "--force" in line and "--resume" not in line
    assert _jobs(config, env) == []

    # a [restore.NAME] rename table plus a flag: all three databases land next to the originals
    new = {a: _unique("a2"), b: _unique("b2"), coord: _unique("c2")}
    config.write_text(
        config.read_text() + f'\n[restore.orders]\nrename = {{ {a} = "{new[a]}", {b} = "{new[b]}" }}\n'
    )
    mariadb_server.execute("UPDATE accounts SET balance = 999 WHERE id = 1", a)  # after the backup
    ok = txbackup(*restore, "--rename-db", f"{coord}={new[coord]}", env=env)
    assert ok.returncode == 0, ok.stderr
    assert mariadb_server.rows(new[a], "SELECT * FROM accounts ORDER BY id") == [(1, 100), (2, 200)]
    assert mariadb_server.rows(new[b], "SELECT * FROM stock") == [("x", 3)]
    assert mariadb_server.rows(new[coord], "SELECT * FROM state") == [("t1", 3)]
    assert mariadb_server.rows(a, "SELECT * FROM accounts ORDER BY id") == [(1, 999), (2, 200)]

    # --jobs: the set, the target, where it went, its state
    (job,) = _jobs(config, env)
    assert job["set_id"] == set_id and job["status"] == "complete"
    (shown,) = job["targets"]
    assert shown["name"] == "orders" and shown["state"] == "restored" and shown["renames"] == new
    assert shown["destination"].startswith("its own server (renaming ")
    table = txbackup("restore", "-c", str(config), "--jobs", env=env)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:5] == ["JOB", "SET", "STATUS", "TARGET", "DESTINATION"]
    for value in (job["job_id"], set_id, "complete", "orders", f"{a}->{new[a]}", "restored"):
        assert value in row


@pytest.fixture
def pg(postgres_server: PostgresServer, postgres_db: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    postgres_server.execute(
        "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1)",
        postgres_db,
    )
    restorer = _unique("restorer")
    postgres_server.execute(f"CREATE ROLE {restorer} LOGIN CREATEDB PASSWORD 'right-{restorer}'")
    env = os.environ | {"TXB_PG_PW": postgres_server.password}
    with sample_server_process("--lease", "4s") as (_, endpoint):
        rest = f"""
[[targets]]
name = "pg"
kind = "postgres"
port = {postgres_server.port}
user = "{postgres_server.user}"
password_env = "TXB_PG_PW"
databases = ["{postgres_db}"]
"""
        config = write_cluster(tmp_path / "cluster.toml", endpoint, 'path = "store"', rest)
        yield {"config": config, "env": env, "set_id": backup_set_id(config, env), "restorer": restorer}


@pytest.mark.postgres
def test_postgres_destination_with_wrong_credentials_names_what_was_given(
    pg: dict[str, Any], postgres_server: PostgresServer
) -> None:
    config, env, set_id, restorer = pg["config"], pg["env"], pg["set_id"], pg["restorer"]
    dsn = f"postgresql://{restorer}@127.0.0.1:{postgres_server.port}/{_unique('dst')}"
    wrong = env | {"TXB_RESTORE_PW": "wrong"}
    argv = ["restore", "-c", str(config), set_id, "--to", f"pg={dsn}"]
    argv += ["--to-password-env", "pg=TXB_RESTORE_PW"]
    line = _one_error(txbackup(*argv, env=wrong), 1)
    # the destination as given, not template1 (the fallback nobody asked for)
    assert f"restore of set {set_id}, target pg into {dsn}: " in line and "template1" not in line
    assert "password authentication failed" in line and "--resume" not in line
    assert _jobs(config, env) == []
    ok = txbackup(*argv, env=env | {"TXB_RESTORE_PW": f"right-{restorer}"})
    assert ok.returncode == 0, ok.stderr
    (job,) = _jobs(config, env)
    assert job["targets"] == [{"name": "pg", "destination": dsn, "renames": {}, "state": "restored"}]
