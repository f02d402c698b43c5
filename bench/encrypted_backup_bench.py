"""Encryption overhead on whole backups and restores (issue 15: at most 10% at 1 GB).

    .venv/bin/python -m bench.encrypted_backup_bench [--sizes 100,1000] [--rounds 3] [--json]

Starts a real PostgreSQL server (the test fixtures' helper, ``tests/servers``) and a
sample pausable application on 127.0.0.1. For every size N (MB of rows) one database
is filled, then, in each round and in the same run:

- ``txbackup backup`` (the real command, a child process) into a **plain** local
  repository, and into an **encrypted** one (``init --encrypt --recipient age1...``);
- ``txbackup restore`` of each set into a new database (the encrypted one with
  ``--identity-file``);
- the native tools on the same data: ``pg_dump -Fc`` to a file and ``pg_restore`` of
  it into a new database, for scale.

Plain and encrypted alternate which goes first, and every step starts after a
``CHECKPOINT`` (a 1 GB restore leaves the next step a checkpoint to pay for). Wall
times are medians of ``--rounds``; the ratios that matter are encrypted/plain
(backup, restore); each restore's ratio to ``pg_restore`` is printed too (the
MariaDB and SQLite restore ratios are ``bench.backup_bench``'s).
``bench.encryption_bench`` measures the byte pipeline alone (CPU time); this one
measures what a user waits for. The load average is printed with the results:
numbers taken on a busy machine say little. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrage

from bench.backup_bench import ROW_BYTES, fill_postgres, parse_sizes, say
from bench.s3_export_bench import PG_PW_ENV, cluster_file, start_app
from tests.servers.postgres import PostgresServer

# the interpreter running this bench, so that the txbackup measured is the one it imports
# (an editable install, or PYTHONPATH=src in a worktree)
TXBACKUP = [sys.executable, "-m", "txbackup"]
STEPS = ("backup_plain", "backup_encrypted", "restore_plain", "restore_encrypted", "pg_dump", "pg_restore")


@dataclass
class Result:
    size_mb: int
    table_bytes: int = 0
    times: dict[str, list[float]] = field(default_factory=lambda: {step: [] for step in STEPS})


def timed(argv: Sequence[str], env: dict[str, str]) -> tuple[float, str]:
    """Run ``argv``; its wall time and stdout (it must succeed)."""
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... failed ({done.returncode}): {done.stderr.strip()}")
    return took, done.stdout


def backup(config: Path, env: dict[str, str]) -> tuple[float, str]:
    took, out = timed([*TXBACKUP, "backup", "-c", str(config), "--json"], env)
    return took, str(json.loads(out.splitlines()[-1])["set_id"])


def restore(
    config: Path, set_id: str, pg: PostgresServer, db: str, env: dict[str, str], extra: Sequence[str] = ()
) -> float:
    pg.execute(f'CREATE DATABASE "{db}"')
    dsn = f"pg=host={pg.host} port={pg.port} user={pg.user} dbname={db}"
    took, _ = timed([*TXBACKUP, "restore", "-c", str(config), set_id, "--to", dsn, *extra], env)
    return took


def measure(sizes: Sequence[int], rounds: int) -> list[Result]:
    results = []
    identity = pyrage.x25519.Identity.generate()
    with tempfile.TemporaryDirectory(prefix="txb-encbench-") as tmp, PostgresServer() as pg:
        key = Path(tmp) / "me.key"
        key.write_text(str(identity) + "\n")
        key.chmod(0o600)
        env = {**os.environ, PG_PW_ENV: pg.password, "GRPC_VERBOSITY": "NONE"}
        pg_env = {**env, "PGPASSWORD": pg.password}
        conn = ["-h", pg.host, "-p", str(pg.port), "-U", pg.user]
        app, endpoint = start_app(env)
        try:
            for size in sizes:
                db = pg.create_database(f"bench{size}")
                say(f"filling {db} with about {size} MB")
                result = Result(size, fill_postgres(pg, db, size * 1_000_000 // ROW_BYTES))
                for n in range(rounds):
                    plain_dir, sealed_dir = Path(tmp) / f"plain-{size}-{n}", Path(tmp) / f"sealed-{size}-{n}"
                    plain_dir.mkdir()
                    sealed_dir.mkdir()
                    plain = cluster_file(plain_dir, pg, db, endpoint, str(plain_dir / "repo"))
                    sealed = cluster_file(sealed_dir, pg, db, endpoint, str(sealed_dir / "repo"))
                    recipient = str(identity.to_public())
                    timed([*TXBACKUP, "init", "-c", str(sealed), "--encrypt", "--recipient", recipient], env)
                    times = result.times
                    # alternate which goes first, and CHECKPOINT before each step: the second of
                    # two 1 GB restores otherwise pays for the first one's checkpoint
                    sets: dict[str, str] = {}
                    order = [("plain", plain), ("encrypted", sealed)]
                    for mode, config in order if n % 2 == 0 else order[::-1]:
                        pg.execute("CHECKPOINT")
                        took, sets[mode] = backup(config, env)
                        times[f"backup_{mode}"].append(took)
                    for mode, config in order if n % 2 == 1 else order[::-1]:
                        pg.execute("CHECKPOINT")
                        extra = ["--identity-file", str(key)] if mode == "encrypted" else []
                        db_name = f"r{mode[0]}{size}_{n}"
                        times[f"restore_{mode}"].append(restore(config, sets[mode], pg, db_name, env, extra))
                    pg.execute("CHECKPOINT")
                    dump = Path(tmp) / f"native-{size}-{n}.dump"
                    took, _ = timed(["pg_dump", *conn, "-Fc", "-f", str(dump), db], pg_env)
                    times["pg_dump"].append(took)
                    pg.execute(f'CREATE DATABASE "rn{size}_{n}"')
                    pg.execute("CHECKPOINT")
                    took, _ = timed(["pg_restore", *conn, "-d", f"rn{size}_{n}", str(dump)], pg_env)
                    times["pg_restore"].append(took)
                    for name in (f"rp{size}_{n}", f"re{size}_{n}", f"rn{size}_{n}"):
                        pg.execute(f'DROP DATABASE "{name}"')
                    dump.unlink()
                    say(
                        f"  {size} MB round {n + 1}: "
                        + ", ".join(f"{step} {times[step][-1]:.2f} s" for step in STEPS)
                    )
                results.append(result)
        finally:
            app.terminate()
            app.wait(30)
    return results


def summary(results: Sequence[Result], rounds: int) -> dict[str, Any]:
    med = statistics.median
    sizes = []
    for r in results:
        m = {step: med(values) for step, values in r.times.items()}
        sizes.append(
            {
                "size_mb": r.size_mb,
                "table_mb": round(r.table_bytes / 1e6, 1),
                **{f"{step}_s": round(value, 2) for step, value in m.items()},
                "backup_encrypted_vs_plain": round(m["backup_encrypted"] / m["backup_plain"], 3),
                "restore_encrypted_vs_plain": round(m["restore_encrypted"] / m["restore_plain"], 3),
                "backup_plain_vs_pg_dump": round(m["backup_plain"] / m["pg_dump"], 2),
                "backup_encrypted_vs_pg_dump": round(m["backup_encrypted"] / m["pg_dump"], 2),
                "restore_plain_vs_pg_restore": round(m["restore_plain"] / m["pg_restore"], 2),
                "restore_encrypted_vs_pg_restore": round(m["restore_encrypted"] / m["pg_restore"], 2),
            }
        )
    return {"rounds": rounds, "load_average": os.getloadavg(), "sizes": sizes}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.encrypted_backup_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--sizes", type=parse_sizes, default=[100, 1000], help="MB of rows (default 100,1000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size; medians (default 3)")
    parser.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    args = parser.parse_args(argv)
    say(f"load average before: {os.getloadavg()}")
    data = summary(measure(args.sizes, args.rounds), args.rounds)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"PostgreSQL backup/restore, plain vs encrypted (age); medians of {args.rounds};"
          f" load average {data['load_average']}")  # fmt: skip
    print(f"{'size':>6} {'backup':>8} {'enc.':>8} {'ratio':>6} {'restore':>8} {'enc.':>8} {'ratio':>6}"
          f" {'pg_dump':>8} {'pg_rest.':>8} {'plain/pg_restore':>17} {'enc./pg_restore':>16}")  # fmt: skip
    for s in data["sizes"]:
        print(
            f"{s['size_mb']:>4}MB {s['backup_plain_s']:>7}s {s['backup_encrypted_s']:>7}s"
            f" {s['backup_encrypted_vs_plain']:>6} {s['restore_plain_s']:>7}s {s['restore_encrypted_s']:>7}s"
            f" {s['restore_encrypted_vs_plain']:>6} {s['pg_dump_s']:>7}s {s['pg_restore_s']:>7}s"
            f" {s['restore_plain_vs_pg_restore']:>17} {s['restore_encrypted_vs_pg_restore']:>16}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
