from __future__ import annotations

import sqlite3

import pytest

from tests.targets_support import DirReader, backup
from txbackup.errors import TargetError, UsageError
from txbackup.targets.sqlite import target as sqlite_target


def make_db(path, rows=100, wal=True):
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
    conn.executemany(
        "INSERT INTO t (v, b) VALUES (?, ?)",
        [(f"row {i} 'é\\", bytes([i % 256, 0])) for i in range(rows)],
    )
    return conn


def rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, v, b FROM t ORDER BY id").fetchall()
    finally:
        conn.close()


def target(*paths, name="cache"):
    conf = {"name": name, "kind": "sqlite"}
    if len(paths) == 1:
        conf["path"] = str(paths[0])
    else:
        conf["paths"] = [str(p) for p in paths]
    return sqlite_target.from_config(name, conf)


def test_export_is_the_captured_snapshot(tmp_path):
    db = tmp_path / "app.db"
    app = make_db(db)
    before = rows(db)
    t = target(db)
    t.preflight()

    def keep_writing():
        app.executemany("INSERT INTO t (v) VALUES (?)", [("later",)] * 500)
        app.execute("UPDATE t SET v = 'changed' WHERE id = 1")
        app.execute("CREATE TABLE later (x)")
        app.execute("PRAGMA wal_checkpoint(PASSIVE)")  # cannot pass our reader

    position = backup(t, tmp_path / "out", keep_writing)
    assert position["files"]["app.sqlite"]["path"] == str(db)
    artifact = tmp_path / "out" / "app.sqlite"
    assert rows(artifact) == before
    conn = sqlite3.connect(artifact)
    assert conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall() == [("t",)]
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert len(rows(db)) == 600  # the application's writes went through meanwhile


def test_writers_are_not_blocked_while_capture_is_held(tmp_path):
    db = tmp_path / "app.db"
    app = make_db(db)
    app.execute("PRAGMA busy_timeout = 0")  # would fail at once if blocked
    capture = target(db).capture("s")
    try:
        app.execute("INSERT INTO t (v) VALUES ('during')")
    finally:
        capture.release()


def test_rollback_journal_refused_with_advice(tmp_path):
    db = tmp_path / "legacy.db"
    make_db(db, wal=False).close()
    with pytest.raises(TargetError, match="journal_mode=delete") as err:
        target(db).preflight()
    message = str(err.value)
    assert message.startswith(f'target "cache" (sqlite {db}): ')
    assert "PRAGMA journal_mode=WAL" in message and "\n" not in message
    # and we never changed the application's mode
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_missing_file(tmp_path):
    with pytest.raises(TargetError, match="no such file"):
        target(tmp_path / "nope.db").preflight()
    assert not (tmp_path / "nope.db").exists()


def test_not_a_database(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    with pytest.raises(TargetError, match=r"junk\.db"):
        target(junk).preflight()


def test_restore_roundtrip_and_refusals(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    make_db(a, 10).close()
    make_db(b, 20).close()
    t = target(a, b)
    backup(t, tmp_path / "out")
    src = DirReader(tmp_path / "out")
    assert src.names() == ["a.sqlite", "b.sqlite"]

    # into a fresh folder
    t.restore(src, {"dir": str(tmp_path / "restored")}, force=False)
    assert rows(tmp_path / "restored" / "a.db") == rows(a)
    assert rows(tmp_path / "restored" / "b.db") == rows(b)

    # non-empty destination: refused, untouched (also the other file)
    before_a, before_b = rows(a), rows(b)
    sqlite3.connect(b, isolation_level=None).execute("DELETE FROM t")
    with pytest.raises(TargetError, match="not empty; use --force"):
        t.restore(DirReader(tmp_path / "out"), None, force=False)
    assert rows(a) == before_a and rows(b) == []

    # force: replaced, stale WAL files removed
    (tmp_path / "b.db-wal").write_bytes(b"stale")
    t.restore(DirReader(tmp_path / "out"), None, force=True)
    assert rows(b) == before_b
    assert not (tmp_path / "b.db-wal").exists()


def test_restore_single_path(tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 5).close()
    t = target(db)
    backup(t, tmp_path / "out")
    dest = tmp_path / "x" / "copy.db"
    t.restore(DirReader(tmp_path / "out"), {"path": str(dest)}, force=False)
    assert rows(dest) == rows(db)


def test_restore_refuses_a_corrupt_artifact(tmp_path):
    db = tmp_path / "app.db"
    make_db(db, 5).close()
    t = target(db)
    backup(t, tmp_path / "out")
    (tmp_path / "out" / "app.sqlite").write_bytes(b"not sqlite" * 1000)
    dest = tmp_path / "r.db"
    with pytest.raises(TargetError, match="not a sound SQLite database"):
        t.restore(DirReader(tmp_path / "out"), {"path": str(dest)}, force=False)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.db")] == []


def test_config_errors(tmp_path):
    with pytest.raises(UsageError, match="path"):
        sqlite_target.from_config("c", {"name": "c", "kind": "sqlite"})
    with pytest.raises(UsageError, match="distinct names"):
        sqlite_target.from_config("c", {"paths": [str(tmp_path / "a.db"), str(tmp_path / "x/a.db")]})
    with pytest.raises(UsageError, match="unknown setting"):
        sqlite_target.from_config("c", {"path": "a.db", "journal": "wal"})
    t = sqlite_target.from_config("c", {"path": "rel.db"})
    assert t.describe() == {"kind": "sqlite", "paths": [str(tmp_path.cwd() / "rel.db")]}
    assert t.kind == sqlite_target.KIND == "sqlite"


def test_restore_with_dsn_and_resume(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    make_db(a, 3).close()
    make_db(b, 4).close()
    t = target(a, b)
    backup(t, tmp_path / "out")
    src = DirReader(tmp_path / "out")
    # what the engine passes for --to NAME=FOLDER (several files)
    t.restore(src, {"dsn": str(tmp_path / "r")}, force=False)
    assert rows(tmp_path / "r" / "b.db") == rows(b)
    # a resumed job skips the files it restored already (they are not empty now)
    t.restore(src, {"dsn": str(tmp_path / "r")}, force=False)
    # a new job does not
    with pytest.raises(TargetError, match="not empty"):
        t.restore(DirReader(tmp_path / "out"), {"dsn": str(tmp_path / "r")}, force=False)
    # a single-file target: --to NAME=FILE
    single = target(a)
    backup(single, tmp_path / "out1")
    single.restore(DirReader(tmp_path / "out1"), {"dsn": str(tmp_path / "one.db")}, force=False)
    assert rows(tmp_path / "one.db") == rows(a)


def damage(path, page=6):
    """Garbage in a b-tree page's cell pointers: a file SQLite still opens, and quick_check
    reports (over several lines)."""
    with open(path, "r+b") as f:
        f.seek(4096 * (page - 1) + 8)
        f.write(b"\xff\xff\xff\xff\x00\x10")


def test_a_damaged_database_fails_its_backup_naming_it(tmp_path):
    db = tmp_path / "app.db"
    conn = make_db(db, 2000)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    damage(db)
    with pytest.raises(TargetError) as err:
        backup(target(db), tmp_path / "out")
    message = str(err.value)
    assert f"{db} is damaged (quick_check of the captured copy: " in message
    assert "\n" not in message and "repair it" in message


def test_a_restore_checks_again_only_files_the_backup_did_not_check(tmp_path, monkeypatch):
    db = tmp_path / "app.db"
    make_db(db, 50).close()
    t = target(db)
    position = backup(t, tmp_path / "out")
    assert position["files"]["app.sqlite"]["checked"] == "quick_check"
    checked: list[str] = []
    real = sqlite_target.quick_check

    def counted(path: str) -> str:
        checked.append(path)
        return real(path)

    monkeypatch.setattr(sqlite_target, "quick_check", counted)
    # the backup checked it: the file extracted (its SHA-256 matched) is that file
    t.restore(DirReader(tmp_path / "out", position=position), {"path": str(tmp_path / "a.db")}, False)
    assert checked == [] and rows(tmp_path / "a.db") == rows(db)
    # a set that does not say so (older, or another position): checked at restore
    older = {"files": {"app.sqlite": {"path": str(db)}}}
    t.restore(DirReader(tmp_path / "out", position=older), {"path": str(tmp_path / "b.db")}, False)
    assert len(checked) == 1 and rows(tmp_path / "b.db") == rows(db)


def test_a_verdict_naming_a_hostile_column_stays_one_printable_line(tmp_path):
    """quick_check's messages name the file's own columns: an artifact's names are untrusted."""
    db = tmp_path / "app.db"
    make_db(db, 5).close()
    t = target(db)
    backup(t, tmp_path / "out")
    bad = tmp_path / "out" / "app.sqlite"
    bad.unlink()
    name = "v\x1b[31m\nred"
    conn = sqlite3.connect(bad, isolation_level=None)
    conn.execute(f'CREATE TABLE t (id INTEGER PRIMARY KEY, "{name}" TEXT)')
    conn.execute("INSERT INTO t VALUES (1, NULL)")
    conn.execute("PRAGMA writable_schema = ON")  # NOT NULL declared after the NULL was written
    conn.execute(
        "UPDATE sqlite_master SET sql = ? WHERE name = 't'",
        (f'CREATE TABLE t (id INTEGER PRIMARY KEY, "{name}" TEXT NOT NULL)',),
    )
    conn.close()
    with pytest.raises(TargetError, match=r"not a sound SQLite database: NULL value in t\.v") as err:
        t.restore(DirReader(tmp_path / "out"), {"path": str(tmp_path / "r.db")}, force=False)
    message = str(err.value)
    assert message.isprintable() and "\\x1b[31m" in message
    assert not (tmp_path / "r.db").exists()


def test_a_restored_file_is_on_disk_before_the_job_says_done(tmp_path, monkeypatch):
    """Its data written durably (``extract(durable=True)``) and the rename that publishes it
    synced (its folder fsynced once it is in place), before the journal marks it done."""
    db = tmp_path / "app.db"
    make_db(db, 30).close()
    t = target(db)
    backup(t, tmp_path / "out")
    events: list[tuple[str, object]] = []

    class Recording(DirReader):
        def extract(self, name, path, *, durable=False):
            events.append(("extract", durable))
            super().extract(name, path, durable=durable)

    dest = tmp_path / "restored" / "app.db"

    def sync_folder(folder):
        events.append(("sync", (folder, dest.exists())))

    monkeypatch.setattr(sqlite_target, "sync_folder", sync_folder)
    reader = Recording(tmp_path / "out")
    real_done = reader.journal.mark_done

    def mark_done(step, *args, **kwargs):
        events.append(("done", step))
        real_done(step, *args, **kwargs)

    monkeypatch.setattr(reader.journal, "mark_done", mark_done)
    t.restore(reader, {"path": str(dest)}, force=False)
    assert events == [("extract", True), ("sync", (str(dest.parent), True)), ("done", "file/app.sqlite")]
    assert rows(dest) == rows(db)


def test_a_folder_that_cannot_be_synced_fails_the_restore_in_one_line(tmp_path, monkeypatch):
    db = tmp_path / "app.db"
    make_db(db, 5).close()
    t = target(db)
    backup(t, tmp_path / "out")

    def refuse(folder):
        raise PermissionError(13, "Permission denied", folder)

    monkeypatch.setattr(sqlite_target, "sync_folder", refuse)
    reader = DirReader(tmp_path / "out")
    dest = tmp_path / "restored" / "app.db"
    with pytest.raises(TargetError) as err:
        t.restore(reader, {"path": str(dest)}, force=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith('target "cache"')
    assert message.endswith(f"destination {dest}: Permission denied")
    assert not reader.journal.is_done("file/app.sqlite")  # not said to be restored
