"""``jobs = N`` on a mysql target: N sessions on one snapshot, proved equal, exported in parts
and restored by N clients, on a real MariaDB."""

from __future__ import annotations

import subprocess
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.test_hostile_names import canaries, maria_ident, maria_objects, maria_state, nasty
from tests.integration.test_mysql_target import (
    contents,
    make_target,
    seed,
    sessions,
    settled,
    unique,
    write_more,
)
from tests.servers.mariadb import MariaDBServer
from tests.targets_support import DirReader, DirWriter, backup
from txbackup.errors import IntegrityError, TargetError, UsageError
from txbackup.targets.base import Recorded
from txbackup.targets.layouts import LAYOUTS
from txbackup.targets.mysql import parts as mysql_parts
from txbackup.targets.mysql import target as mysql_target

pytestmark = pytest.mark.mariadb


def fill_more(server: MariaDBServer, db: str) -> None:
    """A big table with an integer key (split in ranges), tables without a usable key."""
    conn = server.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE big (id bigint PRIMARY KEY, v varchar(200), w blob)")
            cur.execute(
                "INSERT INTO big SELECT seq * 3, CONCAT('row ', seq, REPEAT('x', seq % 50)),"
                " IF(seq % 7 = 0, NULL, UNHEX(MD5(seq))) FROM seq_1_to_20000"
            )
            cur.execute("CREATE TABLE nokey (x int, y text)")
            cur.execute("INSERT INTO nokey SELECT seq % 10, IF(seq % 3, NULL, 'y') FROM seq_1_to_700")
            cur.execute("CREATE TABLE pair (a int, b varchar(5), PRIMARY KEY (a, b))")
            cur.execute("INSERT INTO pair SELECT seq % 7, seq FROM seq_1_to_300")
            cur.execute("CREATE TABLE textkey (k varchar(20) PRIMARY KEY, v int)")
            cur.execute("INSERT INTO textkey SELECT CONCAT('k', seq), seq FROM seq_1_to_300")
            cur.execute("CREATE TABLE empty_one (id int PRIMARY KEY)")
            cur.execute("CREATE VIEW v AS SELECT id, v FROM big WHERE id < 30")
            cur.execute("CREATE TABLE log (n bigint)")
            cur.execute(
                "CREATE TRIGGER on_big AFTER INSERT ON big FOR EACH ROW INSERT INTO log VALUES (NEW.id)"
            )
            cur.execute("CREATE FUNCTION twice(x int) RETURNS int DETERMINISTIC RETURN x * 2")
            cur.execute("CREATE SEQUENCE seq START WITH 100")
            cur.execute("ANALYZE TABLE big")
            cur.fetchall()
    finally:
        conn.close()


@pytest.fixture
def small_parts(monkeypatch):
    """Tables of a few hundred KB count as big: the test's big table is split."""
    monkeypatch.setattr(mysql_parts, "PART_MIN_BYTES", 1)


def part_names(out: Path, db: str) -> list[str]:
    return sorted(n for n in DirReader(out).names() if n.startswith(f"{db}.parts/"))


def test_jobs_2_round_trip_with_split_table(
    mariadb_server, mariadb_db, tmp_path, monkeypatch, small_parts
):
    coordinator = unique("coord")
    seed(mariadb_server, mariadb_db, coordinator, rows=500)
    fill_more(mariadb_server, mariadb_db)
    expected = contents(mariadb_server, mariadb_db)
    expected_coordinator = contents(mariadb_server, coordinator)
    target = make_target(
        mariadb_server, [mariadb_db], monkeypatch, coordinator_database=coordinator, jobs=2,
        batch_bytes=8192,
    )  # fmt: skip
    before = settled(mariadb_server, len(sessions(mariadb_server)))
    target.preflight()
    assert len(settled(mariadb_server, len(before) + 2)) == len(before) + 2  # both prepared
    out = tmp_path / "out"
    position = backup(target, out, lambda: write_more(mariadb_server, mariadb_db, coordinator))
    assert settled(mariadb_server, len(before)) == before  # every session released
    assert position["snapshot_sessions"] == 2 and int(position["innodb_trx_counter"]) > 0
    assert position["binlog_position"] > 0 and position["databases"] == [mariadb_db, coordinator]
    names = part_names(out, mariadb_db)
    assert names[0] == f"{mariadb_db}.parts/0-schema.sql"
    assert names[-1] == f"{mariadb_db}.parts/2-triggers-routines.sql"
    data = [n for n in names if "/1-data-" in n]
    assert all(LAYOUTS["mysql"].fits(n) for n in DirReader(out).names())
    ranges = [n for n in data if b"key range" in (out / n).read_bytes()[:2000]]
    assert len(ranges) >= 4  # the big table, in key ranges
    # tables without an integer key: one part each
    for table in (b"`nokey`", b"`pair`", b"`textkey`", b"`items`"):
        assert sum(b"INSERT INTO " + table in (out / n).read_bytes() for n in data) == 1, table
    assert b"CREATE TRIGGER" in (out / names[-1]).read_bytes()
    assert b"CREATE TRIGGER" not in b"".join((out / n).read_bytes() for n in names[:-1])

    dest = unique("par")
    restorer = make_target(
        mariadb_server, [mariadb_db], monkeypatch, coordinator_database=coordinator, jobs=2
    )
    mariadb_server.execute(f"DROP DATABASE `{coordinator}`")
    restorer.restore(DirReader(out), {f"rename.{mariadb_db}": dest}, force=False)
    assert contents(mariadb_server, dest) == expected  # the snapshot, not the later writes
    assert contents(mariadb_server, coordinator) == expected_coordinator
    conn = mariadb_server.connect(dest)
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM log")
        assert cur.fetchone()[0] == 0  # restoring rows fired no trigger
        cur.execute("INSERT INTO big VALUES (1, 'new', NULL)")
        cur.execute("SELECT COUNT(*), twice(21) FROM log")
        assert cur.fetchone() == (1, 42)
    conn.close()

    # by hand, as the README says: schema, the data parts in parallel, then the rest
    hand = mariadb_server.create_database("hand")
    client = (
        f"mariadb -h 127.0.0.1 -P {mariadb_server.port} -u root --default-character-set=utf8mb4 {hand}"
    )
    script = (
        f"set -e; cd {out / (mariadb_db + '.parts')}\n"
        f"{client} < 0-schema.sql\n"
        f"ls 1-data-*.sql | xargs -P 2 -I{{}} sh -c '{client} < {{}}'\n"
        f"{client} < 2-triggers-routines.sql\n"
    )
    subprocess.run(
        ["bash", "-c", script], check=True,
        env={"MYSQL_PWD": mariadb_server.password, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert contents(mariadb_server, hand) == expected


def test_jobs_1_set_restores_with_a_jobs_2_target(mariadb_server, mariadb_db, tmp_path, monkeypatch):
    seed(mariadb_server, mariadb_db, None, rows=50)
    expected = contents(mariadb_server, mariadb_db)
    backup(make_target(mariadb_server, [mariadb_db], monkeypatch), tmp_path / "out")
    assert DirReader(tmp_path / "out").names() == [f"{mariadb_db}.sql"]
    dest = unique("old")
    make_target(mariadb_server, [mariadb_db], monkeypatch, jobs=3).restore(
        DirReader(tmp_path / "out"), {"database": dest}, force=False
    )
    assert contents(mariadb_server, dest) == expected


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox", "guard-only"])
def test_jobs_3_hostile_names(mariadb_server, tmp_path, monkeypatch, sandbox, small_parts):
    monkeypatch.chdir(tmp_path)
    canary = f"PWNED-{uuid.uuid4().hex[:6]}"
    db = nasty("d", canary)[:60].replace("\n", " ").replace("/", "")
    mariadb_server.execute(f"CREATE DATABASE {maria_ident(db)}")
    dest = nasty("r", canary)[:60]
    try:
        names = maria_objects(mariadb_server, db, canary)
        conn = mariadb_server.connect(db)
        with conn.cursor() as cur:  # enough rows in the hostile table to split it
            table = maria_ident(names["table"])
            cur.execute(f"INSERT INTO {table} SELECT seq, CONCAT('v\\n', seq) FROM seq_4_to_3000")
        conn.close()
        expected = maria_state(mariadb_server, db)
        target = make_target(mariadb_server, [db], monkeypatch, name="hostile", jobs=3)
        backup(target, tmp_path / "out")
        assert len([n for n in DirReader(tmp_path / "out").names() if "/1-data-" in n]) > 2
        if not sandbox:
            monkeypatch.setattr(mysql_target, "has_sandbox", lambda client, culprit: False)
        target.restore(DirReader(tmp_path / "out"), {"database": dest}, force=False)
        assert maria_state(mariadb_server, dest) == expected
        assert canaries(tmp_path) == []
        # a tampered data part: refused, one line, and nothing runs
        part = next(p for p in sorted((tmp_path / "out").rglob("1-data-*.sql")))
        part.write_bytes(part.read_bytes() + f"\\! touch {canary}\n".encode())
        with pytest.raises(TargetError) as err:
            target.restore(DirReader(tmp_path / "out"), {"database": dest}, force=True)
        assert "holds" in str(err.value) and "\n" not in str(err.value)
        assert canaries(tmp_path) == []
    finally:
        mariadb_server.execute(f"DROP DATABASE IF EXISTS {maria_ident(db)}")
        mariadb_server.execute(f"DROP DATABASE IF EXISTS {maria_ident(dest)}")


@pytest.mark.parametrize("binlogged", [True, False], ids=["write", "write-without-binlog"])
def test_a_write_between_the_snapshots_fails_the_capture(
    mariadb_server, mariadb_db, tmp_path, monkeypatch, binlogged
):
    seed(mariadb_server, mariadb_db, None, rows=10)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch, jobs=2)
    before = settled(mariadb_server, len(sessions(mariadb_server)))
    writes: list[int] = []

    def write() -> None:  # what a paused application cannot do, and a forgotten one might
        conn = mariadb_server.connect(mariadb_db)
        with conn.cursor() as cur:
            if not binlogged:
                cur.execute("SET SESSION sql_log_bin = 0")  # no binlog event: the counter sees it
            cur.execute("INSERT INTO other VALUES (%s, 'late')", (100 + len(writes),))
        conn.close()
        writes.append(1)

    monkeypatch.setattr(mysql_target, "_AFTER_FIRST_SNAPSHOT", write)
    target.preflight()
    with pytest.raises(TargetError) as err:
        target.capture("s")
    assert len(writes) == 2  # tried once more, on the same sessions
    message = str(err.value)
    assert message.startswith(f'target "orders" (mysql 127.0.0.1:{mariadb_server.port}): the 2 snapshot')
    assert "InnoDB transaction counter: session 1 before its snapshot" in message, message
    assert "session 2 before its snapshot" in message
    assert "nothing was exported" in message and "\n" not in message
    assert settled(mariadb_server, len(before)) == before  # no session left behind

    # a single write (InnoDB's statistics, a straggler): the second try holds
    def write_once() -> None:
        if not writes[2:]:
            write()
        else:
            writes.append(1)

    monkeypatch.setattr(mysql_target, "_AFTER_FIRST_SNAPSHOT", write_once)
    position = backup(target, tmp_path / "out")
    assert position["snapshot_attempts"] == 2 and position["snapshot_sessions"] == 2
    expected = contents(mariadb_server, mariadb_db)  # the second try's: with the stray write
    dest = unique("retried")
    target.restore(DirReader(tmp_path / "out"), {"database": dest}, force=False)
    assert contents(mariadb_server, dest) == expected
    monkeypatch.setattr(mysql_target, "_AFTER_FIRST_SNAPSHOT", None)
    capture = target.capture("s")  # nothing writes now: the proof holds at once
    assert "snapshot_attempts" not in capture.position()
    capture.release()


def test_interrupted_export_stops_every_session(
    mariadb_server, mariadb_db, tmp_path, monkeypatch, small_parts
):
    seed(mariadb_server, mariadb_db, None, rows=3000)
    fill_more(mariadb_server, mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch, jobs=2, batch_bytes=4096)
    before = settled(mariadb_server, len(sessions(mariadb_server)))

    class Full(Exception):
        pass

    class FailingWriter(DirWriter):
        written = 0
        lock = threading.Lock()

        @contextmanager
        def open(self, name):
            with super().open(name) as stream:
                writer = self

                class Limited:
                    def write(self, data: bytes) -> int:
                        with writer.lock:
                            FailingWriter.written += len(data)
                            if FailingWriter.written > 200_000:
                                raise Full("disk full")
                        return stream.write(data)

                yield Limited()

    def workers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("mysql-export")]

    capture = target.capture("s")
    try:
        with pytest.raises(Full):
            capture.export(FailingWriter(tmp_path / "out"))
        assert workers() == []  # every session's reader and worker stopped
    finally:
        capture.release()
    assert settled(mariadb_server, len(before)) == before

    # a session killed under the export: one line naming the target and what it read
    capture = target.capture("s")

    class KillingWriter(DirWriter):
        @contextmanager
        def open(self, name):
            if "1-data-00002" in name:  # the data parts have started
                mariadb_server.execute(f"KILL {capture.others[0].thread_id()}")
            with super().open(name) as stream:
                yield stream

    try:
        with pytest.raises(TargetError) as err:
            capture.export(KillingWriter(tmp_path / "killed"))
        message = str(err.value)
        assert "\n" not in message and message.startswith('target "orders"'), message
        assert "Lost connection" in message or "gone away" in message, message
        assert workers() == []
    finally:
        capture.release()
    assert settled(mariadb_server, len(before)) == before
    expected = contents(mariadb_server, mariadb_db)
    backup(target, tmp_path / "again")  # the target is not worse for it
    dest = unique("again")
    target.restore(DirReader(tmp_path / "again"), {"database": dest}, force=False)
    assert contents(mariadb_server, dest) == expected


def test_interrupted_restore_resumes(mariadb_server, mariadb_db, tmp_path, monkeypatch, small_parts):
    from txbackup.jobs import MemoryJournal

    seed(mariadb_server, mariadb_db, None, rows=300)
    fill_more(mariadb_server, mariadb_db)
    expected = contents(mariadb_server, mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch, jobs=2)
    backup(target, tmp_path / "out")
    journal = MemoryJournal()
    dest = unique("resume")
    last = sorted((tmp_path / "out").rglob("1-data-*.sql"))[-1]
    good = last.read_bytes()
    last.write_bytes(good.replace(b"INSERT INTO", b"INSERT INTO no_such_table_", 1))
    with pytest.raises(TargetError) as err:
        target.restore(DirReader(tmp_path / "out", journal=journal), {"database": dest}, force=False)
    assert "\n" not in str(err.value)
    last.write_bytes(good)
    # the database this job started is its own to finish (not refused as not empty)
    target.restore(DirReader(tmp_path / "out", journal=journal), {"database": dest}, force=False)
    assert contents(mariadb_server, dest) == expected


def test_jobs_setting_and_layout_checks(mariadb_server, monkeypatch):
    for bad in (0, 33, "2"):
        with pytest.raises(UsageError, match="jobs"):
            make_target(mariadb_server, ["a"], monkeypatch, jobs=bad)
    target = make_target(mariadb_server, ["a"], monkeypatch, jobs=32)
    assert target.describe()["jobs"] == 32
    ok = ("a.parts/0-schema.sql", "a.parts/1-data-00001.sql", "a.parts/2-triggers-routines.sql")
    target.check_record(Recorded(ok, {}))
    for name in ("a.parts/1-data-1.sql", "a.parts/x.sql", "a.parts/../b.sql", "b.parts/0-schema.sql"):
        with pytest.raises(IntegrityError) as err:
            target.check_record(Recorded((*ok, name), {}))
        assert "\n" not in str(err.value)
    with pytest.raises(IntegrityError, match=r"lack 2-triggers-routines\.sql"):
        mysql_parts.scripts(list(ok[:2]), "t")
    with pytest.raises(IntegrityError, match="both a dump and parts"):
        mysql_parts.scripts([*ok, "a.sql"], "t")
    assert mysql_parts.scripts([*ok, "a.parts/1-data-00002.sql"], "t")["a"][1] == [
        "a.parts/1-data-00001.sql", "a.parts/1-data-00002.sql",
    ]  # fmt: skip


async def test_jobs_2_through_the_engine(
    app, mariadb_server, mariadb_db, tmp_path, monkeypatch, small_parts
):
    """A real backup (pause, capture, unpause, export into storage, manifest) and restore
    (verify, then restore) of a jobs = 2 set."""
    from tests.integration.test_restore_rename import Store, _backup, _plan
    from txbackup.engine.restore import restore_set
    from txbackup.jobs import JobStore

    seed(mariadb_server, mariadb_db, None, rows=300)
    fill_more(mariadb_server, mariadb_db)
    expected = contents(mariadb_server, mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch, jobs=2)
    store = Store()
    manifest = await _backup(app, target, store, tmp_path)
    (recorded,) = manifest.targets
    assert recorded.position["snapshot_sessions"] == 2
    assert len([a for a in recorded.artifacts if "/1-data-" in a.name]) > 3
    dest = unique("engine")
    jobs = JobStore(str(tmp_path / "jobs.db"))
    job_id, _ = restore_set(_plan(store, manifest, target, jobs, renames={"orders": {mariadb_db: dest}}))
    assert jobs.get(job_id).status == "complete"
    assert contents(mariadb_server, dest) == expected


@pytest.fixture(scope="module")
def no_binlog_server():
    """A MariaDB server without binary logging: the proof is InnoDB's counter alone."""
    from tests.conftest import require
    from tests.servers import mariadb as mariadb_servers

    require(mariadb_servers.missing_reason())
    with MariaDBServer(log_bin=False) as server:
        yield server


def test_jobs_2_without_binlog(no_binlog_server, tmp_path, monkeypatch, small_parts):
    server = no_binlog_server
    db = server.create_database("nolog")
    seed(server, db, None, rows=300)
    fill_more(server, db)
    expected = contents(server, db)
    target = make_target(server, [db], monkeypatch, jobs=2)
    position = backup(target, tmp_path / "out", lambda: write_more(server, db, None))
    assert position["log_bin"] is False and "binlog_file" not in position
    assert position["snapshot_sessions"] == 2 and int(position["innodb_trx_counter"]) > 0
    dest = unique("nolog")
    target.restore(DirReader(tmp_path / "out"), {"database": dest}, force=False)
    assert contents(server, dest) == expected

    def write() -> None:
        server.execute("INSERT INTO other SELECT MAX(k) + 1, 'late' FROM other", db)

    monkeypatch.setattr(mysql_target, "_AFTER_FIRST_SNAPSHOT", write)
    counter = r"InnoDB transaction counter: session 1 before its snapshot '\d+', "
    with pytest.raises(TargetError, match=counter):
        target.capture("s")


def test_artifact_names_read_back():
    from txbackup.targets.audit_tables import _my_databases
    from txbackup.targets.layouts import mysql_artifact

    assert mysql_artifact("a.b.parts/1-data-00012.sql") == ("a.b", "1-data-00012.sql")
    assert mysql_artifact("x.parts.sql") == ("x.parts", None)
    assert mysql_artifact("x.parts/0-schema.sql.zst") is None and mysql_artifact("x/y.sql") is None
    names = ["a.parts/0-schema.sql", "a.parts/1-data-00001.sql", "a.parts/2-triggers-routines.sql", "b.sql"]
    assert _my_databases(names) == ["a", "b"]  # what the audit restores into its scratch server


@pytest.mark.parametrize("written", ["now", "before"])
def test_data_parts_take_no_table_lock(
    mariadb_server, mariadb_db, tmp_path, monkeypatch, small_parts, written
):
    """MariaDB >= 10.6 (MDEV-515) locks a whole empty InnoDB table for an INSERT with unique and
    foreign-key checks off; two parts of one table starting on it at once can then deadlock
    (1213, seen in CI). A data part's INSERTs must take no table lock, in a set written now
    (checks on) or before (its header turns them off): the data phase must finish while
    another session holds the table's intention lock (a locking read of no row in READ
    COMMITTED: no gap lock), which an exclusive table lock would wait for."""
    fill_more(mariadb_server, mariadb_db)
    expected = contents(mariadb_server, mariadb_db)
    target = make_target(mariadb_server, [mariadb_db], monkeypatch, jobs=2, batch_bytes=8192)
    out = tmp_path / "out"
    backup(target, out)
    data = sorted(out.rglob("1-data-*.sql"))
    assert len(data) > 2  # the big table is in ranges
    for path in data:
        text = path.read_bytes()
        header = text.split(b"\nINSERT", 1)[0]
        beside = mysql_target.UNIQUE_CHECKS_BESIDE.encode()
        assert beside in header and b"UNIQUE_CHECKS=0" not in header
        if written == "before":  # as data parts were written until the change
            path.write_bytes(text.replace(beside, b"SET UNIQUE_CHECKS=0;", 1))
    dest = unique("nolock")
    real = mysql_parts._parallel
    waited: list[bool] = []

    def parallel(work, run, jobs, stop):
        if not any("/1-data-" in name for _, name in work):
            return real(work, run, jobs, stop)
        blocker = mariadb_server.connect(dest)
        done = threading.Event()

        def hold() -> None:  # until the data phase is done, or long past what it needs
            waited.append(not done.wait(20))
            blocker.rollback()  # the parts go on either way

        with blocker.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.execute("START TRANSACTION")
            cur.execute("SELECT id FROM big WHERE id = -1 FOR UPDATE")
        thread = threading.Thread(target=hold)
        thread.start()
        try:
            return real(work, run, jobs, stop)
        finally:
            done.set()
            thread.join()
            blocker.close()

    monkeypatch.setattr(mysql_parts, "_parallel", parallel)
    target.restore(DirReader(out), {"database": dest}, force=False)
    assert waited == [False]
    assert contents(mariadb_server, dest) == expected
