"""What a restore drill does in a drill place, per kind: run a check's query, describe the
place to a user's command, drop the copy afterwards.

A drill place is the target as restored there (``target.placed(dest)``: postgres, mysql,
sqlite): the same object kind whose settings point at the copy, so the audit reads it like
any target (``engine.audit.audit_live``). Only these kinds can be drilled: their places can
be compared with production (``target.places()``) and dropped.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from txbackup.errors import TargetError, UsageError
from txbackup.extras import import_extra

KINDS = ("postgres", "mysql", "sqlite")
"""The kinds a drill restores (the others have no place it can tell from production)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split()) if text else type(exc).__name__


def _database(place: Any, database: str | None, source: Any, culprit: str) -> str | None:
    """The drill place's database holding the set's ``database`` (renamed as restored);
    default: the target's only database."""
    if database is None:
        if len(source.databases) == 1:
            return str(place.databases[0])
        if place.kind == "mysql":
            return None  # the query names its databases itself
        raise UsageError(f"{culprit}: target {source.name} has several databases: say which (database = ...)")
    names = dict(zip(source.databases, place.databases, strict=True))
    if place.kind == "mysql":
        names |= {source.coordinator_database: place.coordinator_database,
                  source.system_database: place.system_database}  # fmt: skip
    if database not in names:
        raise UsageError(f"{culprit}: target {source.name} has no database {database!r}")
    return str(names[database])


def query(place: Any, source: Any, database: str | None, sql: str, timeout_s: float, culprit: str) -> Any:
    """The first column of the first row ``sql`` answers in the drill place (None: no row or
    NULL). ``source`` is the target as configured (its database names); ``culprit`` names the
    check in errors."""
    if place.kind == "sqlite":
        return _sqlite_query(place, database, sql, timeout_s, culprit)
    db = _database(place, database, source, culprit)
    if place.kind == "postgres":
        psycopg = import_extra("psycopg", "postgres", culprit)
        params = dict(place.server.params)
        if place.server.password is not None:
            params["password"] = place.server.password
        try:
            with psycopg.connect(**params, dbname=db, autocommit=True, connect_timeout=10) as conn:
                # a hung query must not hold a scheduled drill forever
                conn.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
                row = conn.execute(sql).fetchone()
        except psycopg.Error as exc:
            raise TargetError(f"{culprit}: {_first_line(exc)}") from None
        return None if row is None else row[0]
    pymysql = import_extra("pymysql", "mysql", culprit)
    try:
        conn = place.server.connect(database=db, read_timeout=max(1, int(timeout_s)))
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                row = cur.fetchone()
        finally:
            conn.close()
    except pymysql.Error as exc:
        raise TargetError(f"{culprit}: {_first_line(exc)}") from None
    return None if row is None else row[0]


def _sqlite_query(place: Any, database: str | None, sql: str, timeout_s: float, culprit: str) -> Any:
    paths = {Path(p).name: p for p in place.paths}
    if database is None:
        if len(place.paths) != 1:
            raise UsageError(f"{culprit}: target {place.name} has several files: say which (database = FILE)")
        path = place.paths[0]
    elif database in paths:
        path = paths[database]
    else:
        raise UsageError(f"{culprit}: target {place.name} has no file named {database!r}")
    try:
        conn = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True, timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        # SQLite has no statement timeout: the progress handler interrupts a query past it
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            row = conn.execute(sql).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise TargetError(f"{culprit}: {_first_line(exc)}") from None
    return None if row is None else row[0]


def environment(place: Any, prefix: str) -> dict[str, str]:
    """The drill place as environment variables for a user's command: ``PREFIX_KIND``, then
    ``PREFIX_DSN`` (no password; it is in ``PREFIX_PASSWORD``) and ``PREFIX_DATABASES``
    (space-separated) for servers, ``PREFIX_PATHS`` (os.pathsep-separated) for SQLite.
    Environment, not argv: other users of the machine can read a command line."""
    env = {f"{prefix}_KIND": str(place.kind)}
    if place.kind == "sqlite":
        env[f"{prefix}_PATHS"] = os.pathsep.join(place.paths)
        return env
    server = place.server
    databases = list(place.databases)
    if place.kind == "postgres":
        from psycopg.conninfo import make_conninfo

        env[f"{prefix}_DSN"] = make_conninfo("", **{**server.params, "dbname": databases[0]})
    else:
        databases = [db for db in dict.fromkeys(
            [*databases, place.coordinator_database, place.system_database]) if db]  # fmt: skip
        host = f"[{server.host}]" if ":" in server.host else server.host
        user = quote(server.user, safe="")
        env[f"{prefix}_DSN"] = f"mysql://{user}@{host}:{server.port}/{quote(databases[0])}"
    env[f"{prefix}_DATABASES"] = " ".join(databases)
    if server.password is not None:
        env[f"{prefix}_PASSWORD"] = server.password
    return env


def drop(place: Any) -> list[str]:
    """Drop the drill copy (databases, or files with their -wal/-shm); returns what it
    removed. Raises TargetError naming what could not be dropped."""
    if place.kind == "sqlite":
        removed = []
        for path in place.paths:
            for name in (path, path + "-wal", path + "-shm", path + "-journal"):
                try:
                    os.remove(name)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # nothing there to remove
                except OSError as exc:
                    raise TargetError(f"removing {name}: {exc.strerror}") from None
                if name == path:
                    removed.append(path)
        return removed
    if place.kind == "postgres":
        return _pg_drop(place, place.databases)
    databases = [db for db in dict.fromkeys(
        [*place.databases, place.coordinator_database, place.system_database]) if db]  # fmt: skip
    return _my_drop(place, databases)


def _pg_drop(place: Any, databases: Sequence[str]) -> list[str]:
    psycopg = import_extra("psycopg", "postgres", f"dropping the drill databases of {place.name}")
    from psycopg import sql

    params = dict(place.server.params)
    if place.server.password is not None:
        params["password"] = place.server.password
    dropped = []
    try:
        with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True, connect_timeout=10) as conn:
            # a session left open on the copy (the user's command, someone looking) must not
            # keep it: the drill's databases are its own (PostgreSQL 13+ can force)
            force = sql.SQL(" WITH (FORCE)" if conn.info.server_version >= 130000 else "")
            for db in databases:
                found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(db), force))
                if found:
                    dropped.append(db)
    except psycopg.Error as exc:
        raise TargetError(f"dropping database(s) {', '.join(databases)}: {_first_line(exc)}") from None
    return dropped


def _my_drop(place: Any, databases: Sequence[str]) -> list[str]:
    pymysql = import_extra("pymysql", "mysql", f"dropping the drill databases of {place.name}")
    dropped = []
    try:
        conn = place.server.connect()
        try:
            with conn.cursor() as cur:
                for db in databases:
                    cur.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (db,))
                    found = cur.fetchone()
                    cur.execute("DROP DATABASE IF EXISTS `{}`".format(db.replace("`", "``")))
                    if found:
                        dropped.append(db)
        finally:
            conn.close()
    except pymysql.Error as exc:
        raise TargetError(f"dropping database(s) {', '.join(databases)}: {_first_line(exc)}") from None
    return dropped
