"""Where the demo bank keeps its money: one ``Store`` per database.

Each database holds ``accounts(id, balance)`` and ``transfers(transfer_id,
account_id, amount)``: the bank's side of every transfer that touched it
(negative for a debit, positive for a credit). A ``Store`` runs the bank's
local transactions on one database; a ``Database`` says where one lives and
can make an empty sibling of it (to restore into) or drop it.

Kinds: SQLite (WAL mode, the embedded default), PostgreSQL (psycopg),
MariaDB/MySQL (pymysql) and DynamoDB (boto3; the tables ``bank.accounts`` and
``bank.transfers``, named as ScalarDB names them, plus ScalarDB's coordinator
table ``coordinator.state``); the drivers of the server databases are imported
only when used, so the demo needs nothing but the package.
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
from dataclasses import dataclass, field, replace
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
    """One database of the bank: its local transactions. Methods are blocking and
    thread-safe: the service runs them in worker threads."""

    kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def create(self, accounts: Sequence[int], opening: int = OPENING_BALANCE) -> None:
        """Create the tables and open ``accounts`` with ``opening`` each."""

    @abstractmethod
    def move(self, transfer_id: str, account: int, amount: int) -> None:
        """One local transaction: add ``amount`` (negative: a debit) to ``account``
        and record this database's side of the transfer."""

    @abstractmethod
    def ledger(self) -> Ledger:
        """Accounts, total balance and every transfer row, read in one go."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (the store is not used again)."""


class SqlStore(Store):
    """One SQL database of the bank, reached through a small pool of connections.

    Connections are in autocommit mode; transactions are explicit statements
    (``begin_write`` / ``begin_read``, then COMMIT). Methods are blocking and
    thread-safe: the service runs them in worker threads.
    """

    placeholder: ClassVar[str] = "%s"
    begin_write: ClassVar[str] = "BEGIN"
    begin_read: ClassVar[str] = "BEGIN"

    def __init__(self, name: str) -> None:
        super().__init__(name)
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


class SqliteStore(SqlStore):
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


class PostgresStore(SqlStore):
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


class MariaStore(SqlStore):
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


class DynamoStore(Store):
    """The bank's DynamoDB tables: each side of a transfer is one TransactWriteItems
    (the balance update and the transfer row, atomic within DynamoDB, as ScalarDB's
    per-record writes are).

    Writes go one at a time from this process: moto, the test double, applies a
    TransactWriteItems without isolation (concurrent ones can lose updates, and a
    cancelled one rolls back whole tables), and serializing costs nothing there (its
    work is CPU-bound). DynamoDB itself would cancel conflicting transactions with
    TransactionConflict, which is retried. The ledger is two Scans, not a snapshot:
    read it when no transfer runs (a restored copy, or after the load).
    """

    kind = "dynamodb"

    def __init__(self, db: DynamoDatabase) -> None:
        super().__init__(db.name)
        self.db = db
        self._client: Any = db.client()
        self._write_lock = threading.Lock()

    def create(self, accounts: Sequence[int], opening: int = OPENING_BALANCE) -> None:
        self.db.create_tables(self._client)
        items = [{"id": {"N": str(a)}, "balance": {"N": str(opening)}} for a in accounts]
        dynamo_put_all(self._client, self.db.accounts_table, items, self.name)

    def move(self, transfer_id: str, account: int, amount: int) -> None:
        request: dict[str, Any] = {
            "TransactItems": [
                {
                    "Update": {
                        "TableName": self.db.accounts_table,
                        "Key": {"id": {"N": str(account)}},
                        "UpdateExpression": "SET balance = balance + :amount",
                        "ConditionExpression": "attribute_exists(id)",
                        "ExpressionAttributeValues": {":amount": {"N": str(amount)}},
                    }
                },
                {
                    "Put": {
                        "TableName": self.db.transfers_table,
                        "Item": {
                            "transfer_id": {"S": transfer_id},
                            "account_id": {"N": str(account)},
                            "amount": {"N": str(amount)},
                        },
                        "ConditionExpression": "attribute_not_exists(transfer_id)",
                    }
                },
            ],
            # the SDK's own retries of this request are then idempotent
            "ClientRequestToken": f"{transfer_id}-{'d' if amount < 0 else 'c'}",
        }
        attempts = 5
        with self._write_lock:
            for attempt in range(1, attempts + 1):
                try:
                    self._client.transact_write_items(**request)
                    return
                except Exception as exc:
                    reasons = _cancellation_reasons(exc)
                    if reasons[:1] == ["ConditionalCheckFailed"]:
                        raise BankError(f"bank database {self.name}: no account {account}") from None
                    if "TransactionConflict" in reasons and attempt < attempts:
                        time.sleep(0.005 * attempt)
                        continue
                    raise BankError(f"bank database {self.name}: transfer {transfer_id}: {exc}") from exc

    def ledger(self) -> Ledger:
        try:
            count = total = 0
            for item in dynamo_scan(self._client, self.db.accounts_table):
                count += 1
                total += int(item["balance"]["N"])
            rows = {
                str(item["transfer_id"]["S"]): int(item["amount"]["N"])
                for item in dynamo_scan(self._client, self.db.transfers_table)
            }
        except Exception as exc:
            raise BankError(f"bank database {self.name}: cannot read the books: {exc}") from exc
        return Ledger(self.name, count, total, rows)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def _cancellation_reasons(exc: BaseException) -> list[str]:
    """The per-item codes of a cancelled TransactWriteItems ("None" where an item was fine)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return []
    return [str(r.get("Code", "None")) for r in response.get("CancellationReasons", [])]


def dynamo_scan(client: Any, table: str) -> Iterator[dict[str, Any]]:
    """Every item of ``table`` (strongly consistent Scan, page by page; not a snapshot)."""
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        yield from page.get("Items", [])


def dynamo_put_all(client: Any, table: str, items: Sequence[Mapping[str, Any]], culprit: str) -> None:
    """Put ``items`` into ``table`` (BatchWriteItem, 25 at a time, unprocessed ones again)."""
    for start in range(0, len(items), 25):
        pending: dict[str, Any] = {
            table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        }
        for attempt in range(1, 11):
            answer = client.batch_write_item(RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}
            if not pending:
                break
            time.sleep(0.05 * attempt)
        if pending:
            raise BankError(f"bank database {culprit}: table {table}: items left unprocessed")


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


DYNAMO_ACCOUNTS = "bank.accounts"
DYNAMO_TRANSFERS = "bank.transfers"
DYNAMO_COORDINATOR = "coordinator.state"
DYNAMO_KEYS = {
    DYNAMO_ACCOUNTS: ("id", "N"),
    DYNAMO_TRANSFERS: ("transfer_id", "S"),
    DYNAMO_COORDINATOR: ("tx_id", "S"),
}
"""The bank's DynamoDB tables (ScalarDB names them ``<namespace>.<table>``) and their
hash keys; ``coordinator.state`` is ScalarDB's, which a dynamodb target always backs
up: the bank creates it and leaves it empty."""


@dataclass(frozen=True)
class DynamoDatabase:
    """The bank's tables in DynamoDB (or an emulator at ``endpoint_url``).

    No credentials: boto3's default chain. ``suffix`` is appended to every table
    name: the live tables have none, a restored copy ``-<label>``. ``mode`` ..
    ``poll_interval`` are the settings of the dynamodb target backing it up.
    Two DynamoDatabases of one bank need different regions or endpoints.
    """

    name: str
    region: str
    endpoint_url: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    suffix: str = ""
    mode: str = "on-demand"
    min_pause: str = "10s"
    backup_settle: str = "60s"
    poll_interval: str = "10s"
    kind: ClassVar[str] = "dynamodb"

    @property
    def accounts_table(self) -> str:
        return DYNAMO_ACCOUNTS + self.suffix

    @property
    def transfers_table(self) -> str:
        return DYNAMO_TRANSFERS + self.suffix

    @property
    def coordinator_table(self) -> str:
        return DYNAMO_COORDINATOR + self.suffix

    def table(self, base: str) -> str:
        """The name of the bank's table ``base`` (one of ``DYNAMO_KEYS``) here."""
        return base + self.suffix

    def client(self) -> Any:
        """A new boto3 DynamoDB client (thread-safe once made)."""
        try:
            import boto3  # type: ignore[import-untyped]
            import botocore.config  # type: ignore[import-untyped]
        except ImportError as exc:
            raise BankError(f"bank database {self.name}: DynamoDB needs boto3: {exc}") from None
        session = boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60
        )
        return session.client("dynamodb", endpoint_url=self.endpoint_url, config=config)

    def store(self) -> Store:
        return DynamoStore(self)

    def create_tables(self, client: Any = None) -> None:
        """Create the bank's tables that do not exist yet (on demand), and wait until ACTIVE."""
        if client is None:
            made = self.client()
            try:
                self.create_tables(made)
            finally:
                made.close()
            return
        for base, (key, kind) in DYNAMO_KEYS.items():
            table = self.table(base)
            try:
                client.create_table(
                    TableName=table,
                    KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": key, "AttributeType": kind}],
                    BillingMode="PAY_PER_REQUEST",
                )
            except client.exceptions.ResourceInUseException:
                pass  # there already (the coordinator table may be shared)
            except Exception as exc:
                raise BankError(f"bank database {self.name}: cannot create table {table}: {exc}") from exc
        for base in DYNAMO_KEYS:
            waiter = client.get_waiter("table_exists")
            waiter.wait(TableName=self.table(base), WaiterConfig={"Delay": 1, "MaxAttempts": 300})

    def with_suffix(self, suffix: str) -> DynamoDatabase:
        """The same tables named with ``suffix`` (nothing is created: a restore makes them)."""
        return replace(self, suffix=suffix)

    def drop(self) -> None:
        client = self.client()
        try:
            for base in DYNAMO_KEYS:
                with contextlib.suppress(client.exceptions.ResourceNotFoundException):
                    client.delete_table(TableName=self.table(base))
        finally:
            client.close()


Database = SqliteDatabase | PostgresDatabase | MariaDatabase | DynamoDatabase


def sqlite_databases(folder: str | Path, names: Sequence[str] = ("bank_a", "bank_b")) -> list[Database]:
    """The embedded default: one SQLite file per bank database in ``folder``."""
    return [SqliteDatabase(name, str(Path(folder) / f"{name}.db")) for name in names]
