"""Backups of PostgreSQL and MariaDB against the native tools, at several data sizes.

    .venv/bin/python -m bench.backup_bench [--sizes 10,100] [--rounds 3] [--json] [--keep]

Starts a real PostgreSQL and a real MariaDB server (the test fixtures' helpers,
``tests/servers``) on 127.0.0.1, and in a child process a sample pausable
application (``start_sample_server``) with a few clients keeping requests in
flight. For every size N (MB of rows), one database on each server is filled
with about N MB of rows, then, in the same run:

- **pause window**: a txbackup backup of both databases (the real engine:
  preflight, pause, capture, unpause, export, commit) against "dump while
  paused" (pause, ``pg_dump -Fc`` and ``mariadb-dump --single-transaction |
  zstd`` in parallel, unpause). Both report the fleet's measured pause window
  (last pause confirmed .. first unpause sent) and the drain (the pause call:
  in-flight requests finishing); the application's clients time every
  request, and the slowest of those in flight at some moment between the start
  of the pause and the unpause is what the pause cost them;
- **export**: a txbackup backup of the PostgreSQL database alone (its export
  phase) against ``pg_dump -Fc``; with ``jobs = 2`` against ``pg_dump -Fd -j
  2``; of the MariaDB database alone against ``mariadb-dump
  --single-transaction | zstd``;
- **restore**: the engine's restore (each artifact read once, verified as it
  streams) of those sets into fresh databases, against ``pg_restore`` (``-Fc``;
  ``-Fd -j 2``) and ``mariadb < dump``; and of an SQLite file of the same rows
  against copying a backup copy of it into place, and against ``zstd -d`` of a
  compressed copy (alone, and followed by ``sync FILE``: ours is durable).

Native outputs are written to files and fsynced (the local storage fsyncs our
artifacts). The PostgreSQL and MariaDB exports and restores alternate which
side goes first from round to round (a server's checkpoints after one side's
load land on the next measurement); before each SQLite restore every file
system is synced (untimed): the databases' writeback is not charged to it
(``sqlite_restore_bench`` measures SQLite alone, alternated).
Every number is the median of ``--rounds`` rounds; ratios are ours / native
(below 1: we are faster); take an even number of rounds. Progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet, paused
from txbackup.catalog import Catalog
from txbackup.cli.common import print_table
from txbackup.config import build_target
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.engine.manifest import Manifest
from txbackup.engine.progress import Reporter, SilentReporter
from txbackup.engine.restore import RestorePlan, restore_set
from txbackup.jobs import JobStore
from txbackup.storage import open_storage
from txbackup.targets.base import Target

REPO = Path(__file__).resolve().parents[1]
ROW_BYTES = 150  # about what one benchmark row takes in either database
FILL_BATCH = 200_000
APP_CLIENTS = 4
APP_WORK_MS = 5
SETTLE_S = 0.2
PG_PW_ENV = "TXB_BENCH_PG_PW"
MARIA_PW_ENV = "TXB_BENCH_MARIA_PW"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000


# -- the application: a child process serving the sample service, with clients ----------------


async def _app_main() -> None:
    import grpc

    from txbackup.demo.sample_service import WORK_METHOD, start_sample_server

    server = await start_sample_server(lease_seconds=600)
    done: deque[tuple[float, float]] = deque(maxlen=500_000)  # (start, end), epoch seconds

    async def client() -> None:
        async with grpc.aio.insecure_channel(server.target) as channel:
            work = channel.unary_unary(WORK_METHOD)
            while True:
                started = time.time()
                await work(str(APP_WORK_MS).encode(), timeout=600)
                done.append((started, time.time()))

    clients = [asyncio.create_task(client()) for _ in range(APP_CLIENTS)]
    print(json.dumps({"endpoint": server.target}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            # "slowest T0 T1": the slowest of the requests in flight at some moment of [T0, T1]
            _, t0, t1 = line.split()
            durations = [end - start for start, end in done if start <= float(t1) and end >= float(t0)]
            answer = {"slowest_ms": round(max(durations, default=0.0) * 1000, 1), "requests": len(durations)}
            print(json.dumps(answer), flush=True)
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await server.stop()


class App:
    """The sample application in a child process (so its event loop is not ours)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.backup_bench", "--app"],
            cwd=REPO,
            env={**os.environ, "GRPC_VERBOSITY": "NONE"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lock = threading.Lock()
        self.endpoint = str(self._read()["endpoint"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the sample application exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def slowest_ms(self, start: float, end: float) -> float:
        """The slowest request (ms) of those in flight at some moment of [start, end]
        (epoch seconds, this host's clock); ask once they are done."""
        assert self.proc.stdin is not None
        with self.lock:
            self.proc.stdin.write(f"slowest {start!r} {end!r}\n")
            self.proc.stdin.flush()
            return float(self._read()["slowest_ms"])

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- data ------------------------------------------------------------------------------------


def fill_postgres(pg: PostgresServer, db: str, rows: int) -> int:
    """``rows`` benchmark rows in table ``bench_rows``; returns the table's size in bytes."""
    import psycopg

    with psycopg.connect(pg.dsn(db), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_rows (id bigint PRIMARY KEY, account int NOT NULL,"
            " amount numeric(12, 2), created timestamptz, note text, payload bytea)"
        )
        for first in range(1, rows + 1, FILL_BATCH):
            last = min(rows, first + FILL_BATCH - 1)
            conn.execute(
                "INSERT INTO bench_rows SELECT g, g % 1000, (g % 100000) / 100.0,"
                " timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',"
                " md5(g::text) || ' ' || md5((g * 7)::text), decode(md5((g * 3)::text), 'hex')"
                f" FROM generate_series({first}, {last}) g"
            )
        conn.execute("VACUUM ANALYZE bench_rows")
        row = conn.execute("SELECT pg_total_relation_size('bench_rows')").fetchone()
        assert row is not None
        return int(row[0])


def fill_mariadb(maria: MariaDBServer, db: str, rows: int) -> int:
    """The same rows in MariaDB; returns the table's size (data + indexes) in bytes."""
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE bench_rows (id bigint PRIMARY KEY, account int NOT NULL,"
                " amount decimal(12, 2), created datetime(6), note varchar(100), payload varbinary(16))"
                " ENGINE=InnoDB"
            )
            for first in range(1, rows + 1, FILL_BATCH):
                last = min(rows, first + FILL_BATCH - 1)
                cur.execute(
                    "INSERT INTO bench_rows SELECT seq, seq % 1000, (seq % 100000) / 100,"
                    " TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND,"
                    " CONCAT(MD5(seq), ' ', MD5(seq * 7)), UNHEX(MD5(seq * 3))"
                    f" FROM seq_{first}_to_{last}"
                )
            cur.execute("ANALYZE TABLE bench_rows")
            cur.fetchall()
            cur.execute(
                "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'bench_rows'"
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def fill_sqlite(path: Path, rows: int) -> int:
    """The same rows in an SQLite file (WAL mode, as the target needs); returns its size."""
    import sqlite3
    from hashlib import md5

    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, account INTEGER NOT NULL,"
            " amount TEXT, created TEXT, note TEXT, payload BLOB)"
        )
        for first in range(1, rows + 1, FILL_BATCH):
            last = min(rows, first + FILL_BATCH - 1)
            conn.executemany(
                "INSERT INTO bench_rows VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (g, g % 1000, f"{(g % 100000) / 100:.2f}", f"2024-01-01 +{g}s",
                     f"{md5(str(g).encode()).hexdigest()} {md5(str(g * 7).encode()).hexdigest()}",
                     md5(str(g * 3).encode()).digest())
                    for g in range(first, last + 1)
                ),
            )  # fmt: skip
            conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.stat().st_size


# -- native tools ----------------------------------------------------------------------------


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file of a folder (our local storage fsyncs each artifact)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def run_tool(argv: Sequence[str], env: dict[str, str], **kwargs: Any) -> None:
    done = subprocess.run(list(argv), env={**os.environ, **env}, capture_output=True, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace').strip()[-500:]}")


def run_pipeline(first: Sequence[str], second: Sequence[str], env: dict[str, str]) -> None:
    """``first | second``; both must succeed."""
    full_env = {**os.environ, **env}
    producer = subprocess.Popen(list(first), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
    assert producer.stdout is not None
    consumer = subprocess.Popen(list(second), stdin=producer.stdout, stderr=subprocess.PIPE, env=full_env)
    producer.stdout.close()
    _, consumer_err = consumer.communicate()
    producer_err = producer.stderr.read() if producer.stderr else b""
    producer.wait()
    for proc, err, argv in ((producer, producer_err, first), (consumer, consumer_err, second)):
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {err.decode(errors='replace').strip()[-500:]}")


@dataclass
class Servers:
    pg: PostgresServer
    maria: MariaDBServer

    def pg_env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.pg.password}

    def maria_env(self) -> dict[str, str]:
        return {"MYSQL_PWD": self.maria.password}

    def pg_conn(self) -> list[str]:
        return ["-h", self.pg.host, "-p", str(self.pg.port), "-U", self.pg.user]

    def maria_conn(self) -> list[str]:
        return [
            "--no-defaults",
            "--protocol=TCP",
            f"--host={self.maria.host}",
            f"--port={self.maria.port}",
            f"--user={self.maria.user}",
        ]

    def pg_dump(self, db: str, out: Path, jobs: int = 1) -> None:
        form = ["-Fc"] if jobs == 1 else ["-Fd", "-j", str(jobs)]
        run_tool(["pg_dump", *self.pg_conn(), *form, "-f", str(out), db], self.pg_env())
        fsync_tree(out)

    def mariadb_dump(self, db: str, out: Path) -> None:
        run_pipeline(
            ["mariadb-dump", *self.maria_conn(), "--single-transaction", db],
            ["zstd", "-q", "-f", "-o", str(out)],
            self.maria_env(),
        )
        fsync_tree(out)

    def pg_restore(self, dump: Path, db: str, jobs: int = 1) -> None:
        form = ["-Fc"] if jobs == 1 else ["-Fd", "-j", str(jobs)]
        run_tool(
            ["pg_restore", *self.pg_conn(), "--no-owner", "--exit-on-error", *form, "-d", db, str(dump)],
            self.pg_env(),
        )

    def mariadb_restore(self, dump: Path, db: str) -> None:
        with open(dump, "rb") as stream:
            run_tool(["mariadb", *self.maria_conn(), "--batch", db], self.maria_env(), stdin=stream)

    def new_pg_db(self, prefix: str) -> str:
        return self.pg.create_database(prefix)

    def new_maria_db(self, prefix: str) -> str:
        return self.maria.create_database(prefix)

    def drop_pg(self, db: str) -> None:
        with contextlib.suppress(Exception):
            self.pg.execute(f'DROP DATABASE IF EXISTS "{db}"')

    def drop_maria(self, db: str) -> None:
        with contextlib.suppress(Exception):
            self.maria.execute(f"DROP DATABASE IF EXISTS `{db}`")


# -- our side ---------------------------------------------------------------------------------


class PauseClock:
    """A reporter noting when the engine starts pausing and when it has unpaused."""

    def __init__(self) -> None:
        self.pausing = self.unpaused = 0.0

    def event(self, kind: str, /, **fields: Any) -> None:
        if kind == "phase" and fields.get("name") == "pause":
            self.pausing = time.time()
        elif kind == "phase" and fields.get("name") == "unpaused":
            self.unpaused = time.time()

    def bytes_done(self, target: str, count: int) -> None:
        pass


@dataclass
class Ours:
    """The engine, with a storage folder and catalog in ``work``."""

    work: Path
    endpoint: str

    def __post_init__(self) -> None:
        self.storage = open_storage(str(self.work / "storage"))
        self.catalog = Catalog(str(self.work / "storage" / "catalog.db"))
        self.jobs = JobStore(self.catalog.path)

    async def backup(
        self, targets: Sequence[Target], reporter: Reporter | None = None
    ) -> tuple[Manifest, float]:
        """One backup set; (manifest, wall ms)."""
        plan = BackupPlan(
            fleet=Fleet([Endpoint.parse(self.endpoint)]),
            targets=targets,
            storage=self.storage,
            catalog=self.catalog,
            reporter=reporter or SilentReporter(),
        )
        started = time.monotonic()
        manifest = await run_backup(plan)
        return manifest, ms_since(started)

    def restore(self, manifest: Manifest, targets: Sequence[Target], destinations: dict[str, str]) -> float:
        started = time.monotonic()
        restore_set(
            RestorePlan(
                storage=self.storage,
                manifest=manifest,
                targets=targets,
                jobs=self.jobs,
                destinations=destinations,
            )
        )
        return ms_since(started)

    def forget(self, manifest: Manifest) -> None:
        self.storage.remove_prefix(f"sets/{manifest.set_id}/")

    def stored_bytes(self, manifest: Manifest) -> int:
        return sum(a.stored_size for t in manifest.targets for a in t.artifacts)


def pg_target(servers: Servers, name: str, db: str, jobs: int = 1) -> Target:
    pg = servers.pg
    conf = {
        "name": name,
        "kind": "postgres",
        "host": pg.host,
        "port": pg.port,
        "user": pg.user,
        "password_env": PG_PW_ENV,
        "databases": [db],
        "jobs": jobs,
    }
    return build_target(conf, 0)


def maria_target(servers: Servers, name: str, db: str) -> Target:
    maria = servers.maria
    conf = {
        "name": name,
        "kind": "mysql",
        "host": maria.host,
        "port": maria.port,
        "user": maria.user,
        "password_env": MARIA_PW_ENV,
        "databases": [db],
    }
    return build_target(conf, 0)


def sqlite_target(name: str, path: Path) -> Target:
    return build_target({"name": name, "kind": "sqlite", "path": str(path)}, 0)


def pg_dsn(servers: Servers, db: str) -> str:
    pg = servers.pg
    return f"host={pg.host} port={pg.port} user={pg.user} dbname={db}"


def maria_dsn(servers: Servers, db: str) -> str:
    maria = servers.maria
    return f"mysql://{maria.user}@{maria.host}:{maria.port}/{db}"


# -- measurements -----------------------------------------------------------------------------


@dataclass
class Size:
    """What was measured at one data size (lists: one value per round)."""

    mb: int
    rows: int
    pg_bytes: int = 0
    maria_bytes: int = 0
    sqlite_bytes: int = 0
    samples: dict[str, list[float]] = field(default_factory=dict)
    dump_bytes: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(round(value, 1))

    def median(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None


async def measure_pause(
    size: Size, servers: Servers, ours: Ours, app: App, pg_db: str, maria_db: str
) -> None:
    """Our backup of both databases, then dump-while-paused; pause windows and drains."""
    targets = [pg_target(servers, "pg", pg_db), maria_target(servers, "maria", maria_db)]
    clock = PauseClock()
    manifest, wall = await ours.backup(targets, clock)
    t = manifest.timings
    size.add("ours.drain_ms", t.drain_ms)
    size.add("ours.pause_ms", t.pause_ms)
    size.add("ours.capture_ms", t.capture_ms)
    size.add("ours.export_ms", t.export_ms)
    size.add("ours.wall_ms", wall)
    await asyncio.sleep(SETTLE_S)  # requests held by the pause complete after the unpause
    size.add("ours.slowest_request_ms", app.slowest_ms(clock.pausing, clock.unpaused))
    ours.forget(manifest)

    folder = Path(tempfile.mkdtemp(prefix="paused-", dir=ours.work))
    fleet = Fleet([Endpoint.parse(app.endpoint)])
    try:
        await fleet.status()  # channels open before the pause, as in our preflight
        started, pausing = time.monotonic(), time.time()
        async with paused(fleet) as window:
            size.add("paused.drain_ms", ms_since(started))
            await asyncio.gather(
                asyncio.to_thread(servers.pg_dump, pg_db, folder / "pg.dump"),
                asyncio.to_thread(servers.mariadb_dump, maria_db, folder / "maria.sql.zst"),
            )
        unpaused = time.time()
        size.add("paused.pause_ms", float(window.duration_ms or 0))
        size.add("paused.wall_ms", ms_since(started))
        await asyncio.sleep(SETTLE_S)
        size.add("paused.slowest_request_ms", app.slowest_ms(pausing, unpaused))
    finally:
        await fleet.close()
        shutil.rmtree(folder, ignore_errors=True)


async def in_turn(turn: int, ours: Callable[[], Any], native: Callable[[], Any]) -> None:
    """``ours()`` then ``native()`` in even rounds, the other way round in odd ones (each
    awaited if it gives an awaitable): a server's checkpoints and writeback after one
    side's load land on the next measurement, so a fixed order would always charge them
    to the same side."""
    for step in (ours, native) if turn % 2 == 0 else (native, ours):
        result = step()
        if inspect.isawaitable(result):
            await result


async def measure_postgres(
    size: Size, servers: Servers, ours: Ours, db: str, jobs: int, native_dir: Path, turn: int
) -> None:
    """Export and restore of the PostgreSQL database, ours and native, with ``jobs``."""
    tag = f"pg{jobs}"
    target = pg_target(servers, "pg", db, jobs)
    dump = native_dir / (f"{db}.dump" if jobs == 1 else f"{db}.dir")
    found: list[Manifest] = []

    async def ours_export() -> None:
        manifest, wall = await ours.backup([target])
        size.add(f"{tag}.ours_export_ms", manifest.timings.export_ms)
        size.add(f"{tag}.ours_wall_ms", wall)
        size.dump_bytes[f"{tag}.ours"] = ours.stored_bytes(manifest)
        found.append(manifest)

    def native_export() -> None:
        shutil.rmtree(dump, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            dump.unlink()
        started = time.monotonic()
        servers.pg_dump(db, dump, jobs)
        size.add(f"{tag}.native_export_ms", ms_since(started))
        files = [dump] if dump.is_file() else [p for p in dump.rglob("*") if p.is_file()]
        size.dump_bytes[f"{tag}.native"] = sum(p.stat().st_size for p in files)

    def ours_restore() -> None:
        dest = servers.new_pg_db("ours")  # created untimed, as for the native restore
        try:
            ms = ours.restore(found[0], [target], {"pg": pg_dsn(servers, dest)})
            size.add(f"{tag}.ours_restore_ms", ms)
        finally:
            servers.drop_pg(dest)
            ours.forget(found[0])

    def native_restore() -> None:
        dest = servers.new_pg_db("native")
        try:
            started = time.monotonic()
            servers.pg_restore(dump, dest, jobs)
            size.add(f"{tag}.native_restore_ms", ms_since(started))
        finally:
            servers.drop_pg(dest)

    await in_turn(turn, ours_export, native_export)
    await in_turn(turn, ours_restore, native_restore)


async def measure_mariadb(
    size: Size, servers: Servers, ours: Ours, db: str, native_dir: Path, turn: int
) -> None:
    """Export and restore of the MariaDB database, ours and native."""
    target = maria_target(servers, "maria", db)
    dump = native_dir / f"{db}.sql.zst"
    found: list[Manifest] = []

    async def ours_export() -> None:
        manifest, wall = await ours.backup([target])
        size.add("maria.ours_export_ms", manifest.timings.export_ms)
        size.add("maria.ours_wall_ms", wall)
        size.dump_bytes["maria.ours"] = ours.stored_bytes(manifest)
        found.append(manifest)

    def native_export() -> None:
        started = time.monotonic()
        servers.mariadb_dump(db, dump)
        size.add("maria.native_export_ms", ms_since(started))
        size.dump_bytes["maria.native"] = dump.stat().st_size

    def ours_restore() -> None:
        dest = servers.new_maria_db("ours")  # created untimed, as for the native restore
        try:
            restore_ms = ours.restore(found[0], [target], {"maria": maria_dsn(servers, dest)})
            size.add("maria.ours_restore_ms", restore_ms)
        finally:
            servers.drop_maria(dest)
            ours.forget(found[0])

    def native_restore() -> None:
        plain = native_dir / f"{db}.sql"  # `mariadb < dump`: decompressed beforehand, not timed
        run_tool(["zstd", "-q", "-d", "-f", "-o", str(plain), str(dump)], {})
        dest = servers.new_maria_db("native")
        try:
            started = time.monotonic()
            servers.mariadb_restore(plain, dest)
            size.add("maria.native_restore_ms", ms_since(started))
        finally:
            servers.drop_maria(dest)
            plain.unlink()

    await in_turn(turn, ours_export, native_export)
    await in_turn(turn, ours_restore, native_restore)


async def measure_sqlite(size: Size, ours: Ours, source: Path, native_dir: Path) -> None:
    """Restore of the SQLite file, ours against copying a backup copy of it into place
    (what restoring an SQLite backup by hand is) and against ``zstd -d`` of a compressed
    copy, alone and followed by ``sync FILE``. Ours is durable (the file's data and its
    rename are on disk before the restore returns): ``cp`` and ``zstd -d`` alone are not,
    ``zstd -d`` + ``sync`` is the like-for-like."""
    import sqlite3

    target = sqlite_target("lite", source)
    manifest, _ = await ours.backup([target])
    size.dump_bytes["lite.ours"] = ours.stored_bytes(manifest)
    copy = native_dir / "lite-backup.db"
    with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:  # untimed: the backup
        src.backup(dst)
    src.close()
    dst.close()
    size.dump_bytes["lite.native"] = copy.stat().st_size
    dest = native_dir / "lite-ours.db"
    os.sync()  # untimed, before every side: the databases' writeback is not charged to a file restore
    try:
        size.add("lite.ours_restore_ms", ours.restore(manifest, [target], {"lite": str(dest)}))
    finally:
        ours.forget(manifest)
        for side in ("", "-wal", "-shm"):
            Path(f"{dest}{side}").unlink(missing_ok=True)
    dest = native_dir / "lite-native.db"
    os.sync()
    started = time.monotonic()
    shutil.copyfile(copy, dest)
    size.add("lite.native_restore_ms", ms_since(started))
    dest.unlink()
    # a compressed copy (zstd, untimed) decompressed into place: what our restore does,
    # less the SHA-256 and the check of the file
    packed = native_dir / "lite-backup.db.zst"
    run_tool(["zstd", "-q", "-f", "-o", str(packed), str(copy)], {})
    size.add("litez.ours_restore_ms", size.samples["lite.ours_restore_ms"][-1])
    os.sync()
    started = time.monotonic()
    run_tool(["zstd", "-q", "-d", "-f", "-o", str(dest), str(packed)], {})
    size.add("litez.native_restore_ms", ms_since(started))
    dest.unlink()
    size.add("litezs.ours_restore_ms", size.samples["lite.ours_restore_ms"][-1])
    os.sync()
    started = time.monotonic()
    run_tool(["zstd", "-q", "-d", "-f", "-o", str(dest), str(packed)], {})
    run_tool(["sync", str(dest)], {})
    size.add("litezs.native_restore_ms", ms_since(started))
    for path in (dest, packed, copy):
        path.unlink()


async def run_size(mb: int, rounds: int, servers: Servers, ours: Ours, app: App) -> Size:
    rows = max(1000, mb * 1_000_000 // ROW_BYTES)
    size = Size(mb, rows)
    say(f"[{mb} MB] filling {rows} rows into PostgreSQL and MariaDB...")
    pg_db, maria_db = servers.new_pg_db(f"b{mb}"), servers.new_maria_db(f"b{mb}")
    native_dir = Path(tempfile.mkdtemp(prefix=f"native-{mb}-", dir=ours.work))
    try:
        fills = await asyncio.gather(
            asyncio.to_thread(fill_postgres, servers.pg, pg_db, rows),
            asyncio.to_thread(fill_mariadb, servers.maria, maria_db, rows),
        )
        size.pg_bytes, size.maria_bytes = fills
        lite = native_dir / "lite.db"
        size.sqlite_bytes = await asyncio.to_thread(fill_sqlite, lite, rows)
        steps: list[tuple[str, Callable[[int], Any]]] = [
            ("pause window", lambda turn: measure_pause(size, servers, ours, app, pg_db, maria_db)),
            ("postgres jobs=1", lambda t: measure_postgres(size, servers, ours, pg_db, 1, native_dir, t)),
            ("postgres jobs=2", lambda t: measure_postgres(size, servers, ours, pg_db, 2, native_dir, t)),
            ("mariadb", lambda turn: measure_mariadb(size, servers, ours, maria_db, native_dir, turn)),
            ("sqlite", lambda turn: measure_sqlite(size, ours, lite, native_dir)),
        ]
        for round_no in range(rounds):
            for label, step in steps:
                say(f"[{mb} MB] round {round_no + 1}/{rounds}: {label}")
                await step(round_no)
    finally:
        servers.drop_pg(pg_db)
        servers.drop_maria(maria_db)
        shutil.rmtree(native_dir, ignore_errors=True)
    return size


# -- output -----------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _ratio(ours: float | None, native: float | None) -> str:
    if not ours or not native:
        return "-"
    return f"{ours / native:.2f}"


def _mbps(nbytes: int, ms: float | None) -> str:
    if not ms:
        return "-"
    return f"{nbytes / 1e6 / (ms / 1000):.0f}"


def print_report(sizes: Sequence[Size], rounds: int) -> None:
    print(f"\nbackup_bench: medians of {rounds} round(s); ms unless noted; ratio = ours / native\n")
    print(
        "Pause window (the applications' unavailability) while backing up PostgreSQL + MariaDB;\n"
        "slowest request: the slowest of the application's requests in flight during the pause"
    )
    rows = []
    for s in sizes:
        rows.append(
            [
                s.mb,
                _fmt(s.median("ours.drain_ms")),
                _fmt(s.median("ours.capture_ms")),
                _fmt(s.median("ours.pause_ms")),
                _fmt(s.median("ours.slowest_request_ms")),
                _fmt(s.median("paused.drain_ms")),
                _fmt(s.median("paused.pause_ms")),
                _fmt(s.median("paused.slowest_request_ms")),
                _ratio(s.median("ours.pause_ms"), s.median("paused.pause_ms")),
            ]
        )
    print_table(
        [
            "MB", "ours: drain", "capture", "pause window", "slowest request",
            "dump while paused: drain", "pause window", "slowest request", "ratio",
        ],
        rows,
    )  # fmt: skip
    print("\nExport (ours: the export phase of a backup of that database alone):")
    rows = []
    for s in sizes:
        for tag, label, native in (
            ("pg1", "postgres", "pg_dump -Fc"),
            ("pg2", "postgres jobs=2", "pg_dump -Fd -j 2"),
            ("maria", "mariadb", "mariadb-dump --single-transaction | zstd"),
        ):
            ours_ms, native_ms = s.median(f"{tag}.ours_export_ms"), s.median(f"{tag}.native_export_ms")
            table_bytes = s.maria_bytes if tag == "maria" else s.pg_bytes
            rows.append(
                [
                    s.mb,
                    label,
                    f"{table_bytes / 1e6:.0f}",
                    _fmt(ours_ms),
                    native,
                    _fmt(native_ms),
                    _ratio(ours_ms, native_ms),
                    _mbps(table_bytes, ours_ms),
                    _mbps(table_bytes, native_ms),
                    f"{s.dump_bytes.get(f'{tag}.ours', 0) / 1e6:.1f}",
                    f"{s.dump_bytes.get(f'{tag}.native', 0) / 1e6:.1f}",
                ]
            )
    print_table(
        ["MB", "database", "table MB", "ours", "native", "native ms", "ratio",
         "ours MB/s", "native MB/s", "ours stored MB", "native MB"],
        rows,
    )  # fmt: skip
    print("\nRestore (ours: each artifact read once, verified as it streams, into a fresh database):")
    rows = []
    for s in sizes:
        for tag, label, native in (
            ("pg1", "postgres", "pg_restore -Fc"),
            ("pg2", "postgres jobs=2", "pg_restore -Fd -j 2"),
            ("maria", "mariadb", "mariadb < dump"),
            ("lite", "sqlite", "cp backup.db"),
            ("litez", "sqlite", "zstd -d backup.db.zst"),
            ("litezs", "sqlite", "zstd -d + sync FILE"),
        ):
            ours_ms, native_ms = s.median(f"{tag}.ours_restore_ms"), s.median(f"{tag}.native_restore_ms")
            table_bytes = (
                s.maria_bytes if tag == "maria" else s.sqlite_bytes if tag.startswith("lite") else s.pg_bytes
            )
            rows.append(
                [
                    s.mb,
                    label,
                    _fmt(ours_ms),
                    native,
                    _fmt(native_ms),
                    _ratio(ours_ms, native_ms),
                    _mbps(table_bytes, ours_ms),
                    _mbps(table_bytes, native_ms),
                ]
            )
    print_table(["MB", "database", "ours", "native", "native ms", "ratio", "ours MB/s", "native MB/s"], rows)
    print(
        "\nGoals: our pause window flat in data size and under 100 ms (it is the time above the "
        "drain); export and restore ratios at most 1.10."
    )


def report_json(sizes: Sequence[Size], rounds: int, load: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in load],
        "sizes": [
            {
                "mb": s.mb,
                "rows": s.rows,
                "postgres_table_bytes": s.pg_bytes,
                "mariadb_table_bytes": s.maria_bytes,
                "sqlite_file_bytes": s.sqlite_bytes,
                "medians": {key: s.median(key) for key in sorted(s.samples)},
                "samples": s.samples,
                "dump_bytes": s.dump_bytes,
            }
            for s in sizes
        ],
    }


# -- main -------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be integers (MB), got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive integers (MB)")
    return sizes


async def bench(sizes: Sequence[int], rounds: int, keep: bool) -> list[Size]:
    work = Path(tempfile.mkdtemp(prefix="txb-bench-"))
    say(f"work folder {work}; starting PostgreSQL, MariaDB and the sample application...")
    app: App | None = None
    try:
        with PostgresServer() as pg, MariaDBServer() as maria:
            os.environ[PG_PW_ENV] = pg.password
            os.environ[MARIA_PW_ENV] = maria.password
            servers = Servers(pg, maria)
            app = App()
            ours = Ours(work, app.endpoint)
            return [await run_size(mb, rounds, servers, ours, app) for mb in sizes]
    finally:
        if app is not None:
            app.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.backup_bench",
        description="txbackup against pg_dump/pg_restore and mariadb-dump/mariadb, by data size.",
    )
    parser.add_argument("--sizes", type=parse_sizes, default=[10, 100], help="MB of rows (default 10,100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size; medians (default 3)")
    parser.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--app", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.app:
        asyncio.run(_app_main())
        return 0
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    for tool in ("pg_dump", "pg_restore", "mariadb-dump", "mariadb", "zstd"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")
    started = time.monotonic()
    sizes = asyncio.run(bench(args.sizes, args.rounds, args.keep))
    load = os.getloadavg()
    if args.json:
        print(json.dumps(report_json(sizes, args.rounds, load), indent=2))
    else:
        print_report(sizes, args.rounds)
    say(f"done in {time.monotonic() - started:.0f} s; load average {load[0]:.1f} on {os.cpu_count()} CPUs")
    if load[0] > (os.cpu_count() or 1):
        say("warning: the machine was busy (load above the CPU count): the numbers are noisy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
