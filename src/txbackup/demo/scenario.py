"""The whole demo run, shared by ``txbackup demo`` and the end-to-end tests.

``BankScenario`` puts the bank over some databases (two or more, of any
kinds) and drives load on it, transfers going round-robin over every ordered
pair of databases; while the load runs it takes txbackup backups (the real
engine: preflight, pause, capture, unpause, export, commit) and naive copies;
each is restored into fresh, empty databases and the books are checked there.

Restores go through the real engine too (``restore_set``), into fresh, empty
databases named with the ``destinations`` mapping (``txbackup restore --to
NAME=DSN``; for DynamoDB ``suffix:-<label>``: new tables next to the live
ones); targets are built from the config dicts a cluster file would hold.

Cassandra is the exception: its target restores into the keyspaces it backed
up, on the cluster it backed up (``nodetool import`` on every node), never into
new keyspaces. So a Cassandra database is restored **in place**: the load must
be stopped first (``restore_backup`` refuses otherwise), its tables are
truncated and replaced by the backup's (``--force``, for that target only; the
others still go to fresh databases), and the books are checked across the
fresh copies of the other databases and the restored Cassandra tables. Take
the backups under load, stop the load, read the live books, then restore and
check each backup in turn: each restore replaces the previous one. (The live
Cassandra data is gone after the first restore.) Its naive copy is a SELECT of
each table into a JSON file, whose books are read from the file
(``naive_ledgers``): nothing is written to Cassandra for it, so naive copies can
be checked while the load runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.config import build_target
from txbackup.demo.bank import (
    GAP_MS,
    Bank,
    BankServer,
    BooksReport,
    LoadDriver,
    LoadStats,
    books_of,
    check_books,
    start_bank_server,
)
from txbackup.demo.naive import NaiveCopy, naive_copy, naive_ledgers, naive_restore
from txbackup.demo.stores import (
    BankError,
    CassandraDatabase,
    Database,
    DynamoDatabase,
    Ledger,
    MariaDatabase,
    PostgresDatabase,
    SqliteDatabase,
    sqlite_databases,
)
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.engine.manifest import Manifest
from txbackup.engine.progress import Reporter, SilentReporter
from txbackup.engine.restore import RestorePlan, restore_set
from txbackup.jobs import JobStore
from txbackup.storage import open_storage
from txbackup.targets.base import Target

Say = Callable[[str], None]


def _quiet(line: str) -> None:
    pass


class PairedLoad(LoadDriver):
    """The load, each request going to the next ordered pair of databases (round-robin
    over all of them: with three databases, A->B, A->C, B->A, B->C, C->A, C->B), accounts
    and amounts at random: every pair is exercised, evenly."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._pairs = list(itertools.permutations(range(len(self.accounts)), 2))
        self._turn = itertools.cycle(self._pairs)

    def _request(self) -> bytes:
        src, dst = next(self._turn)
        body = {
            "from": self._random.choice(self.accounts[src]),
            "to": self._random.choice(self.accounts[dst]),
            "amount": self._random.randint(1, 100),
        }
        return json.dumps(body).encode()


class BankScenario:
    """The bank over ``databases`` (at least two), load on it, backups and copies of it.

    ``work`` holds the storage (``backups/``), the naive copies, restored SQLite
    files and the password files of server targets.
    """

    def __init__(
        self,
        databases: Sequence[Database],
        work: str | Path,
        *,
        clients: int = 8,
        gap_ms: tuple[float, float] = GAP_MS,
        drop_restored: bool = False,
        reporter: Reporter | None = None,
    ) -> None:
        self.databases = list(databases)
        self.work = Path(work)
        self.clients = clients
        self.gap_ms = gap_ms
        self.drop_restored = drop_restored
        self.reporter: Reporter = reporter or SilentReporter()
        self.storage = open_storage(str(self.work / "backups"))
        self.catalog = Catalog(str(self.work / "backups" / "catalog.db"))
        self.jobs = JobStore(self.catalog.path)
        self.targets: list[Target] = [
            build_target(target_config(db, self.work / "secrets"), i) for i, db in enumerate(self.databases)
        ]
        self.server: BankServer | None = None
        self.load: LoadDriver | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.target

    async def start(self) -> None:
        """Create the bank's tables and accounts, serve it, start the load."""
        bank = Bank([db.store() for db in self.databases], gap_ms=self.gap_ms)
        try:
            await asyncio.to_thread(bank.create)
            self.server = await start_bank_server(bank)
        except BaseException:
            await asyncio.to_thread(bank.close)
            raise
        self.load = PairedLoad(self.server.target, bank.all_accounts(), clients=self.clients)
        await self.load.start()

    async def stop(self) -> LoadStats:
        """Stop the load, then the service (running transfers end; nothing stays paused)."""
        stats = LoadStats()
        try:
            if self.load is not None:
                stats = await self.load.stop()
        finally:
            self.load = None
            if self.server is not None:
                server, self.server = self.server, None
                await server.stop()
        return stats

    async def backup(self, min_pause_s: float = 0.0, wait_outstanding: bool = True) -> Manifest:
        """One txbackup backup set of every database, the bank being the application to
        pause. Tests hold the pause (``min_pause_s``) to act inside it, or skip waiting
        for in-flight transfers (``wait_outstanding=False``) to show that it matters."""
        plan = BackupPlan(
            fleet=Fleet([Endpoint.parse(self.endpoint)]),
            targets=self.targets,
            storage=self.storage,
            catalog=self.catalog,
            wait_outstanding=wait_outstanding,
            min_pause_s=min_pause_s,
            reporter=self.reporter,
        )
        return await run_backup(plan)

    async def naive(self, label: str) -> NaiveCopy:
        """Copy each database on its own, one after the other, without pausing."""
        return await asyncio.to_thread(naive_copy, self.databases, self.work / label)

    async def restore_backup(self, manifest: Manifest, label: str) -> BooksReport:
        """Restore the set into fresh databases (named after ``label``) and check the books there.

        Databases restored in place (Cassandra) are overwritten with the set's data:
        only once the load is stopped."""
        in_place = [db for db in self.databases if restores_in_place(db)]
        if in_place and self.server is not None:
            names = ", ".join(db.name for db in in_place)
            raise BankError(f"{names}: restored into the live tables: stop the load first")
        fresh = await asyncio.to_thread(self._fresh, label)

        def plan(names: Sequence[str], force: bool) -> RestorePlan:
            return RestorePlan(
                storage=self.storage,
                manifest=manifest,
                targets=self.targets,
                jobs=self.jobs,
                only=names,
                destinations={db.name: destination(db) for db in fresh if db.name in names},
                force=force,
            )

        def restore() -> None:
            elsewhere = [db.name for db in fresh if db not in in_place]
            if elsewhere:
                restore_set(plan(elsewhere, force=False))
            if in_place:  # same keyspaces: --force truncates the live tables first
                restore_set(plan([db.name for db in in_place], force=True))

        return await self._check_after(restore, fresh)

    async def restore_naive(self, copy: NaiveCopy, label: str) -> BooksReport:
        """Load the naive copies into fresh databases and check the books there (with
        the books of the copies read from their files: Cassandra's)."""
        loaded = [db for db in self.databases if db.name not in copy.read_directly]
        fresh = await asyncio.to_thread(self._fresh, label, loaded)
        return await self._check_after(
            lambda: naive_restore(copy, {db.name: db for db in fresh}), fresh, lambda: naive_ledgers(copy)
        )

    async def live_books(self) -> BooksReport:
        """The books of the live databases (meaningful once the load is stopped)."""
        return await asyncio.to_thread(_books, self.databases)

    async def live_pairs(self) -> dict[tuple[str, str], int]:
        """Whole transfers in the live databases, by (debited, credited) database name."""
        return await asyncio.to_thread(_pairs, self.databases)

    def _fresh(self, label: str, databases: Sequence[Database] | None = None) -> list[Database]:
        """An empty sibling of each database (default: all); one restored in place is itself."""
        made: list[Database] = []
        try:
            for db in self.databases if databases is None else databases:
                made.append(db if restores_in_place(db) else empty_like(db, label, self.work))
        except BaseException:
            for db in made:
                if not restores_in_place(db):
                    with contextlib.suppress(Exception):
                        db.drop()
            raise
        return made

    async def _check_after(
        self,
        restore: Callable[[], object],
        fresh: Sequence[Database],
        more: Callable[[], list[Ledger]] = list,
    ) -> BooksReport:
        """Run ``restore``, then check the books of ``fresh`` (and the ``more`` ledgers)."""

        def work() -> BooksReport:
            try:
                restore()
                return books_of([*_ledgers(fresh), *more()])
            finally:
                if self.drop_restored:
                    for db in fresh:
                        if not restores_in_place(db):  # the live tables: never dropped
                            with contextlib.suppress(Exception):
                                db.drop()

        return await asyncio.to_thread(work)


def restores_in_place(db: Database) -> bool:
    """Does a restore of ``db`` go into its own (live) tables? (Cassandra: the target
    restores into the keyspaces it backed up.)"""
    return isinstance(db, CassandraDatabase)


def _ledgers(databases: Sequence[Database]) -> list[Ledger]:
    stores = [db.store() for db in databases]
    try:
        return [store.ledger() for store in stores]
    finally:
        for store in stores:
            store.close()


def _pairs(databases: Sequence[Database]) -> dict[tuple[str, str], int]:
    return transfer_pairs(_ledgers(databases))


def transfer_pairs(ledgers: Sequence[Ledger]) -> dict[tuple[str, str], int]:
    """How many whole transfers went from each database to each other (by name)."""
    debited: dict[str, str] = {}
    credited: dict[str, str] = {}
    for ledger in ledgers:
        for tid, amount in ledger.transfers.items():
            (debited if amount < 0 else credited)[tid] = ledger.store
    found: dict[tuple[str, str], int] = {}
    for tid, source in debited.items():
        dest = credited.get(tid)
        if dest is not None:
            found[source, dest] = found.get((source, dest), 0) + 1
    return found


def _books(databases: Sequence[Database]) -> BooksReport:
    stores = [db.store() for db in databases]
    try:
        return check_books(stores)
    finally:
        for store in stores:
            store.close()


def empty_like(db: Database, label: str, work: Path) -> Database:
    """A new, empty database of the same kind and name: for SQLite a file of the
    same name in ``work/label``, for a server a new database ``<dbname>_<label>``,
    for DynamoDB the names of new tables ``<table>-<label>`` (not created: a
    restore creates them). Not for Cassandra, which is restored in place."""
    if isinstance(db, CassandraDatabase):
        raise ValueError(f"{db.name}: Cassandra is restored into its own keyspaces, not into new ones")
    if isinstance(db, SqliteDatabase):
        folder = work / label
        folder.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(db.name, str(folder / Path(db.path).name))
    if isinstance(db, DynamoDatabase):
        if db.suffix:
            raise ValueError(f"{db.name}: the live DynamoDB tables of the bank carry no suffix")
        return db.with_suffix(f"-{label}")
    if isinstance(db, PostgresDatabase):
        return db.create_empty(f"{db.dbname}_{label}")
    return db.create_empty(f"{db.database}_{label}")


def target_config(db: Database, secrets: Path) -> dict[str, Any]:
    """The ``[[targets]]`` table of a cluster file for ``db`` (passwords go to a
    file in ``secrets``: the cluster file never holds one)."""
    if isinstance(db, SqliteDatabase):
        return {"name": db.name, "kind": "sqlite", "path": db.path}
    if isinstance(db, DynamoDatabase):
        return _dynamo_config(db, secrets)
    if isinstance(db, CassandraDatabase):
        return _cassandra_config(db, secrets)
    common = {
        "name": db.name,
        "host": db.host,
        "port": db.port,
        "user": db.user,
        "password_file": _secret_file(secrets, f"{db.name}.password", db.password),
    }
    if isinstance(db, PostgresDatabase):
        return {**common, "kind": "postgres", "databases": [db.dbname]}
    assert isinstance(db, MariaDatabase)
    return {**common, "kind": "mysql", "databases": [db.database]}


def _secret_file(secrets: Path, name: str, value: str) -> str:
    """``value`` in the file ``secrets/name`` (mode 0600), written once; its path."""
    secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = secrets / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(value + "\n")
    return str(path)


def _dynamo_config(db: DynamoDatabase, secrets: Path) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "name": db.name,
        "kind": "dynamodb",
        "region": db.region,
        "tables": [db.accounts_table, db.transfers_table],
        "coordinator_table": db.coordinator_table,
        "mode": db.mode,
        "min_pause": db.min_pause,
        "backup_settle": db.backup_settle,
        "poll_interval": db.poll_interval,
    }
    if db.endpoint_url:
        conf["endpoint_url"] = db.endpoint_url
    if db.access_key_id is not None and db.secret_access_key is not None:
        conf["access_key_id_file"] = _secret_file(secrets, f"{db.name}.aws-key-id", db.access_key_id)
        conf["secret_access_key_file"] = _secret_file(secrets, f"{db.name}.aws-secret", db.secret_access_key)
    return conf


def _cassandra_config(db: CassandraDatabase, secrets: Path) -> dict[str, Any]:
    if not db.agents:
        raise ValueError(f"{db.name}: a cassandra target needs the agent of every node (agents=...)")
    conf: dict[str, Any] = {
        "name": db.name,
        "kind": "cassandra",
        "agents": list(db.agents),
        "keyspaces": [db.keyspace],
        "coordinator_keyspace": db.coordinator_keyspace,
        "snapshot_timeout": db.snapshot_timeout,
    }
    if db.agent_token is not None:
        conf["token_file"] = _secret_file(secrets, f"{db.name}.agent-token", db.agent_token)
    return conf


def destination(db: Database) -> str:
    """What ``txbackup restore --to NAME=...`` takes to restore a target into ``db``
    (the password is the target's own: same server, same user)."""
    if isinstance(db, SqliteDatabase):
        return db.path
    if isinstance(db, DynamoDatabase):
        return f"suffix:{db.suffix}"
    if isinstance(db, CassandraDatabase):
        return ",".join(db.agents)  # the agents of the cluster to restore into
    if isinstance(db, PostgresDatabase):
        return f"host={db.host} port={db.port} user={db.user} dbname={db.dbname}"
    return f"mysql://{db.user}@{db.host}:{db.port}/{db.database}"


# -- the embedded demo ------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """What ``txbackup demo`` measured and found."""

    folder: str
    seconds: float
    clients: int
    load: LoadStats
    manifest: Manifest
    naive: NaiveCopy
    txbackup_books: BooksReport
    naive_books: BooksReport
    live_books: BooksReport

    @property
    def ok(self) -> bool:
        return self.txbackup_books.ok

    def to_json(self) -> dict[str, Any]:
        t = self.manifest.timings
        return {
            "ok": self.ok,
            "folder": self.folder,
            "seconds": self.seconds,
            "clients": self.clients,
            "transfers": self.load.to_json(),
            "backup": {
                "set_id": self.manifest.set_id,
                "pause": {
                    "started_at": self.manifest.pause.started_at,
                    "ended_at": self.manifest.pause.ended_at,
                    "duration_ms": t.pause_ms,
                },
                "pausing_ms": t.drain_ms,
                "capture_ms": t.capture_ms,
                "export_ms": t.export_ms,
            },
            "naive_copy_ms": self.naive.ms,
            "books": {
                "txbackup": self.txbackup_books.to_json(),
                "naive": self.naive_books.to_json(),
                "live": self.live_books.to_json(),
            },
        }


async def run_demo(
    work: str | Path,
    seconds: float = 10.0,
    clients: int = 8,
    *,
    reporter: Reporter | None = None,
    say: Say = _quiet,
) -> DemoResult:
    """The embedded demo in ``work`` (an empty folder): two SQLite databases, load for
    ``seconds``, one txbackup backup and one naive copy in the middle of it, both restored."""
    folder = Path(work)
    databases = sqlite_databases(folder / "live")
    (folder / "live").mkdir(parents=True, exist_ok=True)
    scenario = BankScenario(databases, folder, clients=clients, reporter=reporter)
    started = time.monotonic()
    try:
        await scenario.start()
        names = " and ".join(Path(db.path).name for db in databases if isinstance(db, SqliteDatabase))
        say(
            f"bank service on {scenario.endpoint}: accounts split across {names}; "
            f"{clients} clients moving money for {seconds:g} s"
        )
        await asyncio.sleep(seconds * 0.4)
        say("txbackup backup: pause, capture, unpause, export...")
        manifest = await scenario.backup()
        say("naive copy: each database copied on its own, no pause...")
        copy = await scenario.naive("naive-copy")
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
    finally:
        load = await scenario.stop()
    say(f"load stopped after {load.ok} transfers; restoring both into fresh databases...")
    txbackup_books = await scenario.restore_backup(manifest, "restored-txbackup")
    naive_books = await scenario.restore_naive(copy, "restored-naive")
    live = await scenario.live_books()
    return DemoResult(
        folder=str(folder),
        seconds=seconds,
        clients=clients,
        load=load,
        manifest=manifest,
        naive=copy,
        txbackup_books=txbackup_books,
        naive_books=naive_books,
        live_books=live,
    )
