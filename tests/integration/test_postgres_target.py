from __future__ import annotations

import subprocess
import time
from decimal import Decimal

import psycopg
import pytest

from tests.servers.postgres import PostgresServer, free_port
from tests.targets_support import DirReader, DirWriter, backup
from txbackup.errors import TargetError
from txbackup.targets.postgres import target as pg_target

pytestmark = pytest.mark.postgres

SCHEMA = r"""
CREATE SCHEMA app;
CREATE TABLE app.items (
    id serial PRIMARY KEY,
    name text NOT NULL,
    note text,
    data bytea,
    amount numeric(40, 10),
    big numeric,
    day date,
    at timestamptz,
    tags text[],
    doc jsonb
);
CREATE SCHEMA coordinator;
CREATE TABLE coordinator.state (tx_id text PRIMARY KEY, tx_state int, tx_created_at bigint);
CREATE SCHEMA app2;
CREATE TABLE app2.wanted (k int PRIMARY KEY, v text);
CREATE TABLE app2.unwanted (k int PRIMARY KEY);
CREATE SCHEMA other;
CREATE TABLE other.t (k int);
"""

AWKWARD = [
    ("plain", None, None, None, None, None, None, None, None),
    (
        "it's \"quoted\" \\ back\\slash\n\ttab",
        "ünïcødé ✓ 𝄞 日本",
        bytes(range(256)),
        Decimal("123456789012345678901234567890.0123456789"),
        Decimal("-0.000000000000000000000000000000000001"),
        "2024-02-29",
        "1999-12-31 23:59:59.999999+00",
        ["a", None, "c,d", 'e"f'],
        '{"k": [1, 2.5, null, "x\\u00e9y"]}',
    ),
    ("", "", b"", Decimal(0), Decimal("1e100"), "0001-01-01", "2038-01-19 03:14:08+00", [], "{}"),
]


def seed(server: PostgresServer, db: str) -> None:
    with psycopg.connect(server.dsn(db), autocommit=True) as conn:
        conn.execute(SCHEMA.encode())
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO app.items (name, note, data, amount, big, day, at, tags, doc)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::text::jsonb)",
                AWKWARD,
            )
            cur.executemany(
                "INSERT INTO app.items (name, data) VALUES (%s, %s)",
                [(f"bulk {i}", bytes([i % 256]) * 100) for i in range(2000)],
            )
            cur.execute("INSERT INTO coordinator.state VALUES ('tx1', 3, 1700000000000)")
            cur.execute("INSERT INTO app2.wanted VALUES (1, 'one'), (2, 'two')")
            cur.execute("INSERT INTO app2.unwanted VALUES (1)")
            cur.execute("INSERT INTO other.t VALUES (1)")


def write_more(server: PostgresServer, db: str) -> None:
    with psycopg.connect(server.dsn(db), autocommit=True) as conn:
        conn.execute("INSERT INTO app.items (name) SELECT 'later ' || g FROM generate_series(1, 50) g")
        conn.execute("UPDATE app.items SET note = 'changed later' WHERE id = 1")
        conn.execute("DELETE FROM app.items WHERE id = 3")
        conn.execute("INSERT INTO coordinator.state VALUES ('tx2', 3, 1700000000001)")
        conn.execute("INSERT INTO app2.wanted VALUES (3, 'three')")


TABLES = ["app.items", "coordinator.state", "app2.wanted", "app2.unwanted", "other.t"]


def contents(server: PostgresServer, db: str) -> dict[str, list[tuple[object, ...]] | None]:
    out: dict[str, list[tuple[object, ...]] | None] = {}
    with psycopg.connect(server.dsn(db), autocommit=True) as conn:
        for table in TABLES:
            exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            if exists is None or exists[0] is None:
                out[table] = None
                continue
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1".encode()).fetchall()
            out[table] = rows
    return out


def sequence(server: PostgresServer, db: str) -> int:
    with psycopg.connect(server.dsn(db), autocommit=True) as conn:
        row = conn.execute("SELECT last_value FROM app.items_id_seq").fetchone()
        assert row is not None
        return int(row[0])


def make_target(server: PostgresServer, databases, monkeypatch, name="ledger", **extra):
    monkeypatch.setenv("TXB_PG_PW", server.password)
    conf = {
        "name": name,
        "kind": "postgres",
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password_env": "TXB_PG_PW",
        "databases": databases,
        **extra,
    }
    return pg_target.from_config(name, conf)


def test_export_is_the_captured_snapshot_with_include(postgres_server, postgres_db, tmp_path, monkeypatch):
    seed(postgres_server, postgres_db)
    expected = contents(postgres_server, postgres_db)
    expected_seq = sequence(postgres_server, postgres_db)
    target = make_target(
        postgres_server, [postgres_db], monkeypatch, include=["app", "app2.wanted"]
    )
    target.preflight()
    position = backup(target, tmp_path / "out", lambda: write_more(postgres_server, postgres_db))
    snap = position["databases"][postgres_db]
    assert snap["snapshot"] and "/" in snap["lsn"] and snap["in_recovery"] is False
    assert (tmp_path / "out" / f"{postgres_db}.dump").exists()

    dest = postgres_server.create_database("dst")
    dsn = postgres_server.dsn(dest, with_password=False)  # the password is the target's own
    target.restore(DirReader(tmp_path / "out"), {"dsn": dsn}, force=False)
    restored = contents(postgres_server, dest)
    assert restored["app.items"] == expected["app.items"]
    assert restored["coordinator.state"] == expected["coordinator.state"]  # always included
    assert restored["app2.wanted"] == expected["app2.wanted"]
    # sequences are not transactional: pg_dump reads their value when it runs, so a
    # restored sequence may be ahead of the snapshot (never behind: no id is reused)
    assert sequence(postgres_server, dest) >= expected_seq
    assert restored["app2.unwanted"] is None and restored["other.t"] is None
    # the later writes did happen in the source
    assert len(contents(postgres_server, postgres_db)["coordinator.state"] or []) == 2


def test_directory_format_with_jobs_whole_database(postgres_server, postgres_db, tmp_path, monkeypatch):
    seed(postgres_server, postgres_db)
    expected = contents(postgres_server, postgres_db)
    target = make_target(postgres_server, [postgres_db], monkeypatch, jobs=2)
    backup(target, tmp_path / "out", lambda: write_more(postgres_server, postgres_db))
    names = DirReader(tmp_path / "out").names()
    assert f"{postgres_db}.dir/toc.dat" in names and len(names) > 3
    dest = f"dst_{postgres_db}"  # missing: created by restore
    dsn = postgres_server.dsn(dest, with_password=False)  # the password is the target's own
    target.restore(DirReader(tmp_path / "out"), {"dsn": dsn}, force=False)
    assert contents(postgres_server, dest) == expected


def test_nonempty_destination_refused_untouched_then_forced(
    postgres_server, postgres_db, tmp_path, monkeypatch
):
    seed(postgres_server, postgres_db)
    expected = contents(postgres_server, postgres_db)
    target = make_target(postgres_server, [postgres_db], monkeypatch)
    backup(target, tmp_path / "out")
    write_more(postgres_server, postgres_db)
    changed = contents(postgres_server, postgres_db)
    with pytest.raises(TargetError, match="not empty") as err:
        target.restore(DirReader(tmp_path / "out"), None, force=False)
    assert str(err.value).startswith(f'target "ledger" (postgres 127.0.0.1:{postgres_server.port}): ')
    assert "--force" in str(err.value) and "\n" not in str(err.value)
    assert contents(postgres_server, postgres_db) == changed
    target.restore(DirReader(tmp_path / "out"), None, force=True)
    assert contents(postgres_server, postgres_db) == expected


def test_several_databases_into_missing_same_named_ones(postgres_server, tmp_path, monkeypatch):
    one, two = postgres_server.create_database("one"), postgres_server.create_database("two")
    seed(postgres_server, one)
    postgres_server.execute("CREATE TABLE solo (k int); INSERT INTO solo VALUES (7)", two)
    expected = contents(postgres_server, one)
    target = make_target(postgres_server, [one, two], monkeypatch)
    position = backup(target, tmp_path / "out")
    assert set(position["databases"]) == {one, two}
    postgres_server.execute(f'DROP DATABASE "{one}"')
    postgres_server.execute(f'DROP DATABASE "{two}"')
    target.restore(DirReader(tmp_path / "out"), None, force=False)
    assert contents(postgres_server, one) == expected
    with psycopg.connect(postgres_server.dsn(two)) as conn:
        assert conn.execute("SELECT k FROM solo").fetchall() == [(7,)]


def test_restore_by_hand_with_pg_restore(postgres_server, postgres_db, tmp_path, monkeypatch):
    seed(postgres_server, postgres_db)
    expected = contents(postgres_server, postgres_db)
    target = make_target(postgres_server, [postgres_db], monkeypatch)
    backup(target, tmp_path / "out")
    dest = f"hand_{postgres_db}"
    env = {"PGPASSWORD": postgres_server.password, "PATH": "/usr/bin:/bin"}
    conn = ["-h", "127.0.0.1", "-p", str(postgres_server.port), "-U", postgres_server.user]
    subprocess.run(["createdb", *conn, "-T", "template0", dest], check=True, env=env)
    subprocess.run(
        ["pg_restore", *conn, "-d", dest, "--no-owner", "--exit-on-error",
         str(tmp_path / "out" / f"{postgres_db}.dump")],
        check=True, env=env,
    )  # fmt: skip
    assert contents(postgres_server, dest) == expected


def test_wrong_password_is_one_line_naming_the_target(postgres_server, postgres_db, monkeypatch):
    target = make_target(postgres_server, [postgres_db], monkeypatch)
    monkeypatch.setenv("TXB_PG_PW", "not-the-password")
    with pytest.raises(TargetError) as err:
        target.preflight()
    message = str(err.value)
    assert message == (
        f'target "ledger" (postgres 127.0.0.1:{postgres_server.port}): database "{postgres_db}": '
        f'password authentication failed for user "{postgres_server.user}"'
    )


def test_unreachable_port(postgres_server, monkeypatch):
    port = free_port()
    monkeypatch.setenv("TXB_PG_PW", "x")
    target = pg_target.from_config(
        "ledger", {"port": port, "password_env": "TXB_PG_PW", "databases": ["x"]}
    )
    with pytest.raises(TargetError) as err:
        target.preflight()
    assert str(err.value) == (
        f'target "ledger" (postgres 127.0.0.1:{port}): database "x": Connection refused'
    )


def test_preflight_names_an_unreadable_table(postgres_server, postgres_db, monkeypatch):
    seed(postgres_server, postgres_db)
    role = f"r_{postgres_db}"
    postgres_server.execute(
        f"CREATE ROLE {role} LOGIN PASSWORD 'pw';"
        f"GRANT USAGE ON SCHEMA app, coordinator TO {role};"
        f"GRANT SELECT ON ALL TABLES IN SCHEMA app TO {role};"
        f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA app TO {role};",
        postgres_db,
    )
    monkeypatch.setenv("TXB_PG_PW", "pw")
    target = pg_target.from_config(
        "ledger",
        {
            "port": postgres_server.port,
            "user": role,
            "password_env": "TXB_PG_PW",
            "databases": [postgres_db],
            "include": ["app"],
        },
    )
    with pytest.raises(TargetError, match=r"cannot read coordinator\.state; grant it SELECT"):
        target.preflight()


def test_include_typo_refused(postgres_server, postgres_db, monkeypatch):
    seed(postgres_server, postgres_db)
    target = make_target(postgres_server, [postgres_db], monkeypatch, include=["app", "ap2.x"])
    with pytest.raises(TargetError, match=r"include names ap2\.x, found in none"):
        target.preflight()


def test_describe_has_no_secret(postgres_server, monkeypatch):
    target = make_target(postgres_server, ["a"], monkeypatch, include=["app"])
    described = target.describe()
    assert described["databases"] == ["a"] and described["include"] == ["app", "coordinator", "scalardb"]
    assert described["system_namespace"] == "scalardb"  # ScalarDB's metadata, added like the coordinator
    assert postgres_server.password not in repr(described)
    assert target.kind == pg_target.KIND == "postgres"


def test_tool_failures_are_one_line(postgres_server, postgres_db, tmp_path, monkeypatch):
    seed(postgres_server, postgres_db)
    target = make_target(postgres_server, [postgres_db], monkeypatch)
    capture = target.capture("s")
    capture.release()  # the snapshot dies with its transaction
    with pytest.raises(TargetError) as err:
        capture.export(DirWriter(tmp_path / "late"))
    message = str(err.value)
    label = f'target "ledger" (postgres 127.0.0.1:{postgres_server.port})'
    assert message.startswith(f"{label}: pg_dump failed: ")
    assert "snapshot" in message and "\n" not in message

    backup(target, tmp_path / "out")
    (tmp_path / "out" / f"{postgres_db}.dump").write_bytes(b"PGDMP garbage" * 100)
    with pytest.raises(TargetError, match="pg_restore failed: ") as err:
        dsn = postgres_server.dsn(f"x_{postgres_db}", with_password=False)
        target.restore(DirReader(tmp_path / "out"), {"dsn": dsn}, False)
    assert "\n" not in str(err.value)


def test_missing_tools_are_named(postgres_server, postgres_db, tmp_path, monkeypatch):
    target = make_target(postgres_server, [postgres_db], monkeypatch, bin_dir=str(tmp_path))
    with pytest.raises(TargetError, match=f"pg_dump not found in {tmp_path}"):
        target.preflight()


def sessions(server: PostgresServer, db: str, settle: bool = True) -> dict[int, str]:
    """Our sessions on ``db``: backend pid -> state. With ``settle``, waits a little for
    closed connections to leave pg_stat_activity (a backend exits after its client)."""
    deadline = time.monotonic() + 10
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT pid, state FROM pg_stat_activity"
                " WHERE datname = %s AND application_name = 'txbackup'",
                (db,),
            ).fetchall()
            if not settle or len(rows) <= 1 or time.monotonic() > deadline:
                return {int(pid): str(state) for pid, state in rows}
            time.sleep(0.05)


def wait_no_sessions(server: PostgresServer, db: str) -> None:
    deadline = time.monotonic() + 10
    while sessions(server, db) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions(server, db) == {}


def test_preflight_prepares_the_capture_connection(postgres_server, postgres_db, tmp_path, monkeypatch):
    seed(postgres_server, postgres_db)
    target = make_target(postgres_server, [postgres_db], monkeypatch)
    target.preflight()
    prepared = sessions(postgres_server, postgres_db)
    assert list(prepared.values()) == ["idle"]  # connected, no transaction open
    capture = target.capture("s")
    try:
        # the snapshot's transaction is held on the connection the preflight opened
        assert sessions(postgres_server, postgres_db) == {next(iter(prepared)): "idle in transaction"}
    finally:
        capture.release()
    wait_no_sessions(postgres_server, postgres_db)
    # the target serves several backups, each one on its own preflight's connection
    target.preflight()
    first = set(sessions(postgres_server, postgres_db))
    target.preflight()  # an earlier preflight's unused connection is replaced, not leaked
    second = set(sessions(postgres_server, postgres_db))
    assert len(second) == 1 and second != first
    position = backup(target, tmp_path / "out")
    assert position["databases"][postgres_db]["snapshot"]
    wait_no_sessions(postgres_server, postgres_db)
    target.preflight()
    target.close()  # a backup that never captures
    target.close()
    wait_no_sessions(postgres_server, postgres_db)


def test_failed_preflight_keeps_no_connection(postgres_server, postgres_db, tmp_path, monkeypatch):
    target = make_target(postgres_server, [postgres_db], monkeypatch, bin_dir=str(tmp_path))
    with pytest.raises(TargetError, match="pg_dump not found"):
        target.preflight()  # fails after the database was reached
    wait_no_sessions(postgres_server, postgres_db)


def test_capture_survives_a_dead_or_expired_prepared_connection(
    postgres_server, postgres_db, tmp_path, monkeypatch
):
    seed(postgres_server, postgres_db)
    expected = contents(postgres_server, postgres_db)
    target = make_target(postgres_server, [postgres_db], monkeypatch)
    target.preflight()
    (killed,) = sessions(postgres_server, postgres_db)
    postgres_server.execute(f"SELECT pg_terminate_backend({killed})")
    backup(target, tmp_path / "out")  # the capture connects again
    dest = postgres_server.create_database("dst")
    dsn = postgres_server.dsn(dest, with_password=False)  # the password is the target's own
    target.restore(DirReader(tmp_path / "out"), {"dsn": dsn}, force=False)
    assert contents(postgres_server, dest) == expected
    # prepared connections that no capture takes are closed after a while
    monkeypatch.setattr(pg_target, "PREPARED_TTL_S", 0.2)
    target.preflight()
    wait_no_sessions(postgres_server, postgres_db)
    backup(target, tmp_path / "out2")
    wait_no_sessions(postgres_server, postgres_db)
