"""``txbackup agent`` processes beside test Cassandra nodes, and ScalarDB-like test data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers.cassandra import CassandraNode
from tests.servers.processes import stop_process
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.config import build_target
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.backup import BackupPlan
from txbackup.storage import LocalStorage
from txbackup.targets.cassandra.target import CassandraTarget

TOKEN = "test-agent-token-0123456789"
TOKEN_ENV = "TXBACKUP_TEST_AGENT_TOKEN"


@dataclass
class Agent:
    process: subprocess.Popen[str]
    address: str
    node: CassandraNode
    storage: Path
    state_dir: Path
    extra: tuple[str, ...]
    log: Path

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        stop_process(self.process)


def agent_argv(node: CassandraNode, storage: Path, state_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "txbackup",
        "agent",
        "--port", "0",
        "--token-env", TOKEN_ENV,
        "--cassandra-data", str(node.data_dir),
        "--nodetool-cmd", str(node.nodetool_command),
        "--jmx", f"127.0.0.1:{node.jmx_port}",
        "--sstableloader-cmd", str(node.sstableloader_command),
        "--cql", f"{node.address}:{node.native_port}",
        "--storage", str(storage),
        "--state-dir", str(state_dir),
        *extra,
    ]  # fmt: skip


def start_agent(node: CassandraNode, storage: Path, state_dir: Path, *extra: str, port: int = 0) -> Agent:
    """Start ``txbackup agent`` for ``node``; returns once it listens."""
    argv = agent_argv(node, storage, state_dir, *extra)
    if port:
        argv[argv.index("--port") + 1] = str(port)
    log = state_dir.parent / f"agent-{node.address}-{time.monotonic_ns()}.log"
    state_dir.mkdir(parents=True, exist_ok=True)
    err = open(log, "w")  # noqa: SIM115 (kept by the process)
    try:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1", TOKEN_ENV: TOKEN},
        )
    finally:
        err.close()
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        process.wait()
        raise RuntimeError(f"agent did not start: {line!r} {log.read_text()}")
    return Agent(process, line.split()[-1], node, storage, state_dir, tuple(extra), log)


@contextmanager
def agents_for(nodes: list[CassandraNode], storage: Path, root: Path, *extra: str) -> Iterator[list[Agent]]:
    started: list[Agent] = []
    try:
        for node in nodes:
            started.append(start_agent(node, storage, root / f"state-{node.address}", *extra))
        yield started
    finally:
        for agent in started:
            agent.stop()


def target_conf(agents: list[Agent], **extra: Any) -> dict[str, Any]:
    return {
        "name": "cass",
        "kind": "cassandra",
        "agents": [a.address for a in agents],
        "keyspaces": ["bank"],
        "coordinator_keyspace": "coordinator",
        "token_env": TOKEN_ENV,
        **extra,
    }


def create_schema(session: Any, rf: int = 1) -> None:
    """A bank keyspace and ScalarDB's coordinator keyspace (like the schema loader makes them)."""
    for keyspace in ("bank", "coordinator"):
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
        )
    session.execute(
        "CREATE TABLE IF NOT EXISTS bank.accounts (id int PRIMARY KEY, balance int, tx_id text,"
        " tx_state int, tx_version int)"
    )
    session.execute(
        "CREATE TABLE IF NOT EXISTS coordinator.state (tx_id text PRIMARY KEY, tx_state int,"
        " tx_created_at bigint)"
    )


def recreate_schema(session: Any, rf: int = 1) -> Any:
    """``create_schema`` after dropping what an earlier test left: ``session``, ready."""
    for keyspace in ("bank", "coordinator"):
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    create_schema(session, rf)
    return session


def insert_accounts(session: Any, ids: range, balance: int = 100) -> None:
    statement = session.prepare(
        "INSERT INTO bank.accounts (id, balance, tx_id, tx_state, tx_version) VALUES (?, ?, ?, 3, 1)"
    )
    coordinator = session.prepare(
        "INSERT INTO coordinator.state (tx_id, tx_state, tx_created_at) VALUES (?, 3, ?)"
    )
    from cassandra.concurrent import execute_concurrent_with_args  # type: ignore[import-untyped]

    now = int(time.time() * 1000)
    for query, rows in (
        (statement, [(i, balance, f"tx-{i}") for i in ids]),
        (coordinator, [(f"tx-{i}", now) for i in ids]),
    ):
        for ok, result in execute_concurrent_with_args(session, query, rows, concurrency=16):
            if not ok:
                raise result


def account_ids(session: Any) -> list[int]:
    return sorted(int(r.id) for r in session.execute("SELECT id FROM bank.accounts"))


def snapshot_tags(node: CassandraNode) -> set[str]:
    """The snapshot tags present on disk for the test keyspaces."""
    tags = set()
    for keyspace in ("bank", "coordinator"):
        for table_dir in (node.data_dir / keyspace).glob("*-*"):
            snaps = table_dir / "snapshots"
            if snaps.is_dir():
                tags |= {p.name for p in snaps.iterdir()}
    return tags


def make_target(agents: list[Agent], **extra: Any) -> CassandraTarget:
    target = build_target(target_conf(agents, **extra), 0)
    assert isinstance(target, CassandraTarget)
    return target


def plan_for(app: SampleServer, target: Any, tmp: Path, storage: Path) -> BackupPlan:
    return BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=[target],
        storage=LocalStorage(str(storage)),
        catalog=Catalog(str(tmp / "catalog.db")),
        capture_deadline_s=60,
    )
