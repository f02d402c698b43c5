"""MariaDB export with ``jobs = 1`` and ``jobs = 2`` against ``mariadb-dump --single-transaction | zstd``.

    .venv/bin/python -m bench.mysql_export_bench [--sizes 100,1000] [--rounds 3] [--restore] [--json]

Starts a real MariaDB server (the test fixtures' helper) on 127.0.0.1 and the
sample pausable application of ``bench.backup_bench`` (the engine pauses it).
For every size N (MB of rows) one database is filled with about N MB of rows
(``bench.backup_bench.fill_mariadb``: one table, bigint primary key), then
each round, in the same run and in rotating order:

- **ours**: a whole txbackup backup of that database into a local folder
  repository; the number is the engine's export phase (after the unpause:
  the dump, zstd, SHA-256, fsync), with ``jobs = 1`` and with ``jobs = 2``
  (two sessions on one snapshot, the table exported in key ranges);
- **native**: ``mariadb-dump --single-transaction DB | zstd -o FILE``, then
  fsync (wall time).

With ``--restore`` also the restores: ours (verify, then restore, with the
set's jobs) into a fresh database, against ``mariadb DB < dump`` (the dump
decompressed beforehand, untimed). Medians of ``--rounds``; ratios are ours /
native (below 1: we are faster). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backup_bench import (
    MARIA_PW_ENV,
    ROW_BYTES,
    App,
    Ours,
    fill_mariadb,
    fsync_tree,
    ms_since,
    parse_sizes,
    run_pipeline,
    run_tool,
    say,
)
from tests.servers.mariadb import MariaDBServer
from txbackup.cli.common import print_table
from txbackup.config import build_target
from txbackup.targets.base import Target

VARIANTS = ("jobs1", "jobs2", "native")


@dataclass
class Size:
    mb: int
    rows: int
    table_bytes: int = 0
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(round(value, 1))

    def median(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None


def target(maria: MariaDBServer, db: str, jobs: int) -> Target:
    conf = {
        "name": "maria",
        "kind": "mysql",
        "host": maria.host,
        "port": maria.port,
        "user": maria.user,
        "password_env": MARIA_PW_ENV,
        "databases": [db],
        "jobs": jobs,
    }
    return build_target(conf, 0)


def client_args(maria: MariaDBServer) -> list[str]:
    return ["--no-defaults", "--protocol=TCP", f"--host={maria.host}", f"--port={maria.port}",
            f"--user={maria.user}"]  # fmt: skip


async def one_round(size: Size, maria: MariaDBServer, ours: Ours, db: str, turn: int, restore: bool) -> None:
    env = {"MYSQL_PWD": maria.password}
    order = VARIANTS[turn % 3 :] + VARIANTS[: turn % 3]  # rotate: no variant always warms the next
    for variant in order:
        if variant == "native":
            dump = ours.work / f"{db}.sql.zst"
            started = time.monotonic()
            run_pipeline(
                ["mariadb-dump", *client_args(maria), "--single-transaction", db],
                ["zstd", "-q", "-f", "-o", str(dump)],
                env,
            )
            fsync_tree(dump)
            size.add("native.export_ms", ms_since(started))
            if restore:
                plain = ours.work / f"{db}.sql"
                run_tool(["zstd", "-q", "-d", "-f", "-o", str(plain), str(dump)], {})
                dest = maria.create_database("native")
                try:
                    started = time.monotonic()
                    with open(plain, "rb") as stream:
                        run_tool(["mariadb", *client_args(maria), "--batch", dest], env, stdin=stream)
                    size.add("native.restore_ms", ms_since(started))
                finally:
                    maria.execute(f"DROP DATABASE IF EXISTS `{dest}`")
                    plain.unlink()
            dump.unlink()
            continue
        jobs = 1 if variant == "jobs1" else 2
        t = target(maria, db, jobs)
        manifest, _ = await ours.backup([t])
        size.add(f"{variant}.export_ms", manifest.timings.export_ms)
        if restore:
            dest = maria.create_database("ours")
            try:
                dsn = f"mysql://{maria.user}@{maria.host}:{maria.port}/{dest}"
                size.add(f"{variant}.restore_ms", ours.restore(manifest, [t], {"maria": dsn}))
            finally:
                maria.execute(f"DROP DATABASE IF EXISTS `{dest}`")
        ours.forget(manifest)


async def bench(sizes: Sequence[int], rounds: int, restore: bool) -> list[Size]:
    work = Path(tempfile.mkdtemp(prefix="txb-mysql-bench-"))
    say(f"work folder {work}; starting MariaDB and the sample application...")
    app: App | None = None
    results = []
    try:
        with MariaDBServer() as maria:
            os.environ[MARIA_PW_ENV] = maria.password
            app = App()
            ours = Ours(work, app.endpoint)
            for mb in sizes:
                rows = max(1000, mb * 1_000_000 // ROW_BYTES)
                size = Size(mb, rows)
                db = maria.create_database(f"b{mb}")
                say(f"[{mb} MB] filling {rows} rows...")
                size.table_bytes = fill_mariadb(maria, db, rows)
                for turn in range(rounds):
                    say(f"[{mb} MB] round {turn + 1}/{rounds}")
                    await one_round(size, maria, ours, db, turn, restore)
                maria.execute(f"DROP DATABASE `{db}`")
                results.append(size)
    finally:
        if app is not None:
            app.stop()
        shutil.rmtree(work, ignore_errors=True)
    return results


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ratio(ours: float | None, native: float | None) -> str:
    return "-" if not ours or not native else f"{ours / native:.2f}"


def report(sizes: Sequence[Size], rounds: int, restore: bool) -> None:
    print(f"\nMariaDB export (medians of {rounds}; ours = the engine's export phase):")
    rows = []
    for s in sizes:
        native = s.median("native.export_ms")
        j1, j2 = s.median("jobs1.export_ms"), s.median("jobs2.export_ms")
        rows.append([s.mb, f"{s.table_bytes / 1e6:.0f}", _fmt(j1), _fmt(j2), _fmt(native),
                     _ratio(j1, native), _ratio(j2, native)])  # fmt: skip
    print_table(["MB", "table MB", "jobs=1 ms", "jobs=2 ms", "mariadb-dump|zstd ms",
                 "ratio jobs=1", "ratio jobs=2"], rows)  # fmt: skip
    if restore:
        print("\nRestore (ours: verify, then restore with the set's jobs; native: mariadb < dump):")
        rows = []
        for s in sizes:
            native = s.median("native.restore_ms")
            j1, j2 = s.median("jobs1.restore_ms"), s.median("jobs2.restore_ms")
            rows.append([s.mb, _fmt(j1), _fmt(j2), _fmt(native), _ratio(j1, native), _ratio(j2, native)])
        print_table(["MB", "jobs=1 ms", "jobs=2 ms", "mariadb ms", "ratio jobs=1", "ratio jobs=2"], rows)
    print("\nGoal: export with jobs = 2 at most 1.0x mariadb-dump | zstd at 1 GB.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mysql_export_bench",
        description="txbackup's MariaDB export (jobs 1 and 2) against mariadb-dump | zstd.",
    )
    parser.add_argument(
        "--sizes", type=parse_sizes, default=[100, 1000], help="MB of rows (default 100,1000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size; medians (default 3)")
    parser.add_argument("--restore", action="store_true", help="also time the restores")
    parser.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    for tool in ("mariadb-dump", "mariadb", "zstd"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")
    started = time.monotonic()
    sizes = asyncio.run(bench(args.sizes, args.rounds, args.restore))
    load = os.getloadavg()
    if args.json:
        out: dict[str, Any] = {
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in load],
            "sizes": [
                {
                    "mb": s.mb,
                    "rows": s.rows,
                    "table_bytes": s.table_bytes,
                    "medians": {k: s.median(k) for k in sorted(s.samples)},
                    "samples": s.samples,
                }
                for s in sizes
            ],
        }
        print(json.dumps(out, indent=2))
    else:
        report(sizes, args.rounds, args.restore)
    say(f"done in {time.monotonic() - started:.0f} s; load average {load[0]:.1f} on {os.cpu_count()} CPUs")
    if load[0] > (os.cpu_count() or 1):
        say("warning: the machine was busy (load above the CPU count): the numbers are noisy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
