"""The whole demo run, shared by ``txbackup demo`` and the end-to-end tests.

``BankScenario`` puts the bank over some databases and drives load on it;
while the load runs it takes txbackup backups (the real engine: preflight,
pause, capture, unpause, export, commit) and naive copies; each is restored
into fresh, empty databases and the books are checked there.

Restores go through the real engine too (``restore_set``), into fresh, empty
databases named with the ``destinations`` mapping (``txbackup restore --to
NAME=DSN``); targets are built from the config dicts a cluster file would hold.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    check_books,
    start_bank_server,
)
from txbackup.demo.naive import NaiveCopy, naive_copy, naive_restore
from txbackup.demo.stores import (
    Database,
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
        self.load = LoadDriver(self.server.target, bank.all_accounts(), clients=self.clients)
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
        """Restore the set into fresh databases (named after ``label``) and check the books there."""
        fresh = await asyncio.to_thread(self._fresh, label)
        plan = RestorePlan(
            storage=self.storage,
            manifest=manifest,
            targets=self.targets,
            jobs=self.jobs,
            destinations={db.name: destination(db) for db in fresh},
        )
        return await self._check_after(lambda: restore_set(plan), fresh)

    async def restore_naive(self, copy: NaiveCopy, label: str) -> BooksReport:
        """Load the naive copies into fresh databases and check the books there."""
        fresh = await asyncio.to_thread(self._fresh, label)
        return await self._check_after(lambda: naive_restore(copy, {db.name: db for db in fresh}), fresh)

    async def live_books(self) -> BooksReport:
        """The books of the live databases (meaningful once the load is stopped)."""
        return await asyncio.to_thread(_books, self.databases)

    def _fresh(self, label: str) -> list[Database]:
        made: list[Database] = []
        try:
            for db in self.databases:
                made.append(empty_like(db, label, self.work))
        except BaseException:
            for db in made:
                with contextlib.suppress(Exception):
                    db.drop()
            raise
        return made

    async def _check_after(self, restore: Callable[[], object], fresh: Sequence[Database]) -> BooksReport:
        def work() -> BooksReport:
            try:
                restore()
                return _books(fresh)
            finally:
                if self.drop_restored:
                    for db in fresh:
                        with contextlib.suppress(Exception):
                            db.drop()

        return await asyncio.to_thread(work)


def _books(databases: Sequence[Database]) -> BooksReport:
    stores = [db.store() for db in databases]
    try:
        return check_books(stores)
    finally:
        for store in stores:
            store.close()


def empty_like(db: Database, label: str, work: Path) -> Database:
    """A new, empty database of the same kind and name: for SQLite a file of the
    same name in ``work/label``, for a server a new database ``<dbname>_<label>``."""
    if isinstance(db, SqliteDatabase):
        folder = work / label
        folder.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(db.name, str(folder / Path(db.path).name))
    if isinstance(db, PostgresDatabase):
        return db.create_empty(f"{db.dbname}_{label}")
    return db.create_empty(f"{db.database}_{label}")


def target_config(db: Database, secrets: Path) -> dict[str, Any]:
    """The ``[[targets]]`` table of a cluster file for ``db`` (passwords go to a
    file in ``secrets``: the cluster file never holds one)."""
    if isinstance(db, SqliteDatabase):
        return {"name": db.name, "kind": "sqlite", "path": db.path}
    secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
    password_file = secrets / f"{db.name}.password"
    if not password_file.exists():
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(db.password + "\n")
    common = {
        "name": db.name,
        "host": db.host,
        "port": db.port,
        "user": db.user,
        "password_file": str(password_file),
    }
    if isinstance(db, PostgresDatabase):
        return {**common, "kind": "postgres", "databases": [db.dbname]}
    assert isinstance(db, MariaDatabase)
    return {**common, "kind": "mysql", "databases": [db.database]}


def destination(db: Database) -> str:
    """What ``txbackup restore --to NAME=...`` takes to restore a target into ``db``
    (the password is the target's own: same server, same user)."""
    if isinstance(db, SqliteDatabase):
        return db.path
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
