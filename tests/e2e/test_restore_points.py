"""mode = "restore-point" end to end, as a user runs it: a backup marks the point in each
database's own log (no dump), `show` gives the recovery settings, and the user's own recovery
with them lands exactly there. PostgreSQL: WAL archived to a local folder, a base backup
before, the set, a row after; the base backup recovered to the named point (settings from
`show --json`) has the rows before and not the row after. MariaDB: a full dump before, the
set, a row after; the binary logs replayed with mysqlbinlog to the recorded position into a
fresh server have the rows before and not the row after. Faults: archive_mode off, log_bin
off: one line, nothing paused."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import require
from tests.e2e.support import write_cluster
from tests.servers import mariadb as mariadb_servers
from tests.servers import postgres as postgres_servers
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import RUN_AS, PostgresServer, free_port
from tests.servers.processes import sample_server_process, txbackup
from txbackup.errors import TargetError
from txbackup.targets.mysql.target import from_config as mysql_from_config
from txbackup.targets.postgres.target import from_config as pg_from_config

_CATALOG = '\n[catalog]\npath = "catalog.db"\n'


def _owned_by_postgres(path: Path) -> Path:
    """``path`` made, private, and owned by the user the server runs as (root on CI)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(path, RUN_AS, RUN_AS)
    return path


def _as_postgres(argv: list[str], env: dict[str, str] | None = None) -> None:
    command = ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else argv
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr


def _backup(config: Path, env: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    result = txbackup("backup", "-c", str(config), "--json", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return str(events[-1]["set_id"]), events


def _one_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("txbackup:")]
    assert result.returncode == code and len(errors) == 1, (result.returncode, result.stderr)
    return errors[0]


def _refused_without_pause(config: Path, env: dict[str, str]) -> str:
    """A backup refused at preflight: one line, and the applications never paused."""
    result = txbackup("backup", "-c", str(config), "--json", env=env, timeout=120)
    error = _one_error(result, 1)
    phases = [json.loads(line).get("name") for line in result.stdout.splitlines() if '"phase"' in line]
    assert "pause" not in phases, result.stdout
    return error


def _check_set_tools(config: Path, set_id: str, env: dict[str, str], target: str, hint: str) -> None:
    """verify, show (text), restore (refused, pointing at show), audit, forget, prune and delete
    cope with a set holding a restore point and no artifact."""
    verified = txbackup("verify", "-c", str(config), set_id, env=env)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stderr
    shown = txbackup("show", "-c", str(config), set_id, env=env)
    assert shown.returncode == 0 and hint in shown.stdout, shown.stderr
    error = _one_error(txbackup("restore", "-c", str(config), set_id, env=env), 2)
    assert f"target {target} of set {set_id} is a restore point" in error
    assert f"txbackup show {set_id}" in error
    audited = txbackup("audit", "-c", str(config), set_id, "--json", env=env)
    assert "a restore point" in audited.stdout, (audited.stdout, audited.stderr)
    kept = txbackup("forget", "-c", str(config), "--keep-last", "1", "--prune", env=env)
    assert kept.returncode == 0, kept.stderr
    deleted = txbackup("delete", "-c", str(config), set_id, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert txbackup("show", "-c", str(config), set_id, env=env).returncode != 0


# -- PostgreSQL -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archiving_postgres() -> Iterator[tuple[PostgresServer, Path]]:
    """A PostgreSQL server archiving its WAL into a local folder (the user's archive)."""
    require(postgres_servers.missing_reason())
    folder = _owned_by_postgres(Path(tempfile.mkdtemp(prefix="txb-wal-")))
    archive = _owned_by_postgres(folder / "archive")
    # a file "blocked" next to the archive makes archiving fail (command-line settings beat
    # ALTER SYSTEM, so the command cannot be swapped while the server runs)
    command = f"test ! -e {folder}/blocked && cp %p {archive}/%f"
    options = ["wal_level=replica", "archive_mode=on", f"archive_command='{command}'"]
    try:
        with PostgresServer(options=options) as server:
            yield server, archive
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _pg_target(server: PostgresServer, db: str, mode: str = "restore-point") -> str:
    return f"""
[[targets]]
name = "ledger"
kind = "postgres"
port = {server.port}
password_env = "TXB_PG_PW"
databases = ["{db}"]
mode = "{mode}"
archive_wait = "60s"
"""


def _recover(server: PostgresServer, base: Path, settings: dict[str, str], archive: Path) -> int:
    """Start the base backup in ``base`` as a server recovering with ``settings`` (from
    ``show --json``, the example restore_command replaced by this archive's); its port once
    recovery has ended and it is promoted."""
    settings = {**settings, "restore_command": f"cp {archive}/%f %p"}
    conf = "".join(f"{key} = '{value}'\n" for key, value in settings.items())
    with (base / "postgresql.auto.conf").open("a") as auto:
        auto.write(conf + "archive_mode = off\n")
    (base / "recovery.signal").touch()
    if os.geteuid() == 0:
        for path in (base / "postgresql.auto.conf", base / "recovery.signal"):
            shutil.chown(path, RUN_AS, RUN_AS)
    port = free_port()
    options = f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base}"
    pg_ctl = str(server.bindir / "pg_ctl")
    _as_postgres(
        [pg_ctl, "-D", str(base), "-l", str(base / "recovery.log"), "-o", options, "-w", "-t", "60", "start"]
    )
    dsn = f"host=127.0.0.1 port={port} user={server.user} password={server.password} dbname=postgres"
    deadline = time.monotonic() + 60
    while True:  # promoted once the point is reached (recovery_target_action = promote)
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if row is not None and not row[0]:
            return port
        assert time.monotonic() < deadline, (base / "recovery.log").read_text()[-2000:]
        time.sleep(0.2)


@pytest.mark.postgres
def test_postgres_recovery_to_the_named_point_leaves_out_the_row_after(
    archiving_postgres: tuple[PostgresServer, Path], tmp_path: Path
) -> None:
    server, archive = archiving_postgres
    db = server.create_database("ledger")
    server.execute("CREATE TABLE accounts (id int PRIMARY KEY, note text)", db)
    server.execute("INSERT INTO accounts VALUES (1, 'before the base backup')", db)
    work = _owned_by_postgres(Path(tempfile.mkdtemp(prefix="txb-pitr-")))
    base = work / "base"
    env = os.environ | {"TXB_PG_PW": server.password, "PGPASSWORD": server.password}
    try:
        pg_basebackup = str(server.bindir / "pg_basebackup")
        _as_postgres(
            [pg_basebackup, "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user, "-D", str(base),
             "-X", "stream", "-c", "fast", "--no-sync", "-w"],
            env=env,
        )  # fmt: skip
        server.execute("INSERT INTO accounts VALUES (2, 'after the base backup, before the point')", db)
        with sample_server_process("--lease", "4s") as (_, endpoint):
            config = write_cluster(
                tmp_path / "cluster.toml", endpoint, 'path = "store"', _CATALOG + _pg_target(server, db)
            )
            set_id, events = _backup(config, env)
        server.execute("INSERT INTO accounts VALUES (3, 'after the point')", db)
        # the row after the point reaches the archive too: the recovery stops at the point
        # because it was told to, not for want of WAL
        with psycopg.connect(server.dsn(db), autocommit=True) as conn:
            segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
            conn.execute("SELECT pg_switch_wal()")
        assert segment is not None
        deadline = time.monotonic() + 30
        while not (archive / str(segment[0])).exists():
            assert time.monotonic() < deadline, "the WAL after the point was not archived"
            time.sleep(0.1)

        exported = [e for e in events if e.get("phase") == "exported"]
        assert exported and exported[0]["bytes"] == 0  # no dump
        shown = txbackup("show", "-c", str(config), set_id, "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        manifest = json.loads(shown.stdout)
        position = manifest["targets"][0]["position"]
        assert position["name"] == f"txbackup-{set_id}" and manifest["targets"][0]["artifacts"] == []
        assert (archive / position["wal_file"]).exists()  # the set waited for it
        settings = manifest["recovery"]["ledger"]["settings"]
        assert settings["recovery_target_name"] == f"txbackup-{set_id}"

        port = _recover(server, base, settings, archive)
        dsn = f"host=127.0.0.1 port={port} user={server.user} password={server.password} dbname={db}"
        with psycopg.connect(dsn) as conn:
            rows = [r[0] for r in conn.execute("SELECT id FROM accounts ORDER BY id")]
        assert rows == [1, 2]
        log = (base / "recovery.log").read_text()
        assert f'recovery stopping at restore point "txbackup-{set_id}"' in log

        # verify, audit, forget... are the MariaDB test's: here show's text and restore's refusal
        text = txbackup("show", "-c", str(config), set_id, env=env).stdout
        assert f"recovery_target_name = 'txbackup-{set_id}'" in text
        assert f"recovery_target_lsn = '{position['lsn']}'" in text
        error = _one_error(txbackup("restore", "-c", str(config), set_id, env=env), 2)
        assert "is a restore point" in error and f"txbackup show {set_id}" in error
    finally:
        if (base / "postmaster.pid").exists():
            _as_postgres([str(server.bindir / "pg_ctl"), "-D", str(base), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.postgres
def test_postgres_without_archiving_is_refused_before_the_pause(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    env = os.environ | {"TXB_PG_PW": postgres_server.password}
    with sample_server_process("--lease", "4s") as (_, endpoint):
        rest = _CATALOG + _pg_target(postgres_server, postgres_db)
        config = write_cluster(tmp_path / "cluster.toml", endpoint, 'path = "store"', rest)
        error = _refused_without_pause(config, env)
    assert 'target "ledger"' in error and "archive_mode is off" in error


@pytest.mark.postgres
def test_postgres_archive_mode_on_without_a_command_is_refused_at_preflight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require(postgres_servers.missing_reason())
    with PostgresServer(options=["wal_level=replica", "archive_mode=on"]) as server:
        monkeypatch.setenv("TXB_PG_PW", server.password)
        conf = {"port": server.port, "password_env": "TXB_PG_PW", "databases": ["postgres"],
                "mode": "restore-point"}  # fmt: skip
        with pytest.raises(TargetError) as err:
            pg_from_config("ledger", conf).preflight()
    assert "archive_mode is on but archive_command and archive_library are empty" in str(err.value)


@pytest.mark.postgres
def test_postgres_user_without_the_grant_is_refused_before_the_pause(
    archiving_postgres: tuple[PostgresServer, Path], tmp_path: Path
) -> None:
    server, _ = archiving_postgres
    db = server.create_database("ledger")
    server.execute("DROP ROLE IF EXISTS pointless; CREATE ROLE pointless LOGIN PASSWORD 'pointless-pw'")
    env = os.environ | {"TXB_PG_PW": "pointless-pw"}
    with sample_server_process("--lease", "4s") as (_, endpoint):
        rest = _CATALOG + _pg_target(server, db).replace("password_env", 'user = "pointless"\npassword_env')
        config = write_cluster(tmp_path / "cluster.toml", endpoint, 'path = "store"', rest)
        error = _refused_without_pause(config, env)
    assert "user pointless may not run pg_create_restore_point" in error
    assert "GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO pointless" in error


# -- MariaDB ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def maria_pair() -> Iterator[tuple[MariaDBServer, MariaDBServer]]:
    """A server with its binary log on (the source), and a fresh one without (the replay's)."""
    require(mariadb_servers.missing_reason())
    with MariaDBServer() as source, MariaDBServer(log_bin=False) as fresh:
        yield source, fresh


def _maria_target(server: MariaDBServer, db: str) -> str:
    return f"""
[[targets]]
name = "orders"
kind = "mysql"
port = {server.port}
password_env = "TXB_MARIA_PW"
databases = ["{db}"]
mode = "restore-point"
"""


def _client(server: MariaDBServer, *args: str, stdin: bytes | None = None) -> bytes:
    tool = shutil.which("mariadb") or "mysql"
    argv = [tool, "--no-defaults", "--protocol=TCP", f"--port={server.port}", "-uroot", *args]
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=120,
                          env=os.environ | {"MYSQL_PWD": server.password})  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@pytest.mark.mariadb
def test_mariadb_binlog_replay_to_the_recorded_position_leaves_out_the_row_after(
    maria_pair: tuple[MariaDBServer, MariaDBServer], tmp_path: Path
) -> None:
    source, fresh = maria_pair
    db = source.create_database("orders")
    source.execute("CREATE TABLE orders (id int PRIMARY KEY, note varchar(80)) ENGINE=InnoDB", db)
    source.execute("INSERT INTO orders VALUES (1, 'before the full dump')", db)
    dumper = shutil.which("mariadb-dump") or "mysqldump"
    done = subprocess.run(
        [dumper, "--no-defaults", "--protocol=TCP", f"--port={source.port}", "-uroot", "--single-transaction",
         "--master-data=2", "--databases", db],
        capture_output=True, timeout=120, env=os.environ | {"MYSQL_PWD": source.password},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    full = done.stdout
    found = re.search(rb"MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+)", full)
    assert found is not None
    dump_file, dump_pos = found.group(1).decode(), int(found.group(2))

    source.execute("INSERT INTO orders VALUES (2, 'after the dump, before the point')", db)
    env = os.environ | {"TXB_MARIA_PW": source.password}
    with sample_server_process("--lease", "4s") as (_, endpoint):
        config = write_cluster(
            tmp_path / "cluster.toml", endpoint, 'path = "store"', _CATALOG + _maria_target(source, db)
        )
        set_id, _ = _backup(config, env)
    source.execute("INSERT INTO orders VALUES (3, 'after the point')", db)
    source.execute("FLUSH BINARY LOGS")  # the row after the point is in a closed binlog too

    shown = txbackup("show", "-c", str(config), set_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    point = json.loads(shown.stdout)["recovery"]["orders"]
    assert json.loads(shown.stdout)["targets"][0]["artifacts"] == []
    stop_file, stop_pos = point["binlog_file"], point["stop_position"]
    assert point["gtid_binlog_pos"] and f"--stop-position={stop_pos}" in point["commands"][0]

    # the user's recovery: the full dump, then the binlogs from its position to the point
    assert source.root is not None
    binlogs = sorted(p.name for p in source.root.glob("binlog.[0-9]*"))
    replay = [source.root / n for n in binlogs if dump_file <= n <= stop_file]
    assert replay and replay[-1].name == stop_file
    _client(fresh, stdin=full)
    binlog = shutil.which("mariadb-binlog") or "mysqlbinlog"
    events = subprocess.run(
        [binlog, "--no-defaults", f"--start-position={dump_pos}", *map(str, replay),
         f"--stop-position={stop_pos}"],
        capture_output=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    _client(fresh, stdin=events)
    rows = [r[0] for r in fresh.rows(db, "SELECT id FROM orders ORDER BY id")]
    assert rows == [1, 2]
    # the log does hold the row after: the replay went on from the point, it is there
    rest = [source.root / n for n in binlogs if n >= stop_file]
    events = subprocess.run([binlog, "--no-defaults", f"--start-position={stop_pos}", *map(str, rest)],
                            capture_output=True, timeout=120, check=True).stdout  # fmt: skip
    _client(fresh, stdin=events)
    assert [r[0] for r in fresh.rows(db, "SELECT id FROM orders ORDER BY id")] == [1, 2, 3]

    _check_set_tools(config, set_id, env, "orders", f"--stop-position={stop_pos}")


@pytest.mark.mariadb
def test_mariadb_without_binary_log_is_refused_before_the_pause(
    maria_pair: tuple[MariaDBServer, MariaDBServer], tmp_path: Path
) -> None:
    _, fresh = maria_pair
    db = fresh.create_database("orders")
    env = os.environ | {"TXB_MARIA_PW": fresh.password}
    with sample_server_process("--lease", "4s") as (_, endpoint):
        config = write_cluster(
            tmp_path / "cluster.toml", endpoint, 'path = "store"', _CATALOG + _maria_target(fresh, db)
        )
        error = _refused_without_pause(config, env)
    assert 'target "orders"' in error and "log_bin is OFF" in error


# -- the target alone: what the CLI tests above do not reach ----------------------------------------
@pytest.mark.mariadb
def test_mariadb_user_without_binlog_monitor_is_refused_at_preflight(
    maria_pair: tuple[MariaDBServer, MariaDBServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _ = maria_pair
    db = source.create_database("orders")
    source.execute("CREATE USER IF NOT EXISTS nobinlog@'127.0.0.1' IDENTIFIED BY 'nobinlog-pw'")
    source.execute(f"GRANT SELECT ON `{db}`.* TO nobinlog@'127.0.0.1'")
    monkeypatch.setenv("TXB_MARIA_PW", "nobinlog-pw")
    conf = {"port": source.port, "user": "nobinlog", "password_env": "TXB_MARIA_PW", "databases": [db],
            "mode": "restore-point"}  # fmt: skip
    target = mysql_from_config("orders", conf)
    with pytest.raises(TargetError) as err:
        target.preflight()
    assert "cannot read the binary log position (SHOW MASTER STATUS:" in str(err.value)
    assert "grant the user BINLOG MONITOR" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.postgres
def test_postgres_point_not_archived_in_time_fails_the_export_naming_the_failure(
    archiving_postgres: tuple[PostgresServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # last of the module: a failing archive_command makes the archiver back off for a minute
    server, archive = archiving_postgres
    db = server.create_database("ledger")
    monkeypatch.setenv("TXB_PG_PW", server.password)
    conf = {"port": server.port, "password_env": "TXB_PG_PW", "databases": [db], "mode": "restore-point",
            "archive_wait": "2s"}  # fmt: skip
    target = pg_from_config("ledger", conf)
    blocked = archive.parent / "blocked"
    blocked.touch()
    try:
        target.preflight()
        capture = target.capture("20261128T101500Z-ab12")
        try:
            assert capture.position()["name"] == "txbackup-20261128T101500Z-ab12"
            with pytest.raises(TargetError) as err:
                capture.export(None)  # type: ignore[arg-type]  # writes nothing
        finally:
            capture.release()
    finally:
        blocked.unlink()
    wal_file = capture.position()["wal_file"]
    message = str(err.value)
    assert f"WAL segment {wal_file} holding the restore point was not archived within 2s" in message
    assert "last failure: " in message and "\n" not in message
