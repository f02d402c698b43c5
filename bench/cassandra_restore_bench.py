"""Cassandra restore, ours against restoring snapshots by hand, by cluster and data size.

    .venv/bin/python -m bench.cassandra_restore_bench [--nodes 1,3] [--sizes 100] [--rounds 3] [--json]

For every cluster size (``--nodes``: 1 to 3 real Cassandra 5.0 nodes on
127.0.0.1-3, ``tests.servers.cassandra``, replication factor = node count) and
one ``txbackup agent`` per node: ``bank.bench_rows`` filled with ``--sizes`` MB
of rows per node (``cassandra_bench``'s data: LZ4-compressed SSTables, mostly
random bytes) and flushed. Untimed, once per size: a txbackup backup (the real
engine, local folder storage) and a ``nodetool snapshot`` on every node whose
files are copied out (plain SSTables, as Medusa keeps them in a local storage).

Then ``--rounds`` times, alternating which goes first, each on empty tables
(``TRUNCATE`` of every restored table, untimed):

- **ours**: ``restore_set`` of the set (every agent fetches its node's files
  from the storage, checks their SHA-256 and size while decompressing them into
  its staging folder, then imports them per table through its JMX helper);
- **native**: what restoring snapshots to the same nodes by hand is, on every
  node at once: ``cp`` of the node's snapshot files into a staging folder per
  table, then ``nodetool import`` per table.

Medusa's own restore (``restore-node``) stops Cassandra, downloads into the
data directory and starts it again; its time is dominated by the restart and
it is not measured here. After every restore ``bank.bench_rows`` is checked: on
every node its data files hold the backed-up bytes; its first, middle and last
rows are there.
Ratio = ours / native: below 1 we are faster.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bench.cassandra_bench import (
    KEYSPACES,
    App,
    BenchError,
    Data,
    Ours,
    folder_bytes,
    live_bytes,
    ms_since,
    parse_list,
    rows_for,
    say,
)
from bench.common import closing_line, sizes_rounds_parser
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
T = TypeVar("T")


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


def native_restore(node: CassandraNode, backup: Path, staging: Path) -> None:
    """``cp`` of every table's files into a fresh staging folder, ``nodetool import`` each."""
    for keyspace, table in TABLES:
        source = backup / keyspace / table
        if not any(source.iterdir()):
            continue
        folder = staging / keyspace / table
        folder.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-r", str(source), str(folder)], check=True)
        node.nodetool("import", keyspace, table, str(folder), timeout=1800)
    shutil.rmtree(staging, ignore_errors=True)


def truncate_all(data: Data) -> None:
    for keyspace, table in TABLES:
        data.session.execute(f"TRUNCATE {keyspace}.{table}", timeout=120)


def data_bytes(node: CassandraNode) -> int:
    """The bytes of ``bank.bench_rows``'s live ``*-Data.db`` files (an import keeps them as
    they were; a ``COUNT(*)`` of a million rows times out on one node)."""
    return sum(p.stat().st_size for p in table_dir(node, "bank", "bench_rows").glob("*-Data.db"))


def on_every_node(nodes: Sequence[CassandraNode], work: Callable[[CassandraNode], T]) -> list[T]:
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return list(pool.map(work, nodes))


def check_restored(data: Data, nodes: Sequence[CassandraNode], rows: int, want: list[int], side: str) -> None:
    """On every node the restored table holds the backed-up SSTables' data; its first,
    middle and last rows are there (read at consistency ALL)."""
    got = [data_bytes(node) for node in nodes]
    if got != want:
        raise BenchError(f"{side} restore: bank.bench_rows holds {got} bytes of data files, not {want}")
    for key in (0, rows // 2, rows - 1):
        if data.session.execute("SELECT id FROM bank.bench_rows WHERE id = %s", (key,)).one() is None:
            raise BenchError(f"{side} restore: row {key} of bank.bench_rows is missing")


async def measure(
    cluster: CassandraCluster, data: Data, app: App, work: Path, mb: int, rounds: int
) -> dict[str, Any]:
    nodes = cluster.nodes
    rows = rows_for(mb)
    label = f"[{len(nodes)} node{'s' if len(nodes) > 1 else ''}, {mb} MB]"
    say(f"{label} writing {rows} rows, flushing")
    data.truncate()
    await asyncio.to_thread(data.write_and_flush, range(rows))
    result: dict[str, Any] = {"nodes": len(nodes), "mb": mb, "rows": rows, "live_bytes": live_bytes(nodes[0])}
    result.update(ours_ms=[], native_ms=[])
    want = [data_bytes(node) for node in nodes]
    folder = work / f"{len(nodes)}n-{mb}mb"
    storage = folder / "storage"
    try:
        with agents_for(cluster.nodes, storage, folder / "agents") as agents:
            ours = Ours(agents, storage, Catalog(str(folder / "catalog.db")), app)
            say(f"{label} backups (untimed): txbackup, nodetool snapshot + copy")
            manifest: Manifest = (await ours.backup()).manifest
            result["ours_stored_bytes"] = folder_bytes(storage)
            native = folder / "native"
            result["native_bytes"] = sum(on_every_node(nodes, lambda n: native_backup(n, native / n.address)))
            for r in range(rounds):
                order = ("ours", "native") if r % 2 == 0 else ("native", "ours")
                for side in order:
                    say(f"{label} round {r + 1}/{rounds}: {side} restore")
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
                        started = time.monotonic()
                        await asyncio.to_thread(
                            on_every_node,
                            nodes,
                            lambda n: native_restore(n, native / n.address, folder / "staging" / n.address),
                        )
                        ms = ms_since(started)
                    await asyncio.to_thread(check_restored, data, nodes, rows, want, side)
                    result[f"{side}_ms"].append(round(ms, 1))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


async def bench(clusters: Sequence[int], sizes: Sequence[int], rounds: int) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="txb-cass-restore-bench-"))
    say(f"work folder {work}")
    os.environ[TOKEN_ENV] = TOKEN
    app = App()
    results = []
    try:
        for n in clusters:
            cluster = CassandraCluster(n)
            try:
                say(f"starting {n} Cassandra node(s)")
                cluster.start()
                data = Data(cluster)
                results += [await measure(cluster, data, app, work, mb, rounds) for mb in sizes]
            finally:
                cluster.stop()
                cluster.remove()
    finally:
        app.stop()
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = sizes_rounds_parser(
        "cassandra_restore_bench",
        "txbackup's Cassandra restore against cp of a snapshot + nodetool import on every node.",
        sizes=100,
        rounds=3,
    )
    parser.add_argument(
        "--nodes", type=lambda t: parse_list(t, "--nodes", (1, 2, 3)), default=[1], help="cluster sizes (1)"
    )
    args = parser.parse_args(argv)
    sizes = args.sizes
    missing = cassandra_servers.missing_reason()
    if missing:
        print(f"cassandra_restore_bench: {missing}", file=sys.stderr)
        return 1
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        results = asyncio.run(bench(args.nodes, sizes, args.rounds))
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
                r["nodes"],
                r["mb"],
                f"{r['live_bytes'] / 1e6:.0f}",
                f"{ours:.0f}",
                f"{native:.0f}",
                f"{ours / native:.2f}",
                f"{r['ours_stored_bytes'] / 1e6:.0f}",
                f"{r['native_bytes'] / 1e6:.0f}",
            ]
        )
    print(f"\nRestore (medians of {args.rounds}; native: cp of a snapshot + nodetool import on every node):")
    header = ["nodes", "MB/node", "SSTable MB/node", "ours ms", "native ms", "ratio"]
    header += ["ours stored MB", "native MB"]
    print_table(header, table)
    for r in results:
        print(f"  {r['nodes']} node(s), {r['mb']} MB: ours {r['ours_ms']}, native {r['native_ms']}")
    print(closing_line(time.monotonic() - started, load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
