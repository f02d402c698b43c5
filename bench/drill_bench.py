"""Drill RTO of the test data: ``txbackup drill`` of a PostgreSQL + MariaDB set against the
native restore tools on the same data.

    .venv/bin/python -m bench.drill_bench [--size 50] [--rounds 3] [--json]

Starts a real PostgreSQL and a real MariaDB server (``tests/servers``) on 127.0.0.1 and
fills one database on each with ``--size`` MB of rows (``bench.backup_bench``'s table;
default 50 MB each, a 100 MB set), takes one backup set of both (the real engine, a local
pausable sample application), then, each round:

- **drill**: ``txbackup drill -c cluster.toml --latest --json`` in a child process, as
  cron runs it: every artifact verified, each target restored into its drill database
  (same servers, renamed), then the drill databases dropped (``audit = false``: the rows
  are not ScalarDB's). Reported: each target's restore seconds, the verification, the
  restore total (the RTO a runbook quotes) and the command's wall time;
- **native**: ``pg_restore -Fc`` of a ``pg_dump -Fc`` of the same database, and
  ``mariadb < dump`` of a ``mariadb-dump --single-transaction`` (decompressed
  beforehand), each into a fresh database created before the clock starts.

Medians of ``--rounds``; ratios are drill / native (above 1: the drill's restore is
slower). Not a pass/fail test. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.backup_bench import ROW_BYTES, Servers, fill_mariadb, fill_postgres, say
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.cli.common import print_table
from txbackup.config import load_cluster
from txbackup.demo.sample_service import start_sample_server
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.storage import LocalStorage

PG_PW_ENV = "TXB_BENCH_PG_PW"
MARIA_PW_ENV = "TXB_BENCH_MARIA_PW"


def cluster_file(folder: Path, servers: Servers, pg_db: str, maria_db: str) -> Path:
    pg, maria = servers.pg, servers.maria
    config = folder / "cluster.toml"
    config.write_text(
        '[applications]\nendpoints = ["127.0.0.1:1"]\n[storage]\npath = "store"\n'
        '[catalog]\npath = "catalog.db"\n'
        f'[[targets]]\nname = "pg"\nkind = "postgres"\nhost = "{pg.host}"\nport = {pg.port}\n'
        f'user = "{pg.user}"\npassword_env = "{PG_PW_ENV}"\ndatabases = ["{pg_db}"]\n'
        f'[[targets]]\nname = "maria"\nkind = "mysql"\nhost = "{maria.host}"\nport = {maria.port}\n'
        f'user = "{maria.user}"\npassword_env = "{MARIA_PW_ENV}"\ndatabases = ["{maria_db}"]\n'
        'coordinator_database = ""\nsystem_database = ""\n'
        "[drill]\naudit = false\n"
        f'[drill.targets.pg]\ndsn = "host={pg.host} port={pg.port} dbname=drill_{pg_db}"\n'
        f'[drill.targets.maria]\ndsn = "mysql://{maria.user}@{maria.host}:{maria.port}"\n'
        f'rename = {{ {maria_db} = "drill_{maria_db}" }}\n'
    )  # fmt: skip
    return config


async def backup(config: Path) -> str:
    cluster = load_cluster(config)
    app = await start_sample_server()
    try:
        plan = BackupPlan(
            fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
            targets=cluster.targets,
            storage=LocalStorage(cluster.storage),
            catalog=Catalog(cluster.catalog),
        )
        return str((await run_backup(plan)).set_id)
    finally:
        await app.stop()


def drill(config: Path, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "txbackup", "drill", "-c", str(config), "--latest", "--json"],
        capture_output=True, text=True, env=env, timeout=7200,
    )  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"drill failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout), wall


def bench(size_mb: int, rounds: int, work: Path) -> dict[str, Any]:
    rows = size_mb * 1_000_000 // ROW_BYTES
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float | None) -> None:
        if value is not None:
            samples.setdefault(key, []).append(value)

    with PostgresServer() as pg, MariaDBServer() as maria:
        servers = Servers(pg, maria)
        pg_db, maria_db = pg.create_database("bench"), maria.create_database("bench")
        say(f"filling {size_mb} MB ({rows} rows) in each database")
        sizes = {"pg": fill_postgres(pg, pg_db, rows), "maria": fill_mariadb(maria, maria_db, rows)}
        config = cluster_file(work, servers, pg_db, maria_db)
        env = {**os.environ, PG_PW_ENV: pg.password, MARIA_PW_ENV: maria.password}
        os.environ.update({PG_PW_ENV: pg.password, MARIA_PW_ENV: maria.password})
        say("backing up")
        set_id = asyncio.run(backup(config))
        say("native dumps")
        servers.pg_dump(pg_db, work / "pg.dump")
        servers.mariadb_dump(maria_db, work / "maria.sql.zst")
        subprocess.run(["zstd", "-q", "-d", "-f", str(work / "maria.sql.zst"), "-o", str(work / "maria.sql")],
                       check=True)  # fmt: skip
        for n in range(rounds):
            say(f"round {n + 1}/{rounds}: drill")
            result, wall = drill(config, env)
            restore = result["restore"]
            for name, target in restore["targets"].items():
                add(f"drill_{name}", target["restore_seconds"])
            add("drill_verify", restore["verify_seconds"])
            add("drill_total", restore["total_seconds"])
            add("drill_wall", wall)
            say(f"round {n + 1}/{rounds}: native")
            db = servers.new_pg_db("native")
            started = time.monotonic()
            servers.pg_restore(work / "pg.dump", db)
            add("native_pg", time.monotonic() - started)
            servers.drop_pg(db)
            db = servers.new_maria_db("native")
            started = time.monotonic()
            servers.mariadb_restore(work / "maria.sql", db)
            add("native_maria", time.monotonic() - started)
            servers.drop_maria(db)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {"size_mb": size_mb, "rows": rows, "table_bytes": sizes, "set_id": set_id, "rounds": rounds,
            "medians": medians, "samples": samples}  # fmt: skip


def print_report(report: dict[str, Any]) -> None:
    m = report["medians"]

    def ratio(ours: str, native: str) -> str:
        return f"{m[ours] / m[native]:.2f}" if m.get(ours) and m.get(native) else "-"

    sizes = report["table_bytes"]
    print(f"drill of a {report['size_mb']} MB PostgreSQL + {report['size_mb']} MB MariaDB set"
          f" (tables: pg {sizes['pg'] / 1e6:.0f} MB, maria {sizes['maria'] / 1e6:.0f} MB),"
          f" medians of {report['rounds']} rounds")  # fmt: skip
    table = []
    for name in ("pg", "maria"):
        ours, native = f"drill_{name}", f"native_{name}"
        table.append([name, f"{m[ours]:.2f}", f"{m[native]:.2f}", ratio(ours, native)])
    print_table(["TARGET", "DRILL RESTORE s", "NATIVE RESTORE s", "RATIO"], table)
    native_total = m["native_pg"] + m["native_maria"]
    print(
        f"drill: verification {m.get('drill_verify', 0):.2f} s, restore total (RTO) {m['drill_total']:.2f} s,"
        f" whole command {m['drill_wall']:.2f} s; native restores in turn {native_total:.2f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=50, help="MB of rows per database (default 50)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.size < 1 or args.rounds < 1:
        parser.error("--size and --rounds must be >= 1")
    for tool in ("pg_dump", "pg_restore", "mariadb-dump", "mariadb", "zstd"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="drill-bench-") as work:
        report = bench(args.size, args.rounds, Path(work))
    load = os.getloadavg()
    report["load_average"] = load[0]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    say(f"done in {time.monotonic() - started:.0f} s; load average {load[0]:.1f} on {os.cpu_count()} CPUs")
    if load[0] > (os.cpu_count() or 1):
        say("warning: the machine was busy (load above the CPU count): the numbers are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
