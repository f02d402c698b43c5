"""The agent's live JMX connection and hash cache against one real Cassandra 5.0 node.

The node is the session's (``cassandra_cluster``); each test starts its own agents.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.cassandra import CassandraCluster
from tests.servers.cassandra_agents import (
    TOKEN,
    TOKEN_ENV,
    Agent,
    agents_for,
    insert_accounts,
    make_target,
    plan_for,
    recreate_schema,
    snapshot_tags,
    start_agent,
)
from txbackup.agent import hashcache
from txbackup.agent.client import AgentClient
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.backup import run_backup

pytestmark = pytest.mark.cassandra

KEYSPACES = ["bank", "coordinator"]
STORE = "cassandra/txbackup-test/sstables"


@pytest.fixture
def session(cassandra_cluster: CassandraCluster) -> Any:
    return recreate_schema(cassandra_cluster.session())


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(autouse=True)
def agent_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture
def agent(cassandra_cluster: CassandraCluster, storage_dir: Path, tmp_path: Path) -> Iterator[Agent]:
    with agents_for(cassandra_cluster.nodes, storage_dir, tmp_path) as started:
        yield started[0]


def client(agent: Agent) -> AgentClient:
    return AgentClient(agent.address, culprit="test", token=TOKEN)


def wait_for_helper(agent: Agent, other_than: int | None = None, timeout: float = 60) -> int:
    """The pid of the agent's running JMX helper (not ``other_than``), waiting for it."""
    deadline = time.monotonic() + timeout
    while True:
        info = client(agent).call("info")
        pid = info.get("jmx_helper_pid")
        if info["snapshots_via"] == "jmx" and isinstance(pid, int) and pid != other_than:
            return pid
        if time.monotonic() > deadline:
            raise AssertionError(f"no JMX helper after {timeout} s: {info}")
        time.sleep(0.3)


async def backup(app: SampleServer, agents: list[Agent], tmp: Path, storage: Path) -> Any:
    target = make_target(agents)
    plan = plan_for(app, target, tmp, storage)
    return await run_backup(plan)


# -- the pause --------------------------------------------------------------------------------------


async def test_the_pause_window_with_the_helper_is_far_below_the_nodetool_one(
    session: Any,
    app: SampleServer,
    cassandra_cluster: CassandraCluster,
    storage_dir: Path,
    tmp_path: Path,
) -> None:
    """The same backup through an agent with its JMX helper, then one with nodetool only
    (--no-jmx): the first pause window is a fraction of the second (a JVM start)."""
    node = cassandra_cluster.nodes[0]
    insert_accounts(session, range(50))
    with agents_for([node], storage_dir, tmp_path / "jmx") as agents:
        wait_for_helper(agents[0])
        fast = await backup(app, agents, tmp_path, storage_dir)
    insert_accounts(session, range(50, 60))
    with agents_for([node], storage_dir, tmp_path / "nodetool", "--no-jmx") as agents:
        slow = await backup(app, agents, tmp_path, storage_dir)
    [fast_node], [slow_node] = (m.targets[0].position["snapshots"].values() for m in (fast, slow))
    assert fast_node["via"] == "jmx" and slow_node["via"] == "nodetool"
    fast_ms, slow_ms = fast.timings.pause_ms, slow.timings.pause_ms
    # a nodetool JVM start is 0.5-2 s here, a snapshot through the helper tens of ms: a wide margin
    assert fast_ms * 2 < slow_ms, (fast_ms, slow_ms)
    assert not snapshot_tags(node) & {fast.set_id, slow.set_id}  # both cleared after the commit


async def test_a_killed_helper_is_started_again_and_used_by_the_next_backup(
    session: Any, app: SampleServer, agent: Agent, storage_dir: Path, tmp_path: Path
) -> None:
    first = wait_for_helper(agent)
    os.kill(first, signal.SIGKILL)
    second = wait_for_helper(agent, other_than=first)  # the supervisor, without any call
    assert "JMX helper started again" in agent.log.read_text()
    os.kill(second, signal.SIGKILL)
    # killed again just before a backup: its preflight starts one (outside the pause)
    manifest = await backup(app, [agent], tmp_path, storage_dir)
    [taken] = manifest.targets[0].position["snapshots"].values()
    assert taken["via"] == "jmx"
    assert wait_for_helper(agent) not in (first, second)


async def test_without_a_helper_snapshots_fall_back_to_nodetool_with_a_warning(
    session: Any,
    app: SampleServer,
    cassandra_cluster: CassandraCluster,
    storage_dir: Path,
    tmp_path: Path,
) -> None:
    node = cassandra_cluster.nodes[0]
    insert_accounts(session, range(10))
    refused = start_agent(node, storage_dir, tmp_path / "state", "--jmx", "127.0.0.1:1")
    try:
        info = client(refused).call("preflight", {"keyspaces": KEYSPACES})
        assert info["snapshots_via"] == "nodetool" and "Connection refused" in info["jmx_unavailable"]
        manifest = await backup(app, [refused], tmp_path, storage_dir)
        [taken] = manifest.targets[0].position["snapshots"].values()
        assert taken["via"] == "nodetool"
        log = refused.log.read_text()
        assert "JMX 127.0.0.1:1: ConnectException: Connection refused; snapshots use nodetool" in log
        assert f"Connection refused): snapshot {manifest.set_id} through nodetool" in log
        assert manifest.set_id not in snapshot_tags(node)
    finally:
        refused.stop()


# -- the hash cache ----------------------------------------------------------------------------------


def snapshot_and_upload(agent: Agent, tag: str) -> dict[str, Any]:
    c = client(agent)
    assert c.call("snapshot", {"tag": tag, "keyspaces": KEYSPACES})["via"] == "jmx"
    try:
        return c.call("upload", {"tag": tag, "keyspaces": KEYSPACES, "store": STORE})
    finally:
        c.call("clear", {"tag": tag, "keyspaces": KEYSPACES})


def test_unchanged_sstables_are_not_read_again_and_a_touched_one_is(
    session: Any, agent: Agent, cassandra_cluster: CassandraCluster
) -> None:
    node = cassandra_cluster.nodes[0]
    wait_for_helper(agent)
    insert_accounts(session, range(200))
    first = snapshot_and_upload(agent, "cache-1")
    assert first["hashed_bytes"] == first["bytes"] and first["hash_cache_hits"] == 0
    cache_file = agent.state_dir / hashcache.FILE_NAME
    assert cache_file.stat().st_mode & 0o777 == 0o600

    insert_accounts(session, range(200, 210))  # new SSTables for the second snapshot
    second = snapshot_and_upload(agent, "cache-2")
    old = {(f["table_dir"], f["name"]): f for f in first["files"]}
    new = [f for f in second["files"] if (f["table_dir"], f["name"]) not in old]
    metadata = [f for f in second["files"] if f["name"] in ("manifest.json", "schema.cql")]
    assert new, "the second snapshot has new SSTables"
    # only the new SSTables and the snapshot's own metadata files were read
    assert second["hashed_bytes"] == sum(f["size"] for f in new + metadata)
    assert second["hash_cache_hits"] == len(second["files"]) - len(new) - len(metadata) > 0
    assert second["uploaded_bytes"] <= second["hashed_bytes"]

    # a live SSTable with a new mtime (the same bytes): hashed again, same digest
    data = sorted((node.data_dir / "bank").glob("accounts-*/*-Data.db"))[0]
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    third = snapshot_and_upload(agent, "cache-3")
    metadata = [f for f in third["files"] if f["name"] in ("manifest.json", "schema.cql")]
    assert third["hashed_bytes"] == st.st_size + sum(f["size"] for f in metadata)
    [touched] = [f for f in third["files"] if f["name"] == data.name and f["table"] == "accounts"]
    [before] = [f for f in second["files"] if f["name"] == data.name and f["table"] == "accounts"]
    assert touched["sha256"] == before["sha256"]


def test_a_corrupt_cache_file_is_ignored_with_a_warning_and_rebuilt(
    session: Any, cassandra_cluster: CassandraCluster, storage_dir: Path, tmp_path: Path
) -> None:
    node = cassandra_cluster.nodes[0]
    insert_accounts(session, range(50))
    state = tmp_path / "state"
    agent = start_agent(node, storage_dir, state)
    try:
        wait_for_helper(agent)
        snapshot_and_upload(agent, "corrupt-1")
    finally:
        agent.stop()
    (state / hashcache.FILE_NAME).write_bytes(b'{"format": "txbackup-hash-cache", "version": 1, "entr')
    agent = start_agent(node, storage_dir, state)
    try:
        wait_for_helper(agent)
        again = snapshot_and_upload(agent, "corrupt-2")
        assert again["hashed_bytes"] == again["bytes"]  # everything read again
        assert "hash cache" in agent.log.read_text() and "ignored (it is rebuilt)" in agent.log.read_text()
        sstables = [f for f in again["files"] if f["name"] not in ("manifest.json", "schema.cql")]
        assert len(hashcache.HashCache(state)) == len(sstables)  # rebuilt, valid
        third = snapshot_and_upload(agent, "corrupt-3")
        assert third["hash_cache_hits"] == len(sstables)
    finally:
        agent.stop()
