"""Where the demo bank keeps its money: one ``Store`` per database.

Each database holds ``accounts(id, balance)`` and ``transfers(transfer_id,
account_id, amount)``: the bank's side of every transfer that touched it
(negative for a debit, positive for a credit). A ``Store`` runs the bank's
local transactions on one database; a ``Database`` says where one lives and
can make an empty sibling of it (to restore into) or drop it.

Kinds: SQLite (WAL mode, the embedded default), PostgreSQL (psycopg) and
MariaDB/MySQL (pymysql); the drivers of the server databases are imported only
when used, so the demo needs nothing but the package.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from txbackup.errors import TxbackupError

OPENING_BALANCE = 1000
"""Every account opens with this much money."""

T = TypeVar("T")


class BankError(TxbackupError):
    """The bank's databases could not be set up or read."""


# -- stores: one database of the bank ---------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """What one database holds, read in one transaction."""

    store: str
    accounts: int
    balance: int
    transfers: dict[str, int]


class Store(ABC):
    """One database of the bank, reached through a small pool of connections.

    Connections are in autocommit mode; transactions are explicit statements
    (``begin_write`` / ``begin_read``, then COMMIT). Methods are blocking and
    thread-safe: the service runs them in worker threads.
    """

    kind: ClassVar[str]
    placeholder: ClassVar[str] = "%s"
    begin_write: ClassVar[str] = "BEGIN"
    begin_read: ClassVar[str] = "BEGIN"

    def __init__(self, name: str) -> None:
        self.name = name
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._open: list[Any] = []
        self._lock = threading.Lock()

    @abstractmethod
    def _connect(self) -> Any:
        """A new DB-API connection in autocommit mode."""

    def _retryable(self, exc: BaseException) -> bool:
        """Is ``exc`` a transient conflict (deadlock, serialization) worth retrying?"""
        return False

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            try:
                conn = self._connect()
            except Exception as exc:
                raise BankError(f"bank database {self.name}: cannot connect: {exc}") from exc
            with self._lock:
                self._open.append(conn)
        healthy = False
        try:
            yield conn
            healthy = True
        finally:
            if healthy:
                self._idle.put(conn)
            else:
                self._discard(conn)

    def _discard(self, conn: Any) -> None:
        with self._lock:
            if conn in self._open:
                self._open.remove(conn)
        with contextlib.suppress(Exception):
            conn.close()

    def _transaction(self, begin: str, work: Callable[[Any], T], attempts: int = 5) -> T:
        for attempt in range(1, attempts + 1):
            with self._connection() as conn:
                cur = conn.cursor()
                try:
                    cur.execute(begin)
                    result = work(cur)
                    cur.execute("COMMIT")
                    return result
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        cur.execute("ROLLBACK")
                    if attempt < attempts and self._retryable(exc):
                        time.sleep(0.005 * attempt)
                        continue
                    raise
                finally:
                    with contextlib.suppress(Exception):
                        cur.close()
        raise AssertionError("unreachable")

    def execute(self, *statements: str) -> None:
        """Run statements outside any explicit transaction (DDL)."""
        with self._connection() as conn:
            cur = conn.cursor()
            try:
                for statement in statements:
                    cur.execute(statement)
            finally:
                cur.close()

    def create(self, accounts: Sequence[int], opening: int = OPENING_BALANCE) -> None:
        """Create the tables and open ``accounts`` with ``opening`` each."""
        p = self.placeholder
        self.execute(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL)",
            "CREATE TABLE transfers (transfer_id VARCHAR(32) PRIMARY KEY, "
            "account_id INTEGER NOT NULL, amount BIGINT NOT NULL)",
        )

        def work(cur: Any) -> None:
            cur.executemany(
                f"INSERT INTO accounts (id, balance) VALUES ({p}, {p})", [(a, opening) for a in accounts]
            )

        self._transaction(self.begin_write, work)

    def move(self, transfer_id: str, account: int, amount: int) -> None:
        """One local transaction: add ``amount`` (negative: a debit) to ``account``
        and record this database's side of the transfer."""
        p = self.placeholder

        def work(cur: Any) -> None:
            cur.execute(f"UPDATE accounts SET balance = balance + {p} WHERE id = {p}", (amount, account))
            if cur.rowcount != 1:
                raise BankError(f"bank database {self.name}: no account {account}")
            cur.execute(
                f"INSERT INTO transfers (transfer_id, account_id, amount) VALUES ({p}, {p}, {p})",
                (transfer_id, account, amount),
            )

        self._transaction(self.begin_write, work)

    def ledger(self) -> Ledger:
        """Accounts, total balance and every transfer row, read in one transaction."""

        def work(cur: Any) -> Ledger:
            cur.execute("SELECT count(*), coalesce(sum(balance), 0) FROM accounts")
            count, total = cur.fetchone()
            cur.execute("SELECT transfer_id, amount FROM transfers")
            rows = {str(tid): int(amount) for tid, amount in cur.fetchall()}
            return Ledger(self.name, int(count), int(total), rows)

        try:
            return self._transaction(self.begin_read, work)
        except BankError:
            raise
        except Exception as exc:
            raise BankError(f"bank database {self.name}: cannot read the books: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()


class SqliteStore(Store):
    """An SQLite file in WAL mode; writes are serialized in-process (no busy waits)."""

    kind = "sqlite"
    placeholder = "?"
    begin_write = "BEGIN IMMEDIATE"

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self._write_lock = threading.Lock()

    def _connect(self) -> Any:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def move(self, transfer_id: str, account: int, amount: int) -> None:
        with self._write_lock:
            super().move(transfer_id, account, amount)


class PostgresStore(Store):
    kind = "postgres"
    begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self, name: str, conninfo: str) -> None:
        super().__init__(name)
        self.conninfo = conninfo

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)

    def _retryable(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected)


class MariaStore(Store):
    kind = "mysql"
    begin_write = "START TRANSACTION"
    begin_read = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name)
        self.params = dict(params)

    def _connect(self) -> Any:
        import pymysql

        return pymysql.connect(**self.params, autocommit=True, connect_timeout=10, charset="utf8mb4")

    def _retryable(self, exc: BaseException) -> bool:
        import pymysql

        # 1213: deadlock, 1205: lock wait timeout
        return isinstance(exc, pymysql.err.OperationalError) and exc.args[:1] in ((1213,), (1205,))


# -- where a store lives ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SqliteDatabase:
    """An SQLite file of the bank."""

    name: str
    path: str
    kind: ClassVar[str] = "sqlite"

    def store(self) -> Store:
        return SqliteStore(self.name, self.path)

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path + suffix)


@dataclass(frozen=True)
class PostgresDatabase:
    """A PostgreSQL database of the bank (``admin_db``: where CREATE/DROP DATABASE run)."""

    name: str
    host: str
    port: int
    user: str
    password: str
    dbname: str
    admin_db: str = "postgres"
    kind: ClassVar[str] = "postgres"

    def conninfo(self, dbname: str | None = None) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=str(self.port),
            user=self.user,
            password=self.password,
            dbname=dbname or self.dbname,
        )

    def store(self) -> Store:
        return PostgresStore(self.name, self.conninfo())

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.conninfo(self.admin_db), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.encode())

    def create_empty(self, dbname: str) -> PostgresDatabase:
        """A new, empty database of the same name (for the bank) on the same server."""
        self._admin(f'CREATE DATABASE "{dbname}"')
        return PostgresDatabase(
            self.name, self.host, self.port, self.user, self.password, dbname, self.admin_db
        )

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


@dataclass(frozen=True)
class MariaDatabase:
    """A MariaDB (or MySQL) database of the bank."""

    name: str
    host: str
    port: int
    user: str
    password: str
    database: str
    kind: ClassVar[str] = "mysql"

    def params(self, database: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        if database is not None:
            params["database"] = database
        return params

    def store(self) -> Store:
        return MariaStore(self.name, self.params(self.database))

    def _admin(self, sql: str) -> None:
        import pymysql

        conn = pymysql.connect(**self.params(), autocommit=True, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create_empty(self, database: str) -> MariaDatabase:
        self._admin(f"CREATE DATABASE `{database}`")
        return MariaDatabase(self.name, self.host, self.port, self.user, self.password, database)

    def drop(self) -> None:
        self._admin(f"DROP DATABASE IF EXISTS `{self.database}`")


Database = SqliteDatabase | PostgresDatabase | MariaDatabase


def sqlite_databases(folder: str | Path, names: Sequence[str] = ("bank_a", "bank_b")) -> list[Database]:
    """The embedded default: one SQLite file per bank database in ``folder``."""
    return [SqliteDatabase(name, str(Path(folder) / f"{name}.db")) for name in names]
