"""The Cassandra agent's parts that need no Cassandra: blobs, the HTTP protocol, messages."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.servers.agents import serving_agent
from txbackup.agent import blobs, server
from txbackup.agent.client import AgentClient, parse_agent
from txbackup.agent.node import Node, NodeConfig, nodetool_message
from txbackup.errors import IntegrityError, StorageError, TargetError, TxbackupError, UsageError
from txbackup.storage import LocalStorage
from txbackup.storage.base import list_names
from txbackup.storage.memory import MemoryStorage

STORE = "cassandra/test/sstables"


# -- the content-addressed store ------------------------------------------------------------------


def test_put_then_fetch_round_trip_and_dedupe(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "store"))
    src = tmp_path / "nb-1-big-Data.db"
    src.write_bytes(os.urandom(3 << 20) + b"x" * (1 << 20))
    first = blobs.put_file(storage, STORE, str(src))
    assert first.uploaded and first.size == src.stat().st_size and first.stored_size < first.size
    assert list_names(storage, STORE + "/") == [f"{STORE}/{first.sha256}"]
    again = blobs.put_file(storage, STORE, str(src))
    assert not again.uploaded and again.sha256 == first.sha256 and again.stored_size == first.stored_size
    out = tmp_path / "out"
    blobs.fetch_file(storage, STORE, first.sha256, first.size, str(out), "ks.t nb-1-big-Data.db")
    assert out.read_bytes() == src.read_bytes()


def test_a_file_that_changes_while_stored_is_never_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = MemoryStorage()
    src = tmp_path / "nb-1-big-Data.db"
    src.write_bytes(b"before" * 1000)
    hashed = blobs.file_sha256(str(src))
    src.write_bytes(b"after!" * 1000)  # changed between the hash and the upload
    monkeypatch.setattr(blobs, "file_sha256", lambda path: hashed)
    with pytest.raises(StorageError, match="changed while it was being stored"):
        blobs.put_file(storage, STORE, str(src))
    assert storage.faults.calls["commit"] == 0  # aborted before it was ever visible
    assert list_names(storage) == [] and list(storage.temporaries(-60)) == []


def test_a_corrupt_or_missing_blob_is_named(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "store"))
    src = tmp_path / "f"
    src.write_bytes(b"immutable sstable bytes" * 1000)
    stored = blobs.put_file(storage, STORE, str(src))
    blob = tmp_path / "store" / STORE / stored.sha256
    raw = bytearray(blob.read_bytes())
    raw[-6] ^= 0x01  # inside the frame's data or checksum
    blob.write_bytes(bytes(raw))
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match=rf"ks\.t f: blob {STORE}/{stored.sha256}: .*corrupt"):
        blobs.fetch_file(storage, STORE, stored.sha256, stored.size, str(out), "ks.t f")
    assert not out.exists() and not list(tmp_path.glob("out*"))
    missing = "0" * 64
    with pytest.raises(IntegrityError, match="missing from storage"):
        blobs.fetch_file(storage, STORE, missing, 1, str(out), "ks.t g")
    with pytest.raises(IntegrityError, match="is not a SHA-256"):
        blobs.blob_name(STORE, "../../etc/passwd")


def test_store_prefix_is_a_safe_name() -> None:
    assert blobs.store_prefix("Test Cluster") == "cassandra/Test_Cluster/sstables"
    assert blobs.store_prefix("../x") == "cassandra/x/sstables"


# -- messages and addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            "Requested creating snapshot(s)\nerror: Snapshot tag1 already exists.\n-- StackTrace --\n"
            "java.io.IOException: Snapshot tag1 already exists.\n\tat org.apache.X(X.java:1)\n",
            "Snapshot tag1 already exists.",
        ),
        (
            "nodetool: Keyspace nosuch does not exist\nSee 'nodetool help' or 'nodetool help <command>'.\n",
            "Keyspace nosuch does not exist",
        ),
        ("something odd\n\tat a.b.C(C.java:3)\n", "something odd"),
        ("", "no output"),
    ],
)
def test_nodetool_message(output: str, message: str) -> None:
    assert nodetool_message(output) == message


def test_parse_agent() -> None:
    assert parse_agent("10.0.0.5:7481", "t") == ("10.0.0.5", 7481)
    assert parse_agent("node1", "t") == ("node1", 7480)
    assert parse_agent("[::1]:9", "t") == ("::1", 9)
    with pytest.raises(UsageError, match="bad port"):
        parse_agent("h:0", "t")


# -- the HTTP protocol, with stand-in calls -------------------------------------------------------


TOKEN = "unit-test-token-0123456789"


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    def slow(node: Any, body: Mapping[str, Any], progress: Any) -> Mapping[str, Any]:
        for i in range(3):
            time.sleep(float(body.get("step_s", 0.1)))
            progress({"step": i})
        return {"steps": 3}

    def fails(node: Any, body: Mapping[str, Any], progress: Any) -> Mapping[str, Any]:
        raise IntegrityError("ks.t nb-1-big-Data.db: blob x is corrupt")

    def crashes(node: Any, body: Mapping[str, Any], progress: Any) -> Mapping[str, Any]:
        raise KeyError("oops")

    monkeypatch.setattr(server, "HEARTBEAT_S", 0.2)
    monkeypatch.setitem(server.CALLS, "test/slow", slow)
    monkeypatch.setitem(server.CALLS, "test/fails", fails)
    monkeypatch.setitem(server.CALLS, "test/crashes", crashes)
    node = Node(NodeConfig(nodetool=["false"], data_dirs=[tmp_path]), LocalStorage(str(tmp_path / "s")))
    with serving_agent(node, TOKEN) as address:
        yield address


def test_progress_then_result(agent: str) -> None:
    seen: list[Mapping[str, Any]] = []
    client = AgentClient(agent, culprit='target "c"', token=TOKEN)
    assert client.call("test/slow", {"step_s": 0.6}, on_progress=seen.append) == {"steps": 3}
    steps = [p["step"] for p in seen]  # at most one a second: some are dropped
    assert len(steps) >= 2 and steps == sorted(set(steps)) and steps[0] == 0


def test_a_long_silent_call_is_kept_alive_by_heartbeats(agent: str) -> None:
    client = AgentClient(agent, culprit='target "c"', token=TOKEN, idle_s=0.6)
    assert client.call("test/slow", {"step_s": 0.5}) == {"steps": 3}  # 1.5 s > idle_s


def test_errors_keep_their_kind_and_name_the_agent(agent: str) -> None:
    client = AgentClient(agent, culprit='target "c"', token=TOKEN)
    with pytest.raises(
        IntegrityError, match=rf'^target "c": agent {agent}: test/fails: ks\.t nb-1-big-Data\.db'
    ):
        client.call("test/fails")
    with pytest.raises(TargetError, match="internal error: KeyError"):
        client.call("test/crashes")
    with pytest.raises(TargetError, match="unknown call /v1/nope"):
        client.call("nope")
    with pytest.raises(TargetError, match="bad or missing agent token"):
        AgentClient(agent, culprit="c", token="wrong-token-wrong-token").call("test/slow")


def test_unreachable_and_silent_agents() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TargetError, match=rf"agent 127\.0\.0\.1:{port}: unreachable \(connection refused"):
        AgentClient(f"127.0.0.1:{port}", culprit="c").call("info")
    with socket.socket() as mute:  # accepts, never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        address = f"127.0.0.1:{mute.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(TargetError, match=r"info: silent for 0\.5 s"):
            AgentClient(address, culprit="c", idle_s=0.5).call("info")
        assert time.monotonic() - started < 5


def test_leftover_snapshots_are_remembered_until_cleared(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    node = Node(
        NodeConfig(nodetool=["true"], data_dirs=[tmp_path], state_dir=tmp_path / "state"),
        LocalStorage(str(tmp_path / "s")),
    )

    def nodetool(*args: str, timeout: float | None = None) -> str:
        calls.append(list(args))
        return ""

    node.nodetool = nodetool  # type: ignore[method-assign]
    node.snapshot("set-1", ["bank", "coordinator"])
    node.snapshot("set-2", ["bank"])
    node.clear("set-2", ["bank"])
    assert node.leftover_snapshots() == {"set-1": ["bank", "coordinator"]}
    server.clear_leftovers(node)
    assert calls[-1] == ["clearsnapshot", "-t", "set-1", "--", "bank", "coordinator"]
    assert node.leftover_snapshots() == {}
    with pytest.raises(TxbackupError, match="not a usable snapshot tag"):
        node.snapshot("../x", ["bank"])


def test_tls_with_a_private_ca_and_a_server_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import ssl
    import subprocess

    from txbackup.agent.client import AgentTls

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "agent.pem", tmp_path / "agent.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=agent.test",
         "-addext", "subjectAltName=DNS:agent.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setitem(server.CALLS, "test/hello", lambda node, body, progress: {"hello": body["name"]})
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    node = Node(NodeConfig(nodetool=["false"], data_dirs=[tmp_path]), LocalStorage(str(tmp_path / "s")))
    httpd = server.AgentServer(("127.0.0.1", 0), node, TOKEN, context)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    address = f"127.0.0.1:{httpd.port}"
    try:
        tls = AgentTls(ca_file=str(cert), server_name="agent.test")
        client = AgentClient(address, culprit="c", token=TOKEN, tls=tls)
        assert client.call("test/hello", {"name": "x"}) == {"hello": "x"}
        wrong_name = AgentClient(address, culprit="c", token=TOKEN, tls=AgentTls(str(cert), "other.test"))
        with pytest.raises(TargetError, match="TLS"):
            wrong_name.call("test/hello", {"name": "x"})
        with pytest.raises(TargetError, match="TLS"):  # the system CAs do not know it
            AgentClient(address, culprit="c", token=TOKEN, tls=AgentTls()).call("test/hello")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_agent_command_refuses_to_run_without_a_token(tmp_path: Path) -> None:
    from txbackup.cli import main

    argv = ["agent", "--cassandra-data", str(tmp_path), "--storage", str(tmp_path / "s"), "--port", "0"]
    assert main(argv) == 2
