"""Audit time per million records: ``txbackup audit`` of a set of ScalarDB-shaped SQLite stores.

    .venv/bin/python -m bench.audit_bench [--records 100000,1000000] [--rounds 3] [--json]

For every size N, builds two SQLite stores in ScalarDB 3.13's JDBC layout
(``bank_a$accounts``, ``bank_b$accounts``: N/2 records each, with every metadata
and before-image column; ``coordinator$state``: one COMMITTED row per transaction,
each transaction having written 2 records; 0.1 % of the records left PREPARED by
transactions the coordinator committed), takes a real backup set of them
(``run_backup`` with a local pausable sample application), then measures:

- **engine**: the checks alone over the live files (``audit_tables``: read every
  row through SQLite and judge it), in this process;
- **cli**: ``txbackup audit --storage DIR SET --json`` in a child process: the
  artifacts extracted (decompressed, SHA-256 checked) into a private folder,
  read and judged; interpreter start included. Its peak RSS is reported too.

Medians of ``--rounds`` rounds, in seconds, and seconds per million records. The
load average is printed with the results. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.config import build_target
from txbackup.demo.sample_service import start_sample_server
from txbackup.engine.audit import AuditOptions, Auditor, audit_tables
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.storage import LocalStorage
from txbackup.targets.audit_tables import sqlite_tables

PREPARED_EVERY = 1000  # 0.1 % of the records left PREPARED


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build(folder: Path, records: int) -> list[Path]:
    """Two stores of records/2 rows each, and the coordinator in the second."""
    paths = [folder / "a.db", folder / "b.db"]
    now = int(time.time() * 1000) - 3_600_000
    half = records // 2
    for store, path in enumerate(paths):
        ns = f"bank_{'ab'[store]}"
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            f'CREATE TABLE "{ns}$accounts" (id INTEGER PRIMARY KEY, balance INTEGER, tx_id TEXT,'
            " tx_state INTEGER, tx_version INTEGER, tx_prepared_at BIGINT, tx_committed_at BIGINT,"
            " before_balance INTEGER, before_tx_id TEXT, before_tx_state INTEGER, before_tx_version INTEGER,"
            " before_tx_prepared_at BIGINT, before_tx_committed_at BIGINT)"
        )
        db.execute(
            'CREATE TABLE "scalardb$metadata" (full_table_name TEXT, column_name TEXT, data_type TEXT,'
            " key_type TEXT, clustering_order TEXT, indexed BOOLEAN, ordinal_position INTEGER,"
            " PRIMARY KEY (full_table_name, column_name))"
        )
        db.execute(
            'INSERT INTO "scalardb$metadata" VALUES (?, ?, ?, ?, NULL, 0, 0)',
            (f"{ns}.accounts", "id", "INT", "PARTITION"),
        )

        def rows() -> Any:
            for i in range(half):
                # transaction i wrote record i of both stores (so 2 records per transaction)
                state = 1 if i % PREPARED_EVERY == 0 else 3
                committed = None if state == 1 else now + i
                yield (i, 1000, f"tx-{i}", state, 2, now + i, committed, 1000, f"setup-{i}", 3, 1, now, now)

        db.executemany(f'INSERT INTO "{ns}$accounts" VALUES ({", ".join("?" * 13)})', rows())
        db.commit()
        db.close()
    db = sqlite3.connect(paths[1])
    db.execute(
        'CREATE TABLE "coordinator$state" (tx_id TEXT PRIMARY KEY, tx_child_ids TEXT, tx_state INTEGER,'
        " tx_created_at BIGINT)"
    )
    db.executemany(
        'INSERT INTO "coordinator$state" VALUES (?, NULL, 3, ?)',
        ((f"tx-{i}", now + i) for i in range(half)),
    )
    db.commit()
    db.close()
    return paths


def engine_round(paths: list[Path]) -> tuple[float, int, int]:
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        tables = []
        for p in paths:
            tables += stack.enter_context(sqlite_tables(p.stem, str(p)))
        report = audit_tables(Auditor("bench", AuditOptions()), tables)
    return time.perf_counter() - started, report.records, len(report.findings)


def cli_round(store: Path, set_id: str) -> tuple[float, int]:
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-m", "txbackup", "audit", "--storage", str(store), set_id, "--json"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if child.returncode not in (0, 1):
        raise SystemExit(f"txbackup audit failed: {child.stderr.strip()}")
    json.loads(child.stdout)
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


async def backup(paths: list[Path], folder: Path) -> str:
    app = await start_sample_server()
    try:
        targets = [
            build_target({"name": p.stem, "kind": "sqlite", "path": str(p)}, i) for i, p in enumerate(paths)
        ]
        plan = BackupPlan(
            fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
            targets=targets,
            storage=LocalStorage(str(folder / "store")),
            catalog=Catalog(str(folder / "catalog.db")),
        )
        return (await run_backup(plan)).set_id
    finally:
        await app.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", default="100000,1000000", help="record counts (comma-separated)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.records.split(",") if s]
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
            folder = Path(tmp)
            say(f"building {size} records ...")
            paths = build(folder, size)
            set_id = asyncio.run(backup(paths, folder))
            engine = [engine_round(paths) for _ in range(args.rounds)]
            cli = [cli_round(folder / "store", set_id) for _ in range(args.rounds)]
            records = engine[0][1]
            engine_s = statistics.median(e[0] for e in engine)
            cli_s = statistics.median(c[0] for c in cli)
            result = {
                "records": records,
                "findings": engine[0][2],
                "engine_s": round(engine_s, 3),
                "engine_s_per_million": round(engine_s * 1e6 / records, 3),
                "cli_s": round(cli_s, 3),
                "cli_s_per_million": round(cli_s * 1e6 / records, 3),
                "cli_peak_rss_mib": round(max(c[1] for c in cli) / 1024, 1),
                "rounds": args.rounds,
            }
            results.append(result)
            say(f"  {json.dumps(result)}")
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"results": results, "loadavg": load, "cpus": os.cpu_count()}, indent=2))
        return 0
    heads = ("records", "findings", "engine s", "s/M", "cli s", "s/M", "RSS MiB")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (10, 9, 9, 7, 8, 7, 8), strict=True)))
    for r in results:
        print(f"{r['records']:>10} {r['findings']:>9} {r['engine_s']:>9} {r['engine_s_per_million']:>7}"
              f" {r['cli_s']:>8} {r['cli_s_per_million']:>7} {r['cli_peak_rss_mib']:>8}")  # fmt: skip
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
