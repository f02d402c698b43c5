"""Cassandra backups by data size: capture and pause window, and upload/storage against Medusa.

    .venv/bin/python -m bench.cassandra_bench [--nodes 1] [--sizes 10,100] [--rounds 3]
        [--upload-rounds 3] [--heavy-mb 32] [--medusa PATH] [--medusa-unthrottled] [--json]
    .venv/bin/python -m bench.cassandra_bench --nodes 1,3 --sizes 10,100,1000 --rounds 1 --upload-rounds 1

For every cluster size (``--nodes``: 1 or 3 real Cassandra 5.0 nodes on
127.0.0.1-3, the tests' ``tests.servers.cassandra``, replication factor = node
count so every node holds all the data) and every data size (``--sizes``: MB
of rows per node), a table ``bank.bench_rows`` is filled (a fresh one per
size), flushed, and then, in the same run:

- **upload and storage**, ``--upload-rounds`` times: two consecutive backups,
  the second after 5% of the rows were rewritten (and flushed), with txbackup
  (the real engine, ``run_backup``, through one ``txbackup agent`` per node,
  local folder storage) and with cassandra-medusa (``medusa backup-node --mode differential`` on every
  node at once, local storage), each into its own fresh folder: how long the
  upload took, the MB/s, and how many bytes each storage folder grew by;
- **capture and pause window**: ``--rounds`` times, flushed (``nodetool flush``
  just before) and with heavy memtables (``--heavy-mb`` MB of rows rewritten just
  before, not flushed): a txbackup backup (the fleet's measured pause window,
  the drain, the capture = every node's ``nodetool snapshot`` through its
  agent) against the bare ``nodetool snapshot -t TAG bank coordinator`` on every
  node in parallel (the native tool).

The application paused is the sample pausable service (``start_sample_server``)
in a child process, with clients keeping short requests in flight.
Ratios are ours / native (or ours / Medusa): below 1 we are faster or smaller.
Progress goes to stderr. Autocompaction is disabled on the benchmark keyspaces
so that every tool sees the same SSTables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import cassandra as cassandra_servers
from tests.servers.cassandra import CassandraCluster, CassandraNode
from tests.servers.cassandra_agents import (
    TOKEN,
    TOKEN_ENV,
    Agent,
    agents_for,
    create_schema,
    insert_accounts,
    target_conf,
)
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.agent.jmx import JmxHelper
from txbackup.catalog import Catalog
from txbackup.cli.common import print_table
from txbackup.config import build_target
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.engine.manifest import Manifest
from txbackup.storage import LocalStorage
from txbackup.targets.base import Target

REPO = Path(__file__).resolve().parents[1]
MEDUSA_VENV = REPO / ".cache" / "medusa-venv"
KEYSPACES = ("bank", "coordinator")
ROW_DISK_BYTES = 2100  # about what one benchmark row takes on disk (LZ4-compressed SSTable)
NOTE_BYTES = 256  # random bytes, stored as 512 hex characters (text)
PAYLOAD_BYTES = 1536  # random bytes (blob): incompressible
WRITE_BATCH = 5_000
WRITE_CONCURRENCY = 48
CHANGED_FRACTION = 0.05
APP_CLIENTS = 2
APP_WORK_MS = 5
SETTLE_S = 0.2
MEDUSA_TIMEOUT_S = 900.0
# with -v (DEBUG) medusa logs these around its upload: the snapshot exists / it is being cleared
_MEDUSA_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] (\w+): (.*)$")
_MEDUSA_UPLOAD_START = "Listing already backed up files"
_MEDUSA_UPLOAD_END = "Cleaning up Cassandra snapshot"
_MEDUSA_SNAPSHOT = "snapshot -t"
_MEMTABLE = re.compile(r"Memtable data size(?: \(bytes\))?:\s*(\d+)")
# medusa lowers its own priority (nice 19, idle I/O class) before it uploads; this runs it without.
# medusacli first: importing it monkey-patches everything for gevent, which must come before the
# other imports (imported later, the driver's connection hangs)
_UNTHROTTLED = (
    "import sys; from medusa.medusacli import cli; import medusa.backup_node as b; "
    "b.throttle_backup = lambda: None; sys.argv[0] = 'medusa'; sys.exit(cli())"
)


class BenchError(Exception):
    """Something failed: the numbers would mean nothing."""


def say(text: str) -> None:
    print(f"[cassandra_bench] {text}", file=sys.stderr, flush=True)


def ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000


def folder_bytes(path: Path) -> int:
    """The size of every regular file under ``path`` (what the storage holds)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def live_bytes(node: CassandraNode) -> int:
    """The node's SSTable bytes of the benchmark keyspaces (snapshots and backups left out)."""
    total = 0
    for keyspace in KEYSPACES:
        for root, dirs, files in os.walk(node.data_dir / keyspace):
            dirs[:] = [d for d in dirs if d not in ("snapshots", "backups")]
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_size
    return total


def parallel(nodes: Sequence[CassandraNode], *args: str) -> list[str]:
    """``nodetool ARGS`` on every node at once; their outputs."""
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return list(pool.map(lambda n: n.nodetool(*args, timeout=600), nodes))


# -- the application: a child process serving the sample service, with clients ----------------


async def _app_main() -> None:
    import grpc

    from txbackup.demo.sample_service import WORK_METHOD, start_sample_server

    server = await start_sample_server(lease_seconds=600)
    slowest = 0.0
    requests = 0

    async def client() -> None:
        nonlocal slowest, requests
        async with grpc.aio.insecure_channel(server.target) as channel:
            work = channel.unary_unary(WORK_METHOD)
            while True:
                started = time.monotonic()
                await work(str(APP_WORK_MS).encode(), timeout=600)
                slowest = max(slowest, ms_since(started))
                requests += 1

    clients = [asyncio.create_task(client()) for _ in range(APP_CLIENTS)]
    print(json.dumps({"endpoint": server.target}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "stats":  # the slowest request since the last "stats"
                print(json.dumps({"slowest_ms": round(slowest, 1), "requests": requests}), flush=True)
                slowest, requests = 0.0, 0
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await server.stop()


class App:
    """The sample application in a child process (its event loop is not ours)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cassandra_bench", "--app"],
            cwd=REPO,
            env={**os.environ, "GRPC_VERBOSITY": "NONE"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.endpoint = str(self._read()["endpoint"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError("the sample application exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def slowest_ms(self) -> float:
        """The clients' slowest request since the last call."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
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


# -- data -------------------------------------------------------------------------------------


class Data:
    """``bank.bench_rows`` on the cluster (written at consistency ALL: every replica has it)."""

    def __init__(self, cluster: CassandraCluster) -> None:
        self.cluster = cluster
        self.session = cluster.session(consistency="ALL")
        create_schema(self.session, rf=cluster.size)
        self.session.execute(
            "CREATE TABLE IF NOT EXISTS bank.bench_rows (id bigint PRIMARY KEY, account int,"
            " amount bigint, created timestamp, note text, payload blob)"
        )
        insert_accounts(self.session, range(100))  # something in the coordinator keyspace too
        for keyspace in KEYSPACES:
            parallel(cluster.nodes, "disableautocompaction", keyspace)
        self.insert = self.session.prepare(
            "INSERT INTO bank.bench_rows (id, account, amount, created, note, payload)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )

    def truncate(self) -> None:
        self.session.execute("TRUNCATE bank.bench_rows", timeout=120)

    def write(self, ids: range) -> None:
        """Write (or rewrite, with new random contents) the rows ``ids``."""
        from cassandra.concurrent import execute_concurrent_with_args  # type: ignore[import-untyped]

        created = dt.datetime.now(dt.UTC).replace(microsecond=0)
        for first in range(ids.start, ids.stop, WRITE_BATCH):
            rows = [
                (
                    i,
                    i % 1000,
                    (i * 37) % 10_000_000,
                    created,
                    os.urandom(NOTE_BYTES).hex(),
                    os.urandom(PAYLOAD_BYTES),
                )
                for i in range(first, min(ids.stop, first + WRITE_BATCH))
            ]
            execute_concurrent_with_args(self.session, self.insert, rows, concurrency=WRITE_CONCURRENCY)

    def flush(self) -> None:
        parallel(self.cluster.nodes, "flush")  # every keyspace: one nodetool run per node

    def write_and_flush(self, ids: range) -> None:
        """Write ``ids`` in (node count + 1) chunks, flushing one more node after each chunk,
        then every node: each replica's SSTables end at other rows, as when nodes flush on
        their own. (Flushed all at the same point, the replicas' files would be byte-identical,
        the same rows with the same client timestamps, and a content-addressed store would
        keep one copy of each: a best case that production replicas do not give.)"""
        nodes = self.cluster.nodes
        step = -(-len(ids) // (len(nodes) + 1))
        for k in range(len(nodes) + 1):
            self.write(range(ids.start + k * step, min(ids.stop, ids.start + (k + 1) * step)))
            if k < len(nodes):
                nodes[k].nodetool("flush", timeout=600)
        self.flush()

    def memtable_bytes(self) -> int | None:
        """The unflushed bytes of ``bank.bench_rows``, averaged over the nodes."""
        values = []
        for out in parallel(self.cluster.nodes, "tablestats", "bank.bench_rows"):
            match = _MEMTABLE.search(out)
            if match is None:
                return None
            values.append(int(match[1]))
        return round(statistics.mean(values))


# -- native: nodetool snapshot ------------------------------------------------------------------


def native_snapshot(nodes: Sequence[CassandraNode], tag: str) -> float:
    """``nodetool snapshot -t TAG bank coordinator`` on every node in parallel: ms until the
    last one exited (JVM start included, as for our agents). Cleared afterwards, untimed."""
    started = time.monotonic()
    parallel(nodes, "snapshot", "-t", tag, *KEYSPACES)
    elapsed = ms_since(started)
    parallel(nodes, "clearsnapshot", "-t", tag, "--", *KEYSPACES)
    return elapsed


def timed_flush(nodes: Sequence[CassandraNode]) -> float:
    """Flush the benchmark keyspaces on every node in parallel through a live JMX connection
    (the agent's helper, started beforehand and untimed): ms until the last one answered.
    The flush a snapshot does first costs this much; the agents do it at preflight."""
    helpers = [JmxHelper("127.0.0.1", node.jmx_port) for node in nodes]
    try:
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            list(pool.map(lambda h: h.start(), helpers))
            started = time.monotonic()
            list(pool.map(lambda h: h.call("flush", 600, keyspaces=list(KEYSPACES)), helpers))
            return ms_since(started)
    finally:
        for helper in helpers:
            helper.close()


# -- ours -------------------------------------------------------------------------------------


@dataclass
class OursBackup:
    manifest: Manifest
    wall_ms: float
    slowest_request_ms: float

    @property
    def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self.manifest.targets[0].position["nodes"]
        return nodes

    @property
    def snapshot_bytes(self) -> int:
        return sum(int(n["bytes"]) for n in self.nodes)

    @property
    def uploaded_bytes(self) -> int:
        return sum(int(n["uploaded_bytes"]) for n in self.nodes)

    @property
    def hashed_bytes(self) -> int:
        """What the agents read to hash (the rest came from their hash caches)."""
        return sum(int(n.get("hashed_bytes", n["bytes"])) for n in self.nodes)


class Ours:
    """The engine, with the agents of the cluster, storing into ``storage``."""

    def __init__(self, agents: list[Agent], storage: Path, catalog: Catalog, app: App) -> None:
        self.storage = storage
        self.catalog = catalog
        self.app = app
        self.target: Target = build_target(target_conf(agents, snapshot_timeout="300s"), 0)

    async def backup(self) -> OursBackup:
        plan = BackupPlan(
            fleet=Fleet([Endpoint.parse(self.app.endpoint)]),
            targets=[self.target],
            storage=LocalStorage(str(self.storage)),
            catalog=self.catalog,
            capture_deadline_s=330,
        )
        self.app.slowest_ms()
        started = time.monotonic()
        manifest = await run_backup(plan)
        wall = ms_since(started)
        await asyncio.sleep(SETTLE_S)  # requests held by the pause complete after the unpause
        return OursBackup(manifest, wall, self.app.slowest_ms())


# -- Medusa -----------------------------------------------------------------------------------


def find_medusa(given: str | None) -> tuple[Path | None, str]:
    """The medusa script to run, or None and why not."""
    if given:
        path = Path(given)
        return (path, "") if path.is_file() else (None, f"{given} does not exist")
    for candidate in (MEDUSA_VENV / "bin" / "medusa", REPO / ".venv" / "bin" / "medusa"):
        if candidate.is_file():
            return candidate, ""
    found = shutil.which("medusa")
    if found:
        return Path(found), ""
    return None, (
        f"cassandra-medusa is not installed (python3 -m venv {MEDUSA_VENV.relative_to(REPO)} && "
        f"{MEDUSA_VENV.relative_to(REPO)}/bin/pip install cassandra-medusa)"
    )


def medusa_version(script: Path) -> str:
    done = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    return (done.stdout + done.stderr).strip().splitlines()[-1] if done.returncode == 0 else "?"


@dataclass
class MedusaBackup:
    wall_ms: float  # every node's medusa process, spawn to the last exit
    upload_ms: float  # first node's upload start to the last node's upload end (log stamps)
    snapshot_ms: float  # the slowest node's `nodetool snapshot` (log stamps)
    snapshot_bytes: int  # the backup's files (its manifest), every keyspace
    bench_bytes: int  # of which bank and coordinator
    throttled: bool


class Medusa:
    """``medusa backup-node`` on every node at once, with local storage in ``root/store``."""

    def __init__(self, script: Path, nodes: Sequence[CassandraNode], root: Path, unthrottled: bool) -> None:
        self.script = script
        self.nodes = nodes
        self.root = root
        self.store = root / "store"
        self.unthrottled = unthrottled
        self.store.mkdir(parents=True, exist_ok=True)
        for node in nodes:
            (root / f"{node.address}.ini").write_text(self._ini(node))

    def _ini(self, node: CassandraNode) -> str:
        # nodetool_flags: medusa passes "-Dcom.sun.jndi.rmiURLParsing=legacy" by default, meant for
        # the bin/nodetool launcher; our nodetool script would take it for a nodetool argument
        return f"""[cassandra]
config_file = {node.root / "cassandra.yaml"}
nodetool_executable = {node.nodetool_command}
nodetool_flags =
check_running = {node.nodetool_command} version
resolve_ip_addresses = False
use_sudo = False

[storage]
storage_provider = local
base_path = {self.store}
bucket_name = medusa
fqdn = {node.address}
max_backup_age = 0
max_backup_count = 0
concurrent_transfers = 1
use_sudo_for_restore = False

[grpc]
enabled = False

[kubernetes]
enabled = False

[logging]
enabled = 0
"""

    def _argv(self, node: CassandraNode, name: str) -> list[str]:
        args = ["-v", "--config-file", str(self.root / f"{node.address}.ini")]
        args += ["backup-node", "--backup-name", name, "--mode", "differential"]
        if self.unthrottled:
            return [str(self.script.parent / "python"), "-c", _UNTHROTTLED, *args]
        return [str(self.script), *args]

    def backup(self, name: str) -> MedusaBackup:
        path = os.environ.get("PATH", "")
        started = time.monotonic()
        procs = []
        for node in self.nodes:
            log = open(self.root / f"{name}-{node.address}.log", "w+")  # noqa: SIM115 (closed below)
            proc = subprocess.Popen(
                self._argv(node, name),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PATH": f"{node.root}{os.pathsep}{path}"},  # its nodetool first
                cwd=self.root,
            )
            procs.append((node, proc, log))
        outputs = []
        try:
            for node, proc, log in procs:
                try:
                    code = proc.wait(timeout=MEDUSA_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    raise BenchError(
                        f"medusa on {node.address} did not finish in {MEDUSA_TIMEOUT_S:g} s"
                    ) from None
                log.seek(0)
                text = log.read()
                if code != 0:
                    raise BenchError(f"medusa on {node.address} exited {code}: {_tail(text)}")
                outputs.append((node, text))
        finally:
            for _, proc, log in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()
        wall = ms_since(started)
        starts, ends, snapshots = [], [], []
        snapshot_bytes = bench_bytes = 0
        throttled = True
        for node, text in outputs:
            stamps = _medusa_stamps(text)
            errors = [m for level, m in stamps["lines"] if level == "ERROR"]
            if errors:  # e.g. a failed nodetool snapshot: medusa then "succeeds" with no files
                raise BenchError(f"medusa on {node.address} logged an error: {errors[0][:300]}")
            for key in ("snapshot", "upload_start", "upload_end"):
                if key not in stamps:
                    raise BenchError(f"medusa on {node.address}: no '{key}' line in its log: {_tail(text)}")
            snapshots.append((stamps["upload_start"] - stamps["snapshot"]) * 1000)
            starts.append(stamps["upload_start"])
            ends.append(stamps["upload_end"])
            if "Throttling backup impossible" in text:
                throttled = False
            total, bench = self._manifest_bytes(node, name)
            if bench == 0:
                raise BenchError(
                    f"medusa on {node.address}: its backup {name} has no file of bank.bench_rows"
                )
            snapshot_bytes += total
            bench_bytes += bench
        return MedusaBackup(
            wall_ms=wall,
            upload_ms=(max(ends) - min(starts)) * 1000,
            snapshot_ms=max(snapshots),
            snapshot_bytes=snapshot_bytes,
            bench_bytes=bench_bytes,
            throttled=throttled and not self.unthrottled,
        )

    def _manifest_bytes(self, node: CassandraNode, name: str) -> tuple[int, int]:
        """(every file, bank and coordinator files) bytes in the node's manifest of backup ``name``."""
        path = self.store / "medusa" / node.address / name / "meta" / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BenchError(f"medusa on {node.address}: no readable manifest {path}: {exc}") from None
        total = bench = 0
        has_rows = False
        for section in manifest:
            size = sum(int(o.get("size", 0)) for o in section.get("objects", []))
            total += size
            if section.get("keyspace") in KEYSPACES:
                bench += size
                if section.get("columnfamily", "").startswith("bench_rows") and section.get("objects"):
                    has_rows = True
        return total, (bench if has_rows else 0)


def _medusa_stamps(text: str) -> dict[str, Any]:
    stamps: dict[str, Any] = {"lines": []}
    for line in text.splitlines():
        match = _MEDUSA_LINE.match(line)
        if match is None:
            continue
        when = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        level, message = match[2], match[3]
        stamps["lines"].append((level, message))
        if "snapshot" not in stamps and message.startswith("Executing:") and _MEDUSA_SNAPSHOT in message:
            stamps["snapshot"] = when
        elif "upload_start" not in stamps and message.startswith(_MEDUSA_UPLOAD_START):
            stamps["upload_start"] = when
        elif message.startswith(_MEDUSA_UPLOAD_END):
            stamps["upload_end"] = when
    return stamps


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-4:])[-600:]


# -- measurements -----------------------------------------------------------------------------


@dataclass
class Result:
    """What was measured for one cluster size and one data size (lists: one value per round)."""

    nodes: int
    mb: int
    rows: int
    heavy_rows: int
    live_bytes_per_node: int = 0
    samples: dict[str, list[float]] = field(default_factory=dict)
    # "ours1", "ours2", "medusa1", "medusa2": one dict per upload round
    uploads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    medusa_error: str | None = None

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(round(value, 1))

    def median(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None

    def upload(self, key: str, name: str) -> float | None:
        """The median of ``name`` over the upload rounds of backup ``key`` (e.g. "ours1")."""
        values = [float(u[name]) for u in self.uploads.get(key, []) if u.get(name) is not None]
        return statistics.median(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "mb_per_node": self.mb,
            "rows": self.rows,
            "heavy_rows": self.heavy_rows,
            "live_bytes_per_node": self.live_bytes_per_node,
            "medians_ms": {key: self.median(key) for key in sorted(self.samples)},
            "samples_ms": self.samples,
            "upload_medians": {
                key: {name: self.upload(key, name) for name in rounds[0] if name != "throttled"}
                for key, rounds in sorted(self.uploads.items())
            },
            "uploads": self.uploads,
            "medusa": self.medusa_error or "measured",
        }


@dataclass
class Context:
    cluster: CassandraCluster
    data: Data
    app: App
    catalog: Catalog
    work: Path
    medusa: Path | None
    medusa_reason: str
    unthrottled: bool
    rounds: int
    upload_rounds: int
    heavy_mb: int
    keep: bool


def rows_for(mb: int) -> int:
    return max(1000, mb * 1_000_000 // ROW_DISK_BYTES)


def record_ours(result: Result, state: str, backup: OursBackup, who: str = "ours") -> None:
    t = backup.manifest.timings
    result.add(f"{who}.{state}.capture", t.capture_ms)
    result.add(f"{who}.{state}.pause", t.pause_ms)
    result.add(f"{who}.{state}.drain", t.drain_ms)
    result.add(f"{who}.{state}.slowest_request", backup.slowest_request_ms)
    expected = "jmx" if who == "ours" else "nodetool"
    taken = backup.manifest.targets[0].position.get("snapshots", {})
    if any(s.get("via") != expected for s in taken.values()):  # a silent fallback would mislead
        raise BenchError(f"{who}: snapshots not all taken via {expected}: {taken}")


def ours_upload(backup: OursBackup, storage: Path, before: int) -> dict[str, Any]:
    after = folder_bytes(storage)
    return {
        "export_ms": backup.manifest.timings.export_ms,
        "wall_ms": round(backup.wall_ms, 1),
        "snapshot_bytes": backup.snapshot_bytes,
        "mb_per_s": _mbps(backup.snapshot_bytes, backup.manifest.timings.export_ms),
        "uploaded_bytes": backup.uploaded_bytes,
        "hashed_bytes": backup.hashed_bytes,
        "storage_added_bytes": after - before,
        "storage_total_bytes": after,
    }


def medusa_upload(backup: MedusaBackup, store: Path, before: int) -> dict[str, Any]:
    after = folder_bytes(store)
    return {
        "upload_ms": round(backup.upload_ms, 1),
        "wall_ms": round(backup.wall_ms, 1),
        "snapshot_ms": round(backup.snapshot_ms, 1),
        "snapshot_bytes": backup.snapshot_bytes,
        "mb_per_s": _mbps(backup.snapshot_bytes, backup.upload_ms),
        "bench_keyspaces_bytes": backup.bench_bytes,
        "storage_added_bytes": after - before,
        "storage_total_bytes": after,
        "throttled": backup.throttled,
    }


async def measure_uploads(ctx: Context, result: Result, label: str, rep: int, folder: Path) -> None:
    """Two consecutive backups by each tool into fresh folders, the second after 5% of the
    rows changed. Every other repetition Medusa goes first."""
    nodes = ctx.cluster.nodes
    storage = folder / "ours-storage"
    what = f"{label} uploads {rep + 1}/{ctx.upload_rounds}:"
    try:
        with agents_for(nodes, storage, folder) as agents:
            ours = Ours(agents, storage, ctx.catalog, ctx.app)
            medusa = None
            if ctx.medusa is not None and result.medusa_error is None:
                medusa = Medusa(ctx.medusa, nodes, folder / "medusa", ctx.unthrottled)

            async def ours_backup(i: int) -> None:
                say(f"{what} backup {i}, txbackup")
                before = folder_bytes(storage)
                backup = await ours.backup()
                result.uploads.setdefault(f"ours{i}", []).append(ours_upload(backup, storage, before))

            async def medusa_backup(i: int) -> None:
                if medusa is None or result.medusa_error is not None:
                    return
                say(f"{what} backup {i}, medusa")
                before = folder_bytes(medusa.store)
                try:
                    run = await asyncio.to_thread(medusa.backup, f"bench{i}")
                except BenchError as exc:
                    result.medusa_error = str(exc)
                    say(f"{label} medusa: not measured ({exc})")
                    return
                result.uploads.setdefault(f"medusa{i}", []).append(medusa_upload(run, medusa.store, before))

            for i in (1, 2):
                if i == 2:
                    changed = max(1, int(result.rows * CHANGED_FRACTION))
                    first = (rep * changed) % max(1, result.rows - changed)
                    say(f"{what} rewriting {changed} rows (5%), flushing node by node")
                    await asyncio.to_thread(ctx.data.write_and_flush, range(first, first + changed))
                order = (medusa_backup, ours_backup) if rep % 2 else (ours_backup, medusa_backup)
                for step in order:
                    await step(i)
    finally:
        if not ctx.keep:
            shutil.rmtree(folder, ignore_errors=True)


async def measure_captures(ctx: Context, result: Result, label: str, folder: Path) -> None:
    """``--rounds`` times, flushed and with heavy memtables: the native snapshot, a txbackup
    backup through agents with their JMX helpers, and one through agents with nodetool only
    (``--no-jmx``); with heavy memtables, also the flush alone."""
    nodes = ctx.cluster.nodes
    heavy = range(result.heavy_rows)
    with (
        agents_for(nodes, folder / "ours-storage", folder / "jmx") as agents,
        agents_for(nodes, folder / "ours-storage", folder / "nodetool", "--no-jmx") as nodetool_agents,
    ):
        ours = Ours(agents, folder / "ours-storage", ctx.catalog, ctx.app)
        ours_nodetool = Ours(nodetool_agents, folder / "ours-storage", ctx.catalog, ctx.app)
        for r in range(ctx.rounds):
            say(f"{label} round {r + 1}/{ctx.rounds}: flushed (native snapshot, then txbackup jmx, nodetool)")
            ctx.data.flush()
            result.add("native.flushed", native_snapshot(nodes, f"native-{time.monotonic_ns()}"))
            ctx.data.flush()
            record_ours(result, "flushed", await ours.backup())
            ctx.data.flush()
            record_ours(result, "flushed", await ours_nodetool.backup(), who="ours_nodetool")

            say(f"{label} round {r + 1}/{ctx.rounds}: heavy memtables ({len(heavy)} rows rewritten)")
            await asyncio.to_thread(ctx.data.write, heavy)
            memtable = ctx.data.memtable_bytes()
            if memtable is not None:
                result.add("native.heavy.memtable_mb", memtable / 1e6)
            result.add("native.heavy", native_snapshot(nodes, f"native-{time.monotonic_ns()}"))
            await asyncio.to_thread(ctx.data.write, heavy)
            memtable = ctx.data.memtable_bytes()
            if memtable is not None:
                result.add("flush.heavy.memtable_mb", memtable / 1e6)
            result.add("flush.heavy", await asyncio.to_thread(timed_flush, nodes))
            await asyncio.to_thread(ctx.data.write, heavy)
            memtable = ctx.data.memtable_bytes()
            if memtable is not None:
                result.add("ours.heavy.memtable_mb", memtable / 1e6)
            record_ours(result, "heavy", await ours.backup())
            await asyncio.to_thread(ctx.data.write, heavy)
            record_ours(result, "heavy", await ours_nodetool.backup(), who="ours_nodetool")


async def measure(ctx: Context, mb: int) -> Result:
    nodes = ctx.cluster.nodes
    n = len(nodes)
    rows = rows_for(mb)
    heavy_rows = min(rows, rows_for(min(mb, ctx.heavy_mb)))
    result = Result(n, mb, rows, heavy_rows)
    label = f"[{n} node{'s' if n > 1 else ''}, {mb} MB/node]"
    say(f"{label} writing {rows} rows (about {mb} MB per node), flushing node by node")
    ctx.data.truncate()
    started = time.monotonic()
    await asyncio.to_thread(ctx.data.write_and_flush, range(rows))
    say(f"{label} written in {ms_since(started) / 1000:.0f} s")
    result.live_bytes_per_node = round(statistics.mean(live_bytes(node) for node in nodes))
    say(f"{label} {result.live_bytes_per_node / 1e6:.1f} MB of SSTables per node")

    folder = ctx.work / f"{n}n-{mb}mb"
    try:
        if ctx.medusa is None:
            result.medusa_error = ctx.medusa_reason
        for rep in range(ctx.upload_rounds):
            await measure_uploads(ctx, result, label, rep, folder / f"uploads-{rep}")
        await measure_captures(ctx, result, label, folder / "captures")
    finally:
        if not ctx.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return result


# -- output -----------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}"


def _mb(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e6:.1f}"


def _mbps(nbytes: int, ms: float) -> float | None:
    return round(nbytes / 1e6 / (ms / 1000), 1) if ms > 0 else None


LEGEND = {
    "MB/node": "the size asked for (--sizes); 'on disk' is the live SSTables of bank + coordinator "
    "per node after the load and flush (replication factor = node count: every node holds all rows)",
    "unflushed MB": "heavy rows: the bench table's memtable per node (nodetool tablestats) just before "
    "the snapshot, after --heavy-mb MB of rows were rewritten without flush; flushed rows: nodetool "
    "flush ran just before",
    "native snapshot": "wall time of `nodetool snapshot -t TAG bank coordinator` run on every node in "
    "parallel, spawn to the last exit (JVM start and the memtable flush included)",
    "flush alone": "heavy rows: the same keyspaces flushed on every node in parallel through a live "
    "JMX connection (what a snapshot does first); the agents flush at preflight, before the pause, so "
    "that the snapshot's own flush has only what was written since",
    "ours capture": "the engine's capture phase inside the pause: every agent takes the snapshot on its "
    "node in parallel through its live JMX connection (HTTP call to the agent included)",
    "pause window": "the fleet's measured pause window of the txbackup backup (last pause confirmed .. "
    "first unpause sent): the capture plus the engine's bookkeeping; the drain (in-flight requests "
    "finishing, before the window) and the app clients' slowest request around the backup are shown "
    "apart; 'pause (nodetool)': the same backup through agents started with --no-jmx (nodetool "
    "snapshot, a JVM start per node); ratio = JMX / nodetool",
    "ours export": "the engine's export phase (after the unpause): every agent hashes (SHA-256) every "
    "snapshot file its hash cache does not know (unchanged SSTables are not read again), zstd-compresses "
    "(level 1 where level 3 does not store 5% less on a file's first MiB: LZ4-compressed SSTables) "
    "and stores (fsync) the ones the store lacks; node info and schema calls included; 'hashed MB' is "
    "what the agents read to hash",
    "medusa upload": "from medusa's own log stamps (-v): the first node's 'Listing already backed up "
    "files' (snapshot taken) to the last node's 'Cleaning up Cassandra snapshot'; medusa copies new "
    "files as they are (no compression, no fsync) and recognises stored ones by name and size",
    "MB/s": "the backup's snapshot bytes (every file of the snapshot, stored or skipped; each tool's "
    "own count: medusa's covers every keyspace, system ones included) / that time; the upload table "
    "shows medians over --upload-rounds sequences, each into fresh folders (Medusa first in every "
    "other one)",
    "stored +MB": "how much the tool's storage folder grew with this backup (data, manifests, indexes)",
    "wall": "the whole backup. Ours: run_backup (preflight, pause, capture, export, commit, clear "
    "snapshot). Medusa: its per-node processes, spawn to the last exit (CQL, schema, snapshot, "
    "upload, clear snapshot, index)",
}


def print_report(results: Sequence[Result], config: dict[str, Any]) -> None:
    print(
        f"cassandra_bench: Cassandra {config['cassandra']}; medians of {config['rounds']} capture "
        f"round(s) and {config['upload_rounds']} upload round(s); ms unless noted; "
        "ratio = ours / theirs (below 1: ours faster or smaller)"
    )
    print("\nCapture and pause window (the applications' unavailability):")
    rows = []
    for r in results:
        for state in ("flushed", "heavy"):
            memtable = r.median(f"ours.{state}.memtable_mb") if state == "heavy" else None
            native = r.median(f"native.{state}")
            pause, pause_nodetool = r.median(f"ours.{state}.pause"), r.median(f"ours_nodetool.{state}.pause")
            rows.append(
                [
                    r.nodes,
                    r.mb,
                    _mb(r.live_bytes_per_node),
                    state,
                    "-" if memtable is None else _fmt(memtable),
                    _fmt(r.median(f"flush.{state}")),
                    _fmt(native),
                    _fmt(r.median(f"ours.{state}.capture")),
                    _fmt(pause),
                    _fmt(pause_nodetool),
                    _ratio(pause, pause_nodetool),
                    _ratio(pause, native),
                    _fmt(r.median(f"ours.{state}.drain")),
                    _fmt(r.median(f"ours.{state}.slowest_request")),
                ]
            )
    print_table(
        ["nodes", "MB/node", "on disk MB", "memtables", "unflushed MB", "flush alone", "native snapshot",
         "ours capture", "pause window", "pause (nodetool)", "ratio", "ratio native", "drain",
         "slowest req"],
        rows,
    )  # fmt: skip
    print("\nUpload and storage, two consecutive backups (the second after 5% of the rows were rewritten):")
    rows = []
    notes = []
    for r in results:
        for i in (1, 2):
            o_ms, m_ms = r.upload(f"ours{i}", "export_ms"), r.upload(f"medusa{i}", "upload_ms")
            o_add, m_add = (
                r.upload(f"ours{i}", "storage_added_bytes"),
                r.upload(f"medusa{i}", "storage_added_bytes"),
            )
            o_wall, m_wall = r.upload(f"ours{i}", "wall_ms"), r.upload(f"medusa{i}", "wall_ms")
            rows.append(
                [
                    r.nodes,
                    r.mb,
                    i,
                    _fmt(o_ms),
                    _mb(r.upload(f"ours{i}", "hashed_bytes")),
                    _fmt(r.upload(f"ours{i}", "mb_per_s")),
                    _fmt(m_ms),
                    _fmt(r.upload(f"medusa{i}", "mb_per_s")),
                    _ratio(o_ms, m_ms),
                    _mb(o_add),
                    _mb(m_add),
                    _ratio(o_add, m_add),
                    _fmt(_s(o_wall)),
                    _fmt(_s(m_wall)),
                    _ratio(o_wall, m_wall),
                ]
            )
        if r.medusa_error:
            notes.append(f"  {r.nodes} node(s), {r.mb} MB: medusa: not measured ({r.medusa_error})")
    print_table(
        ["nodes", "MB/node", "backup", "ours export", "hashed MB", "MB/s", "medusa upload", "MB/s", "ratio",
         "ours stored +MB", "medusa +MB", "ratio", "ours wall s", "medusa wall s", "ratio"],
        rows,
    )  # fmt: skip
    for note in notes:
        print(note)
    if config.get("medusa"):
        throttle = (
            "run without its self-throttling (--medusa-unthrottled)"
            if config["medusa_unthrottled"]
            else "run as shipped: it lowers its own priority to nice 19 and the idle I/O class before "
            "uploading, so on a busy machine it yields to everything else"
        )
        print(f"  medusa {config['medusa']}: {throttle}")
    print("\nwhat each column includes")
    for name, text in LEGEND.items():
        print(f"  {name}: {text}")


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


# -- main -------------------------------------------------------------------------------------


def parse_list(text: str, what: str, allowed: Sequence[int] | None = None) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be positive integers")
    if allowed is not None and any(v not in allowed for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be among {', '.join(map(str, allowed))}")
    return values


async def bench(args: argparse.Namespace, medusa: Path | None, reason: str) -> list[Result]:
    work = Path(tempfile.mkdtemp(prefix="txb-cass-bench-"))
    say(f"work folder {work}")
    os.environ[TOKEN_ENV] = TOKEN
    results = []
    app = App()
    try:
        for n in args.nodes:
            say(f"starting a {n}-node Cassandra cluster and the sample application")
            cluster = CassandraCluster(n)
            try:
                cluster.start()
                say(f"cluster ready in {cluster.start_seconds:.0f} s")
                ctx = Context(
                    cluster=cluster,
                    data=Data(cluster),
                    app=app,
                    catalog=Catalog(str(work / "catalog.db")),
                    work=work,
                    medusa=medusa,
                    medusa_reason=reason,
                    unthrottled=args.medusa_unthrottled,
                    rounds=args.rounds,
                    upload_rounds=args.upload_rounds,
                    heavy_mb=args.heavy_mb,
                    keep=args.keep,
                )
                for mb in args.sizes:
                    results.append(await measure(ctx, mb))
            finally:
                cluster.stop()
                if not args.keep:
                    cluster.remove()
    finally:
        app.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cassandra_bench",
        description="txbackup on Cassandra against nodetool snapshot and cassandra-medusa, by data size.",
    )
    parser.add_argument(
        "--nodes", type=lambda t: parse_list(t, "--nodes", (1, 2, 3)), default=[1], help="cluster sizes (1)"
    )
    parser.add_argument(
        "--sizes", type=lambda t: parse_list(t, "--sizes"), default=[10, 100], help="MB per node (10,100)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="capture rounds per size; medians (3)")
    parser.add_argument(
        "--upload-rounds", type=int, default=3, help="two-backup sequences per size; medians (3)"
    )
    parser.add_argument("--heavy-mb", type=int, default=32, help="MB rewritten for heavy memtables (32)")
    parser.add_argument("--medusa", help="the medusa script (default: .cache/medusa-venv/bin/medusa, PATH)")
    parser.add_argument("--no-medusa", action="store_true", help="do not run medusa")
    parser.add_argument(
        "--medusa-unthrottled", action="store_true", help="run medusa without its nice 19 / idle I/O"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    parser.add_argument("--json-file", help="also write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the cluster's files")
    parser.add_argument("--app", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.app:
        asyncio.run(_app_main())
        return 0
    if min(args.rounds, args.upload_rounds, args.heavy_mb) < 1:
        parser.error("--rounds, --upload-rounds and --heavy-mb must be at least 1")
    missing = cassandra_servers.missing_reason()
    if missing:
        print(f"cassandra_bench: {missing}", file=sys.stderr)
        return 1
    medusa, reason = (None, "--no-medusa") if args.no_medusa else find_medusa(args.medusa)
    version = medusa_version(medusa) if medusa is not None else None
    if medusa is None:
        say(f"medusa: not measured ({reason})")
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        results = asyncio.run(bench(args, medusa, reason))
    except BenchError as exc:
        print(f"cassandra_bench: {exc}", file=sys.stderr)
        return 1
    jar = next(iter(sorted(cassandra_servers.JARS.glob("cassandra-all-*.jar"))), None)
    config = {
        "nodes": args.nodes,
        "sizes_mb_per_node": args.sizes,
        "rounds": args.rounds,
        "upload_rounds": args.upload_rounds,
        "heavy_mb": args.heavy_mb,
        "cassandra": jar.stem.removeprefix("cassandra-all-") if jar else "?",
        "medusa": version,
        "medusa_unthrottled": bool(args.medusa_unthrottled),
        "cpus": os.cpu_count(),
        "seconds": round(time.monotonic() - started),
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    data = {"config": config, "results": [r.to_json() for r in results], "columns": LEGEND}
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(data, indent=2) + "\n")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_report(results, config)
        load = config["load_average_1m"]
        print(
            f"\n({config['seconds']} s, {config['cpus']} CPUs, load average {load['before']} before, "
            f"{load['after']} after)"
        )
    if max(load_before, os.getloadavg()[0]) > (os.cpu_count() or 1):
        say("warning: the machine was busy (load average above the CPU count): the numbers are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
