"""How ``txbackup audit`` reads a kind's tables: SQLite files directly, PostgreSQL and
MySQL/MariaDB databases restored into scratch databases (``engine.audit_set``).

Every reader lists the tables with their columns and primary key, and streams rows
(a million-row table is never held in memory): SQLite iterates its cursor, PostgreSQL
uses a server-side cursor, MySQL an unbuffered one. Names come from the database
itself and are always quoted as identifiers.

Namespaces as ScalarDB maps them (``storage/jdbc/RdbEngine*.java``): on SQLite a
table of namespace ``ns`` is named ``ns$table`` (table names cannot contain ``$``);
on PostgreSQL a namespace is a schema; on MySQL a database.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from txbackup.errors import TargetError, UsageError
from txbackup.extras import import_extra
from txbackup.scratch import private_dir
from txbackup.targets.base import ArtifactReader
from txbackup.targets.layouts import mysql_artifact

SQLITE_NAMESPACE_SEPARATOR = "$"  # RdbEngineSqlite.NAMESPACE_SEPARATOR
FETCH_ROWS = 10_000


@dataclass
class SqlTable:
    """One table of a database connection (an ``engine.audit.TableSource``)."""

    target: str
    namespace: str
    table: str
    columns: list[str]
    key_columns: list[str]
    _select: Any = field(repr=False, default=None)  # (columns) -> iterator of tuples

    def rows(self, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        rows: Iterator[tuple[Any, ...]] = self._select(list(columns))
        return rows


def _sqlite_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def sqlite_tables(target: str, path: str) -> Iterator[list[SqlTable]]:
    """The tables of a SQLite file (an extracted artifact: untrusted, opened read-only
    with its schema's functions never run)."""
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise TargetError(f"target {target}: {Path(path).name}: cannot open: {exc}") from None
    try:
        try:
            conn.execute("PRAGMA trusted_schema = OFF")
            conn.execute("PRAGMA query_only = ON")
            names = [
                str(r[0])
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            ]
            tables = []
            for name in names:
                info = conn.execute(f"PRAGMA table_info({_sqlite_quote(name)})").fetchall()
                columns = [str(r[1]) for r in info]
                keys = [str(r[1]) for r in sorted((r for r in info if r[5]), key=lambda r: int(r[5]))]
                namespace, sep, table = name.rpartition(SQLITE_NAMESPACE_SEPARATOR)
                tables.append(
                    SqlTable(target, namespace if sep else "", table, columns, keys,
                             _sqlite_select(conn, name, target))
                )  # fmt: skip
        except sqlite3.Error as exc:
            raise TargetError(f"target {target}: {Path(path).name}: {exc}") from None
        yield tables
    finally:
        conn.close()


def _sqlite_select(conn: sqlite3.Connection, name: str, target: str) -> Any:
    def select(columns: list[str]) -> Iterator[tuple[Any, ...]]:
        sql = f"SELECT {', '.join(map(_sqlite_quote, columns))} FROM {_sqlite_quote(name)}"
        try:
            yield from conn.execute(sql)
        except sqlite3.Error as exc:
            raise TargetError(f"target {target}: table {name}: {exc}") from None

    return select


# -- PostgreSQL --------------------------------------------------------------------------------------

_PG_COLUMNS = """
SELECT table_schema, table_name, column_name FROM information_schema.columns
WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_schema NOT LIKE 'pg_toast%'
ORDER BY table_schema, table_name, ordinal_position"""
_PG_KEYS = """
SELECT k.table_schema, k.table_name, k.column_name FROM information_schema.table_constraints c
JOIN information_schema.key_column_usage k
  ON k.constraint_schema = c.constraint_schema AND k.constraint_name = c.constraint_name
 AND k.table_name = c.table_name
WHERE c.constraint_type = 'PRIMARY KEY' ORDER BY k.table_schema, k.table_name, k.ordinal_position"""


@contextlib.contextmanager
def postgres_tables(target: str, params: Mapping[str, str], database: str) -> Iterator[list[SqlTable]]:
    """The tables of one PostgreSQL database (``params``: libpq keywords, password included)."""
    psycopg = import_extra("psycopg", "postgres", f"auditing target {target} (postgres)")
    from psycopg import sql

    where = f"target {target}: database {database}"
    try:
        conn = psycopg.connect(**{**params, "dbname": database}, autocommit=False, connect_timeout=10)
    except psycopg.Error as exc:
        raise TargetError(f"{where}: cannot connect: {_first_line(exc)}") from None
    try:
        try:
            conn.read_only = True
            columns: dict[tuple[str, str], list[str]] = {}
            for schema, table, column in conn.execute(_PG_COLUMNS):
                columns.setdefault((schema, table), []).append(column)
            keys: dict[tuple[str, str], list[str]] = {}
            for schema, table, column in conn.execute(_PG_KEYS):
                keys.setdefault((schema, table), []).append(column)
        except psycopg.Error as exc:
            raise TargetError(f"{where}: {_first_line(exc)}") from None
        counter = iter(range(1 << 30))

        def selector(schema: str, table: str) -> Any:
            def select(cols: list[str]) -> Iterator[tuple[Any, ...]]:
                query = sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(schema, table)
                )
                try:
                    with conn.cursor(name=f"txbackup_audit_{next(counter)}") as cur:
                        cur.itersize = FETCH_ROWS
                        cur.execute(query)
                        yield from cur
                except psycopg.Error as exc:
                    raise TargetError(f"{where}: table {schema}.{table}: {_first_line(exc)}") from None

            return select

        yield [
            SqlTable(target, s, t, cols, keys.get((s, t), []), selector(s, t))
            for (s, t), cols in columns.items()
        ]
    finally:
        conn.close()


# -- MySQL / MariaDB ---------------------------------------------------------------------------------

_MY_COLUMNS = """
SELECT table_schema, table_name, column_name FROM information_schema.columns
WHERE table_schema = %s ORDER BY table_name, ordinal_position"""
_MY_KEYS = """
SELECT table_schema, table_name, column_name FROM information_schema.key_column_usage
WHERE table_schema = %s AND constraint_name = 'PRIMARY' ORDER BY table_name, ordinal_position"""


def _my_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@contextlib.contextmanager
def mysql_tables(
    target: str,
    params: Mapping[str, Any],
    databases: Sequence[str],
    namespaces: Mapping[str, str] | None = None,
) -> Iterator[list[SqlTable]]:
    """The tables of MySQL/MariaDB ``databases`` (``params``: host, port, user, password);
    ``namespaces``: database -> the ScalarDB namespace it holds (a copy restored under
    another name), default its own name."""
    namespaces = namespaces or {}
    pymysql = import_extra("pymysql", "mysql", f"auditing target {target} (mysql)")
    cursors = import_extra("pymysql.cursors", "mysql", f"auditing target {target} (mysql)")

    where = f"target {target}: {params.get('host')}:{params.get('port')}"
    try:
        conn = pymysql.connect(**params, connect_timeout=10, charset="utf8mb4")
    except pymysql.Error as exc:
        raise TargetError(f"{where}: cannot connect: {_first_line(exc)}") from None
    try:
        columns: dict[tuple[str, str], list[str]] = {}
        keys: dict[tuple[str, str], list[str]] = {}
        try:
            with conn.cursor() as cur:
                for db in databases:
                    cur.execute(_MY_COLUMNS, (db,))
                    for schema, table, column in cur.fetchall():
                        columns.setdefault((schema, table), []).append(column)
                    cur.execute(_MY_KEYS, (db,))
                    for schema, table, column in cur.fetchall():
                        keys.setdefault((schema, table), []).append(column)
        except pymysql.Error as exc:
            raise TargetError(f"{where}: {_first_line(exc)}") from None

        def selector(schema: str, table: str) -> Any:
            def select(cols: list[str]) -> Iterator[tuple[Any, ...]]:
                query = (
                    f"SELECT {', '.join(map(_my_quote, cols))} FROM {_my_quote(schema)}.{_my_quote(table)}"
                )
                try:
                    with conn.cursor(cursors.SSCursor) as cur:
                        cur.execute(query)
                        yield from cur
                except pymysql.Error as exc:
                    raise TargetError(f"{where}: table {schema}.{table}: {_first_line(exc)}") from None

            return select

        yield [
            SqlTable(target, namespaces.get(s, s), t, cols, keys.get((s, t), []), selector(s, t))
            for (s, t), cols in columns.items()
        ]
    finally:
        conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- per kind: where its tables come from ------------------------------------------------------------


def _sqlite_open(target: str, src: ArtifactReader, scratch: Mapping[str, str] | None) -> Any:
    @contextlib.contextmanager
    def opened() -> Iterator[list[SqlTable]]:
        with private_dir("audit-") as folder, contextlib.ExitStack() as stack:
            tables: list[SqlTable] = []
            for i, name in enumerate(sorted(src.names())):
                path = os.path.join(folder, f"{i}.sqlite")  # never a name the set chose
                src.extract(name, path)
                tables.extend(stack.enter_context(sqlite_tables(target, path)))
            yield tables

    return opened()


def _pg_databases(names: Sequence[str]) -> list[str]:
    found: list[str] = []
    for name in names:
        db, sep, _ = name.partition(".dir/")
        if not sep:
            db = name.removesuffix(".dump")
        if db not in found:
            found.append(db)
    return found


def _pg_server(
    target: str, names: Sequence[str], scratch: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(libpq params without dbname, source db -> scratch db), by the rule the postgres
    target restores with: a single database is renamed to the DSN's dbname."""
    psycopg = import_extra("psycopg", "postgres", f"auditing target {target} (postgres)")
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(scratch.get("dsn", "")).items()}
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"--scratch {target}=...: bad DSN: {_first_line(exc)}") from None
    for key in ("host", "port", "user", "password"):
        if scratch.get(key):
            params[key] = scratch[key]
    dbname = params.pop("dbname", None)
    databases = _pg_databases(names)
    if len(databases) == 1 and dbname:
        return params, {databases[0]: dbname}
    return params, {db: db for db in databases}


def _pg_open(target: str, src: ArtifactReader, scratch: Mapping[str, str] | None) -> Any:
    params, rename = _pg_server(target, src.names(), scratch or {})

    @contextlib.contextmanager
    def opened() -> Iterator[list[SqlTable]]:
        with contextlib.ExitStack() as stack:
            tables: list[SqlTable] = []
            for db in rename.values():
                tables.extend(stack.enter_context(postgres_tables(target, params, db)))
            yield tables

    return opened()


def _pg_drop(target: str, names: Sequence[str], scratch: Mapping[str, str]) -> None:
    psycopg = import_extra("psycopg", "postgres", f"auditing target {target} (postgres)")
    from psycopg import sql

    params, rename = _pg_server(target, names, scratch)
    try:
        with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True, connect_timeout=10) as conn:
            for db in rename.values():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
    except psycopg.Error as exc:
        raise TargetError(f"target {target}: dropping the scratch databases: {_first_line(exc)}") from None


def _my_server(target: str, scratch: Mapping[str, str]) -> dict[str, Any]:
    dsn = scratch.get("dsn", "")
    try:
        url = urlsplit(dsn)
        port = url.port or 3306
    except ValueError:
        url, port = None, 3306
    if url is None or url.scheme not in ("mysql", "mariadb") or not url.hostname or url.query or url.fragment:
        raise UsageError(f"--scratch {target}=...: expected mysql://user@host[:port] (no ?options)")
    if url.path.strip("/"):
        raise UsageError(
            f"--scratch {target}=...: name a server, not a database: every database of the set is"
            " restored there under its own name"
        )
    if not url.username:
        raise UsageError(f"--scratch {target}=...: give the user (mysql://user@host[:port])")
    params: dict[str, Any] = {"host": url.hostname, "port": port, "user": unquote(url.username)}
    if scratch.get("password"):
        params["password"] = scratch["password"]
    return params


def _my_databases(names: Sequence[str]) -> list[str]:
    """The databases of a mysql set (``<db>.sql``, or ``<db>.parts/...`` with jobs > 1)."""
    found = (mysql_artifact(name) for name in names)
    return list(dict.fromkeys(f[0] for f in found if f is not None))


def _my_open(target: str, src: ArtifactReader, scratch: Mapping[str, str] | None) -> Any:
    return mysql_tables(target, _my_server(target, scratch or {}), _my_databases(src.names()))


def _my_drop(target: str, names: Sequence[str], scratch: Mapping[str, str]) -> None:
    pymysql = import_extra("pymysql", "mysql", f"auditing target {target} (mysql)")
    try:
        conn = pymysql.connect(**_my_server(target, scratch), connect_timeout=10)
        try:
            with conn.cursor() as cur:
                for db in _my_databases(names):
                    cur.execute(f"DROP DATABASE IF EXISTS {_my_quote(db)}")
        finally:
            conn.close()
    except pymysql.Error as exc:
        raise TargetError(f"target {target}: dropping the scratch databases: {_first_line(exc)}") from None


@dataclass(frozen=True)
class AuditKind:
    """How the audit reads a kind: ``open(target, reader, scratch)`` gives a context
    manager of its tables; ``scratch`` kinds are restored first (``target.restore``)
    and their scratch databases dropped afterwards with ``drop(target, names, scratch)``."""

    scratch: bool
    open: Callable[[str, ArtifactReader, Mapping[str, str] | None], Any]
    drop: Callable[[str, Sequence[str], Mapping[str, str]], None]


def _nothing(target: str, names: Sequence[str], scratch: Mapping[str, str]) -> None:
    pass


KINDS: dict[str, AuditKind] = {
    "sqlite": AuditKind(False, _sqlite_open, _nothing),
    "postgres": AuditKind(True, _pg_open, _pg_drop),
    "mysql": AuditKind(True, _my_open, _my_drop),
}
"""The kinds the audit reads; any other kind is reported "not audited"."""


# -- a target's own databases, read in place (``txbackup audit --live``) ---------------------------


def _sqlite_live(target: Any) -> Any:
    @contextlib.contextmanager
    def opened() -> Iterator[list[SqlTable]]:
        with contextlib.ExitStack() as stack:
            tables: list[SqlTable] = []
            for path in target.paths:
                tables.extend(stack.enter_context(sqlite_tables(target.name, path)))
            yield tables

    return opened()


def _pg_live(target: Any) -> Any:
    params = dict(target.server.params)
    if target.server.password is not None:
        params["password"] = target.server.password

    @contextlib.contextmanager
    def opened() -> Iterator[list[SqlTable]]:
        with contextlib.ExitStack() as stack:
            tables: list[SqlTable] = []
            for db in target.databases:
                tables.extend(stack.enter_context(postgres_tables(target.name, params, db)))
            yield tables

    return opened()


def _my_live(target: Any) -> Any:
    server = target.server
    params = {"host": server.host, "port": server.port, "user": server.user}
    params["password"] = server.password or ""
    databases = [*target.databases]
    if target.coordinator_database and target.coordinator_database not in databases:
        databases.append(target.coordinator_database)  # absent: it simply has no tables
    return mysql_tables(target.name, params, databases, getattr(target, "restored_from", None))


LIVE: dict[str, Callable[[Any], Any]] = {"sqlite": _sqlite_live, "postgres": _pg_live, "mysql": _my_live}
"""The kinds whose own databases the audit reads in place: ``LIVE[kind](target)`` gives a
context manager of the target's tables, reached with its cluster-file settings."""
