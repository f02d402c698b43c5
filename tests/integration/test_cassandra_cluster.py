"""The Cassandra target on a real three-node cluster (127.0.0.1-3, RF=3), one agent per node.

The cluster is started once for this module (about a minute on two cores) and
killed at its end. The node-down test kills a node and runs last.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.servers import cassandra as cassandra_servers
from tests.servers.cassandra import CassandraCluster
from tests.servers.cassandra_agents import (
    TOKEN,
    TOKEN_ENV,
    Agent,
    account_ids,
    agents_for,
    insert_accounts,
    make_target,
    plan_for,
    recreate_schema,
    snapshot_tags,
)
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.backup import run_backup
from txbackup.engine.restore import RestorePlan, restore_set
from txbackup.errors import TargetError
from txbackup.jobs import JobStore

pytestmark = pytest.mark.cassandra


@pytest.fixture(scope="module")
def cluster3() -> Iterator[CassandraCluster]:
    require(cassandra_servers.missing_reason())
    with CassandraCluster(3) as cluster:
        print(f"three nodes up in {cluster.start_seconds:.0f}s")
        yield cluster


@pytest.fixture
def session(cluster3: CassandraCluster) -> Any:
    return recreate_schema(cluster3.session(consistency="ALL"), rf=3)


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def agents(cluster3: CassandraCluster, storage_dir: Path, tmp_path: Path) -> Iterator[list[Agent]]:
    with agents_for(cluster3.nodes, storage_dir, tmp_path) as started:
        yield started


@pytest.fixture(autouse=True)
def agent_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def partitions(cluster: CassandraCluster, node: int, table: str = "bank.accounts") -> int:
    """The partitions node ``node`` holds itself (its SSTables, after a flush)."""
    cluster.nodes[node].nodetool("flush", table.split(".")[0])
    for line in cluster.nodes[node].nodetool("tablestats", table).splitlines():
        if "Number of partitions (estimate)" in line:
            return int(line.split(":")[1])
    raise AssertionError(f"no partition count for {table} on node {node}")


async def test_cluster_backup_then_restore_after_losing_every_node_s_data(
    app: SampleServer,
    session: Any,
    agents: list[Agent],
    storage_dir: Path,
    tmp_path: Path,
    cluster3: CassandraCluster,
) -> None:
    insert_accounts(session, range(30))
    target = make_target(agents)
    target.preflight()
    plan = plan_for(app, target, tmp_path, storage_dir)
    manifest = await run_backup(plan)
    print(f"timings: {manifest.timings}")
    assert not app.gate.paused
    position = manifest.target("cass").position
    ring = {n["address"]: n["tokens"] for n in position["nodes"]}
    assert ring == {n.address: [str(n.token)] for n in cluster3.nodes}
    assert all(n["files"] > 0 for n in position["nodes"])
    for node in cluster3.nodes:
        assert manifest.set_id not in snapshot_tags(node)
    insert_accounts(session, range(30, 40))
    # a quorum of nodes loses its data: only a consistent backup brings the cluster back
    session.execute("DROP KEYSPACE bank")
    session.execute("DROP KEYSPACE coordinator")
    _, names = restore_set(
        RestorePlan(
            storage=plan.storage,
            manifest=manifest,
            targets=[target],
            jobs=JobStore(str(tmp_path / "catalog.db")),
        )
    )
    assert names == ["cass"]
    assert account_ids(session) == list(range(30))
    # every node has its own copy back (imported node by node, not repaired)
    assert [partitions(cluster3, i) for i in range(3)] == [30, 30, 30]


async def test_a_node_down_during_capture_fails_the_set_and_clears_the_others(
    app: SampleServer,
    session: Any,
    agents: list[Agent],
    storage_dir: Path,
    tmp_path: Path,
    cluster3: CassandraCluster,
) -> None:
    insert_accounts(session, range(5))
    target = make_target(agents)
    down = cluster3.nodes[2]
    original = target.capture

    def capture_after_a_crash(set_id: str) -> Any:
        down.kill()  # the node dies after the preflight, inside the pause
        return original(set_id)

    target.capture = capture_after_a_crash  # type: ignore[method-assign]
    plan = plan_for(app, target, tmp_path, storage_dir)
    started = time.monotonic()
    # through the agent's JMX connection, broken by the crash (through nodetool: "Failed to connect")
    refused = "the connection to the node broke: ConnectException: Connection refused"
    with pytest.raises(TargetError, match=rf"agent {agents[2].address}: snapshot: .*{refused}"):
        await run_backup(plan)
    elapsed = time.monotonic() - started
    assert not app.gate.paused and elapsed < 30
    [row] = plan.catalog.list()
    assert row.status == "failed"
    for thread in threading.enumerate():
        if thread.name.startswith("cassandra-clear-"):
            thread.join(timeout=120)
    for node in cluster3.nodes[:2]:
        assert row.set_id not in snapshot_tags(node)
    assert list(storage_dir.glob("sets/*")) == []
