from __future__ import annotations

import subprocess
import threading
import time
import uuid
from contextlib import contextmanager

import pymysql
import pytest

from tests.servers.mariadb import MariaDBServer, free_port
from tests.targets_support import DirReader, DirWriter, backup
from txbackup.errors import TargetError
from txbackup.targets.mysql import target as mysql_target

pytestmark = pytest.mark.mariadb

ITEMS = """
CREATE TABLE items (
    id int AUTO_INCREMENT PRIMARY KEY,
    name varchar(200) NOT NULL,
    note text,
    data longblob,
    bin varbinary(16),
    amount decimal(65, 30),
    day date,
    at datetime(6),
    ts timestamp(6) NULL,
    f double,
    fl float,
    flag bit(3),
    e enum('a', 'b''c', 'd\\\\e'),
    j json,
    latin varchar(50) CHARACTER SET latin1,
    u bigint unsigned,
    doubled double AS (fl * 2) PERSISTENT,
    lname int AS (length(name)) VIRTUAL,
    hidden int INVISIBLE DEFAULT 7
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""

INSERT = (
    "INSERT INTO items (name, note, data, bin, amount, day, at, ts, f, fl, flag, e, j, latin, u)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

AWKWARD = [
    ("nulls", None, None, None, None, None, None, None, None, None, None, None, None, None, None),
    (
        "it's \"quoted\" \\ back\\slash\n\r\ttab \x00 nul \x1a ctrl-z",
        "ünïcødé ✓ 𝄞 日本 🙂",
        bytes(range(256)) * 10,
        b"\x00\x01'\\\"",
        "12345678901234567890123456789012345.123456789012345678901234567890",
        "2024-02-29",
        "1999-12-31 23:59:59.999999",
        "2038-01-19 03:14:07.000001",
        0.1,
        1.5,
        5,
        "b'c",
        '{"k": [1, 2.5, null, "x\\"y"]}',
        "café",
        18446744073709551615,
    ),
    ("lines\ndelimiter ;;\n\\. /etc/passwd\nsource x;\n\\g\n-- c\n/* c */ #", "\r\n;", None,
     None, None, None, None, None, None, None, None, None, None, "\n", None),
    ("empty", "", b"", b"", "-0.000000000000000000000000000001", "0000-00-00", None, None,
     -1e308, 0.0, 0, "d\\e", "{}", "", 0),
]  # fmt: skip


def seed(server: MariaDBServer, db: str, coordinator: str | None, rows: int = 2000) -> None:
    conn = server.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(ITEMS)
            cur.executemany(INSERT, AWKWARD)
            cur.executemany(
                "INSERT INTO items (name, data) VALUES (%s, %s)",
                [(f"bulk {i}", bytes([i % 256]) * 300) for i in range(rows)],
            )
            cur.execute("CREATE TABLE other (k int PRIMARY KEY, v varchar(10))")
            cur.execute("INSERT INTO other VALUES (1, 'one'), (2, 'two')")
            if coordinator:
                cur.execute(f"CREATE DATABASE `{coordinator}`")
                cur.execute(
                    f"CREATE TABLE `{coordinator}`.state (tx_id varchar(128) PRIMARY KEY,"
                    " tx_state int, tx_created_at bigint)"
                )
                cur.execute(f"INSERT INTO `{coordinator}`.state VALUES ('tx1', 3, 1700000000000)")
    finally:
        conn.close()


def write_more(server: MariaDBServer, db: str, coordinator: str | None) -> None:
    conn = server.connect(db)
    try:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO items (name) VALUES (%s)", [(f"later {i}",) for i in range(50)])
            cur.execute("UPDATE items SET note = 'changed later' WHERE id = 1")
            cur.execute("DELETE FROM items WHERE id = 3")
            cur.execute("INSERT INTO other VALUES (3, 'three')")
            if coordinator:
                cur.execute(f"INSERT INTO `{coordinator}`.state VALUES ('tx2', 3, 1)")
    finally:
        conn.close()


def contents(server: MariaDBServer, db: str) -> dict[str, object]:
    conn = server.connect(db)
    out: dict[str, object] = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW FULL TABLES")
            for name, kind in sorted(cur.fetchall()):
                if kind == "SEQUENCE":
                    continue
                columns = "*, hidden" if name == "items" else "*"
                cur.execute(f"SELECT {columns} FROM `{name}` ORDER BY 1")
                out[name] = cur.fetchall()
    finally:
        conn.close()
    return out


def make_target(server: MariaDBServer, databases, monkeypatch, name="orders", **extra):
    monkeypatch.setenv("TXB_MARIA_PW", server.password)
    conf = {
        "name": name,
        "kind": "mysql",
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password_env": "TXB_MARIA_PW",
        "databases": databases,
        **extra,
    }
    return mysql_target.from_config(name, conf)


def drop(server: MariaDBServer, *databases: str) -> None:
    for db in databases:
        server.execute(f"DROP DATABASE `{db}`")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_export_is_the_captured_snapshot(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    coordinator = unique("coord")
    seed(mariadb_server, mariadb_db, coordinator)
    expected = contents(mariadb_server, mariadb_db)
    expected_coordinator = contents(mariadb_server, coordinator)
    target = make_target(
        mariadb_server, [mariadb_db], monkeypatch, coordinator_database=coordinator, batch_bytes=4096
    )
    target.preflight()
    position = backup(
        target, tmp_path / "out", lambda: write_more(mariadb_server, mariadb_db, coordinator)
    )
    assert position["flavor"] == "mariadb" and position["log_bin"] is True
    assert position["binlog_file"].startswith("binlog.") and position["binlog_position"] > 0
    assert position["gtid_binlog_pos"]
    assert position["databases"] == [mariadb_db, coordinator]
    assert DirReader(tmp_path / "out").names() == [f"{mariadb_db}.sql", f"{coordinator}.sql"]
    dump = (tmp_path / "out" / f"{mariadb_db}.sql").read_bytes()
    assert dump.count(b"INSERT INTO `items`") > 10  # batched by batch_bytes
    assert dump.endswith(b"-- txbackup dump complete\n")
    # a value never spans lines: no line of the script starts inside a value
    for inside in (b"delimiter ;;", b"\\. /etc/passwd", b"source x;", b"\\g", b";\r\n"):
        assert b"\n" + inside not in dump and b"\r" + inside not in dump
    assert b"'lines\\ndelimiter ;;\\n\\\\. /etc/passwd\\nsource x;\\n" in dump

    drop(mariadb_server, mariadb_db, coordinator)  # restore into missing databases
    target.restore(DirReader(tmp_path / "out"), None, force=False)
    assert contents(mariadb_server, mariadb_db) == expected
    assert contents(mariadb_server, coordinator) == expected_coordinator


def test_binlog_position_is_that_of_the_snapshot(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    seed(mariadb_server, mariadb_db, None, rows=10)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch)
    capture = target.capture("s")
    try:
        write_more(mariadb_server, mariadb_db, None)
        conn = mariadb_server.connect()
        with conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            now = cur.fetchone()
        conn.close()
        position = capture.position()
        assert now[0] == position["binlog_file"] and now[1] > position["binlog_position"]
    finally:
        capture.release()


def test_restore_renamed_and_by_hand(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    seed(mariadb_server, mariadb_db, None, rows=100)
    expected = contents(mariadb_server, mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch)
    backup(target, tmp_path / "out")
    # --to NAME=DSN (never with a password: the same user's is the target's own)
    renamed = unique("renamed")
    dsn = f"mysql://root@127.0.0.1:{mariadb_server.port}/{renamed}"
    target.restore(DirReader(tmp_path / "out"), {"dsn": dsn}, force=False)
    assert contents(mariadb_server, renamed) == expected
    # by hand, with the stock client
    by_hand = mariadb_server.create_database("hand")
    with open(tmp_path / "out" / f"{mariadb_db}.sql", "rb") as dump:
        subprocess.run(
            ["mariadb", "-h", "127.0.0.1", "-P", str(mariadb_server.port), "-u", "root",
             "--default-character-set=utf8mb4", by_hand],
            stdin=dump, check=True, env={"MYSQL_PWD": mariadb_server.password, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    assert contents(mariadb_server, by_hand) == expected


def test_nonempty_destination_refused_untouched_then_forced(
    mariadb_server, mariadb_db, tmp_path, monkeypatch
):
    seed(mariadb_server, mariadb_db, None, rows=100)
    expected = contents(mariadb_server, mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch)
    backup(target, tmp_path / "out")
    write_more(mariadb_server, mariadb_db, None)
    mariadb_server.execute("CREATE TABLE extra (x int)", mariadb_db)
    changed = contents(mariadb_server, mariadb_db)
    with pytest.raises(TargetError, match="not empty") as err:
        target.restore(DirReader(tmp_path / "out"), None, force=False)
    message = str(err.value)
    assert message.startswith(f'target "orders" (mysql 127.0.0.1:{mariadb_server.port}): ')
    assert "--force" in message and "\n" not in message
    assert contents(mariadb_server, mariadb_db) == changed
    target.restore(DirReader(tmp_path / "out"), None, force=True)
    after = contents(mariadb_server, mariadb_db)
    assert after.pop("extra") == ()  # not in the backup: left alone
    assert after == expected


def test_views_triggers_routines_sequences(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    seed(mariadb_server, mariadb_db, None, rows=5)
    for statement in [
        "CREATE VIEW v2 AS SELECT name FROM v1",  # created before what it uses
        "CREATE SEQUENCE seq START WITH 100",
        "CREATE TABLE log (n int)",
        "CREATE TRIGGER on_other AFTER INSERT ON other FOR EACH ROW BEGIN"
        " INSERT INTO log VALUES (NEW.k); INSERT INTO log VALUES (NEW.k * 10); END",
        "CREATE FUNCTION twice(x int) RETURNS int DETERMINISTIC RETURN x * 2",
        "CREATE PROCEDURE touch() BEGIN SELECT 1; SELECT 2; END",
    ]:
        if statement.startswith("CREATE VIEW v2"):
            mariadb_server.execute("CREATE VIEW v1 AS SELECT id, name FROM items WHERE id < 3", mariadb_db)
        mariadb_server.execute(statement, mariadb_db)
    mariadb_server.execute("DO NEXTVAL(seq)", mariadb_db)
    expected = contents(mariadb_server, mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch)
    backup(target, tmp_path / "out")
    dest = unique("objects")
    target.restore(
        DirReader(tmp_path / "out"), {"database": dest}, force=False
    )
    assert contents(mariadb_server, dest) == expected  # restoring data fired no trigger
    conn = mariadb_server.connect(dest)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO other VALUES (9, 'nine')")
        cur.execute("SELECT n FROM log ORDER BY n")
        assert cur.fetchall() == ((9,), (90,))
        cur.execute("SELECT twice(21), NEXTVAL(seq)")
        assert cur.fetchone()[0] == 42  # the sequence goes on from a cached boundary
        cur.execute("SELECT * FROM v2 ORDER BY name")
        assert len(cur.fetchall()) == 2
        cur.execute("SHOW CREATE VIEW v2")
        assert mariadb_db not in cur.fetchone()[1]  # no reference to the source database
    conn.close()


def test_coordinator_database_included_by_default(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    seed(mariadb_server, mariadb_db, "coordinator", rows=1)
    try:
        target = make_target(mariadb_server, [mariadb_db], monkeypatch)
        position = backup(target, tmp_path / "out")
        assert position["databases"] == [mariadb_db, "coordinator"]
        assert b"'tx1'" in (tmp_path / "out" / "coordinator.sql").read_bytes()
    finally:
        drop(mariadb_server, "coordinator")


def test_wrong_password_is_one_line_naming_the_target(mariadb_server, mariadb_db, monkeypatch):
    target = make_target(mariadb_server, [mariadb_db], monkeypatch)
    monkeypatch.setenv("TXB_MARIA_PW", "not-the-password")
    with pytest.raises(TargetError) as err:
        target.preflight()
    assert str(err.value) == (
        f'target "orders" (mysql 127.0.0.1:{mariadb_server.port}): '
        "Access denied for user 'root'@'127.0.0.1' (using password: YES)"
    )


def test_unreachable_port(mariadb_server, monkeypatch):
    port = free_port()
    monkeypatch.setenv("TXB_MARIA_PW", "x")
    target = mysql_target.from_config(
        "orders", {"port": port, "password_env": "TXB_MARIA_PW", "databases": ["x"]}
    )
    with pytest.raises(TargetError) as err:
        target.preflight()
    assert str(err.value) == f'target "orders" (mysql 127.0.0.1:{port}): cannot connect: Connection refused'


def test_preflight_refusals(mariadb_server, mariadb_db, monkeypatch):
    target = make_target(mariadb_server, [mariadb_db, "no_such_db"], monkeypatch)
    with pytest.raises(TargetError, match='database "no_such_db" not found'):
        target.preflight()
    mariadb_server.execute("CREATE TABLE legacy (x int) ENGINE=MyISAM", mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch)
    with pytest.raises(TargetError, match=r"legacy uses the MyISAM engine.*convert it to InnoDB"):
        target.preflight()


def test_table_altered_after_capture_fails_loudly(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    seed(mariadb_server, mariadb_db, None, rows=5)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch)

    def rebuild() -> None:  # a table rebuilt after the snapshot cannot be read in it
        mariadb_server.execute("ALTER TABLE other FORCE", mariadb_db)

    with pytest.raises(TargetError, match="Table definition has changed"):
        backup(target, tmp_path / "out", rebuild)


def test_client_missing_is_named(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    seed(mariadb_server, mariadb_db, None, rows=1)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch, bin_dir=str(tmp_path))
    backup(target, tmp_path / "out")
    with pytest.raises(TargetError, match="mariadb or mysql not found"):
        target.restore(DirReader(tmp_path / "out"), {"database": unique("x")}, force=False)


def test_describe_has_no_secret(mariadb_server, monkeypatch):
    target = make_target(mariadb_server, ["a", "b"], monkeypatch)
    described = target.describe()
    assert described["databases"] == ["a", "b"] and described["coordinator_database"] == "coordinator"
    assert mariadb_server.password not in repr(described)
    assert target.kind == mysql_target.KIND == "mysql"
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host="127.0.0.1", port=mariadb_server.port, user="root", password="bad")


def test_primary_key_walk_and_streaming(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    import datetime
    import random

    rng = random.Random(7)
    conn = mariadb_server.connect(mariadb_db)
    with conn.cursor() as cur:
        # walked by primary key, in chunks the server joins
        cur.execute("CREATE TABLE s (k varchar(20) COLLATE utf8mb4_general_ci PRIMARY KEY, v int)")
        keys = {"".join(rng.choice("abcXYZ%_'\\ é") for _ in range(8)).strip() + str(i) for i in range(500)}
        cur.executemany("INSERT INTO s VALUES (%s, %s)", [(k, i) for i, k in enumerate(sorted(keys))])
        cur.execute("CREATE TABLE `b%s` (k varbinary(16) PRIMARY KEY, v int)")
        cur.executemany("INSERT INTO `b%%s` VALUES (%s, %s)", [(rng.randbytes(12), i) for i in range(500)])
        cur.execute("CREATE TABLE d (k datetime(6) PRIMARY KEY)")
        start = datetime.datetime(2020, 1, 1)
        cur.executemany(
            "INSERT INTO d VALUES (%s)",
            [(start + datetime.timedelta(seconds=i, microseconds=i),) for i in range(500)],
        )
        # rows over the server's chunk limit: the walk shrinks its chunks to one row
        cur.execute("CREATE TABLE big (id int PRIMARY KEY, v longblob)")
        for i in range(10):
            cur.execute("INSERT INTO big VALUES (%s, %s)", (i, rng.randbytes(3 << 20)))
        # streamed: composite key, no key
        cur.execute("CREATE TABLE c (a int, b varchar(5), v text, PRIMARY KEY (a, b))")
        cur.executemany("INSERT INTO c VALUES (%s, %s, %s)", [(i % 7, str(i), "x" * i) for i in range(500)])
        cur.execute("CREATE TABLE n (x int, y text)")
        cur.executemany("INSERT INTO n VALUES (%s, %s)", [(i, None if i % 3 else "y") for i in range(500)])
    conn.close()
    expected = contents(mariadb_server, mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch, batch_bytes=2048)
    backup(target, tmp_path / "out")
    dump = (tmp_path / "out" / f"{mariadb_db}.sql").read_bytes()
    assert dump.count(b"INSERT INTO `s`") > 5 and dump.count(b"INSERT INTO `big`") == 10
    dest = unique("walk")
    target.restore(DirReader(tmp_path / "out"), {"database": dest}, force=False)
    assert contents(mariadb_server, dest) == expected


def sessions(server: MariaDBServer) -> dict[int, str]:
    """The server's other client sessions: id -> command (Sleep when idle)."""
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT ID, COMMAND FROM information_schema.PROCESSLIST"
                " WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon', 'Binlog Dump')"
                " AND USER = 'root'"
            )
            return {int(i): str(c) for i, c in cur.fetchall()}
    finally:
        conn.close()


def settled(server: MariaDBServer, count: int) -> dict[int, str]:
    """The sessions once there are ``count`` of them (a closed one leaves the list shortly after)."""
    deadline = time.monotonic() + 10
    while len(found := sessions(server)) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_preflight_prepares_the_capture_session(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    seed(mariadb_server, mariadb_db, None, rows=10)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch)
    before = settled(mariadb_server, len(sessions(mariadb_server)))
    target.preflight()
    prepared = set(settled(mariadb_server, len(before) + 1)) - set(before)
    assert len(prepared) == 1
    capture = target.capture("s")
    try:
        # the snapshot is held on the session the preflight opened, and on no other
        assert set(sessions(mariadb_server)) - set(before) == prepared
        assert capture.position()["binlog_position"] > 0
    finally:
        capture.release()
    assert settled(mariadb_server, len(before)) == before
    # the target serves several backups, each one on its own preflight's session
    target.preflight()
    first = set(settled(mariadb_server, len(before) + 1)) - set(before)
    target.preflight()  # an earlier preflight's unused session is replaced, not leaked
    second = set(settled(mariadb_server, len(before) + 1)) - set(before)
    assert len(second) == 1 and second != first
    position = backup(target, tmp_path / "out")
    assert position["databases"] == [mariadb_db]
    assert settled(mariadb_server, len(before)) == before
    target.preflight()
    target.close()  # a backup that never captures
    target.close()
    assert settled(mariadb_server, len(before)) == before
    # a failed preflight keeps nothing open
    mariadb_server.execute("CREATE TABLE legacy (x int) ENGINE=MyISAM", mariadb_db)
    with pytest.raises(TargetError, match="MyISAM"):
        target.preflight()
    assert settled(mariadb_server, len(before)) == before


def test_capture_survives_a_dead_or_expired_prepared_session(
    mariadb_server, mariadb_db, tmp_path, monkeypatch
):
    seed(mariadb_server, mariadb_db, None, rows=100)
    expected = contents(mariadb_server, mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch)
    before = settled(mariadb_server, len(sessions(mariadb_server)))
    target.preflight()
    (killed,) = set(settled(mariadb_server, len(before) + 1)) - set(before)
    mariadb_server.execute(f"KILL {killed}")
    backup(target, tmp_path / "out")  # the capture connects again
    dest = unique("revived")
    target.restore(DirReader(tmp_path / "out"), {"database": dest}, force=False)
    assert contents(mariadb_server, dest) == expected
    # a prepared session that no capture takes is closed after a while
    monkeypatch.setattr(mysql_target, "PREPARED_TTL_S", 0.2)
    target.preflight()
    assert settled(mariadb_server, len(before)) == before
    backup(target, tmp_path / "out2")
    assert settled(mariadb_server, len(before)) == before


def test_storage_failure_stops_the_reader(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    seed(mariadb_server, mariadb_db, None, rows=3000)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch, batch_bytes=4096)

    class Full(Exception):
        pass

    class FailingWriter(DirWriter):
        @contextmanager
        def open(self, name):
            with super().open(name) as stream:
                written = 0

                class Limited:
                    def write(self, data: bytes) -> int:
                        nonlocal written
                        written += len(data)
                        if written > 100_000:
                            raise Full("disk full")
                        return stream.write(data)

                yield Limited()

    capture = target.capture("s")
    try:
        with pytest.raises(Full):
            capture.export(FailingWriter(tmp_path / "out"))
        # the session's reader stopped: nothing reads the session behind our back any more
        assert not [t for t in threading.enumerate() if t.name == "mysql-export-reader"]
    finally:
        capture.release()
    backup(target, tmp_path / "again")  # the target is not worse for it
