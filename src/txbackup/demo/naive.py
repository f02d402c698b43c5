"""The naive baseline: copy each database on its own, one after the other, no pause.

Each copy is consistent on its own (SQLite's online-backup API, ``pg_dump``,
``mariadb-dump --single-transaction``) but the copies are taken at different
instants, so a transfer between two databases may be in one copy and not in
the other. This is what txbackup exists to avoid; the demo and the tests show
the difference.

DynamoDB has no dump: its copy is a Scan of each table, one after the other,
into a JSON file, restored by writing every item into new tables. A Scan is
not a snapshot, so that copy is not even consistent on its own.

Cassandra's copy is the same kind of thing: a full-table ``SELECT`` of each
table (accounts, transfers, the coordinator's states), one after the other, into
a JSON file. It is not loaded anywhere: its books are read from the file itself
(``naive_ledgers``), which is what loading it into fresh tables and reading them
back would give, without the schema changes. (A ``nodetool snapshot`` of each
node at its own moment, no pause, would be the other naive way: consistent
within a table, but taken at another instant than the other databases' copies,
which is what tears transfers; restoring it means truncating the live tables.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txbackup import procs
from txbackup.demo.stores import (
    DYNAMO_KEYS,
    CassandraDatabase,
    Database,
    DynamoDatabase,
    Ledger,
    MariaDatabase,
    PostgresDatabase,
    SqliteDatabase,
    cassandra_ledger,
    dynamo_put_all,
    dynamo_scan,
)
from txbackup.errors import TxbackupError


@dataclass(frozen=True)
class NaiveCopy:
    """One copy file per database, and how long copying them took (measured)."""

    files: dict[str, str]
    """database name -> copy file"""
    ms: int
    """From the start of the first copy to the end of the last."""
    read_directly: frozenset[str] = field(default_factory=frozenset)
    """Databases whose copy is not loaded anywhere but read by ``naive_ledgers`` (Cassandra)."""


def naive_copy(databases: Sequence[Database], folder: str | Path) -> NaiveCopy:
    """Copy every database on its own, in order, into ``folder`` (blocking)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    direct: set[str] = set()
    started = time.monotonic()
    for db in databases:
        if isinstance(db, SqliteDatabase):
            path = out / f"{db.name}.sqlite"
            _copy_sqlite(db, str(path))
        elif isinstance(db, PostgresDatabase):
            path = out / f"{db.name}.sql"
            _dump_postgres(db, str(path))
        elif isinstance(db, DynamoDatabase):
            path = out / f"{db.name}.json"
            _scan_dynamodb(db, str(path))
        elif isinstance(db, CassandraDatabase):
            path = out / f"{db.name}.json"
            _select_cassandra(db, str(path))
            direct.add(db.name)
        else:
            path = out / f"{db.name}.sql"
            _dump_mariadb(db, str(path))
        files[db.name] = str(path)
    return NaiveCopy(files, round((time.monotonic() - started) * 1000), frozenset(direct))


def naive_restore(copy: NaiveCopy, destinations: Mapping[str, Database]) -> None:
    """Load each copy into its (empty) destination database, by database name (the
    copies ``naive_ledgers`` reads are not loaded: they need no destination)."""
    for name, file in copy.files.items():
        if name in copy.read_directly:
            continue
        db = destinations[name]
        if isinstance(db, SqliteDatabase):
            _restore_sqlite(file, db)
        elif isinstance(db, PostgresDatabase):
            _load_postgres(file, db)
        elif isinstance(db, DynamoDatabase):
            _load_dynamodb(file, db)
        elif isinstance(db, MariaDatabase):
            _load_mariadb(file, db)
        else:
            raise TxbackupError(f"{_culprit(db)}: a {db.kind} copy is read, not loaded (naive_ledgers)")


def naive_ledgers(copy: NaiveCopy) -> list[Ledger]:
    """The books of the copies that are read from their files (Cassandra's SELECT copies)."""
    ledgers = []
    for name in sorted(copy.read_directly):
        with open(copy.files[name]) as source:
            data = json.load(source)
        if data.get("kind") != "cassandra-select":
            raise TxbackupError(f"naive copy of {name}: {copy.files[name]} is not a Cassandra SELECT copy")
        ledgers.append(cassandra_ledger(name, data["accounts"], data["transfers"]))
    return ledgers


def _culprit(db: Database) -> str:
    return f"naive copy of {db.name}"


def _copy_sqlite(db: SqliteDatabase, path: str) -> None:
    source = sqlite3.connect(db.path)
    try:
        dest = sqlite3.connect(path)
        try:
            source.backup(dest)  # one step: a consistent copy of this file alone
        finally:
            dest.close()
    finally:
        source.close()


def _restore_sqlite(file: str, db: SqliteDatabase) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(db.path)), exist_ok=True)
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(db.path + suffix)
    shutil.copyfile(file, db.path)


def _pg_args(db: PostgresDatabase) -> list[str]:
    return ["--host", db.host, "--port", str(db.port), "--username", db.user, "--no-password"]


def _dump_postgres(db: PostgresDatabase, path: str) -> None:
    tool = procs.find_tool("pg_dump", culprit=_culprit(db))
    argv = [tool, *_pg_args(db), "--format=plain", "--no-owner", "--no-privileges", "--dbname", db.dbname]
    with open(path, "wb") as out:
        procs.run_to_stream(argv, out, culprit=_culprit(db), env={"PGPASSWORD": db.password})


def _load_postgres(file: str, db: PostgresDatabase) -> None:
    tool = procs.find_tool("psql", culprit=_culprit(db))
    argv = [tool, *_pg_args(db), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname", db.dbname, "-f", file]
    procs.run(argv, culprit=_culprit(db), env={"PGPASSWORD": db.password})


def _maria_args(db: MariaDatabase) -> list[str]:
    return ["--protocol=TCP", f"--host={db.host}", f"--port={db.port}", f"--user={db.user}"]


def _dump_mariadb(db: MariaDatabase, path: str) -> None:
    tool = procs.find_tool("mariadb-dump", culprit=_culprit(db), alternatives=("mysqldump",))
    argv = [tool, "--no-defaults", *_maria_args(db), "--single-transaction", "--skip-dump-date", db.database]
    with open(path, "wb") as out:
        procs.run_to_stream(argv, out, culprit=_culprit(db), env={"MYSQL_PWD": db.password})


def _load_mariadb(file: str, db: MariaDatabase) -> None:
    tool = procs.find_tool("mariadb", culprit=_culprit(db), alternatives=("mysql",))
    argv = [tool, "--no-defaults", *_maria_args(db), db.database]
    with open(file, "rb") as source:
        procs.run_from_stream(argv, source, culprit=_culprit(db), env={"MYSQL_PWD": db.password})


def _scan_dynamodb(db: DynamoDatabase, path: str) -> None:
    """Scan each table in turn (items as DynamoDB JSON, by the bank's table names)."""
    client = db.client()
    try:
        tables = {base: list(dynamo_scan(client, db.table(base))) for base in DYNAMO_KEYS}
    except Exception as exc:
        raise TxbackupError(f"{_culprit(db)}: scan failed: {exc}") from exc
    finally:
        client.close()
    with open(path, "w") as out:
        json.dump({"kind": "dynamodb-scan", "tables": tables}, out)


def _load_dynamodb(file: str, db: DynamoDatabase) -> None:
    """Create the tables (they must not exist) and write every item of the copy into them."""
    with open(file) as source:
        tables: dict[str, list[dict[str, Any]]] = json.load(source)["tables"]
    client = db.client()
    try:
        db.create_tables(client)
        for base, items in tables.items():
            dynamo_put_all(client, db.table(base), items, _culprit(db))
    except TxbackupError:
        raise
    except Exception as exc:
        raise TxbackupError(f"{_culprit(db)}: load failed: {exc}") from exc
    finally:
        client.close()


def _select_cassandra(db: CassandraDatabase, path: str) -> None:
    """SELECT every row of each table in turn (not a snapshot), into a JSON file."""
    try:
        session = db.connect()
        try:
            accounts, transfers, states = db.read_tables(session)
        finally:
            session.cluster.shutdown()
    except TxbackupError:
        raise
    except Exception as exc:
        raise TxbackupError(f"{_culprit(db)}: SELECT failed: {exc}") from exc
    copy = {
        "kind": "cassandra-select",
        "tables": [db.accounts_table, db.transfers_table, db.coordinator_table],
        "accounts": accounts,
        "transfers": transfers,
        "states": states,
    }
    with open(path, "w") as out:
        json.dump(copy, out)
