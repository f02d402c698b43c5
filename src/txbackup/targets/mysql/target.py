"""MySQL and MariaDB databases (kind ``mysql``).

Settings::

    [[targets]]
    name = "orders"
    kind = "mysql"
    host = "10.0.0.6"                     # default 127.0.0.1
    port = 3306                           # default 3306
    user = "backup"                       # default root
    password_env = "ORDERS_DB_PASSWORD"   # or password_file = "/run/secrets/mysql"
    databases = ["orders", "stock"]       # required
    coordinator_database = "coordinator"  # ScalarDB's; included when it exists ("" for none)
    system_database = "scalardb"          # ScalarDB's metadata; included when it exists ("" for none)
    batch_bytes = 1048576                 # size of one multi-row INSERT in the dump
    bin_dir = "/usr/bin"                  # optional: where the mariadb/mysql client lives
    mode = "dump"                         # or "restore-point": no dump (targets.mysql.restore_point)
    jobs = 1                              # 1-32; > 1: that many sessions on one snapshot,
                                          # exported and restored in parallel (mysql_parts)

The backup user needs SELECT, SHOW VIEW and TRIGGER on the databases
(database-level grants: a table the user cannot see is not dumped), and SELECT
on ``mysql.proc`` (MariaDB) to dump routines.

Capture (inside the pause): one session runs ``START TRANSACTION WITH
CONSISTENT SNAPSHOT, READ ONLY`` at REPEATABLE READ, records MariaDB's
``binlog_snapshot_file``/``binlog_snapshot_position`` (the binary log position
of exactly that snapshot) and ``@@gtid_binlog_pos`` when binary logging is on,
and lists the tables, all in one round trip (one multi-statement query). One
InnoDB snapshot covers every database of the target.

With ``jobs = N > 1``, N - 1 more sessions start the snapshot at the same
time (one thread each: the pause waits for one round trip), each reading
InnoDB's transaction counter right before and right after its snapshot and
reporting its binlog snapshot position and GTID position. The applications are paused, so every session
should see the same data; the capture *proves* it or fails (one line, the
engine unpauses, nothing is exported): see ``MysqlCapture._prove``. Limits of
that proof: the counter moves when a read-write transaction takes its id or
its commit number, a few microseconds before the commit becomes visible to
new snapshots, so a commit already in flight when the counter is first read
can escape it (with binary logging, MariaDB's exact per-snapshot binlog
position still catches it; MySQL's GTID set is read after the snapshot, not
with it); and any read-write transaction on the server during those
milliseconds counts as a difference, even one in another database or InnoDB's
own statistics update: it errs on the side of failing. A difference is tried
once more on the same sessions, still inside the pause (the position then
records ``snapshot_attempts: 2``); a second one fails the capture.
The export and restore of N sessions are in ``mysql_parts``.

The session is opened *before* the pause: ``preflight()`` keeps the
connection it checked the databases with (authenticated, session settings
made, no transaction open) on the target, and the next ``capture()`` takes it
over, so the pause pays for the snapshot statements only, not for connecting
and authenticating. A capture without a prepared session (no preflight)
connects by itself, and one whose prepared session fails (it may have died
meanwhile) retries once on a new session. A prepared session never
leaks: a failed preflight closes it, a new ``preflight()`` replaces (and
closes) one an earlier run left unused (its backup never reached the capture),
``close()`` closes it at once, and if no capture comes within
``PREPARED_TTL_S`` a timer closes it. With ``jobs = N`` the preflight
prepares N sessions the same way (and checks that the counter is readable).

Export (after the unpause; ``jobs = 1``) reads **through that same session**, because an
InnoDB snapshot lives only in the session that started it
(``mysqldump --single-transaction`` would take a new snapshot when it starts,
after the pause: not the captured point). For each database it writes
``<db>.sql``, a plain SQL script:

- a header: ``SET NAMES utf8mb4``, ``TIME_ZONE='+00:00'`` (TIMESTAMPs are read
  in UTC), no foreign-key or unique checks, ``SQL_MODE='NO_AUTO_VALUE_ON_ZERO'``,
  and the database's default character set;
- per table ``DROP TABLE IF EXISTS`` + ``SHOW CREATE TABLE``, then its rows as
  multi-row ``INSERT``s of about ``batch_bytes`` each, naming their columns
  (generated columns are left out: the server recomputes them). The server
  itself renders each row as SQL literals, one flat ``CONCAT`` per row
  (``row_expression``: ``QUOTE()`` for text, converted to utf8mb4 unless it is
  already; ``X'..'`` for binary and spatial columns; numbers and dates as they
  are; ``IFNULL`` only on nullable columns), so values round-trip exactly and
  Python never parses a value: it only escapes the raw newlines of a whole
  chunk (they can only be inside text literals) so that a value never spans
  lines. A table with a single-column primary key of a plain type is read in
  key ranges, in the snapshot, and the server joins each range into one
  ``INSERT`` body (GROUP_CONCAT), so Python handles one string per statement
  (``_by_key``): an integer key's ranges are computed from its MIN and MAX and
  the bytes per key value of the range before (one query per chunk); other
  keys are walked (the range's last key first, ``WHERE k > last ORDER BY k
  LIMIT 1 OFFSET n-1``, then the rows of ``last < k <= that``). Other tables
  are streamed row by row (unbuffered cursor);
- sequences (MariaDB) with their next value, views (definers dropped, in
  dependency order), then triggers and routines (definers dropped) after the
  data, so restoring rows fires no trigger.

The session is read by a thread of its own (the only one using it meanwhile),
a few statements ahead of the export thread: the server renders the next
chunk while the engine compresses and stores the previous one.

Not dumped: events, users and grants, the history of system-versioned tables
(current rows only), tables of other engines than InnoDB (refused at
preflight: they have no snapshot). ``AUTO_INCREMENT`` counters and sequence
values are read at export (never behind the snapshot). DDL between capture and
export is not isolated: a table rebuilt meanwhile (``ALTER ... FORCE``, most
column changes, ``TRUNCATE``) makes the export fail ("Table definition has
changed"); an instant ``ADD COLUMN`` shows in the dump's DDL with the
snapshot's rows. MySQL (not MariaDB) has no ``binlog_snapshot_*``: its position
records ``@@global.gtid_executed`` read inside the pause instead.

Names are data: in the dump every name is a backquoted identifier (backquotes
doubled), every value an SQL literal on one line, and the ``--`` comments
naming each object escape whatever a name holds (``comment()``), so no name
can end its context and reach the client as a command (``\\! cmd``) or the
server as SQL.

Restore: each ``<db>.sql`` is fed to the ``mariadb`` (or ``mysql``) client
(``--no-defaults``, password through ``MYSQL_PWD``, ``--comments`` so that routine
bodies keep theirs), into the destination database, created when missing. A
dump is untrusted input there: the client runs in ``--sandbox`` mode when it
has one (MariaDB 10.5.25, 10.6.18, 10.11.8 and later), and every line reaches it
only once :class:`~txbackup.targets.mysql_script.ScriptGuard` has read it the
way the client will and found no client command in it (``\\!``, ``system``,
``source``, ``\\r``, ``\\e``...: the sandbox stops only those that touch files).
Without ``--sandbox`` (MySQL's client, older MariaDB ones) every dump is read
by the guard first, and a refused one restores nothing. ``dest`` may give ``dsn``
(``mysql://user[:password]@host[:port][/database]``) and/or ``host``, ``port``,
``user``, ``password``, ``database``; the database name renames the target's
single configured database (the coordinator database keeps its name); with
several databases each goes into the same-named database, unless ``rename.OLD``
keys (``--rename-db OLD=NEW``) rename any of them, the coordinator's included
(checked by ``sqlcommon.destination_names``: plain new names, no system
database, no two into one). A dump names no database (it holds no ``USE``, no
``CREATE DATABASE``, and the guard refuses ``use``): the client is started
with ``--database=NEW``, so a rename never touches the dump's text. Views and
triggers are dumped with their own database as the current one, so their
definitions name no database; one naming another database explicitly keeps
that name. A destination
database holding any table or view is refused unless ``force``; with force the
dump's own ``DROP TABLE IF EXISTS`` replaces the included tables (others stay).

By hand::

    mariadb -h HOST -P PORT -u USER -p -e 'CREATE DATABASE IF NOT EXISTS `DB`'
    mariadb -h HOST -P PORT -u USER -p --default-character-set=utf8mb4 DB < DB.sql

A set exported with ``jobs > 1`` holds ``DB.parts/`` instead of ``DB.sql``:
``0-schema.sql``, then the ``1-data-*.sql`` parts (in any order, in
parallel), then ``2-triggers-routines.sql``, each loaded the same way
(``mysql_parts``).
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import pymysql
import pymysql.cursors
from pymysql.constants import CLIENT

from txbackup.errors import TargetError, UsageError
from txbackup.procs import find_tool, run, run_from_stream
from txbackup.safepaths import shown
from txbackup.settings import (
    check_keys,
    setting_int,
    setting_opt_str,
    setting_optional_name,
    setting_str_list,
)
from txbackup.targets.base import ArtifactReader, ArtifactWriter, Recorded, Scope, iter_chunks
from txbackup.targets.layouts import mysql_artifact
from txbackup.targets.mysql.script import ScriptGuard, version_id
from txbackup.targets.sql.common import (
    Prepared,
    ServerPassword,
    check_destination_keys,
    destination_names,
    host_key,
    server_settings,
)
from txbackup.targets.sql.restore_points import RESTORE_POINT, read_mode

KIND = "mysql"
_KEYS = {
    "host",
    "port",
    "user",
    "password_env",
    "password_file",
    "databases",
    "coordinator_database",
    "system_database",
    "batch_bytes",
    "bin_dir",
    "mode",  # restore points: targets.sql.restore_points
    "jobs",
}
_CONNECT_TIMEOUT = 10
MAX_JOBS = 32
_LONG = 86400  # seconds: a slow storage must not make the server drop our session
_FETCH_ROWS = 2000
PREPARED_TTL_S = 600.0
"""How long a session prepared by ``preflight()`` waits for its ``capture()``."""

_NUMERIC = {
    "tinyint", "smallint", "mediumint", "int", "integer", "bigint",
    "decimal", "numeric", "float", "double", "real", "year",
}  # fmt: skip
_BINARY = {
    "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob",
    "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
    "multipolygon", "geometrycollection", "vector",
}  # fmt: skip
_TEMPORAL = {"date", "datetime", "timestamp", "time"}
INTEGERS = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})
"""Integer primary-key types: their chunks are key ranges computed by ``_by_key``."""
# primary-key types walked in chunks (exact, totally ordered, round-trip through the driver)
_KEYSET = {
    "tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric",
    "char", "varchar", "binary", "varbinary", "date", "datetime",
}  # fmt: skip
_MAX_CHUNK_ROWS = 100_000
CONCAT_MIN = 16 << 20
"""The least room the server is given to join one chunk (``group_concat_max_len``)."""
UNIQUE_CHECKS_BESIDE = "-- unique checks stay on: other parts may load into the same table at once"
"""In a data part's header, instead of ``SET UNIQUE_CHECKS=0;``. On MariaDB >= 10.6 (MDEV-515)
an INSERT into an empty InnoDB table with foreign-key and unique checks off takes an exclusive
table lock; two sessions starting on the same empty table both hold its intention lock and
both ask for that one: InnoDB kills one as a deadlock (1213), about once in 70 such starts on
the test server. With unique checks on, an INSERT takes no table lock."""
_FOOTER = b"SET FOREIGN_KEY_CHECKS=1;\nSET UNIQUE_CHECKS=1;\n-- txbackup dump complete\n"
# the server's own databases: never a rename's destination
_SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
_GENERATED = re.compile(r"(?i)\b(VIRTUAL|STORED|PERSISTENT)\b|ROW (START|END)")
_WORD = re.compile(r"[A-Za-z0-9_]+")
_SQL_MODE = re.compile(r"[A-Z0-9_,]*")
_DEFINER = re.compile(r"\s*DEFINER\s*=\s*(`(?:[^`]|``)*`|'[^']*'|\S+?)@(`(?:[^`]|``)*`|'[^']*'|\S+)")


def ident(name: str) -> str:
    """A backquoted MySQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def comment(text: str) -> str:
    """``text`` for a ``--`` comment of the dump: one line, whatever a name holds.

    Control characters (newline, CR, ...), other non-printable ones (U+2028...) and
    backslashes are written as escapes (``\\n``, ``\\u2028``, ``\\\\``), and ``*/`` as
    ``*\\/``: no byte of a name can end the comment, so none reaches the client as a
    command (``\\! cmd`` on a line of its own) or the server as SQL.
    """
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out).replace("*/", "*\\/")


def _message(exc: BaseException) -> str:
    """One line out of a pymysql error: ``(1045, "Access denied ...")`` -> the text."""
    args: tuple[Any, ...] = tuple(exc.args)
    text = str(args[1]) if len(args) >= 2 else str(exc) or type(exc).__name__
    text = " ".join(text.split())
    # "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)"
    found = re.search(r"\(\[Errno -?\d+\] ([^)]*)\)", text)
    if found and text.startswith("Can't connect"):
        return f"cannot connect: {found.group(1)}"
    return text


def _strip_definer(ddl: str) -> str:
    return _DEFINER.sub("", ddl, count=1)


def _lines(rows: bytes) -> bytes:
    """Rows rendered by ``column_expression`` and joined by NULs -> joined by ``,``, one a line.

    Numbers, dates and hex literals hold no NUL, LF or CR, and QUOTE writes NUL
    as ``\\0``: so every raw NUL is a row separator, and every raw LF or CR is
    inside a quoted text literal, where it becomes ``\\n`` or ``\\r`` (the
    same value), so that a value never spans lines of the script. Three passes
    over the bytes here cost less than two REPLACE() per value on the server.
    """
    return rows.replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\0", b",\n")


class Column(NamedTuple):
    """One insertable column of a table, as ``information_schema.COLUMNS`` describes it."""

    name: str
    data_type: str
    nullable: bool = True
    charset: str | None = None  # CHARACTER_SET_NAME (text columns)


def column_pieces(column: Column) -> list[str]:
    """SQL arguments of the row's ``CONCAT`` (``row_expression``) rendering one column
    as an SQL literal.

    A NOT NULL column needs no ``IFNULL``, and its quotes are arguments of the
    row's one ``CONCAT``. Text is quoted in utf8mb4 (a column in another
    character set is converted first; one in utf8mb4 needs no conversion), in
    one collation for all (``utf8mb4_bin``, explicit): columns of different
    collations never make the server refuse the row's ``CONCAT``.
    """
    col = ident(column.name)
    kind = column.data_type.lower()
    if kind in _NUMERIC or kind == "bit":
        value = f"CAST({col} AS UNSIGNED)" if kind == "bit" else col
        return [f"IFNULL({value},'NULL')" if column.nullable else value]
    if kind in _BINARY:
        if column.nullable:
            return [f"IFNULL(CONCAT('X''',HEX({col}),''''),'NULL')"]
        return ["'X'''", f"HEX({col})", "''''"]
    if kind in _TEMPORAL:  # digits and punctuation only: no escaping needed
        if column.nullable:
            return [f"IFNULL(CONCAT('''',{col},''''),'NULL')"]
        return ["''''", col, "''''"]
    # QUOTE escapes NUL, ' and \ (and gives NULL for NULL); the newlines it leaves are
    # escaped afterwards (see _lines)
    text = col if (column.charset or "").lower() == "utf8mb4" else f"CONVERT({col} USING utf8mb4)"
    return [f"QUOTE({text}) COLLATE utf8mb4_bin"]


def row_expression(columns: list[Column]) -> str:
    """SQL rendering a whole row as ``(v1,v2,...)`` (never NULL itself): one flat
    ``CONCAT`` of ``column_pieces``. Measured on 2 cores: about a tenth less server
    time than a ``CONCAT_WS`` of per-column ``IFNULL``/``CONVERT`` expressions."""
    pieces = ["'('"]
    for i, column in enumerate(columns):
        if i:
            pieces.append("','")
        pieces.extend(column_pieces(column))
    pieces.append("')'")
    return f"CONCAT({','.join(pieces)})"


@dataclass
class Server(ServerPassword):
    """How to reach a MySQL/MariaDB server; the password is read when first needed."""

    host: str
    port: int
    user: str

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, **extra: Any) -> Any:
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password or "",
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=_CONNECT_TIMEOUT,
            **extra,
        )


@dataclass
class Table:
    database: str
    name: str
    kind: str  # BASE TABLE, SYSTEM VERSIONED, SEQUENCE, VIEW
    engine: str | None


class _Differ(TargetError):
    """The snapshot sessions do not hold the same data (``MysqlCapture._prove``)."""

    def __init__(self, message: str, label: str) -> None:
        super().__init__(f"{label}: {message}")


class MysqlCapture:
    """The one session holding the InnoDB consistent snapshot."""

    def __init__(self, target: MysqlTarget) -> None:
        self.target = target
        self.conn: Any = None
        self.mariadb = False
        self.tables: list[Table] = []
        self.schemas: dict[str, tuple[str, str]] = {}  # db -> (charset, collation)
        self._position: dict[str, Any] = {}
        self._concat_limit = CONCAT_MIN
        # jobs > 1: the other sessions holding the same snapshot, and what each one reported
        self.others: list[Any] = []
        self._reports: list[tuple[str, dict[str, str]]] = []

    # -- capture -----------------------------------------------------------------------------
    def _open(self, prepared: Any) -> None:
        """Start the snapshot on the ``prepared`` session if there is one (or a new one)."""
        t = self.target
        if prepared is None or not prepared.open:
            self.conn = t.session()
            results = self._snapshot()
        else:
            self.conn = prepared
            try:
                results = self._snapshot()
            except TargetError:
                # the prepared session may have died since preflight (server restarted,
                # session killed): one more try, on a new one
                self.conn = None
                _close(prepared)
                self.conn = t.session()
                results = self._snapshot()
        before_rows, status_rows, (version, log_bin, gtid_pos), after_rows, schema_rows, table_rows = results
        status = {str(k).lower(): str(v) for k, v in status_rows}
        self.schemas = {str(r[0]): (str(r[1]), str(r[2])) for r in schema_rows}
        missing = [db for db in t.databases if db not in self.schemas]
        if missing:
            raise t.error(f'database "{missing[0]}" not found (or not visible to the user)')
        self.tables = [
            Table(str(r[0]), str(r[1]), str(r[2]), r[3]) for r in table_rows if str(r[0]) in self.schemas
        ]
        self._position = {
            "flavor": "mariadb" if self.mariadb else "mysql",
            "server_version": str(version),
            "databases": [db for db in t.all_databases() if db in self.schemas],
            "log_bin": bool(log_bin),
        }
        if log_bin:
            if "binlog_snapshot_file" in status:
                self._position["binlog_file"] = status["binlog_snapshot_file"]
                self._position["binlog_position"] = int(status["binlog_snapshot_position"])
            if gtid_pos:
                key = "gtid_binlog_pos" if self.mariadb else "gtid_executed"
                self._position[key] = str(gtid_pos)
        if t.jobs > 1:
            self._reports = [
                ("session 1 before its snapshot", {"trx": self._marker(before_rows)}),
                ("session 1", self._report(status_rows, gtid_pos, after_rows)),
            ]

    def _snapshot(self) -> tuple[Any, Any, Any, Any, Any, Any]:
        """One round trip: the snapshot, then what describes it (rows of each query)."""
        t = self.target
        self.mariadb = "mariadb" in self.conn.get_server_info().lower()
        gtid = "@@global.gtid_binlog_pos" if self.mariadb else "@@global.gtid_executed"
        names = ",".join(self.conn.escape(db) for db in t.all_databases())
        # jobs > 1: InnoDB's transaction counter before and after (see _prove)
        marker = _marker_sql(self.mariadb) if t.jobs > 1 else "DO 0"
        statements = [
            marker,
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
            # -- the snapshot exists from here on; what follows only describes it
            "SHOW STATUS LIKE 'binlog_snapshot_%'",
            f"SELECT @@version, @@log_bin, {gtid}",
            marker,
            "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
            f" FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({names})",
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE FROM information_schema.TABLES"
            f" WHERE TABLE_SCHEMA IN ({names}) ORDER BY TABLE_SCHEMA, TABLE_NAME",
        ]
        try:
            results = _results(self.conn, statements)
        except pymysql.MySQLError as exc:
            raise t.error(f"snapshot failed: {_message(exc)}") from None
        before_rows, _, status_rows, versions, after_rows, schema_rows, table_rows = results
        return before_rows, status_rows, versions[0], after_rows, schema_rows, table_rows

    # -- jobs > 1: more sessions on the same snapshot, and the proof that it is the same ---------
    def _start_others(self, prepared: list[Any]) -> Callable[[], None]:
        """Start the snapshot on ``jobs - 1`` more sessions (the prepared ones, or new ones),
        each in a thread of its own, at once with the first session's (the pause waits
        for the slowest round trip, not for their sum). Returns ``finish()``, which waits
        for them and proves that every session holds the same snapshot (``_prove``)."""
        t = self.target
        count = t.jobs - 1
        held: list[Any] = [None] * count
        raw: list[tuple[Any, Any, Any, Any] | None] = [None] * count
        failed: list[BaseException] = []

        def start(i: int) -> None:
            conn = prepared[i] if i < len(prepared) and prepared[i].open else None
            try:
                try:
                    held[i] = conn if conn is not None else t.session()
                    raw[i] = self._snapshot_other(held[i])
                except TargetError:
                    if conn is None:
                        raise
                    # a prepared session that died since preflight: one more try, on a new one
                    _close(conn)
                    held[i] = t.session()
                    raw[i] = self._snapshot_other(held[i])
            except BaseException as exc:
                failed.append(exc)

        threads = [threading.Thread(target=start, args=(i,), name="mysql-snapshot") for i in range(count)]
        for thread in threads:
            thread.start()

        def finish() -> None:
            for thread in threads:
                thread.join()
            self.others = [c for c in held if c is not None]
            for conn in prepared[count:]:
                _close(conn)
            if failed:
                raise failed[0]
            for i, found in enumerate(raw, 2):
                assert found is not None
                before, status_rows, gtid, after = found
                self._reports.append((f"session {i} before its snapshot", {"trx": self._marker(before)}))
                self._reports.append((f"session {i}", self._report(status_rows, gtid, after)))
            self._prove()

        return finish

    def _snapshot_other(self, conn: Any) -> tuple[Any, Any, Any, Any]:
        """(counter before, binlog snapshot status, GTID position, counter after) of a snapshot
        started on ``conn``, in one round trip."""
        mariadb = "mariadb" in conn.get_server_info().lower()
        gtid = "@@global.gtid_binlog_pos" if mariadb else "@@global.gtid_executed"
        statements = [
            _marker_sql(mariadb),
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
            "SHOW STATUS LIKE 'binlog_snapshot_%'",
            f"SELECT {gtid}",
            _marker_sql(mariadb),
        ]
        try:
            before, _, status_rows, gtid_rows, after = _results(conn, statements)
        except pymysql.MySQLError as exc:
            raise self.target.error(f"snapshot failed: {_message(exc)}") from None
        return before, status_rows, gtid_rows[0][0], after

    def _report(self, status_rows: Any, gtid: Any, marker_rows: Any) -> dict[str, str]:
        """What one session reports right after its snapshot (see ``_prove``)."""
        report = {"trx": self._marker(marker_rows)}
        status = {str(k).lower(): str(v) for k, v in status_rows}
        if self._position.get("log_bin") and status.get("binlog_snapshot_file"):
            report["binlog"] = f"{status['binlog_snapshot_file']}:{status.get('binlog_snapshot_position')}"
        if gtid:
            report["gtid"] = str(gtid)
        return report

    def _marker(self, rows: Any) -> str:
        """InnoDB's transaction counter out of ``_marker_sql``'s rows."""
        for row in rows or ():
            if self.mariadb and len(row) == 2 and str(row[0]).lower() == "innodb_max_trx_id":
                return str(row[1])
            if not self.mariadb and len(row) == 3:
                found = re.search(r"Trx id counter (\d+)", str(row[2]))
                if found:
                    return found.group(1)
        raise self.target.error(
            "cannot read InnoDB's transaction counter, which proves the snapshot sessions equal "
            "(jobs > 1; MySQL: the backup user needs the PROCESS privilege)"
        )

    def _prove(self) -> None:
        """Fail unless every session holds the same snapshot.

        The applications are paused, so the sessions should see the same data;
        this checks it. InnoDB's transaction counter (MariaDB's
        ``Innodb_max_trx_id``, MySQL's "Trx id counter") moves whenever a
        transaction starts writing or commits: every session reads it in the
        round trip of its snapshot, right before and right after it, and one
        value for all means that no transaction changed anything visible from
        before the first snapshot to after the last. With binary logging each session also reports its binlog
        position (MariaDB's ``binlog_snapshot_file``/``_position``, exactly
        that of its snapshot) and GTID position, which must agree too.
        """
        t = self.target
        for key, what in (("trx", "InnoDB transaction counter"), ("binlog", "binlog position"),
                          ("gtid", "GTID position")):  # fmt: skip
            seen = [(who, report[key]) for who, report in self._reports if key in report]
            differ = [(who, value) for who, value in seen if value != seen[0][1]]
            if differ:
                raise _Differ(
                    f"the {t.jobs} snapshot sessions do not hold the same data ({what}: "
                    f"{seen[0][0]} {shown(seen[0][1], 60)}, {differ[0][0]} {shown(differ[0][1], 60)}): "
                    "a transaction wrote while the applications were paused (twice); nothing was "
                    "exported",
                    t.label,
                )
        first = self._reports[0][1]
        self._position["snapshot_sessions"] = t.jobs
        self._position["innodb_trx_counter"] = first["trx"]

    def position(self) -> Mapping[str, Any]:
        return dict(self._position)

    # -- export ------------------------------------------------------------------------------
    def export(self, out: ArtifactWriter) -> None:
        if self.conn is None:
            raise self.target.error("export after release")
        # room for one chunk of rows joined by the server (see _by_key), and no more
        self._concat_limit = max(4 * self.target.batch_bytes, CONCAT_MIN)
        if self.target.jobs > 1:
            from txbackup.targets.mysql.parts import export_parts  # it builds on this module

            export_parts(self, out)
            return
        with self.conn.cursor() as cur:
            cur.execute(f"SET SESSION group_concat_max_len = {self._concat_limit}")
        for db in self._position["databases"]:
            with out.open(f"{db}.sql") as stream:
                try:
                    # the session reads (and the server renders) the next chunk while this
                    # thread compresses and stores the one before
                    _write_behind(partial(self._dump_database, db), stream.write)
                except pymysql.MySQLError as exc:
                    raise self.target.error(f'database "{db}": {_message(exc)}') from None

    def _query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            rows: list[tuple[Any, ...]] = list(cur.fetchall())
            return rows

    def _dump_database(self, db: str, write: Callable[[bytes], object]) -> None:
        """``<db>.sql`` (jobs = 1): the whole database in one script."""
        self.conn.select_db(db)
        write(self._header(db, schema=True))
        tables, columns, keys = self._catalog(db)
        for table in tables:
            if table.kind in ("BASE TABLE", "SYSTEM VERSIONED"):
                write(self._table_ddl(db, table.name))
                self._dump_rows(db, table.name, columns.get(table.name, []), keys.get(table.name), write)
        self._dump_schema_rest(db, tables, write)
        self._dump_triggers_and_routines(db, write)
        write(_FOOTER)

    def _header(self, db: str, *, schema: bool, what: str = "", beside: bool = False) -> bytes:
        """The settings every script of the dump starts with (``schema``: and the database's
        default character set); ``what`` names the part in the first comment. ``beside``:
        a script loaded at the same time as others into the same table (a data part), which
        keeps unique checks on (see ``UNIQUE_CHECKS_BESIDE``)."""
        charset, collation = self.schemas[db]
        pos = self._position
        where = ""
        if "binlog_file" in pos:
            where = f"; binlog position of the snapshot {pos['binlog_file']}:{pos['binlog_position']}"
        if pos.get("gtid_binlog_pos"):
            where += f", gtid {pos['gtid_binlog_pos']}"
        for name in (charset, collation):
            if not _WORD.fullmatch(name):
                raise self.target.error(f'database "{db}": unexpected character set name {name!r}')
        header = [
            comment(
                f"-- txbackup dump of database {ident(db)}{what} ({pos['server_version']}), "
                f"one consistent snapshot{where}"
            ),
            "-- load with: mariadb --default-character-set=utf8mb4 DATABASE < this-file",
            "SET NAMES utf8mb4;",
            "SET TIME_ZONE='+00:00';",
            "SET FOREIGN_KEY_CHECKS=0;",
            UNIQUE_CHECKS_BESIDE if beside else "SET UNIQUE_CHECKS=0;",
            "SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO';",
            "SET SQL_NOTES=0;",
            *([f"ALTER DATABASE CHARACTER SET {charset} COLLATE {collation};"] if schema else []),
            "",
        ]
        return "\n".join(header).encode()

    def _catalog(self, db: str) -> tuple[list[Table], dict[str, list[Column]], dict[str, tuple[str, str]]]:
        """(the database's tables, table -> its insertable columns, table -> the
        single-column primary key its rows are walked by and its type, for the tables that
        have one), read in the snapshot."""
        tables = [t for t in self.tables if t.database == db]
        columns: dict[str, list[Column]] = {}  # insertable ones
        types: dict[tuple[str, str], str] = {}
        for table, column, data_type, extra, nullable, charset in self._query(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA, IS_NULLABLE, CHARACTER_SET_NAME"
            " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        ):
            types[(str(table), str(column))] = str(data_type).lower()
            if not _GENERATED.search(str(extra or "")):
                columns.setdefault(str(table), []).append(
                    Column(
                        str(column),
                        str(data_type),
                        nullable=str(nullable).upper() != "NO",  # anything unexpected: IFNULL
                        charset=None if charset is None else str(charset),
                    )
                )
        primary: dict[str, list[str]] = {}
        for table, column in self._query(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS"
            " WHERE TABLE_SCHEMA = %s AND INDEX_NAME = 'PRIMARY' ORDER BY TABLE_NAME, SEQ_IN_INDEX",
            (db,),
        ):
            primary.setdefault(str(table), []).append(str(column))
        keys: dict[str, tuple[str, str]] = {}
        for table in tables:
            pk = primary.get(table.name, [])
            if len(pk) == 1 and types.get((table.name, pk[0])) in _KEYSET:
                keys[table.name] = (pk[0], types[(table.name, pk[0])])
        return tables, columns, keys

    def _dump_schema_rest(self, db: str, tables: list[Table], write: Any) -> None:
        """Sequences and views (the session's current database must be ``db``)."""
        for table in tables:
            if table.kind == "SEQUENCE":
                self._dump_sequence(db, table.name, write)
        self._dump_views(db, [t.name for t in tables if t.kind == "VIEW"], write)

    def _table_ddl(self, db: str, name: str) -> bytes:
        ddl = str(self._query(f"SHOW CREATE TABLE {ident(db)}.{ident(name)}")[0][1])
        drop = f"DROP TABLE IF EXISTS {ident(name)};"
        return f"\n{comment(f'-- table {ident(name)}')}\n{drop}\n{ddl};\n".encode()

    def _dump_rows(
        self,
        db: str,
        name: str,
        columns: list[Column],
        key: tuple[str, str] | None,
        write: Any,
        low: Any = None,
        high: Any = None,
    ) -> None:
        """The table's rows as multi-row INSERTs; with ``key`` (name, type), only those of
        ``low < key <= high`` (None: no bound)."""
        if not columns:
            return
        row = row_expression(columns)
        head = f"INSERT INTO {ident(name)} ({','.join(ident(c.name) for c in columns)}) VALUES\n"
        chunks = self._by_key(db, name, row, key, low, high) if key else self._streamed(db, name, row)
        prefix = head.encode()
        for chunk in chunks:
            write(prefix + chunk + b";\n")

    def _too_large(self, db: str, name: str) -> TargetError:
        return self.target.error(
            f"table {db}.{name}: a row is larger than the server's max_allowed_packet "
            "once written as SQL"
        )

    def _by_key(
        self, db: str, name: str, row: str, key: tuple[str, str], low: Any = None, high: Any = None
    ) -> Iterator[bytes]:
        """The rows of ``low < key <= high`` as chunks of about ``batch_bytes``.

        Each chunk is a range of the single-column primary ``key`` (name, type),
        read in the snapshot: the server renders and joins its rows with
        GROUP_CONCAT, so Python sees one value per INSERT, not per row.

        An integer key's chunk ends are computed: from the key's MIN and MAX in
        the range, each chunk spans as many key values as the previous chunk's
        bytes per key value fit in ``batch_bytes`` (at most 8 times its span; an
        empty span is followed by one 8 times wider), one query per chunk. A
        chunk cut at the server's limit (rows far denser than the previous chunk
        said: a gap in the keys, then dense ones) sends the rest of the range to
        the walk below, so a wrong guess costs one wasted chunk, not a scan per
        chunk.

        Other keys are walked: the chunk's last key first (``WHERE key > last
        ORDER BY key LIMIT 1 OFFSET n-1``, which reads the rows a second time:
        about a sixth of the server's time on an integer key), then the rows of
        ``last < key <= that``. (One query with ``ORDER BY key LIMIT n`` in a
        derived table makes the server materialize the rendered rows first:
        about 1.5x slower.) The chunk size adapts to the rows' size.
        """
        table, k, escape = f"{ident(db)}.{ident(name)}", ident(key[0]), self.conn.escape
        target = self.target.batch_bytes
        # the next chunk's lower bound and the range's own end; no driver-side parameters:
        # names may contain % signs
        start = "" if low is None else f"{k} > {escape(low)}"
        end = "" if high is None else f"{k} <= {escape(high)}"
        rows = span = 64  # a first small chunk tells the rows' size
        with self.conn.cursor() as cur:
            floor: int | None = None  # integer key: the next chunk's first key value
            stop = 0  # and the range's last one
            if key[1] in INTEGERS:
                cur.execute(f"SELECT MIN({k}), MAX({k}) FROM {table}{_where(start, end)}")
                first, last = cur.fetchone()
                if first is None:
                    return
                floor, stop = int(first), int(last)
            while True:
                if floor is not None:
                    upper: Any = min(floor + span - 1, stop)
                    bounds = [f"{k} >= {floor}", f"{k} <= {upper}"]
                else:
                    cur.execute(
                        f"SELECT {k} FROM {table}{_where(start, end)} ORDER BY {k} LIMIT 1 OFFSET {rows - 1}"
                    )
                    found = cur.fetchone()
                    upper = None if found is None else found[0]  # None: the rest of the range
                    bounds = [start, end if upper is None else f"{k} <= {escape(upper)}"]
                cur.execute(
                    f"SELECT CAST(GROUP_CONCAT({row} SEPARATOR '\\0') AS BINARY), COUNT(*)"
                    f" FROM {table}{_where(*bounds)}"
                )
                chunk, count = cur.fetchone()
                if count and (chunk is None or (cur.warning_count and len(chunk) >= self._concat_limit - 4)):
                    # over max_allowed_packet (NULL) or cut at group_concat_max_len (a warning)
                    if floor is not None and upper > floor:
                        start, floor = f"{k} >= {floor}", None  # the rest by the walk
                        continue
                    if floor is not None or rows == 1:
                        raise self._too_large(db, name)
                    rows = max(1, rows // 8)  # take fewer rows
                    continue
                if floor is not None:
                    if count:
                        yield _lines(chunk)
                    if upper >= stop:
                        return
                    width = upper - floor + 1
                    fit = width * target // len(chunk) if count else span * 8
                    span = max(1, min(width * 8, fit))
                    floor = upper + 1
                    continue
                if not count:
                    return
                yield _lines(chunk)
                if upper is None:
                    return
                start = f"{k} > {escape(upper)}"
                fit = rows * target // max(len(chunk), 1)
                rows = max(1, min(_MAX_CHUNK_ROWS, rows * 8, fit))

    def _streamed(self, db: str, name: str, row: str) -> Iterator[bytes]:
        """The rows as chunks of about ``batch_bytes``, from one unbuffered query."""
        select = f"SELECT CAST({row} AS BINARY) FROM {ident(db)}.{ident(name)}"
        limit = self.target.batch_bytes
        batch: list[bytes] = []
        size = 0
        cur = self.conn.cursor(pymysql.cursors.SSCursor)
        try:
            cur.execute(select)
            while fetched := cur.fetchmany(_FETCH_ROWS):
                for (literal,) in fetched:
                    if literal is None:  # the server gave up on a row
                        raise self._too_large(db, name)
                    batch.append(literal)
                    size += len(literal) + 2
                    if size >= limit:
                        yield _lines(b"\0".join(batch))
                        batch, size = [], 0
        finally:
            cur.close()
        if batch:
            yield _lines(b"\0".join(batch))

    def _dump_sequence(self, db: str, name: str, write: Any) -> None:
        ddl = str(self._query(f"SHOW CREATE SEQUENCE {ident(db)}.{ident(name)}")[0][1])
        value = self._query(f"SELECT next_not_cached_value FROM {ident(db)}.{ident(name)}")[0][0]
        write(
            f"\n{comment(f'-- sequence {ident(name)}')}\nDROP SEQUENCE IF EXISTS {ident(name)};\n{ddl};\n"
            f"DO SETVAL({ident(name)}, {int(value)}, 0);\n".encode()
        )

    def _dump_views(self, db: str, views: list[str], write: Any) -> None:
        definitions = {
            v: _strip_definer(str(self._query(f"SHOW CREATE VIEW {ident(db)}.{ident(v)}")[0][1]))
            for v in views
        }
        done: list[str] = []
        pending = dict(definitions)
        while pending:
            # a view goes after the other views it mentions
            ready = [
                v for v, sql in pending.items()
                if not any(ident(o) in sql for o in pending if o != v)
            ]  # fmt: skip
            for v in ready or list(pending):
                done.append(v)
                del pending[v]
        for v in done:
            write(
                f"\n{comment(f'-- view {ident(v)}')}\nDROP TABLE IF EXISTS {ident(v)};\n"
                f"DROP VIEW IF EXISTS {ident(v)};\n{definitions[v]};\n".encode()
            )

    def _dump_triggers_and_routines(self, db: str, write: Any) -> None:
        objects: list[tuple[str, str, str]] = [
            ("TRIGGER", str(r[0]), "")
            for r in self._query(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s"
                " ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER",
                (db,),
            )
        ]
        objects += [
            (str(r[0]), str(r[1]), str(r[2] or ""))
            for r in self._query(
                "SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_COMMENT FROM information_schema.ROUTINES"
                " WHERE ROUTINE_SCHEMA = %s ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
                (db,),
            )
        ]
        for kind, name, note in objects:
            row = self._query(f"SHOW CREATE {kind} {ident(db)}.{ident(name)}")[0]
            # (name, sql_mode, statement, ...) for routines, (name, sql_mode, statement, ...) too
            body = row[2]
            if body is None:
                raise self.target.error(
                    f"cannot read the definition of {kind.lower()} {db}.{name}: the backup user "
                    "needs more privileges (SELECT on mysql.proc, or TRIGGER)"
                )
            sql_mode = str(row[1])
            if not _SQL_MODE.fullmatch(sql_mode):
                raise self.target.error(
                    f"{kind.lower()} {db}.{name}: unexpected sql_mode {sql_mode!r}"
                )
            write(
                f"\n{comment(f'-- {kind.lower()} {ident(name)}')}\nDROP {kind} IF EXISTS {ident(name)};\n"
                f"SET SESSION SQL_MODE='{sql_mode}';\nDELIMITER ;;\n{_strip_definer(str(body))} ;;\n"
                "DELIMITER ;\nSET SQL_MODE='NO_AUTO_VALUE_ON_ZERO';\n".encode()
            )
            if "\\" in note and "NO_BACKSLASH_ESCAPES" in sql_mode:
                # SHOW CREATE writes the COMMENT with backslash escapes whatever the
                # routine's sql_mode: set it again, in the dump's own sql_mode
                write(f"ALTER {kind} {ident(name)} COMMENT {self.conn.escape(note)};\n".encode())

    def release(self) -> None:
        conns, self.conn, self.others = [self.conn, *self.others], None, []
        for conn in conns:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.rollback()
                with contextlib.suppress(Exception):
                    conn.close()


class MysqlTarget:
    kind = KIND

    def __init__(
        self,
        name: str,
        server: Server,
        databases: list[str],
        coordinator_database: str,
        batch_bytes: int,
        bin_dir: str | None,
        system_database: str = "",
        jobs: int = 1,
    ) -> None:
        self.name = name
        self.jobs = jobs
        self.server = server
        self.databases = databases
        self.coordinator_database = coordinator_database
        self.system_database = system_database
        self._scalardb_found: set[str] = set()
        self.batch_bytes = batch_bytes
        self.bin_dir = bin_dir
        # restored copy (``placed``): database -> the database of the set it holds, whose name
        # is the ScalarDB namespace (the audit reads a renamed copy under its namespaces)
        self.restored_from: dict[str, str] = {}
        self.label = f'target "{name}" (mysql {server.address()})'
        # the session opened by preflight() for the next capture() (see the module's doc)
        # (jobs of them: every one starts the snapshot, see MysqlCapture._start_others)
        self._prepared: Prepared[list[Any]] = Prepared(list, _close_all)

    def error(self, message: str) -> TargetError:
        return TargetError(f"{self.label}: {message}")

    def describe(self) -> Mapping[str, Any]:
        return {
            "kind": KIND,
            "host": self.server.host,
            "port": self.server.port,
            "user": self.server.user,
            "databases": list(self.databases),
            "coordinator_database": self.coordinator_database,
            "system_database": self.system_database,
            "jobs": self.jobs,
        }

    def scalardb_found(self) -> set[str]:
        """ScalarDB's coordinator and system databases the last preflight found."""
        return set(self._scalardb_found)

    def all_databases(self) -> list[str]:
        """The configured databases, then ScalarDB's coordinator and system databases (when
        not among them and not switched off with "")."""
        extra = [
            db
            for db in dict.fromkeys((self.coordinator_database, self.system_database))
            if db and db not in self.databases
        ]
        return [*self.databases, *extra]

    def connect(self, server: Server | None = None) -> Any:
        server = server or self.server
        try:
            return server.connect()
        except pymysql.MySQLError as exc:
            where = "" if server is self.server else f"{server.address()}: "
            raise self.error(f"{where}{_message(exc)}") from None

    def _capture_connection(self) -> Any:
        """A connection that takes multi-statement queries (the capture's one round trip)."""
        try:
            return self.server.connect(client_flag=CLIENT.MULTI_STATEMENTS)
        except pymysql.MySQLError as exc:
            raise self.error(_message(exc)) from None

    def _set_session(self, conn: Any) -> None:
        with conn.cursor() as cur:
            flavor_limit = (
                "max_statement_time" if "mariadb" in conn.get_server_info().lower() else "max_execution_time"
            )
            cur.execute(
                "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ;\n"
                "SET SESSION sql_mode = '', time_zone = '+00:00', "
                f"net_write_timeout = {_LONG}, net_read_timeout = {_LONG}, "
                f"wait_timeout = {_LONG}, {flavor_limit} = 0"
            )
            while cur.nextset():
                pass

    def session(self) -> Any:
        """A session ready for a capture: connected, session settings made."""
        conn = self._capture_connection()
        try:
            self._set_session(conn)
        except pymysql.MySQLError as exc:
            conn.close()
            raise self.error(_message(exc)) from None
        return conn

    def close(self) -> None:
        """Close the session a preflight prepared and no capture took. Idempotent."""
        self._prepared.close()

    # -- preflight -------------------------------------------------------------------------------
    def preflight(self) -> None:
        self.close()  # a session an earlier preflight prepared and no capture took
        conn = self._capture_connection()
        held = [conn]
        try:
            with conn.cursor() as cur:
                names = self.all_databases()
                marks = ",".join(["%s"] * len(names))
                cur.execute(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"
                    f" WHERE SCHEMA_NAME IN ({marks})",
                    names,
                )
                found = {str(r[0]) for r in cur.fetchall()}
                self._scalardb_found = found & {self.coordinator_database, self.system_database}
                missing = [db for db in self.databases if db not in found]
                if missing:
                    raise self.error(f'database "{missing[0]}" not found (or not visible to the user)')
                present = [db for db in names if db in found]
                marks = ",".join(["%s"] * len(present))
                cur.execute(
                    "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE FROM information_schema.TABLES"
                    f" WHERE TABLE_SCHEMA IN ({marks})",
                    present,
                )
                tables = [Table(str(r[0]), str(r[1]), str(r[2]), r[3]) for r in cur.fetchall()]
                for t in tables:
                    if t.kind != "VIEW" and str(t.engine).lower() != "innodb":
                        raise self.error(
                            f"table {t.database}.{t.name} uses the {t.engine} engine, which has no "
                            "consistent snapshot; convert it to InnoDB"
                        )
                for t in tables:
                    if t.kind == "VIEW":
                        probe = f"SHOW CREATE VIEW {ident(t.database)}.{ident(t.name)}"
                    else:
                        probe = f"SELECT 1 FROM {ident(t.database)}.{ident(t.name)} LIMIT 0"
                    try:
                        cur.execute(probe)
                        cur.fetchall()
                    except pymysql.MySQLError as exc:
                        raise self.error(
                            f"cannot read {t.database}.{t.name}: {_message(exc)}"
                        ) from None
            self._set_session(conn)
            if self.jobs > 1:
                # the proof needs InnoDB's transaction counter (see MysqlCapture._prove)
                checker = MysqlCapture(self)
                checker.mariadb = "mariadb" in conn.get_server_info().lower()
                checker._marker(_results(conn, [_marker_sql(checker.mariadb)])[0])
                while len(held) < self.jobs:
                    held.append(self.session())
        except BaseException as exc:
            _close_all(held)
            if isinstance(exc, pymysql.MySQLError):
                raise self.error(_message(exc)) from None
            raise
        self._prepared.keep(held, PREPARED_TTL_S)

    # -- capture ---------------------------------------------------------------------------------
    def capture(self, set_id: str) -> MysqlCapture:
        """The snapshot, on the session the preflight prepared (or a new one); with jobs > 1
        on all the sessions it prepared, proved equal (see ``MysqlCapture._prove``)."""
        prepared = self._prepared.take()
        capture = MysqlCapture(self)
        try:
            try:
                self._snapshots(capture, prepared)
            except _Differ:
                # something wrote between the sessions' snapshots (a writer the pause does
                # not stop, InnoDB's own statistics update...): once more, on the same
                # sessions, still inside the pause; a second difference fails the capture
                again = [capture.conn, *capture.others]
                capture.conn, capture.others, capture._reports = None, [], []
                self._snapshots(capture, again)
                capture._position["snapshot_attempts"] = 2
        except BaseException:
            held = [capture.conn, *capture.others]
            capture.release()
            for conn in prepared:
                if all(conn is not h for h in held):
                    _close(conn)
            raise
        return capture

    def _snapshots(self, capture: MysqlCapture, prepared: list[Any]) -> None:
        hook = _AFTER_FIRST_SNAPSHOT
        # jobs > 1: the other sessions start their snapshots at once with the first one
        finish = capture._start_others(prepared[1:]) if self.jobs > 1 and hook is None else None
        try:
            capture._open(prepared[0] if prepared else None)
        except BaseException:
            if finish is not None:
                with contextlib.suppress(BaseException):
                    finish()  # their sessions are the capture's, to release
            raise
        if self.jobs > 1 and hook is not None:
            hook()  # tests only: after the first snapshot, before the others
            finish = capture._start_others(prepared[1:])
        if finish is not None:
            finish()

    # -- restore ---------------------------------------------------------------------------------
    def rename_databases(self) -> list[str]:
        """The databases a restore can rename (``--rename-db``): every one it may write."""
        return self.all_databases()

    def _destination(
        self, dest: Mapping[str, str] | None, recorded: set[str] | None = None, *, offline: bool = False
    ) -> tuple[Server, dict[str, str]]:
        """(server, source database -> destination database). ``offline``: checks only
        (no password read); ``recorded``: the databases the set holds, when known."""
        names = {db: db for db in self.all_databases()}
        if not dest:
            return self.server, names
        check_destination_keys(dest, label=self.label)
        host, port, user = self.server.host, self.server.port, self.server.user
        password: str | None = None
        database: str | None = None
        if dest.get("dsn"):
            try:
                url = urlsplit(dest["dsn"])
                port = url.port or 3306
            except ValueError:
                url = None
            if url is None or url.scheme not in ("mysql", "mariadb") or url.query or url.fragment:
                url = None
            if url is None or not url.hostname:
                raise UsageError(
                    f"{self.label}: destination DSN must look like "
                    "mysql://user@host[:port][/database] (no ?options)"
                )
            host = url.hostname
            user = unquote(url.username) if url.username else user
            database = unquote(url.path.lstrip("/")) or None
        host = dest.get("host") or host
        if dest.get("port"):
            if not dest["port"].isdigit() or not 0 < int(dest["port"]) < 65536:
                raise UsageError(f"{self.label}: destination port must be 1-65535")
            port = int(dest["port"])
        user = dest.get("user") or user
        password = dest.get("password") or password
        database = dest.get("database") or database
        given = {**dest, "database": database} if database else dict(dest)
        names = destination_names(
            given,
            self.all_databases(),
            configured=self.databases,
            label=self.label,
            limit=64,
            reserved=_SYSTEM_DATABASES,
            recorded=recorded,
        )
        if password is None and user == self.server.user and not offline:
            password = self.server.password
        return Server(host, port, user, given_password=password), names

    def placed(self, dest: Mapping[str, str] | None) -> MysqlTarget:
        """This target as a restore into ``dest`` leaves it: that server, each database under
        its destination name (a drill reads, checks and drops the copy through it)."""
        server, names = self._destination(dest)
        placed = MysqlTarget(
            self.name,
            server,
            [names[db] for db in self.databases],
            names.get(self.coordinator_database, self.coordinator_database),
            self.batch_bytes,
            self.bin_dir,
            names.get(self.system_database, self.system_database),
            self.jobs,
        )
        placed.restored_from = {new: old for old, new in names.items()}
        return placed

    def places(self) -> set[tuple[str, ...]]:
        """Where this target's data lives, one entry per database: a drill place equal to one
        of another target's (production) is refused."""
        return {(KIND, host_key(self.server.host), str(self.server.port), db) for db in self.all_databases()}

    def check_destination(self, dest: Mapping[str, str] | None, record: Recorded | None = None) -> None:
        """Refuse (UsageError, one line) destination settings that do not parse or a rename
        that does not fit the target (or the set's ``record``), contacting nothing."""
        self._destination(dest, None if record is None else _recorded(record), offline=True)

    def probe_destination(self, dest: Mapping[str, str] | None, force: bool, record: Recorded) -> None:
        """Reach the destination server and refuse a destination database that is not empty
        (unless ``force``): before a restore job exists and before the set is verified."""
        server, names = self._destination(dest, _recorded(record))
        conn = self.connect(server)
        try:
            with conn.cursor() as cur:
                self._refuse_non_empty(cur, server, [names[db] for db in sorted(_recorded(record))], force)
        except pymysql.MySQLError as exc:
            raise self.error(f"{server.address()}: {_message(exc)}") from None
        finally:
            conn.close()

    def _refuse_non_empty(self, cur: Any, server: Server, databases: list[str], force: bool) -> None:
        if force:
            return
        for db in databases:
            cur.execute(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s LIMIT 1", (db,)
            )
            found = cur.fetchone()
            if found:
                raise self.error(
                    f'destination database "{db}" on {server.address()} is not '
                    f"empty (it has {found[0]}); use --force to overwrite"
                )

    def check_record(self, record: Recorded) -> None:
        """Every database the set names (its artifacts, the position, the description)
        is a configured one or the coordinator's: a restore writes only into those (or,
        with ``--to``, into the destination the single configured one is renamed to)."""
        scope = Scope(self.label, record)
        covered = set(self.all_databases())
        for name in record.names:
            where = f"artifact {shown(name, 80)}"
            parsed = mysql_artifact(name)
            if parsed is None:
                scope.fail(f"{where} is not <database>.sql or <database>.parts/<part>.sql")
            scope.covered(parsed[0], covered, where, "database")
        where = "the position's databases"
        recorded = scope.sequence(record.position.get("databases"), where, required=False)
        scope.all_covered(recorded, covered, where, "database")
        described = scope.description(KIND)
        if described is not None:
            scope.described_covered(
                described, "databases", covered, "database", coordinator="coordinator_database"
            )

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        self.check_record(Recorded.of_reader(src))  # before anything is contacted
        if any("/" in name for name in src.names()):  # exported with jobs > 1
            from txbackup.targets.mysql.parts import restore_parts  # it builds on this module

            restore_parts(self, src, dest, force)
            return
        sources: list[str] = []
        for name in src.names():
            if not name.endswith(".sql") or "/" in name:
                raise self.error(f"unexpected artifact {shown(name)}")
            sources.append(name[: -len(".sql")])
        server, rename = self._destination(dest, set(sources))
        # databases already restored by an interrupted run of this job are skipped
        todo = [db for db in sources if not src.journal.is_done(f"database/{db}")]
        if not todo:
            return
        client = find_tool(
            "mariadb", alternatives=("mysql",), culprit=self.label, bin_dir=self.bin_dir
        )
        sandbox = has_sandbox(client, culprit=self.label)
        conn = self.connect(server)
        server_info = str(conn.get_server_info())

        def guard() -> ScriptGuard:
            return ScriptGuard(
                self.label,
                server_version=version_id(server_info),
                mariadb="mariadb" in server_info.lower(),
            )

        try:
            with conn.cursor() as cur:
                # check every destination before touching any; one this job started filling
                # before it was interrupted is not empty, and is ours to finish (the dump
                # drops and recreates each of its objects)
                fresh = [db for db in todo if not src.journal.is_done(f"database/{db}/started")]
                self._refuse_non_empty(cur, server, [rename[db] for db in fresh], force)
                if not sandbox:
                    # without --sandbox nothing stops the client from running a command: read
                    # every dump first, and touch nothing if one holds any
                    for db in todo:
                        with src.open(f"{db}.sql") as stream:
                            guard().check(iter_chunks(stream))
                for db in todo:
                    cur.execute(f"CREATE DATABASE IF NOT EXISTS {ident(rename[db])}")
                    src.journal.mark_done(f"database/{db}/started", {"database": rename[db]})
        except pymysql.MySQLError as exc:
            raise self.error(f"{server.address()}: {_message(exc)}") from None
        finally:
            conn.close()
        base, env = client_command(client, server, sandbox=sandbox)
        for db in todo:
            argv = [*base, f"--database={rename[db]}"]
            with src.open(f"{db}.sql") as stream:
                # each line reaches the client only once the guard has read it (the
                # storage could hand over other bytes than a first reading saw)
                run_from_stream(argv, guard().checked(iter_chunks(stream)), culprit=self.label, env=env)
            src.journal.mark_done(f"database/{db}", {"database": rename[db]})


def _where(*conditions: str) -> str:
    """`` WHERE a AND b`` of the non-empty ``conditions`` ("" if none)."""
    found = [c for c in conditions if c]
    return f" WHERE {' AND '.join(found)}" if found else ""


def _recorded(record: Recorded) -> set[str]:
    """The databases a set's record holds (``<db>.sql`` or ``<db>.parts/`` artifacts)."""
    return {parsed[0] for parsed in map(mysql_artifact, record.names) if parsed is not None}


class _Stopped(Exception):
    """The consumer of ``_write_behind`` stopped: the producer gives up."""


def _write_behind(
    produce: Callable[[Callable[[bytes], object]], None], write: Callable[[bytes], object], depth: int = 4
) -> None:
    """Run ``produce(put)`` in a thread of its own and ``write`` here what it puts, in order.

    At most ``depth`` pieces wait in between. The producer's error is raised
    here once its earlier pieces are written; if ``write`` fails, the producer
    stops at its next ``put`` and is waited for (it owns the connection until
    then) before the error propagates.
    """
    pieces: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failed: list[BaseException] = []

    def put(piece: bytes | None) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                pieces.put(piece, timeout=0.1)
                return
        raise _Stopped

    def run() -> None:
        try:
            produce(put)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the consumer
            failed.append(exc)
        with contextlib.suppress(_Stopped):
            put(None)

    thread = threading.Thread(target=run, name="mysql-export-reader", daemon=True)
    thread.start()
    try:
        while (piece := pieces.get()) is not None:
            write(piece)
    finally:
        stop.set()
        thread.join()
    if failed:
        raise failed[0]


def _results(conn: Any, statements: list[str]) -> list[Any]:
    """The rows of each of ``statements``, run in one round trip (a multi-statement query)."""
    with conn.cursor() as cur:
        cur.execute(";\n".join(statements))  # no parameters: a % stays as it is
        results: list[Any] = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
    return results


def _marker_sql(mariadb: bool) -> str:
    """The statement reading InnoDB's transaction counter (see ``MysqlCapture._prove``)."""
    return "SHOW GLOBAL STATUS LIKE 'Innodb_max_trx_id'" if mariadb else "SHOW ENGINE INNODB STATUS"


_AFTER_FIRST_SNAPSHOT: Callable[[], object] | None = None
"""Tests only: when set, the other sessions start their snapshots after the first one's and
after this runs (a write the pause did not stop, which the proof must catch)."""

_SANDBOX: dict[str, bool] = {}


def client_command(client: str, server: Server, *, sandbox: bool) -> tuple[list[str], dict[str, str]]:
    """The client's argv (without ``--database``) and environment for loading a dump (the
    whole one, or the parts of ``mysql_parts``): the password in ``MYSQL_PWD``, never argv."""
    env = {"EDITOR": "false", "VISUAL": "false"}  # \e runs $EDITOR even in sandbox mode
    if server.password is not None:
        env["MYSQL_PWD"] = server.password
    argv = [
        client,
        "--no-defaults",
        "--protocol=TCP",
        f"--host={server.host}",
        f"--port={server.port}",
        f"--user={server.user}",
        "--default-character-set=utf8mb4",
        "--batch",
        "--max-allowed-packet=1G",
        "--comments",  # the comments of routine and trigger bodies are theirs
        *(["--sandbox"] if sandbox else []),
    ]
    return argv, env


def has_sandbox(client: str, *, culprit: str) -> bool:
    """Whether ``client`` takes ``--sandbox`` (MariaDB 10.5.25, 10.6.18, 10.11.8 and
    later; not MySQL's client), read once per client from its ``--help``."""
    if client not in _SANDBOX:
        usage = run([client, "--no-defaults", "--help"], culprit=culprit, timeout=30)
        _SANDBOX[client] = re.search(r"(?m)^\s*--sandbox\b", usage) is not None
    return _SANDBOX[client]


def _close(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


def _close_all(conns: list[Any]) -> None:
    for conn in conns:
        _close(conn)


def from_config(name: str, conf: Mapping[str, Any]) -> MysqlTarget:
    culprit = f'target "{name}"'
    check_keys(conf, _KEYS, culprit=culprit)
    host, port, user, secret = server_settings(conf, port=3306, user="root", culprit=culprit)
    databases = setting_str_list(conf, "databases", culprit=culprit, required=True)
    coordinator = setting_optional_name(conf, "coordinator_database", "coordinator", culprit=culprit)
    system = setting_optional_name(conf, "system_database", "scalardb", culprit=culprit)
    batch = setting_int(conf, "batch_bytes", 1 << 20, culprit=culprit, minimum=1024, maximum=64 << 20)
    bin_dir = setting_opt_str(conf, "bin_dir", culprit=culprit)
    jobs = setting_int(conf, "jobs", 1, culprit=culprit, minimum=1, maximum=MAX_JOBS)
    server = Server(host, port, user, secret_conf=secret, culprit=culprit)
    # -- mode = "restore-point" (targets.sql.restore_points): no dump, a binary log position
    if read_mode(conf, culprit) != RESTORE_POINT:
        return MysqlTarget(name, server, databases, coordinator, batch, bin_dir, system, jobs)
    # imported here: that module imports this one
    from txbackup.targets.mysql.restore_point import MysqlPointTarget

    if "jobs" in conf:  # nothing is exported: a silent no-op setting would mislead
        raise UsageError(f'{culprit}: jobs does not apply to mode = "{RESTORE_POINT}": nothing is dumped')
    return MysqlPointTarget(name, server, databases, coordinator, batch, bin_dir, system)
