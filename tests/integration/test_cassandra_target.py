"""The Cassandra target and its agents against one real Cassandra 5.0 node.

The node is started once for the session (``cassandra_cluster``); every test
gets fresh agents (``txbackup agent`` processes) and a fresh storage folder,
and recreates the test keyspaces.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
    start_agent,
)
from txbackup.agent import blobs
from txbackup.agent.client import AgentClient
from txbackup.demo.sample_service import SampleServer, start_sample_server
from txbackup.engine.artifacts import SetReader, SetWriter
from txbackup.engine.backup import run_backup
from txbackup.engine.manifest import Manifest
from txbackup.engine.restore import RestorePlan, restore_set
from txbackup.errors import IntegrityError, TargetError, UsageError
from txbackup.jobs import JobStore, MemoryJournal
from txbackup.storage import LocalStorage
from txbackup.targets.cassandra import target as cassandra_target

pytestmark = pytest.mark.cassandra


@pytest.fixture
def session(cassandra_cluster: CassandraCluster) -> Any:
    return recreate_schema(cassandra_cluster.session())


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def agents(cassandra_cluster: CassandraCluster, storage_dir: Path, tmp_path: Path) -> Iterator[list[Agent]]:
    with agents_for(cassandra_cluster.nodes, storage_dir, tmp_path) as started:
        yield started


@pytest.fixture(autouse=True)
def agent_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def restore(manifest: Manifest, target: Any, storage: Path, tmp: Path, force: bool = False) -> list[str]:
    names: list[str]
    _, names = restore_set(
        RestorePlan(
            storage=LocalStorage(str(storage)),
            manifest=manifest,
            targets=[target],
            jobs=JobStore(str(tmp / "catalog.db")),
            force=force,
        )
    )
    return names


def read_artifact(reader: SetReader, name: str) -> bytes:
    with reader.open(name) as stream:
        return stream.read()


def blob_files(storage: Path) -> list[Path]:
    return [p for p in storage.glob("cassandra/*/sstables/*") if not p.name.startswith(".")]


# -- configuration -------------------------------------------------------------------------------


def test_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"name": "c", "kind": "cassandra", "agents": ["127.0.0.1:7480"], "keyspaces": ["bank"]}
    target = cassandra_target.from_config("c", base)
    assert target.all_keyspaces == ["bank", "coordinator", "scalardb"]
    # "" switches ScalarDB's keyspaces off (multi-storage: the coordinator lives elsewhere)
    off = cassandra_target.from_config("c", {**base, "coordinator_keyspace": "", "system_keyspace": ""})
    assert off.all_keyspaces == ["bank"]
    assert target.describe()["agents"] == ["127.0.0.1:7480"]
    with pytest.raises(UsageError, match="agents is required"):
        cassandra_target.from_config("c", {k: v for k, v in base.items() if k != "agents"})
    with pytest.raises(UsageError, match="unknown setting"):
        cassandra_target.from_config("c", {**base, "agent": ["x"]})
    with pytest.raises(UsageError, match="method must be"):
        cassandra_target.from_config("c", {**base, "method": "cold"})
    with pytest.raises(UsageError, match="restore_with must be"):
        cassandra_target.from_config("c", {**base, "restore_with": "loader"})
    with pytest.raises(UsageError, match="do not write the token"):
        cassandra_target.from_config("c", {**base, "token": "secret"})
    with pytest.raises(UsageError, match="bad port"):
        cassandra_target.from_config("c", {**base, "agents": ["127.0.0.1:99999"]})
    with pytest.raises(UsageError, match="malformed duration"):
        cassandra_target.from_config("c", {**base, "snapshot_timeout": "soon"})


# -- capture, export, restore on the target itself ------------------------------------------------


def test_capture_export_restore_only_the_captured_rows(
    session: Any, agents: list[Agent], storage_dir: Path, cassandra_cluster: CassandraCluster
) -> None:
    node = cassandra_cluster.nodes[0]
    target = make_target(agents)
    target.preflight()
    insert_accounts(session, range(10))
    set_id = "20260101T000000Z-aaaa"
    started = time.monotonic()
    capture = target.capture(set_id)
    snapshot_s = time.monotonic() - started
    try:
        assert set_id in snapshot_tags(node)
        insert_accounts(session, range(10, 15))  # after the capture: not in the backup
        storage = LocalStorage(str(storage_dir))
        writer = SetWriter(storage, set_id, "cass")
        started = time.monotonic()
        capture.export(writer)
        upload_s = time.monotonic() - started
    finally:
        capture.release()
    capture.release()  # idempotent
    assert set_id not in snapshot_tags(node)
    print(f"snapshot {snapshot_s:.2f}s, upload {upload_s:.2f}s")
    position = capture.position()
    assert position["tag"] == set_id and position["cluster_name"] == "txbackup-test"
    [entry] = position["nodes"]
    assert entry["tokens"] == [str(node.token)] and entry["files"] > 0
    names = [r.name for r in writer.records]
    assert f"nodes/{node.address}.json" in names and "schema.cql" in names and "schema.json" in names
    reader = SetReader(storage, set_id, "cass", writer.records, position=position, journal=MemoryJournal())
    schema = json.loads(read_artifact(reader, "schema.json"))
    assert any(s["type"] == "table" and s["name"] == "accounts" for s in schema)
    # every stored file is its own SHA-256
    listing = json.loads(read_artifact(reader, f"nodes/{node.address}.json"))
    assert {f["table"] for f in listing["files"]} == {"accounts", "state"}
    assert len(blob_files(storage_dir)) == len({f["sha256"] for f in listing["files"]})

    assert account_ids(session) == list(range(15))
    with pytest.raises(TargetError, match=r"table bank\.accounts .*is not empty.*--force"):
        target.restore(reader, None, force=False)
    target.restore(reader, None, force=True)  # truncates, then nodetool import
    assert account_ids(session) == list(range(10))
    assert len(list(session.execute("SELECT tx_id FROM coordinator.state"))) == 10
    assert not (node.root / "txbackup-restore" / set_id).exists()  # staging removed


async def test_engine_backup_then_restore_after_losing_the_keyspace(
    app: SampleServer, session: Any, agents: list[Agent], storage_dir: Path, tmp_path: Path
) -> None:
    insert_accounts(session, range(20))
    target = make_target(agents)
    plan = plan_for(app, target, tmp_path, storage_dir)
    manifest = await run_backup(plan)
    assert not app.gate.paused
    assert plan.catalog.get(manifest.set_id).status == "complete"  # type: ignore[union-attr]
    record = manifest.target("cass")
    entry = record.position["nodes"][0]
    # identical files (two TOC.txt...) are stored once, even within one set
    assert 0 < entry["uploaded_files"] == len(blob_files(storage_dir)) <= entry["files"]
    assert manifest.set_id not in snapshot_tags(agents[0].node)  # cleared after the commit
    session.execute("DROP KEYSPACE bank")
    session.execute("DROP KEYSPACE coordinator")
    assert restore(manifest, target, storage_dir, tmp_path) == ["cass"]
    assert account_ids(session) == list(range(20))


async def test_second_backup_stores_only_new_sstables(
    app: SampleServer, session: Any, agents: list[Agent], storage_dir: Path, tmp_path: Path
) -> None:
    insert_accounts(session, range(10))
    target = make_target(agents)
    first = await run_backup(plan_for(app, target, tmp_path, storage_dir))
    stored_first = set(blob_files(storage_dir))
    insert_accounts(session, range(10, 12))
    second = await run_backup(plan_for(app, target, tmp_path, storage_dir))
    stored_second = set(blob_files(storage_dir))
    n1 = first.target("cass").position["nodes"][0]
    n2 = second.target("cass").position["nodes"][0]
    assert n2["files"] > n1["files"]  # the old SSTables are in the second set too...
    assert 0 < n2["uploaded_files"] < n2["files"]  # ...but only the new ones were uploaded
    assert stored_first < stored_second
    assert len(stored_second - stored_first) == n2["uploaded_files"]
    # restoring the first set still works once the second exists
    session.execute("TRUNCATE bank.accounts")
    restore(first, target, storage_dir, tmp_path, force=True)
    assert account_ids(session) == list(range(10))


# -- faults ---------------------------------------------------------------------------------------


async def test_agent_unreachable_at_preflight_pauses_nothing(
    app: SampleServer, session: Any, agents: list[Agent], storage_dir: Path, tmp_path: Path
) -> None:
    dead = start_agent(agents[0].node, storage_dir, tmp_path / "dead-state")
    dead.stop()
    target = make_target([*agents, dead])
    pauses = []
    original = app.gate.pause

    async def counted(*args: Any, **kwargs: Any) -> None:
        pauses.append(1)
        await original(*args, **kwargs)

    app.gate.pause = counted  # type: ignore[method-assign]
    plan = plan_for(app, target, tmp_path, storage_dir)
    with pytest.raises(TargetError) as caught:
        await run_backup(plan)
    message = str(caught.value)
    assert f"agent {dead.address}: unreachable (connection refused" in message
    assert "\n" not in message and pauses == [] and plan.catalog.list() == []


def test_wrong_token_is_refused(agents: list[Agent]) -> None:
    client = AgentClient(agents[0].address, culprit="test", token="not-the-token-at-all")
    with pytest.raises(TargetError, match="bad or missing agent token"):
        client.call("info")
    with pytest.raises(TargetError, match="bad or missing agent token"):
        AgentClient(agents[0].address, culprit="test").call("info")


def test_missing_keyspace_at_preflight(session: Any, agents: list[Agent]) -> None:
    target = make_target(agents, keyspaces=["bank", "nosuch"])
    with pytest.raises(TargetError, match=r"keyspace nosuch does not exist on node 127\.0\.0\.1"):
        target.preflight()


def test_scalardb_keyspaces_are_taken_where_they_exist(
    session: Any, agents: list[Agent], storage_dir: Path, tmp_path: Path
) -> None:
    """Multi-storage with the coordinator in another storage (issue 16): the default settings
    back up without a coordinator keyspace here; a system keyspace that exists is taken."""
    session.execute("DROP KEYSPACE IF EXISTS coordinator")
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS scalardb WITH replication = {'class': 'SimpleStrategy', "
        "'replication_factor': 1}"
    )
    session.execute("CREATE TABLE IF NOT EXISTS scalardb.namespaces (namespace_name text PRIMARY KEY)")
    session.execute("INSERT INTO scalardb.namespaces (namespace_name) VALUES ('bank')")
    try:
        target = make_target(agents)
        target.preflight()
        assert target.absent == {"coordinator"}
        assert target.present_keyspaces == ["bank", "scalardb"]
        capture = target.capture("20260101T000000Z-scdb")
        try:
            capture.export(SetWriter(LocalStorage(str(storage_dir)), "20260101T000000Z-scdb", "cass"))
            position = capture.position()
        finally:
            capture.release()
        assert sorted(position["keyspaces"]) == ["bank", "scalardb"]
        # a capture without a preflight asks the agents itself
        assert make_target(agents).present_keyspaces == ["bank", "scalardb"]
        # a keyspace the configuration lists is still demanded
        with pytest.raises(TargetError, match="keyspace coordinator does not exist"):
            make_target(agents, keyspaces=["bank", "coordinator"]).preflight()
    finally:
        session.execute("DROP KEYSPACE IF EXISTS scalardb")


async def test_a_node_failing_its_snapshot_unpauses_and_clears_the_others(
    app: SampleServer,
    session: Any,
    agents: list[Agent],
    storage_dir: Path,
    tmp_path: Path,
    cassandra_cluster: CassandraCluster,
) -> None:
    """A second agent whose nodetool cannot reach its node (as if the node were down):
    the capture fails at once, the application is unpaused, the set is FAILED, and
    the snapshot the healthy agent took is cleared."""
    node = cassandra_cluster.nodes[0]
    broken_nodetool = tmp_path / "nodetool-down"
    broken_nodetool.write_text("#!/bin/sh\necho 'nodetool: Failed to connect to 127.0.0.1:1' >&2\nexit 1\n")
    broken_nodetool.chmod(0o755)
    broken = start_agent(
        node, storage_dir, tmp_path / "broken-state", "--nodetool-cmd", str(broken_nodetool), "--no-jmx"
    )
    try:
        target = make_target([*agents, broken])
        target.preflight = lambda: None  # type: ignore[method-assign]  # both agents serve one node
        plan = plan_for(app, target, tmp_path, storage_dir)
        started = time.monotonic()
        with pytest.raises(TargetError, match=rf"agent {broken.address}: .*Failed to connect"):
            await run_backup(plan)
        assert not app.gate.paused and time.monotonic() - started < 30
        [row] = plan.catalog.list()
        assert row.status == "failed"
        for thread in threading.enumerate():  # the background clearing
            if thread.name.startswith("cassandra-clear-"):
                thread.join(timeout=60)
        assert row.set_id not in snapshot_tags(node)
        assert list(storage_dir.glob("sets/*")) == []
    finally:
        broken.stop()


async def test_agent_killed_during_upload_fails_the_set_then_resumes(
    app: SampleServer, session: Any, agents: list[Agent], storage_dir: Path, tmp_path: Path
) -> None:
    node = agents[0].node
    for batch in range(8):  # many SSTables: an upload that lasts a while
        insert_accounts(session, range(batch * 50, batch * 50 + 50))
        node.nodetool("flush", "bank")
    target = make_target(agents)
    killed = threading.Event()

    def kill_at_first_blob() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not blob_files(storage_dir):
            time.sleep(0.005)
        os.kill(agents[0].process.pid, signal.SIGKILL)
        killed.set()

    original_export = cassandra_target.CassandraCapture.export

    def export(self: Any, out: Any) -> None:
        threading.Thread(target=kill_at_first_blob, daemon=True).start()
        original_export(self, out)

    cassandra_target.CassandraCapture.export = export  # type: ignore[method-assign]
    try:
        plan = plan_for(app, target, tmp_path, storage_dir)
        with pytest.raises(TargetError, match=rf"agent {agents[0].address}: upload: connection lost"):
            await run_backup(plan)
    finally:
        cassandra_target.CassandraCapture.export = original_export  # type: ignore[method-assign]
    assert killed.is_set() and not app.gate.paused
    [row] = plan.catalog.list()
    assert row.status == "failed" and list(storage_dir.glob("sets/*")) == []
    partial_blobs = blob_files(storage_dir)
    assert partial_blobs
    for blob in partial_blobs:  # whatever was stored is whole: each blob matches its name
        blobs.fetch_file(
            LocalStorage(str(storage_dir)),
            str(blob.parent.relative_to(storage_dir)),
            blob.name,
            _plain_size(blob),
            str(tmp_path / "check"),
            blob.name,
        )
        os.unlink(tmp_path / "check")
    assert row.set_id in snapshot_tags(node)  # the agent died holding it...
    restarted = start_agent(node, storage_dir, agents[0].state_dir, *agents[0].extra)
    agents[0] = restarted
    deadline = time.monotonic() + 60
    while row.set_id in snapshot_tags(node) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert row.set_id not in snapshot_tags(node)  # ...and cleared it once restarted
    # the next backup reuses what was uploaded: the interrupted upload resumes
    target = make_target(agents)
    manifest = await run_backup(plan_for(app, target, tmp_path, storage_dir))
    entry = manifest.target("cass").position["nodes"][0]
    assert entry["uploaded_files"] == len(blob_files(storage_dir)) - len(partial_blobs) < entry["files"]


def _plain_size(blob: Path) -> int:
    import zstandard

    return len(zstandard.ZstdDecompressor().stream_reader(blob.open("rb")).read())


async def test_corrupted_sstable_in_storage_is_named_and_nothing_restored(
    app: SampleServer, session: Any, agents: list[Agent], storage_dir: Path, tmp_path: Path
) -> None:
    insert_accounts(session, range(10))
    target = make_target(agents)
    manifest = await run_backup(plan_for(app, target, tmp_path, storage_dir))
    node = agents[0].node
    reader = SetReader(
        LocalStorage(str(storage_dir)),
        manifest.set_id,
        "cass",
        manifest.target("cass").artifacts,
        journal=MemoryJournal(),
    )
    listing = json.loads(read_artifact(reader, f"nodes/{node.address}.json"))
    data_file = next(
        f for f in listing["files"] if f["table"] == "accounts" and f["name"].endswith("-Data.db")
    )
    [blob] = storage_dir.glob(f"cassandra/*/sstables/{data_file['sha256']}")
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    blob.write_bytes(bytes(raw))
    insert_accounts(session, range(10, 13))
    with pytest.raises(IntegrityError, match=rf"bank\.accounts {data_file['name']} .*corrupt"):
        restore(manifest, target, storage_dir, tmp_path, force=True)
    assert account_ids(session) == list(range(13))  # not truncated: nothing was changed
    assert not any((node.root / "txbackup-restore").glob("*/*"))


def test_restore_into_another_token_layout_is_refused_without_the_loader(
    session: Any, agents: list[Agent], storage_dir: Path
) -> None:
    insert_accounts(session, range(5))
    target = make_target(agents)
    set_id = "20260101T000000Z-bbbb"
    capture = target.capture(set_id)
    storage = LocalStorage(str(storage_dir))
    writer = SetWriter(storage, set_id, "cass")
    try:
        capture.export(writer)
    finally:
        capture.release()
    position = dict(capture.position())
    # as if the backup came from a three-node cluster
    node = dict(position["nodes"][0])
    position["nodes"] = [
        dict(node, address=f"10.0.0.{i}", tokens=[str(t)])
        for i, t in enumerate(cassandra_servers.spread_tokens(3))
    ]
    for n in position["nodes"]:
        n["files_artifact"] = node["files_artifact"]
    reader = SetReader(storage, set_id, "cass", writer.records, position=position, journal=MemoryJournal())
    with pytest.raises(TargetError) as caught:
        target.restore(reader, None, force=True)
    message = str(caught.value)
    assert "token layout differs" in message and 'restore_with = "sstableloader"' in message
    assert "backup: 3 node(s)" in message and "cluster: 1 node(s)" in message
    assert account_ids(session) == list(range(5))  # untouched


def test_restore_into_another_token_layout_with_sstableloader(
    session: Any, agents: list[Agent], storage_dir: Path
) -> None:
    """A set from "two nodes" (the same files under two token ranges, as RF=2 gives)
    streamed into this one-node cluster with sstableloader."""
    insert_accounts(session, range(7))
    target = make_target(agents, restore_with="sstableloader")
    set_id = "20260101T000000Z-cccc"
    capture = target.capture(set_id)
    storage = LocalStorage(str(storage_dir))
    writer = SetWriter(storage, set_id, "cass")
    try:
        capture.export(writer)
    finally:
        capture.release()
    position = dict(capture.position())
    node = dict(position["nodes"][0])
    tokens = cassandra_servers.spread_tokens(2)
    position["nodes"] = [dict(node, address=f"10.0.0.{i}", tokens=[str(t)]) for i, t in enumerate(tokens)]
    insert_accounts(session, range(7, 9))
    reader = SetReader(storage, set_id, "cass", writer.records, position=position, journal=MemoryJournal())
    started = time.monotonic()
    target.restore(reader, None, force=True)
    print(f"sstableloader restore {time.monotonic() - started:.1f}s")
    assert account_ids(session) == list(range(7))
    assert reader.journal.is_done(f"load/{agents[0].address}")


async def test_cold_method_drains_stops_snapshots_and_starts_the_node(
    session: Any, storage_dir: Path, tmp_path: Path, cassandra_cluster: CassandraCluster
) -> None:
    """The guide's second way: stop the cluster, snapshot every node, start it again."""
    node = cassandra_cluster.nodes[0]
    insert_accounts(session, range(10))
    service = str(node.service_command)
    agent = start_agent(
        node,
        storage_dir,
        tmp_path / "cold-state",
        "--stop-cmd",
        f"{service} stop",
        "--start-cmd",
        f"{service} start",
    )
    app = await start_sample_server(lease_seconds=600)
    try:
        target = make_target([agent], method="stop", start_timeout="3m")
        plan = plan_for(app, target, tmp_path, storage_dir)
        plan.capture_deadline_s = 300
        manifest = await run_backup(plan)
        assert not app.gate.paused
        print(f"cold capture (drain, stop, snapshot, start) {manifest.timings.capture_ms} ms")
        position = manifest.target("cass").position
        assert position["method"] == "stop" and position["nodes"][0]["files"] > 0
        assert manifest.set_id not in snapshot_tags(node)
        after = cassandra_cluster.session()  # the node was restarted: a fresh connection
        assert account_ids(after) == list(range(10))
        insert_accounts(after, range(10, 12))
        restore(manifest, target, storage_dir, tmp_path, force=True)
        assert account_ids(after) == list(range(10))
    finally:
        agent.stop()
        await app.stop()


async def test_verify_checks_the_sets_sstable_blobs(
    app: SampleServer, session: Any, agents: list[Agent], storage_dir: Path, tmp_path: Path
) -> None:
    """Plain verify stats every blob the set references (a missing one is named); only
    --read-data reads them, and catches a byte flipped inside one."""
    from txbackup.engine.verify import verify

    insert_accounts(session, range(10))
    manifest = await run_backup(plan_for(app, make_target(agents), tmp_path, storage_dir))
    storage = LocalStorage(str(storage_dir))
    stored = blob_files(storage_dir)
    plain = verify(storage, manifest)
    assert plain.problems == [] and plain.blobs == len(stored) > 0 and plain.read == 0
    full = verify(storage, manifest, read_data=True)
    assert full.problems == [] and full.read == full.artifacts + full.blobs
    data_blob = max(stored, key=lambda p: p.stat().st_size)
    raw = bytearray(data_blob.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_blob.write_bytes(bytes(raw))
    assert verify(storage, manifest).problems == []
    (problem,) = verify(storage, manifest, read_data=True).problems
    assert "blob cassandra/" in problem and data_blob.name in problem and "corrupt" in problem
    data_blob.unlink()
    (problem,) = verify(storage, manifest).problems
    assert " (node " in problem and data_blob.name in problem and "missing from storage" in problem


@pytest.mark.parametrize("jmx", [True, False])
def test_restore_imports_through_the_jmx_helper(
    session: Any, storage_dir: Path, tmp_path: Path, cassandra_cluster: CassandraCluster, jmx: bool
) -> None:
    """The agent imports staged SSTables through its live JMX connection (nodetool's
    defaults, no JVM started per table); without one, through nodetool."""
    node = cassandra_cluster.nodes[0]
    calls = tmp_path / "nodetool-calls"
    wrapper = tmp_path / "nodetool"
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {calls}\nexec {node.nodetool_command} "$@"\n')
    wrapper.chmod(0o700)
    extra = ("--nodetool-cmd", str(wrapper), *(() if jmx else ("--no-jmx",)))
    with agents_for(cassandra_cluster.nodes, storage_dir, tmp_path / "agents", *extra) as agents:
        target = make_target(agents)
        target.preflight()
        insert_accounts(session, range(12))
        set_id = "20260101T000000Z-jmxi"
        capture = target.capture(set_id)
        try:
            writer = SetWriter(LocalStorage(str(storage_dir)), set_id, "cass")
            capture.export(writer)
        finally:
            capture.release()
        insert_accounts(session, range(12, 20))
        reader = SetReader(
            LocalStorage(str(storage_dir)), set_id, "cass", writer.records,
            position=capture.position(), journal=MemoryJournal(),
        )  # fmt: skip
        calls.unlink(missing_ok=True)
        target.restore(reader, None, force=True)
    assert account_ids(session) == list(range(12))
    assert len(list(session.execute("SELECT tx_id FROM coordinator.state"))) == 12
    ran = calls.read_text().split() if calls.exists() else []
    assert ("import" in ran) is not jmx, ran
    assert not list((node.root / "txbackup-restore").glob(f"{set_id}*"))  # staging removed
