"""SQLite databases shaped exactly as ScalarDB's Consensus Commit leaves them, written by
the same protocol steps, so the audit can be tested on torn and consistent copies.

The layout is ScalarDB 3.13's JDBC layout on SQLite (``RdbEngineSqlite``: namespace
``ns`` -> table ``ns$table``): every store has ``<ns>$accounts`` with the metadata
columns of ``consensuscommit/Attribute.java`` and ``scalardb$metadata`` listing its
tables; the coordinator store has ``coordinator$state``. A transfer follows
``CommitHandler``: prepare every record (PREPARED, before-image kept), write the
coordinator row COMMITTED, then commit the records (COMMITTED, ``tx_committed_at``).
Each step is its own SQLite transaction, so a copy taken between steps sees exactly
what a copy of a real ScalarDB storage would see at that moment.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PREPARED, DELETED, COMMITTED, ABORTED = 1, 2, 3, 4
OPENING = 1000
META = ("tx_id", "tx_state", "tx_version", "tx_prepared_at", "tx_committed_at")


def now_ms() -> int:
    return int(time.time() * 1000)


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    return db


def create_store(path: Path, namespace: str, accounts: int, *, coordinator: bool = False) -> None:
    """A store with ``accounts`` committed accounts (written by one setup transaction)."""
    db = connect(path)
    db.execute(
        f'CREATE TABLE "{namespace}$accounts" (id INTEGER PRIMARY KEY, balance INTEGER,'
        " tx_id TEXT, tx_state INTEGER, tx_version INTEGER, tx_prepared_at BIGINT, tx_committed_at BIGINT,"
        " before_balance INTEGER, before_tx_id TEXT, before_tx_state INTEGER, before_tx_version INTEGER,"
        " before_tx_prepared_at BIGINT, before_tx_committed_at BIGINT)"
    )
    db.execute(
        'CREATE TABLE "scalardb$metadata" (full_table_name TEXT, column_name TEXT, data_type TEXT,'
        " key_type TEXT, clustering_order TEXT, indexed BOOLEAN, ordinal_position INTEGER,"
        " PRIMARY KEY (full_table_name, column_name))"
    )
    db.executemany(
        'INSERT INTO "scalardb$metadata" VALUES (?, ?, ?, ?, NULL, FALSE, ?)',
        [(f"{namespace}.accounts", c, t, k, i) for i, (c, t, k) in enumerate(
            [("id", "INT", "PARTITION"), ("balance", "INT", None)]
            + [(c, "TEXT" if c == "tx_id" else "BIGINT", None) for c in META]
        )],
    )  # fmt: skip
    setup = f"setup-{namespace}"
    stamp = now_ms()
    db.executemany(
        f'INSERT INTO "{namespace}$accounts" (id, balance, tx_id, tx_state, tx_version, tx_prepared_at,'
        " tx_committed_at) VALUES (?, ?, ?, 3, 1, ?, ?)",
        [(i, OPENING, setup, stamp, stamp) for i in range(accounts)],
    )
    if coordinator:
        create_coordinator(db)
    db.close()


def create_coordinator(db: sqlite3.Connection) -> None:
    db.execute(
        'CREATE TABLE IF NOT EXISTS "coordinator$state" (tx_id TEXT PRIMARY KEY, tx_child_ids TEXT,'
        " tx_state INTEGER, tx_created_at BIGINT)"
    )


@dataclass
class Write:
    store: int
    account: int
    delta: int


class ShapedBank:
    """Transfers across SQLite stores with Consensus Commit's on-storage steps.
    ``stores[i]`` holds namespace ``namespaces[i]``; the coordinator is in ``coordinator``."""

    def __init__(self, stores: list[Path], namespaces: list[str], coordinator: Path) -> None:
        self.namespaces = namespaces
        self.dbs = [connect(p) for p in stores]
        self.coord = connect(coordinator)
        create_coordinator(self.coord)
        self.lock = threading.Lock()

    def close(self) -> None:
        for db in [*self.dbs, self.coord]:
            db.close()

    def table(self, store: int) -> str:
        return f'"{self.namespaces[store]}$accounts"'

    def prepare(self, tx: str, writes: list[Write], *, delete: bool = False) -> None:
        stamp = now_ms()
        state = DELETED if delete else PREPARED
        for w in writes:
            db = self.dbs[w.store]
            db.execute(
                f"UPDATE {self.table(w.store)} SET before_balance = balance, before_tx_id = tx_id,"
                " before_tx_state = tx_state, before_tx_version = tx_version,"
                " before_tx_prepared_at = tx_prepared_at, before_tx_committed_at = tx_committed_at,"
                " balance = balance + ?, tx_id = ?, tx_state = ?, tx_version = tx_version + 1,"
                " tx_prepared_at = ?, tx_committed_at = NULL WHERE id = ?",
                (w.delta, tx, state, stamp, w.account),
            )

    def decide(self, tx: str, state: int = COMMITTED, *, children: str | None = None) -> None:
        self.coord.execute(
            'INSERT INTO "coordinator$state" (tx_id, tx_child_ids, tx_state, tx_created_at)'
            " VALUES (?, ?, ?, ?)",
            (tx, children, state, now_ms()),
        )

    def commit_records(self, tx: str, writes: list[Write]) -> None:
        stamp = now_ms()
        for store in sorted({w.store for w in writes}):
            self.dbs[store].execute(
                f"UPDATE {self.table(store)} SET tx_state = 3, tx_committed_at = ? WHERE tx_id = ?",
                (stamp, tx),
            )

    def transfer(self, src: tuple[int, int], dst: tuple[int, int], amount: int, tx: str | None = None) -> str:
        """A whole transfer, every step in order."""
        tx = tx or str(uuid.uuid4())
        writes = [Write(src[0], src[1], -amount), Write(dst[0], dst[1], amount)]
        with self.lock:
            self.prepare(tx, writes)
            self.decide(tx)
            self.commit_records(tx, writes)
        return tx

    def balances(self) -> int:
        return sum(int(db.execute(f"SELECT sum(balance) FROM {self.table(i)}").fetchone()[0])
                   for i, db in enumerate(self.dbs))  # fmt: skip


def copy_file(src: Path, dst: Path) -> None:
    """A consistent copy of one SQLite file at this instant (the backup API)."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
        b.execute("PRAGMA journal_mode=WAL")
    finally:
        a.close()
        b.close()
