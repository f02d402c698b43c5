"""Where the demo bank keeps its money: one ``Store`` per database.

Each database holds ``accounts(id, balance)`` and ``transfers(transfer_id,
account_id, amount)``: the bank's side of every transfer that touched it
(negative for a debit, positive for a credit). A ``Store`` runs the bank's
local transactions on one database; a ``Database`` says where one lives and
can make an empty sibling of it (to restore into) or drop it.

Kinds: SQLite (WAL mode, the embedded default), PostgreSQL (psycopg),
MariaDB/MySQL (pymysql), DynamoDB (boto3; the tables ``bank.accounts`` and
``bank.transfers``, named as ScalarDB names them, plus ScalarDB's coordinator
table ``coordinator.state``) and Cassandra (cassandra-driver; keyspace ``bank``
with tables ``accounts`` and ``transfers``, plus ScalarDB's ``coordinator.state``);
the drivers of the server databases are imported only when used, so the demo needs
nothing but the package.
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


class CassandraStore(Store):
    """The bank's Cassandra tables: each side of a transfer is one LOGGED BATCH (the
    new balance of the account and the transfer row), which Cassandra applies whole or,
    after a crash, replays whole from its batchlog: atomic (eventually, not isolated)
    within Cassandra, the "local transaction" of this database.

    A regular column cannot be incremented (only counters can, and counters cannot be
    in a batch with other tables), so the balance is read and written back under a lock
    of this process, per account: the bank is the only writer (ScalarDB would use its
    own concurrency control: lightweight transactions and its coordinator table).
    Reads and writes go at QUORUM (= ONE on one node; read-your-writes with any
    replication factor); the driver's client-side timestamps keep a late retry from
    overwriting a newer balance, and the batch writes absolute values, so retrying it
    after a timeout is safe. The ledger is two full-table SELECTs, not a snapshot: read
    it when no transfer runs (a restored copy, or after the load).
    """

    kind = "cassandra"
    LOCKS = 64

    def __init__(self, db: CassandraDatabase) -> None:
        super().__init__(db.name)
        self.db = db
        self._session: Any = db.connect()
        self._locks = [threading.Lock() for _ in range(self.LOCKS)]
        self._prepared: tuple[Any, Any, Any] | None = None
        self._prepare_lock = threading.Lock()

    def _statements(self) -> tuple[Any, Any, Any]:
        """(read balance, write balance, insert transfer), prepared once the tables exist."""
        with self._prepare_lock:
            if self._prepared is None:
                prepare = self._session.prepare
                self._prepared = (
                    prepare(f"SELECT balance FROM {self.db.accounts_table} WHERE id = ?"),
                    prepare(f"UPDATE {self.db.accounts_table} SET balance = ? WHERE id = ?"),
                    prepare(
                        f"INSERT INTO {self.db.transfers_table} (transfer_id, account_id, amount) "
                        "VALUES (?, ?, ?)"
                    ),
                )
            return self._prepared

    def create(self, accounts: Sequence[int], opening: int = OPENING_BALANCE) -> None:
        from cassandra.concurrent import execute_concurrent_with_args  # type: ignore[import-untyped]

        try:
            self.db.create_tables(self._session)
            insert = self._session.prepare(
                f"INSERT INTO {self.db.accounts_table} (id, balance) VALUES (?, ?)"
            )
            rows = [(a, opening) for a in accounts]
            for ok, result in execute_concurrent_with_args(self._session, insert, rows, concurrency=16):
                if not ok:
                    raise result
        except BankError:
            raise
        except Exception as exc:
            raise BankError(f"bank database {self.name}: cannot open the accounts: {exc}") from exc

    def move(self, transfer_id: str, account: int, amount: int) -> None:
        from cassandra.query import BatchStatement, BatchType  # type: ignore[import-untyped]

        read, update, insert = self._statements()
        attempts = 3
        with self._locks[account % self.LOCKS]:
            for attempt in range(1, attempts + 1):
                try:
                    row = self._session.execute(read, (account,)).one()
                    if row is None:
                        raise BankError(f"bank database {self.name}: no account {account}")
                    batch = BatchStatement(batch_type=BatchType.LOGGED)
                    batch.add(update, (int(row.balance) + amount, account))
                    batch.add(insert, (transfer_id, account, amount))
                    self._session.execute(batch)
                    return
                except BankError:
                    raise
                except Exception as exc:
                    if attempt < attempts:
                        time.sleep(0.05 * attempt)
                        continue
                    raise BankError(f"bank database {self.name}: transfer {transfer_id}: {exc}") from exc

    def ledger(self) -> Ledger:
        try:
            return cassandra_ledger(self.name, *self.db.read_tables(self._session)[:2])
        except BankError:
            raise
        except Exception as exc:
            raise BankError(f"bank database {self.name}: cannot read the books: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._session.cluster.shutdown()


def cassandra_ledger(name: str, accounts: Sequence[Sequence[int]], transfers: Mapping[str, int]) -> Ledger:
    """The ledger of ``accounts`` rows ``(id, balance)`` and ``transfers`` (id -> amount)."""
    return Ledger(name, len(accounts), sum(int(balance) for _, balance in accounts), dict(transfers))


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


def _cql_name(name: str) -> str:
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"{name!r} is not a usable Cassandra keyspace or table name")
    return name


@dataclass(frozen=True)
class CassandraDatabase:
    """The bank's tables in a Cassandra cluster: keyspace ``keyspace`` (``accounts`` and
    ``transfers``) and ScalarDB's coordinator table ``<coordinator_keyspace>.state``,
    which a cassandra target always backs up: the bank creates it and leaves it empty.

    ``hosts`` and ``port``: the CQL contact points. ``agents`` (``HOST:PORT``, one per
    node) and ``agent_token``: the ``txbackup agent`` of every node, for the cassandra
    target backing it up. That target restores into the same keyspaces (``nodetool
    import`` on every node, ``--force`` truncating the tables first), never into new
    ones: a restored copy of this database is this database (see ``demo.scenario``).
    """

    name: str
    hosts: tuple[str, ...]
    port: int = 9042
    agents: tuple[str, ...] = ()
    agent_token: str | None = field(default=None, repr=False)
    keyspace: str = "bank"
    coordinator_keyspace: str = "coordinator"
    replication_factor: int = 1
    snapshot_timeout: str = "20s"
    kind: ClassVar[str] = "cassandra"

    @property
    def accounts_table(self) -> str:
        return f"{_cql_name(self.keyspace)}.accounts"

    @property
    def transfers_table(self) -> str:
        return f"{_cql_name(self.keyspace)}.transfers"

    @property
    def coordinator_table(self) -> str:
        return f"{_cql_name(self.coordinator_keyspace)}.state"

    def connect(self) -> Any:
        """A new driver session on ``hosts`` (close it with ``session.cluster.shutdown()``)."""
        try:
            from cassandra import ConsistencyLevel  # type: ignore[import-untyped]
            from cassandra.cluster import (  # type: ignore[import-untyped]
                EXEC_PROFILE_DEFAULT,
                Cluster,
                ExecutionProfile,
            )
            from cassandra.policies import WhiteListRoundRobinPolicy  # type: ignore[import-untyped]
        except ImportError as exc:
            raise BankError(f"bank database {self.name}: Cassandra needs cassandra-driver: {exc}") from None
        profile = ExecutionProfile(
            load_balancing_policy=WhiteListRoundRobinPolicy(list(self.hosts)),
            consistency_level=ConsistencyLevel.QUORUM,
            request_timeout=30,
        )
        cluster = Cluster(
            list(self.hosts),
            port=self.port,
            protocol_version=5,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=10,
            control_connection_timeout=10,
        )
        try:
            return cluster.connect()
        except Exception as exc:
            cluster.shutdown()
            raise BankError(f"bank database {self.name}: cannot connect: {exc}") from exc

    def store(self) -> Store:
        return CassandraStore(self)

    def create_tables(self, session: Any) -> None:
        """Create the keyspaces (if missing) and the tables: the bank's must not exist yet."""
        rf = int(self.replication_factor)
        for keyspace in (self.keyspace, self.coordinator_keyspace):
            session.execute(
                f"CREATE KEYSPACE IF NOT EXISTS {_cql_name(keyspace)} WITH replication = "
                f"{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
            )
        session.execute(f"CREATE TABLE {self.accounts_table} (id int PRIMARY KEY, balance bigint)")
        session.execute(
            f"CREATE TABLE {self.transfers_table} "
            "(transfer_id text PRIMARY KEY, account_id int, amount bigint)"
        )
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {self.coordinator_table} "
            "(tx_id text PRIMARY KEY, tx_state int, tx_created_at bigint)"
        )

    def read_tables(self, session: Any) -> tuple[list[list[int]], dict[str, int], list[list[Any]]]:
        """Every row of the three tables, one full-table SELECT after the other (not a
        snapshot): accounts ``[id, balance]``, transfers ``{id: amount}``, coordinator
        states ``[tx_id, tx_state, tx_created_at]``."""
        accounts = [
            [int(r.id), int(r.balance)]
            for r in session.execute(f"SELECT id, balance FROM {self.accounts_table}")
        ]
        transfers = {
            str(r.transfer_id): int(r.amount)
            for r in session.execute(f"SELECT transfer_id, amount FROM {self.transfers_table}")
        }
        states = [
            [r.tx_id, r.tx_state, r.tx_created_at]
            for r in session.execute(f"SELECT tx_id, tx_state, tx_created_at FROM {self.coordinator_table}")
        ]
        return accounts, transfers, states

    def drop(self) -> None:
        """Drop the bank's keyspace and the coordinator keyspace (the live data: careful)."""
        session = self.connect()
        try:
            for keyspace in (self.keyspace, self.coordinator_keyspace):
                session.execute(f"DROP KEYSPACE IF EXISTS {_cql_name(keyspace)}")
        finally:
            session.cluster.shutdown()


Database = SqliteDatabase | PostgresDatabase | MariaDatabase | DynamoDatabase | CassandraDatabase


def sqlite_databases(folder: str | Path, names: Sequence[str] = ("bank_a", "bank_b")) -> list[Database]:
    """The embedded default: one SQLite file per bank database in ``folder``."""
    return [SqliteDatabase(name, str(Path(folder) / f"{name}.db")) for name in names]
