"""Cassandra restore, ours against restoring a snapshot by hand, by data size (one node).

    .venv/bin/python -m bench.cassandra_restore_bench [--sizes 100] [--rounds 3] [--json]

One real Cassandra 5.0 node (``tests.servers.cassandra``, 127.0.0.1) and one
``txbackup agent``; ``bank.bench_rows`` filled with ``--sizes`` MB of rows
(``cassandra_bench``'s data: LZ4-compressed SSTables, mostly random bytes) and
flushed. Untimed, once per size: a txbackup backup (the real engine, local
folder storage) and a ``nodetool snapshot`` of the same data whose files are
copied out (plain SSTables, as Medusa keeps them in a local storage).

Then ``--rounds`` times, alternating which goes first, each on empty tables
(``TRUNCATE`` of every restored table, untimed):

- **ours**: ``restore_set`` of the set (the agent fetches every file from the
  storage, checks its SHA-256 and size while decompressing it into its staging
  folder, then ``nodetool import`` per table);
- **native**: what restoring a snapshot to the same node by hand is: ``cp`` of
  the snapshot's files into a staging folder per table, then ``nodetool import``
  per table (one JVM each, like the agent's).

Medusa's own restore (``restore-node``) stops Cassandra, downloads into the
data directory and starts it again; its time is dominated by the restart and
it is not measured here. After every restore ``bank.bench_rows`` is checked: its
data files hold the backed-up bytes, its first, middle and last rows are there.
Ratio = ours / native: below 1 we are faster.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cassandra_bench import (
    KEYSPACES,
    App,
    BenchError,
    Data,
    Ours,
    folder_bytes,
    live_bytes,
    ms_since,
    rows_for,
    say,
)
from tests.servers import cassandra as cassandra_servers
from tests.servers.cassandra import CassandraCluster, CassandraNode
from tests.servers.cassandra_agents import TOKEN, TOKEN_ENV, agents_for
from txbackup.catalog import Catalog
from txbackup.cli.common import print_table
from txbackup.engine.manifest import Manifest
from txbackup.engine.restore import RestorePlan, restore_set
from txbackup.jobs import JobStore
from txbackup.storage import LocalStorage

TABLES = (("bank", "bench_rows"), ("bank", "accounts"), ("coordinator", "state"))
"""Every table the backup holds (ours restores them all; so does the native side)."""
SNAPSHOT_META = {"manifest.json", "schema.cql"}


def table_dir(node: CassandraNode, keyspace: str, table: str) -> Path:
    """The table's folder in the node's data directory (``<table>-<id>``, the live one)."""
    found = sorted((node.data_dir / keyspace).glob(f"{table}-*"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise BenchError(f"no folder for {keyspace}.{table} in {node.data_dir}")
    return found[-1]


def native_backup(node: CassandraNode, into: Path) -> int:
    """``nodetool snapshot`` of the keyspaces, its files copied to ``into/<ks>/<table>``; bytes."""
    tag = f"native-{time.monotonic_ns()}"
    node.nodetool("snapshot", "-t", tag, *KEYSPACES, timeout=600)
    total = 0
    try:
        for keyspace, table in TABLES:
            snap = table_dir(node, keyspace, table) / "snapshots" / tag
            dest = into / keyspace / table
            dest.mkdir(parents=True)
            for path in snap.iterdir() if snap.is_dir() else ():
                if path.name not in SNAPSHOT_META and path.is_file():
                    shutil.copyfile(path, dest / path.name)
                    total += path.stat().st_size
    finally:
        node.nodetool("clearsnapshot", "-t", tag, "--", *KEYSPACES)
    return total


def native_restore(node: CassandraNode, backup: Path, staging: Path) -> float:
    """``cp`` of every table's files into a fresh staging folder, ``nodetool import`` each."""
    started = time.monotonic()
    for keyspace, table in TABLES:
        source = backup / keyspace / table
        if not any(source.iterdir()):
            continue
        folder = staging / keyspace / table
        folder.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-r", str(source), str(folder)], check=True)
        node.nodetool("import", keyspace, table, str(folder), timeout=1800)
    elapsed = ms_since(started)
    shutil.rmtree(staging, ignore_errors=True)
    return elapsed


def truncate_all(data: Data) -> None:
    for keyspace, table in TABLES:
        data.session.execute(f"TRUNCATE {keyspace}.{table}", timeout=120)


def data_bytes(node: CassandraNode) -> int:
    """The bytes of ``bank.bench_rows``'s live ``*-Data.db`` files (an import keeps them as
    they were; a ``COUNT(*)`` of a million rows times out on one node)."""
    return sum(p.stat().st_size for p in table_dir(node, "bank", "bench_rows").glob("*-Data.db"))


def check_restored(data: Data, node: CassandraNode, rows: int, want_bytes: int, side: str) -> None:
    """The restored table holds the backed-up SSTables' data and its first, middle and last rows."""
    got = data_bytes(node)
    if got != want_bytes:
        raise BenchError(f"{side} restore: bank.bench_rows holds {got} bytes of data files, not {want_bytes}")
    for key in (0, rows // 2, rows - 1):
        if data.session.execute("SELECT id FROM bank.bench_rows WHERE id = %s", (key,)).one() is None:
            raise BenchError(f"{side} restore: row {key} of bank.bench_rows is missing")


async def measure(
    cluster: CassandraCluster, data: Data, app: App, work: Path, mb: int, rounds: int
) -> dict[str, Any]:
    node = cluster.nodes[0]
    rows = rows_for(mb)
    say(f"[{mb} MB] writing {rows} rows, flushing")
    data.truncate()
    await asyncio.to_thread(data.write_and_flush, range(rows))
    result: dict[str, Any] = {"mb": mb, "rows": rows, "live_bytes": live_bytes(node)}
    result.update(ours_ms=[], native_ms=[])
    want_bytes = data_bytes(node)
    folder = work / f"{mb}mb"
    storage = folder / "storage"
    try:
        with agents_for(cluster.nodes, storage, folder / "agents") as agents:
            ours = Ours(agents, storage, Catalog(str(folder / "catalog.db")), app)
            say(f"[{mb} MB] backups (untimed): txbackup, nodetool snapshot + copy")
            manifest: Manifest = (await ours.backup()).manifest
            result["ours_stored_bytes"] = folder_bytes(storage)
            result["native_bytes"] = native_backup(node, folder / "native")
            for r in range(rounds):
                order = ("ours", "native") if r % 2 == 0 else ("native", "ours")
                for side in order:
                    say(f"[{mb} MB] round {r + 1}/{rounds}: {side} restore")
                    await asyncio.to_thread(truncate_all, data)
                    if side == "ours":
                        started = time.monotonic()
                        restore_set(
                            RestorePlan(
                                storage=LocalStorage(str(storage)),
                                manifest=manifest,
                                targets=[ours.target],
                                jobs=JobStore(str(folder / f"jobs-{r}.db")),
                            )
                        )
                        ms = ms_since(started)
                    else:
                        staging = folder / "staging"
                        ms = await asyncio.to_thread(native_restore, node, folder / "native", staging)
                    await asyncio.to_thread(check_restored, data, node, rows, want_bytes, side)
                    result[f"{side}_ms"].append(round(ms, 1))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


async def bench(sizes: Sequence[int], rounds: int) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="txb-cass-restore-bench-"))
    say(f"work folder {work}")
    os.environ[TOKEN_ENV] = TOKEN
    app = App()
    cluster = CassandraCluster(1)
    try:
        say("starting a Cassandra node and the sample application")
        cluster.start()
        data = Data(cluster)
        return [await measure(cluster, data, app, work, mb, rounds) for mb in sizes]
    finally:
        cluster.stop()
        cluster.remove()
        app.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cassandra_restore_bench",
        description="txbackup's Cassandra restore against cp of a snapshot + nodetool import (one node).",
    )
    parser.add_argument("--sizes", default="100", help="MB of rows, comma-separated (100)")
    parser.add_argument("--rounds", type=int, default=3, help="restores per side and size; medians (3)")
    parser.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes: comma-separated whole numbers of MB")
    if not sizes or min(sizes) < 1 or args.rounds < 1:
        parser.error("--sizes and --rounds must be at least 1")
    missing = cassandra_servers.missing_reason()
    if missing:
        print(f"cassandra_restore_bench: {missing}", file=sys.stderr)
        return 1
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        results = asyncio.run(bench(sizes, args.rounds))
    except BenchError as exc:
        print(f"cassandra_restore_bench: {exc}", file=sys.stderr)
        return 1
    load = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    if args.json:
        print(json.dumps({"rounds": args.rounds, "load_average_1m": load, "results": results}, indent=2))
        return 0
    table = []
    for r in results:
        ours, native = statistics.median(r["ours_ms"]), statistics.median(r["native_ms"])
        table.append(
            [
                r["mb"],
                f"{r['live_bytes'] / 1e6:.0f}",
                f"{ours:.0f}",
                f"{native:.0f}",
                f"{ours / native:.2f}",
                f"{r['ours_stored_bytes'] / 1e6:.0f}",
                f"{r['native_bytes'] / 1e6:.0f}",
            ]
        )
    print(f"\nRestore of one node (medians of {args.rounds}; native: cp of a snapshot + nodetool import):")
    print_table(["MB", "SSTable MB", "ours ms", "native ms", "ratio", "ours stored MB", "native MB"], table)
    for r in results:
        print(f"  {r['mb']} MB: ours {r['ours_ms']}, native {r['native_ms']}")
    print(
        f"\n({time.monotonic() - started:.0f} s, {os.cpu_count()} CPUs, "
        f"load average {load['before']} before, {load['after']} after)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
