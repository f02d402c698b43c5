"""Names in a database are data: a dump restores them as they were and nothing in them runs.

Every object gets a name (and a comment) holding a newline followed by a client
command that creates a canary file, plus quotes of every kind, ``*/``, ``--``,
``;``, backslashes and non-ASCII. A restore must give back identical data and
definitions, and the canary must never appear (the client runs in the test's
folder, where the relative canary name points).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.targets_support import DirReader, backup
from txbackup.errors import TargetError, UsageError
from txbackup.targets.mysql import target as mysql_target
from txbackup.targets.postgres import target as pg_target


def nasty(prefix: str, canary: str) -> str:
    """A name a client would run ``touch canary`` for, were it written raw on a line."""
    return f"{prefix}\n\\! touch {canary}\nsystem touch {canary}\n`\"'*/--;\\é日本"


def canaries(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("PWNED-*"))


# -- MariaDB -----------------------------------------------------------------------------------


def maria_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def maria_objects(server: MariaDBServer, db: str, canary: str) -> dict[str, str]:
    """Creates one object of every kind with a hostile name in ``db``; returns the names."""
    q = maria_ident
    n = {k: nasty(k[:2], canary)[:64] for k in ("table", "column", "view", "proc", "func", "trig", "seq")}
    n["event"] = nasty("ev", canary)[:64]
    note = nasty("comment", canary) + " 🙂"
    conn = server.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE {q(n['table'])} (id int PRIMARY KEY, {q(n['column'])} text"
                f" COMMENT %s DEFAULT %s, KEY {q(nasty('ix', canary)[:64])} ({q(n['column'])}(10))"
                f" COMMENT %s, CONSTRAINT {q(nasty('ck', canary)[:64])} CHECK (id > 0 OR id = %s))"
                " COMMENT %s",
                (note, note[:40], note, -len(note), note),
            )
            cur.execute(
                f"INSERT INTO {q(n['table'])} VALUES (1, %s), (2, NULL), (3, %s)",
                (note, "\\'\";\n\\! touch " + canary),
            )
            cur.execute("CREATE TABLE log (v text)")
            cur.execute(
                f"CREATE VIEW {q(n['view'])} AS SELECT {q(n['column'])} AS {q(note[:60])},"
                f" %s AS c2 FROM {q(n['table'])}",
                (note,),
            )
            cur.execute(f"CREATE SEQUENCE {q(n['seq'])} START WITH 7")
            cur.execute(
                f"CREATE TRIGGER {q(n['trig'])} AFTER INSERT ON {q(n['table'])} FOR EACH ROW"
                f" BEGIN\n  # \\! touch {canary} '\"`\n  INSERT INTO log VALUES (CONCAT(%s, NEW.id)); END",
                (note,),
            )
            cur.execute(
                f"CREATE FUNCTION {q(n['func'])}(x text) RETURNS text DETERMINISTIC"
                f" COMMENT %s RETURN CONCAT(x, %s)",
                (note, note),
            )
            # a body the client reads right only if it follows the routine's sql_mode: with
            # NO_BACKSLASH_ESCAPES, 'a\' is a whole string and what follows is outside it
            cur.execute("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
            cur.execute(
                f"CREATE PROCEDURE {q(n['proc'])}() COMMENT 'c\\'\n"
                f"BEGIN SELECT 'a\\', '\n\\! touch {canary}\n'; END"
            )
            cur.execute("SET SESSION sql_mode = DEFAULT")
            cur.execute(
                f"CREATE EVENT {q(n['event'])} ON SCHEDULE EVERY 1 DAY DISABLE DO"
                f" INSERT INTO log VALUES (%s)",
                (note,),
            )
    finally:
        conn.close()
    return n


def maria_state(server: MariaDBServer, db: str) -> dict[str, Any]:
    """Data and definitions of everything in ``db`` that a dump restores."""
    conn = server.connect(db)
    out: dict[str, Any] = {}
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT TABLE_NAME, TABLE_TYPE, TABLE_COMMENT FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = %s ORDER BY 1",
                (db,),
            )
            tables = cur.fetchall()
            out["tables"] = tables
            for name, kind, _ in tables:
                show = "VIEW" if kind == "VIEW" else "SEQUENCE" if kind == "SEQUENCE" else "TABLE"
                cur.execute(f"SHOW CREATE {show} {maria_ident(name)}")
                out[f"ddl {name}"] = cur.fetchone()[1].replace("DEFINER=`root`@`127.0.0.1` ", "")
                if kind != "SEQUENCE":
                    cur.execute(f"SELECT * FROM {maria_ident(name)} ORDER BY 1")
                    out[f"rows {name}"] = cur.fetchall()
            cur.execute(
                "SELECT COLUMN_NAME, COLUMN_COMMENT, COLUMN_DEFAULT FROM information_schema.COLUMNS"
                " WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (db,),
            )
            out["columns"] = cur.fetchall()
            cur.execute(
                "SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION, ROUTINE_COMMENT, SQL_MODE"
                " FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s ORDER BY 2",
                (db,),
            )
            out["routines"] = cur.fetchall()
            cur.execute(
                "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT"
                " FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
                (db,),
            )
            out["triggers"] = cur.fetchall()
    finally:
        conn.close()
    return out


def target_conf(
    server: MariaDBServer | PostgresServer, kind: str, db: str, monkeypatch: Any
) -> dict[str, Any]:
    """The settings of a target named "hostile" backing up ``db`` of ``server``."""
    monkeypatch.setenv("TXB_TEST_PW", server.password)
    return {
        "kind": kind,
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password_env": "TXB_TEST_PW",
        "databases": [db],
    }


@pytest.fixture
def hostile_maria(mariadb_server, tmp_path, monkeypatch):
    """(target, source database, canary name, dump folder, state): a database named and
    filled with hostile names, backed up; the test runs in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    canary = f"PWNED-{uuid.uuid4().hex[:6]}"
    # no newline nor slash in the source database name: it names the artifact
    db = nasty("d", canary)[:60].replace("\n", " ").replace("/", "")
    mariadb_server.execute(f"CREATE DATABASE {maria_ident(db)}")
    maria_objects(mariadb_server, db, canary)
    expected = maria_state(mariadb_server, db)
    target = mysql_target.from_config("hostile", target_conf(mariadb_server, "mysql", db, monkeypatch))
    backup(target, tmp_path / "out")
    yield target, db, canary, tmp_path / "out", expected
    mariadb_server.execute(f"DROP DATABASE {maria_ident(db)}")


@pytest.mark.mariadb
@pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox", "guard-only"])
def test_mariadb_hostile_names_round_trip(hostile_maria, mariadb_server, tmp_path, monkeypatch, sandbox):
    target, _, canary, out, expected = hostile_maria
    if not sandbox:  # a client without --sandbox: every dump is read before anything runs
        monkeypatch.setattr(mysql_target, "has_sandbox", lambda client, culprit: False)
    dest = nasty("r", canary)[:60]
    target.restore(DirReader(out), {"database": dest}, force=False)
    try:
        assert canaries(tmp_path) == []
        restored = maria_state(mariadb_server, dest)
        assert restored == expected
        assert len(expected["routines"]) == 2 and len(expected["triggers"]) == 1
        assert len(expected["tables"]) == 4  # table, log, view, sequence (events are not dumped)
    finally:
        mariadb_server.execute(f"DROP DATABASE {maria_ident(dest)}")
    assert canaries(tmp_path) == []


TAMPERED = [
    "\\! touch {canary}",
    "system touch {canary}",
    "SELECT 1; system touch {canary};",
    "\\. {canary}",
    "source {canary}",
    "\\T {canary}",
    "\\e",
    "\\r mysql 127.0.0.1",
    "SET SQL_MODE='NO_BACKSLASH_ESCAPES';",
    "SET NAMES gbk;",
    "/*!99999 '*/ SELECT 1; SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT ' */;",
    "DELIMITER \\!",
    "CALL p();",
]


@pytest.mark.mariadb
@pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox", "guard-only"])
def test_mariadb_tampered_dump_runs_nothing(hostile_maria, mariadb_server, tmp_path, monkeypatch, sandbox):
    target, db, canary, out, _ = hostile_maria
    if not sandbox:
        monkeypatch.setattr(mysql_target, "has_sandbox", lambda client, culprit: False)
    dump = out / f"{db}.sql"
    original = dump.read_bytes()
    dest = f"tampered_{uuid.uuid4().hex[:8]}"
    for line in TAMPERED:
        injected = line.format(canary=canary).encode()
        # after the first table's rows: a place the client reads as the start of a statement
        at = original.index(b";\n", original.index(b"INSERT INTO")) + 2
        dump.write_bytes(original[:at] + injected + b"\n" + original[at:])
        line_number = original[:at].count(b"\n") + 1
        with pytest.raises(TargetError) as err:
            target.restore(DirReader(out), {"database": dest}, force=True)
        message = str(err.value)
        assert "\n" not in message and 'target "hostile"' in message, message
        # (a SET SQL_MODE is refused further on, where the client would read strings otherwise)
        assert f"line {line_number} holds" in message or "SQL_MODE" in line, message
        if not sandbox:  # refused before anything ran
            conn = mariadb_server.connect()
            with conn.cursor() as cur:
                cur.execute("SHOW DATABASES LIKE %s", (dest,))
                assert cur.fetchall() == (), line
            conn.close()
        assert canaries(tmp_path) == [], line
    if sandbox:
        mariadb_server.execute(f"DROP DATABASE {maria_ident(dest)}")


# -- PostgreSQL --------------------------------------------------------------------------------


def pg_nasty(prefix: str, canary: str) -> str:
    """A hostile name within PostgreSQL's 63 bytes (psql reads ``\\!`` the same way)."""
    return f"{prefix}\n\\! touch {canary}\n`\"'*/--;\\é日本"


def pg_objects(server: PostgresServer, db: str, canary: str) -> None:
    """One object of every kind with a hostile name, and hostile comments, in ``db``."""
    names = {
        k: pg_nasty(k[:2], canary)
        for k in ("schema", "table", "column", "view", "func", "trig", "seq", "evt")
    }
    s, t, c, v, f, tr, sq, ev = (sql.Identifier(names[k]) for k in names)
    note = pg_nasty("comment", canary) + "\n*/ $$ $x$ \\. 🙂"
    lit = sql.Literal(note)
    statements = [
        sql.SQL("CREATE SCHEMA {}").format(s),
        sql.SQL("CREATE TABLE {s}.{t} (id int PRIMARY KEY, {c} text DEFAULT {lit})").format(
            s=s, t=t, c=c, lit=lit
        ),
        sql.SQL("INSERT INTO {s}.{t} VALUES (1, {lit}), (2, NULL), (3, DEFAULT)").format(s=s, t=t, lit=lit),
        sql.SQL("CREATE TABLE {s}.log (v text)").format(s=s),
        sql.SQL("CREATE VIEW {s}.{v} AS SELECT {c} AS {alias}, {lit}::text AS c2 FROM {s}.{t}").format(
            s=s, v=v, c=c, t=t, lit=lit, alias=sql.Identifier(note[:60])
        ),
        sql.SQL("CREATE SEQUENCE {s}.{sq} START 7").format(s=s, sq=sq),
        sql.SQL("SELECT nextval({name})").format(
            name=sql.Literal(
                f"{sql.Identifier(names['schema']).as_string()}.{sql.Identifier(names['seq']).as_string()}"
            )
        ),
        sql.SQL("CREATE FUNCTION {s}.{f}() RETURNS trigger LANGUAGE plpgsql AS {body}").format(
            s=s,
            f=f,
            body=sql.Literal(
                f"BEGIN\n-- \\\\! touch {canary} '\"`*/\n"
                f"INSERT INTO {sql.Identifier(names['schema']).as_string()}.log"
                f" VALUES ({sql.Literal(note).as_string()} || NEW.id); RETURN NEW; END"
            ),
        ),
        sql.SQL("CREATE TRIGGER {tr} AFTER INSERT ON {s}.{t} FOR EACH ROW EXECUTE FUNCTION {s}.{f}()").format(
            tr=tr, s=s, t=t, f=f
        ),
        sql.SQL("CREATE FUNCTION {s}.noop() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$").format(
            s=s
        ),
        sql.SQL("CREATE EVENT TRIGGER {ev} ON ddl_command_end EXECUTE FUNCTION {s}.noop()").format(
            ev=ev, s=s
        ),
    ]
    for kind, target in [
        ("SCHEMA", s),
        ("TABLE", sql.SQL("{}.{}").format(s, t)),
        ("COLUMN", sql.SQL("{}.{}.{}").format(s, t, c)),
        ("VIEW", sql.SQL("{}.{}").format(s, v)),
        ("SEQUENCE", sql.SQL("{}.{}").format(s, sq)),
        ("FUNCTION", sql.SQL("{}.{}()").format(s, f)),
        ("TRIGGER", sql.SQL("{} ON {}.{}").format(tr, s, t)),
        ("EVENT TRIGGER", ev),
    ]:
        statements.append(sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(kind), target, lit))
    with psycopg.connect(make_conninfo("", **server.params(db)), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


PG_STATE = {
    "relations": "SELECT n.nspname, c.relname, c.relkind, obj_description(c.oid, 'pg_class')"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1, 2",
    "columns": "SELECT c.relname, a.attname, pg_get_expr(d.adbin, d.adrelid),"
    " col_description(c.oid, a.attnum) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_attrdef d"
    " ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attnum > 0"
    " AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1, 2",
    "views": "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c WHERE c.relkind = 'v'"
    " AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)",
    "functions": "SELECT p.proname, pg_get_functiondef(p.oid), obj_description(p.oid, 'pg_proc')"
    " FROM pg_proc p WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace,"
    " 'information_schema'::regnamespace) ORDER BY 1",
    "triggers": "SELECT tgname, pg_get_triggerdef(oid), obj_description(oid, 'pg_trigger')"
    " FROM pg_trigger WHERE NOT tgisinternal",
    "event triggers": "SELECT evtname, obj_description(oid, 'pg_event_trigger') FROM pg_event_trigger",
    "schemas": "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace"
    " WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY 1",
    "sequences": "SELECT sequencename, last_value FROM pg_sequences",
}


def pg_state(server: PostgresServer, db: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with psycopg.connect(make_conninfo("", **server.params(db)), autocommit=True) as conn:
        for key, query in PG_STATE.items():
            out[key] = conn.execute(query).fetchall()
        for schema, name, kind, _ in out["relations"]:
            if kind in ("r", "v"):
                table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
                out[f"rows {name}"] = conn.execute(
                    sql.SQL("SELECT * FROM {} ORDER BY 1").format(table)
                ).fetchall()
    return out


@pytest.mark.postgres
def test_postgres_hostile_names_round_trip(postgres_server, postgres_db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    canary = f"PWNED-{uuid.uuid4().hex[:6]}"
    pg_objects(postgres_server, postgres_db, canary)
    expected = pg_state(postgres_server, postgres_db)
    assert len(expected["relations"]) == 5 and expected["event triggers"], expected["relations"]
    conf = target_conf(postgres_server, "postgres", postgres_db, monkeypatch)
    target = pg_target.from_config("hostile", conf)
    try:
        backup(target, tmp_path / "out")
        dest = pg_nasty("r", canary)
        target.restore(DirReader(tmp_path / "out"), {"database": dest}, force=False)
        assert pg_state(postgres_server, dest) == expected
        # the cluster file refuses control characters, so an include names a printable table
        schema, table = pg_nasty("sc", canary), pg_nasty("ta", canary)
        with pytest.raises(UsageError, match="must not hold control characters"):
            pg_target.from_config("hostile", {**conf, "include": [f"{schema}.{table}"]})
        # one printable-but-hostile table: every other relation (newlines and all) is left
        # out by pg_dump -T patterns built from their names
        printable = f"pt `\"'*/--;\\! touch {canary} é日本"
        postgres_server.execute(
            sql.SQL("CREATE SCHEMA {s}; CREATE TABLE {s}.{t} (k int PRIMARY KEY)")
            .format(s=sql.Identifier(printable[:40]), t=sql.Identifier(printable))
            .as_string(),
            postgres_db,
        )
        one = pg_target.from_config("hostile", {**conf, "include": [f"{printable[:40]}.{printable}"]})
        backup(one, tmp_path / "one")
        dest = pg_nasty("o", canary)
        one.restore(DirReader(tmp_path / "one"), {"database": dest}, force=False)
        relations = {(r[1], r[2]) for r in pg_state(postgres_server, dest)["relations"]}
        assert relations == {(printable, "r"), (f"{printable}_pkey"[:63], "i")}
    finally:
        # event triggers are global to a database but fire on every DDL: drop them
        postgres_server.execute(
            "DROP EVENT TRIGGER IF EXISTS " + sql.Identifier(pg_nasty("ev", canary)).as_string(), postgres_db
        )
    assert canaries(tmp_path) == []
