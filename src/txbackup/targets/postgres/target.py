"""PostgreSQL databases (kind ``postgres``).

Settings::

    [[targets]]
    name = "ledger"
    kind = "postgres"
    host = "10.0.0.5"                  # default 127.0.0.1
    port = 5432                        # default 5432
    user = "backup"                    # default postgres
    password_env = "LEDGER_PG_PASSWORD"   # or password_file = "/run/secrets/pg"
    databases = ["ledger"]             # required; one snapshot per database
    include = ["app", "app2.accounts"] # optional: namespaces (schemas) or schema.table
    coordinator_namespace = "coordinator"  # ScalarDB's; always included ("" for none)
    system_namespace = "scalardb"      # ScalarDB's metadata; always included ("" for none)
    jobs = 1                           # > 1: parallel pg_dump/pg_restore (directory format)
    bin_dir = "/usr/lib/postgresql/16/bin"  # optional: where pg_dump/pg_restore live
    mode = "dump"                      # or "restore-point": no dump (targets.postgres.restore_point)

Needs PostgreSQL 12 or newer, and pg_dump/pg_restore of at least the server's
major version (checked at preflight, with SELECT on every included table and
sequence for the backup user).

Capture (inside the pause), per database: one connection runs ``BEGIN
ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot()`` and
records the WAL position (``pg_current_wal_lsn()``, or the replay position on a
standby), all in one round trip; the transaction stays open until
``release()``. A snapshot cannot cross databases, so each database has its own;
all of them are taken inside the pause, which is what makes them consistent
with each other.

Connections are opened *before* the pause: ``preflight()`` keeps the
connection it checked each database with (authenticated, session settings
made, no transaction open) on the target, and the next ``capture()`` takes
them over, so the pause pays for the snapshot statements only, not for
connecting and authenticating (SCRAM costs several ms per connection, tens
under load). A capture without prepared connections (no preflight) connects
by itself, and one whose prepared connection fails (it may have died
meanwhile) retries once on a new connection. Prepared connections
never leak: a failed preflight closes them, a new ``preflight()`` replaces
(and closes) those an earlier run left unused (its backup never reached the
capture: another target's preflight or the pause failed), ``close()`` closes
them at once, and if no capture comes within ``PREPARED_TTL_S`` a timer
closes them.

Export (after the unpause): ``pg_dump --snapshot=<id>`` dumps exactly the
captured snapshot, uncompressed (the engine compresses), as artifact
``<db>.dump`` (custom format) or, with ``jobs > 1``, ``pg_dump -Fd -j N`` into
a temporary folder (``TMPDIR``) whose files become ``<db>.dir/<file>``.

Sequences are not transactional: pg_dump reads their current value, so a
restored sequence may be ahead of the snapshot (never behind: no id is reused).

``include`` entries are exact names (no wildcards), applied to every database;
a namespace takes everything in the schema, ``schema.table`` one table (with
its partitions). Without ``include`` the whole database is dumped.

Restore: ``pg_restore --no-owner --exit-on-error`` into the destination
database, created (from template0) when missing. The destination defaults to
the target's own server and database names; ``dest`` may give ``dsn`` (a libpq
conninfo or URI) and/or ``host``, ``port``, ``user``, ``password``,
``database``. For a single-database target the DSN's dbname (or ``database``)
names the destination database; for several databases each one is restored
into the same-named database on that server (the DSN's dbname, if any, is only
used to connect), unless ``rename.OLD`` keys (``--rename-db OLD=NEW``) rename
some: an archive names no database (no ``--create``), ``pg_restore -d NEW``
loads it under any name. Needs PostgreSQL 12 or newer. A destination holding any user
relation is refused unless ``force``, which adds ``--clean --if-exists``
(objects of the dump are dropped and recreated; other objects stay). Owners
are not restored (``--no-owner``); privileges are, so roles named in GRANTs
must exist on the destination. Each database restored is journaled, so a
resumed restore job skips it. A ``.dump`` is fed to ``pg_restore --single-transaction``
as it streams (verified as it goes: nothing commits before its verified end); a
``.dir`` to ``pg_restore -Fd -j N`` through named pipes (``targets.postgres.directory``).

Names are data: txbackup writes no SQL of its own into the artifacts (pg_dump
writes them and quotes every identifier), and the restore never goes through psql: pg_restore connects
to the server itself and runs no meta-command (``\\!``...) whatever an
archive holds. An archive turned into a script by hand (``pg_restore -f``) is
safe to feed to psql only from pg_restore 15.14, 16.10, 17.6 or later, whose
scripts are fenced with ``\\restrict`` (CVE-2025-8714).

By hand::

    createdb -h HOST -p PORT -U USER -T template0 DB
    pg_restore -h HOST -p PORT -U USER -d DB --no-owner --exit-on-error DB.dump
    # directory format: the files of DB.dir/ decompressed into a folder DIR
    pg_restore -h HOST -p PORT -U USER -d DB --no-owner --exit-on-error -j 4 -Fd DIR
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from txbackup.errors import TargetError, UsageError
from txbackup.procs import find_tool, one_line, run, run_checked, run_from_stream, run_to_stream
from txbackup.safepaths import shown
from txbackup.scratch import private_dir
from txbackup.settings import (
    check_keys,
    setting_duration,
    setting_int,
    setting_opt_str,
    setting_optional_name,
    setting_str_list,
)
from txbackup.targets.base import ArtifactReader, ArtifactWriter, Recorded, Scope
from txbackup.targets.postgres.directory import restore_directory
from txbackup.targets.sql.common import (
    Prepared,
    ServerPassword,
    check_destination_keys,
    destination_names,
    host_key,
    server_settings,
)
from txbackup.targets.sql.restore_points import RESTORE_POINT, read_mode

KIND = "postgres"
_SYSTEM_DATABASES = frozenset({"postgres", "template0", "template1"})  # never a rename's destination
_KEYS = {
    "host",
    "port",
    "user",
    "password_env",
    "password_file",
    "databases",
    "include",
    "coordinator_namespace",
    "system_namespace",
    "jobs",
    "bin_dir",
    "mode",  # restore points: targets.sql.restore_points
    "archive_wait",
}
_CONNECT_TIMEOUT = 10
_APP = "txbackup"
PREPARED_TTL_S = 600.0
"""How long connections prepared by ``preflight()`` wait for their ``capture()``."""
# a long export must not be cut by the server's idle-transaction timeout
_SESSION = "SET idle_in_transaction_session_timeout = 0"
# one round trip: the BEGIN's transaction stays open after this query string
_SNAPSHOT = (
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
    " SELECT pg_export_snapshot(), pg_is_in_recovery(),"
    " (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    "  ELSE pg_current_wal_lsn() END)::text,"
    " current_setting('server_version')"
)

# user relations: not in system schemas, not owned by an extension
_USER_RELATIONS = """
SELECT n.nspname, c.relname, c.relkind,
       coalesce(rn.nspname, n.nspname), coalesce(r.relname, c.relname),
       has_schema_privilege(n.oid, 'USAGE')
         AND has_table_privilege(c.oid, 'SELECT')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class r ON r.oid = pg_partition_root(c.oid)
LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_)'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def _quote(name: str) -> str:
    """A pg_dump name pattern matching exactly ``name``."""
    return '"' + name.replace('"', '""') + '"'


def _message(exc: psycopg.Error) -> str:
    """One line out of a psycopg error, without the libpq boilerplate."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    if primary:
        return str(primary)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.sub(r"^connection failed: ", "", first)
    first = re.sub(r"connection to server (at|on) .*? failed: ", "", first)
    first = re.sub(r"^(FATAL|ERROR):\s+", "", first)
    return " ".join(first.split()) or one_line(text)


@dataclass
class Server(ServerPassword):
    """How to reach one PostgreSQL server: libpq parameters (no password) + password.

    The password is either given, or read from the target's password_env /
    password_file when first needed (so loading the cluster file needs no secret)."""

    params: dict[str, str]

    def address(self) -> str:
        return f"{self.params.get('host', 'localhost')}:{self.params.get('port', '5432')}"

    def conninfo(self, dbname: str) -> str:
        return make_conninfo("", **{**self.params, "dbname": dbname, "application_name": _APP})

    def env(self) -> dict[str, str]:
        env = {"PGCONNECT_TIMEOUT": str(_CONNECT_TIMEOUT), "PGAPPNAME": _APP}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env


@dataclass
class Include:
    """What to dump of each database: everything, or some schemas and tables."""

    schemas: set[str] = field(default_factory=set)
    tables: set[tuple[str, str]] = field(default_factory=set)

    @property
    def everything(self) -> bool:
        return not self.schemas and not self.tables

    def wants(self, schema: str, table: str) -> bool:
        return self.everything or schema in self.schemas or (schema, table) in self.tables

    def dump_args(self, relations: list[tuple[str, str, str, str]], schemas: set[str]) -> list[str]:
        """pg_dump -n/-T options, given the database's relations (schema, name,
        root schema, root name) and existing schemas."""
        if self.everything:
            return []
        mentioned = (self.schemas | {s for s, _ in self.tables}) & schemas
        args: list[str] = []
        for schema in sorted(mentioned):
            args += ["-n", _quote(schema)]
        for schema, name, root_schema, root_name in relations:
            partial = schema in mentioned and schema not in self.schemas
            wanted = (schema, name) in self.tables or (root_schema, root_name) in self.tables
            if partial and not wanted:
                args += ["-T", f"{_quote(schema)}.{_quote(name)}"]
        return args


class PostgresCapture:
    """One open REPEATABLE READ transaction with an exported snapshot per database."""

    def __init__(self, target: PostgresTarget) -> None:
        self.target = target
        self.held: dict[str, psycopg.Connection[Any]] = {}
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.server_version = ""

    def _open(self, prepared: dict[str, psycopg.Connection[Any]]) -> None:
        """Take a snapshot of every database, on the ``prepared`` connections
        when there are (each one is taken out of the dict once held)."""
        for db in self.target.databases:
            conn = prepared.pop(db, None)
            if conn is None or conn.closed:
                conn = self.target.session(db)
                row = self._snapshot(db, conn)
            else:
                try:
                    row = self._snapshot(db, conn)
                except TargetError:
                    # the prepared connection may have died since preflight (server restarted,
                    # session killed): one more try, on a new one
                    self.held.pop(db, None)
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                    row = self._snapshot(db, self.target.session(db))
            snapshot, in_recovery, lsn, version = row
            self.server_version = str(version)
            self.snapshots[db] = {"snapshot": snapshot, "lsn": lsn, "in_recovery": in_recovery}

    def _snapshot(self, db: str, conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
        self.held[db] = conn
        try:
            cur = conn.execute(_SNAPSHOT)
            while cur.description is None and cur.nextset():
                pass  # past BEGIN's result
            row = cur.fetchone()
        except psycopg.Error as exc:
            raise self.target.error(f'database "{db}": snapshot failed: {_message(exc)}') from None
        assert row is not None
        return tuple(row)

    def position(self) -> Mapping[str, Any]:
        return {
            "server_version": self.server_version,
            "databases": {db: dict(s) for db, s in self.snapshots.items()},
        }

    def _dump_args(self, db: str) -> list[str]:
        include = self.target.include
        if include.everything:
            return []
        conn = self.held[db]
        try:
            # read through the held transaction: the catalog as of the snapshot
            schemas = {
                str(r[0])
                for r in conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
                    (sorted(include.schemas | {s for s, _ in include.tables}),),
                )
            }
            relations = [
                (r[0], r[1], r[3], r[4])
                for r in conn.execute(_USER_RELATIONS)
                if r[2] != "S"  # sequences follow their tables
            ]
        except psycopg.Error as exc:
            raise self.target.error(f'database "{db}": {_message(exc)}') from None
        if not schemas:
            raise self.target.error(f'database "{db}": include matches no schema of this database')
        return include.dump_args(relations, schemas)

    def export(self, out: ArtifactWriter) -> None:
        target = self.target
        pg_dump = target.tool("pg_dump")
        for db, snap in self.snapshots.items():
            argv = [
                pg_dump,
                "-d", target.server.conninfo(db),
                f"--snapshot={snap['snapshot']}",
                "-Z0",
                "--no-password",
                *self._dump_args(db),
            ]  # fmt: skip
            if target.jobs == 1:
                with out.open(f"{db}.dump") as stream:
                    run_to_stream(
                        [*argv, "-Fc"], stream, culprit=target.label, env=target.server.env()
                    )
                continue
            with private_dir("pg-") as tmp:
                folder = os.path.join(tmp, db)
                run_checked(
                    [*argv, "-Fd", "-j", str(target.jobs), "--no-sync", "-f", folder],
                    culprit=target.label,
                    env=target.server.env(),
                )
                for name in sorted(os.listdir(folder)):
                    out.add_file(f"{db}.dir/{name}", os.path.join(folder, name))

    def release(self) -> None:
        held, self.held = self.held, {}
        for conn in held.values():
            with contextlib.suppress(psycopg.Error):
                conn.close()


class PostgresTarget:
    kind = KIND

    def __init__(
        self,
        name: str,
        server: Server,
        databases: list[str],
        include: Include,
        coordinator_namespace: str,
        jobs: int,
        bin_dir: str | None,
        system_namespace: str = "",
    ) -> None:
        self.name = name
        self.server = server
        self.databases = databases
        self.include = include
        self.coordinator_namespace = coordinator_namespace
        self.system_namespace = system_namespace
        self._scalardb_found: set[str] = set()
        self.jobs = jobs
        self.bin_dir = bin_dir
        self.label = f'target "{name}" (postgres {server.address()})'
        # connections opened by preflight() for the next capture() (see the module's doc)
        self._prepared: Prepared[dict[str, psycopg.Connection[Any]]] = Prepared(dict, _close_all)

    def error(self, message: str) -> TargetError:
        return TargetError(f"{self.label}: {message}")

    def describe(self) -> Mapping[str, Any]:
        return {
            "kind": KIND,
            "host": self.server.params.get("host"),
            "port": int(self.server.params.get("port", "5432")),
            "user": self.server.params.get("user"),
            "databases": list(self.databases),
            "include": sorted(self.include.schemas | {f"{s}.{t}" for s, t in self.include.tables}),
            "coordinator_namespace": self.coordinator_namespace,
            "system_namespace": self.system_namespace,
            "jobs": self.jobs,
        }

    def scalardb_found(self) -> set[str]:
        """ScalarDB's coordinator and system namespaces the last preflight found (as schemas)."""
        return set(self._scalardb_found)

    def tool(self, name: str) -> str:
        return find_tool(name, culprit=self.label, bin_dir=self.bin_dir)

    def connect(self, dbname: str, server: Server | None = None) -> psycopg.Connection[Any]:
        server = server or self.server
        try:
            return psycopg.connect(
                server.conninfo(dbname),
                password=server.password,
                connect_timeout=_CONNECT_TIMEOUT,
                autocommit=True,
            )
        except psycopg.Error as exc:
            where = "" if server is self.server else f" on {server.address()}"
            raise self.error(f'database "{dbname}"{where}: {_message(exc)}') from None

    def session(self, dbname: str) -> psycopg.Connection[Any]:
        """A connection ready for a capture: connected, session settings made."""
        conn = self.connect(dbname)
        try:
            conn.execute(_SESSION)
        except psycopg.Error as exc:
            conn.close()
            raise self.error(f'database "{dbname}": {_message(exc)}') from None
        return conn

    def close(self) -> None:
        """Close the connections a preflight prepared and no capture took. Idempotent."""
        self._prepared.close()

    # -- preflight -------------------------------------------------------------------------------
    def _tool_major(self, path: str) -> int:
        text = run([path, "--version"], culprit=self.label, timeout=30)
        match = re.search(r"\)\s*(\d+)(?:\.(\d+))?", text) or re.search(r"(\d+)\.\d+", text)
        if not match:
            raise self.error(f"cannot tell the version of {path} from {text.strip()!r}")
        return int(match.group(1))

    def preflight(self) -> None:
        self.close()  # connections an earlier preflight prepared and no capture took
        opened: dict[str, psycopg.Connection[Any]] = {}
        try:
            self._check(opened)
        except BaseException:
            _close_all(opened)
            raise
        self._prepared.keep(opened, PREPARED_TTL_S)

    def _check(self, opened: dict[str, psycopg.Connection[Any]]) -> None:
        """The preflight's checks; the connection of each database is left in ``opened``."""
        seen: set[str] = set()
        # ScalarDB's own namespaces are backed up where they exist, never demanded: in
        # multi-storage the coordinator lives in one storage only
        scalardb = {n for n in (self.coordinator_namespace, self.system_namespace) if n}
        found_scalardb: set[str] = set()
        server_major = 0
        for db in self.databases:
            conn = opened[db] = self.connect(db)
            try:
                server_major = conn.info.server_version // 10000
                rows = conn.execute(_USER_RELATIONS).fetchall()
                schemas = {str(r[0]) for r in conn.execute("SELECT nspname FROM pg_namespace")}
                conn.execute(_SESSION)
            except psycopg.Error as exc:
                raise self.error(f'database "{db}": {_message(exc)}') from None
            wanted = [r for r in rows if self._wanted(r)]
            denied = [f"{r[0]}.{r[1]}" for r in wanted if not r[5]]
            if denied:
                more = f" (and {len(denied) - 1} more)" if len(denied) > 1 else ""
                raise self.error(
                    f'database "{db}": user {self.server.params.get("user")} cannot read '
                    f"{denied[0]}{more}; grant it SELECT (and USAGE on the schema)"
                )
            seen |= schemas & self.include.schemas
            found_scalardb |= schemas & scalardb
            seen |= {f"{r[0]}.{r[1]}" for r in rows if (r[0], r[1]) in self.include.tables}
            if not self.include.everything and not (
                schemas & (self.include.schemas | {s for s, _ in self.include.tables})
            ):
                raise self.error(f'database "{db}": include matches no schema of this database')
        self._scalardb_found = found_scalardb
        wanted_names = (self.include.schemas - scalardb) | {
            f"{s}.{t}" for s, t in self.include.tables
        }
        missing = sorted(wanted_names - seen)
        if missing:
            raise self.error(f"include names {missing[0]}, found in none of the databases")
        dump_major = self._tool_major(self.tool("pg_dump"))
        if dump_major < server_major:
            raise self.error(
                f"pg_dump {dump_major} cannot dump a PostgreSQL {server_major} server; install "
                f"PostgreSQL {server_major} client tools or set bin_dir"
            )
        restore_major = self._tool_major(self.tool("pg_restore"))
        if restore_major < dump_major:
            raise self.error(f"pg_restore {restore_major} is older than pg_dump {dump_major}")

    def _wanted(self, row: tuple[Any, ...]) -> bool:
        schema, name, _kind, root_schema, root_name, _ok = row
        return self.include.wants(schema, name) or (
            not self.include.everything and (root_schema, root_name) in self.include.tables
        )

    # -- capture ---------------------------------------------------------------------------------
    def capture(self, set_id: str) -> PostgresCapture:
        """Snapshots on the connections the preflight prepared (or new ones)."""
        prepared = self._prepared.take()
        capture = PostgresCapture(self)
        try:
            capture._open(prepared)
        except BaseException:
            capture.release()
            raise
        finally:
            _close_all(prepared)  # any the capture did not take over
        return capture

    # -- restore ---------------------------------------------------------------------------------
    def rename_databases(self) -> list[str]:
        """The databases a restore can rename (``--rename-db``)."""
        return list(self.databases)

    def _destination(
        self, dest: Mapping[str, str] | None, recorded: set[str] | None = None, *, offline: bool = False
    ) -> tuple[Server, dict[str, str], str]:
        """(server, source db -> destination db, maintenance database). ``offline``: checks
        only (no password read); ``recorded``: the databases the set holds, when known."""
        if not dest:
            return self.server, {db: db for db in self.databases}, "postgres"
        check_destination_keys(dest, label=self.label)
        params: dict[str, str] = {}
        if dest.get("dsn"):
            try:
                params = {k: str(v) for k, v in conninfo_to_dict(dest["dsn"]).items()}
            except psycopg.ProgrammingError as exc:
                raise UsageError(f"{self.label}: bad destination DSN: {_message(exc)}") from None
        for key in ("host", "port", "user"):
            if dest.get(key):
                params[key] = dest[key]
        password = dest.get("password") or params.pop("password", None)
        for key, value in self.server.params.items():
            params.setdefault(key, value)
        dbname = params.pop("dbname", None)
        # the DSN's dbname names the destination of a single database; with several it is
        # only where to connect (each one goes into its own name, or its rename)
        database = dest.get("database") or (dbname if len(self.databases) == 1 else None)
        given = {**dest, "database": database} if database else dict(dest)
        names = destination_names(
            given,
            self.databases,
            configured=self.databases,
            label=self.label,
            limit=63,
            reserved=_SYSTEM_DATABASES,
            recorded=recorded,
        )
        if password is None and params.get("user") == self.server.params.get("user") and not offline:
            password = self.server.password
        maintenance = dbname if dbname and len(self.databases) > 1 else "postgres"
        return Server(params, given_password=password), names, maintenance

    def placed(self, dest: Mapping[str, str] | None) -> PostgresTarget:
        """This target as a restore into ``dest`` leaves it: that server, each database under
        its destination name (a drill reads, checks and drops the copy through it)."""
        server, names, _ = self._destination(dest)
        databases = [names[db] for db in self.databases]
        return PostgresTarget(self.name, server, databases, self.include, self.coordinator_namespace,
                              self.jobs, self.bin_dir, self.system_namespace)  # fmt: skip

    def places(self) -> set[tuple[str, ...]]:
        """Where this target's data lives, one entry per database: a drill place equal to one
        of another target's (production) is refused."""
        host = host_key(self.server.params.get("host", ""))
        port = self.server.params.get("port", "5432")
        return {(KIND, host, port, db) for db in self.databases}

    def check_destination(self, dest: Mapping[str, str] | None, record: Recorded | None = None) -> None:
        """Refuse (UsageError, one line) destination settings that do not parse or a rename
        that does not fit the target (or the set's ``record``), contacting nothing."""
        self._destination(dest, None if record is None else _recorded(record), offline=True)

    def probe_destination(self, dest: Mapping[str, str] | None, force: bool, record: Recorded) -> None:
        """Reach the destination server and refuse a destination database holding any user
        relation (unless ``force``): before a restore job exists and before the set is verified."""
        server, names, maintenance = self._destination(dest, _recorded(record))
        with self._maintenance(server, maintenance) as conn:
            self._refuse_non_empty(conn, server, [names[db] for db in sorted(_recorded(record))], force)

    def _refuse_non_empty(
        self, conn: psycopg.Connection[Any], server: Server, databases: list[str], force: bool
    ) -> set[str]:
        """The destination databases that exist; refuses a non-empty one unless ``force``."""
        try:
            existing = {
                str(r[0])
                for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (databases,)
                )
            }
        except psycopg.Error as exc:
            raise self.error(f"{server.address()}: {_message(exc)}") from None
        for db in databases:
            if db in existing and not force:
                found = self._first_relation(server, db)
                if found:
                    raise self.error(
                        f'destination database "{db}" on {server.address()} is not '
                        f"empty (it has {found}); use --force to overwrite"
                    )
        return existing

    def _maintenance(self, server: Server, preferred: str) -> psycopg.Connection[Any]:
        """A connection to run CREATE DATABASE from: ``preferred`` (postgres, or the DSN's
        dbname), else template1 (a server may have dropped postgres). When both fail, the
        error is the first one: the database the user gave or expects, not template1 (a
        wrong password or user fails the same on both)."""
        try:
            return self.connect(preferred, server)
        except TargetError as first:
            if preferred == "template1":
                raise
            try:
                return self.connect("template1", server)
            except TargetError:
                raise first from None

    def _first_relation(self, server: Server, db: str) -> str | None:
        with self.connect(db, server) as conn:
            try:
                row = conn.execute(_USER_RELATIONS + " LIMIT 1").fetchone()
            except psycopg.Error as exc:
                raise self.error(f'database "{db}": {_message(exc)}') from None
        return None if row is None else f"{row[0]}.{row[1]}"

    def check_record(self, record: Recorded) -> None:
        """Every database the set names (its artifacts, the position's snapshots, the
        description) is one of the configured ``databases``: a restore writes only
        into those (or, with ``--to``, into the destinations they are renamed to)."""
        scope = Scope(self.label, record)
        covered = set(self.databases)
        for name in record.names:
            where = f"artifact {shown(name, 80)}"
            db = _source_database(name)
            if db is None:
                scope.fail(f"{where} is not <database>.dump or <database>.dir/<file>")
            scope.covered(db, covered, where, "database")
        where = "the position's databases"
        snapshots = scope.mapping(record.position.get("databases"), where, required=False)
        scope.all_covered(snapshots, covered, where, "database")
        described = scope.description(KIND)
        if described is not None:
            scope.described_covered(described, "databases", covered, "database")

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        self.check_record(Recorded.of_reader(src))  # before anything is contacted
        custom: dict[str, str] = {}
        directory: dict[str, list[str]] = {}
        for name in src.names():
            db = _source_database(name)
            if db is None:
                raise self.error(f"unexpected artifact {shown(name)}")
            if "/" in name:
                directory.setdefault(db, []).append(name)
            else:
                custom[db] = name
        server, rename, maintenance = self._destination(dest, {*custom, *directory})
        # databases already restored by an interrupted run of this job are skipped
        sources = [db for db in (*custom, *directory) if not src.journal.is_done(f"database/{db}")]
        if not sources:
            return
        # check every destination before touching any; one this job started filling before
        # it was interrupted is ours to finish (restored again with --clean --if-exists)
        started = {db for db in sources if src.journal.is_done(f"database/{db}/started")}
        fresh = [rename[db] for db in sources if db not in started]
        with self._maintenance(server, maintenance) as conn:
            existing = self._refuse_non_empty(conn, server, fresh, force)
            existing |= self._refuse_non_empty(conn, server, [rename[db] for db in started], True)
            for db in sources:
                if rename[db] not in existing:
                    try:
                        conn.execute(
                            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                                sql.Identifier(rename[db])
                            )
                        )
                    except psycopg.Error as exc:
                        raise self.error(
                            f'cannot create database "{rename[db]}" on {server.address()}: '
                            f"{_message(exc)}"
                        ) from None
        pg_restore = self.tool("pg_restore")
        for db in sources:
            argv = [
                pg_restore,
                "-d", server.conninfo(rename[db]),
                "--no-owner",
                "--exit-on-error",
                "--no-password",
            ]  # fmt: skip
            if force or db in started:
                argv += ["--clean", "--if-exists"]
            src.journal.mark_done(f"database/{db}/started", {"database": rename[db]})
            if db in custom:
                with src.open(custom[db]) as stream:
                    run_from_stream(
                        [*argv, "--single-transaction", "-Fc"],
                        stream,
                        culprit=self.label,
                        env=server.env(),
                    )
            else:  # streamed into pg_restore's pipes (see targets.postgres.directory)
                argv += ["-Fd", "-j", str(self.jobs)]
                restore_directory(src, directory[db], argv, culprit=self.label, env=server.env())
            src.journal.mark_done(f"database/{db}", {"database": rename[db]})


def _recorded(record: Recorded) -> set[str]:
    """The databases a set's record holds."""
    return {db for name in record.names if (db := _source_database(name)) is not None}


def _source_database(name: str) -> str | None:
    """The database an artifact name belongs to (``<db>.dump``, ``<db>.dir/<file>``), or None."""
    head, sep, rest = name.partition("/")
    if not sep and name.endswith(".dump"):
        return name[: -len(".dump")]
    if sep and head.endswith(".dir") and rest:
        return head[: -len(".dir")]
    return None


def _close_all(conns: Mapping[str, psycopg.Connection[Any]]) -> None:
    for conn in conns.values():
        with contextlib.suppress(psycopg.Error):
            conn.close()


def from_config(name: str, conf: Mapping[str, Any]) -> PostgresTarget:
    culprit = f'target "{name}"'
    check_keys(conf, _KEYS, culprit=culprit)
    host, port, user, secret = server_settings(conf, port=5432, user="postgres", culprit=culprit)
    databases = setting_str_list(conf, "databases", culprit=culprit, required=True)
    coordinator = setting_optional_name(conf, "coordinator_namespace", "coordinator", culprit=culprit)
    system = setting_optional_name(conf, "system_namespace", "scalardb", culprit=culprit)
    include = Include()
    for entry in setting_str_list(conf, "include", culprit=culprit):
        schema, dot, table = entry.partition(".")
        if not schema or (dot and (not table or "." in table)):
            raise UsageError(f"{culprit}: include entry {entry!r} is not a schema or schema.table")
        if dot:
            include.tables.add((schema, table))
        else:
            include.schemas.add(schema)
    if not include.everything:
        include.schemas |= {n for n in (coordinator, system) if n}
    jobs = setting_int(conf, "jobs", 1, culprit=culprit, minimum=1, maximum=64)
    bin_dir = setting_opt_str(conf, "bin_dir", culprit=culprit)
    server = Server({"host": host, "port": str(port), "user": user}, secret_conf=secret, culprit=culprit)
    # -- mode = "restore-point" (targets.sql.restore_points): no dump, a named point in the WAL
    mode = read_mode(conf, culprit)
    if mode != RESTORE_POINT:
        if "archive_wait" in conf:
            raise UsageError(f'{culprit}: archive_wait applies to mode = "{RESTORE_POINT}" only')
        return PostgresTarget(name, server, databases, include, coordinator, jobs, bin_dir, system)
    if "jobs" in conf:  # nothing is dumped: a silent no-op setting would mislead
        raise UsageError(f'{culprit}: jobs does not apply to mode = "{RESTORE_POINT}": nothing is dumped')
    if conf.get("include") is not None:
        raise UsageError(
            f'{culprit}: include does not apply to mode = "{RESTORE_POINT}": a restore point covers'
            " the whole server"
        )
    # imported here: that module imports this one
    from txbackup.targets.postgres.restore_point import PostgresPointTarget

    target = PostgresPointTarget(name, server, databases, include, coordinator, jobs, bin_dir, system)
    target.archive_wait_s = setting_duration(conf, "archive_wait", "5m", culprit=culprit, minimum=1.0)
    return target
