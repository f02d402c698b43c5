"""The Cassandra agent under attack: idle and trickling connections, huge and malformed
requests, dropped clients, hostile schema statements, hosts and credentials.

A real ``txbackup agent`` process (no Cassandra needed: the calls used either need
none, or run a stand-in ``nodetool`` / ``sstableloader`` script) or, where a time
limit must be shortened, the server in this process."""

from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.certs import CertificateAuthority
from tests.servers.agents import serving_agent
from tests.servers.processes import stop_process
from txbackup.agent import server
from txbackup.agent.client import AgentClient, AgentTls
from txbackup.agent.node import Node, NodeConfig
from txbackup.agent.schema import checked_statements, parse_create
from txbackup.errors import IntegrityError, TargetError, UsageError
from txbackup.storage import LocalStorage

TOKEN = "hardening-test-token-0123456789"
TOKEN_ENV = "TXBACKUP_TEST_HARDENING_TOKEN"


@dataclass
class RunningAgent:
    process: subprocess.Popen[str]
    address: str
    stderr: Path
    tls: AgentTls | None

    def client(self, **kw: Any) -> AgentClient:
        return AgentClient(self.address, culprit="t", token=TOKEN, tls=self.tls, **kw)

    def log(self) -> str:
        return self.stderr.read_text()


def _start(tmp: Path, *extra: str, tls: AgentTls | None = None) -> RunningAgent:
    (tmp / "data").mkdir(exist_ok=True)
    err = tmp / f"agent-{time.monotonic_ns()}.stderr"
    argv = [
        sys.executable, "-m", "txbackup", "agent", "--port", "0", "--token-env", TOKEN_ENV,
        "--cassandra-data", str(tmp / "data"), "--storage", str(tmp / "storage"),
        "--staging-dir", str(tmp / "staging"), "--no-jmx", *extra,
    ]  # fmt: skip
    with open(err, "w") as stderr:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=os.environ | {TOKEN_ENV: TOKEN, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"agent did not start: {line!r} {err.read_text()}")
    return RunningAgent(process, line.split()[-1], err, tls)


@pytest.fixture
def run_agent(tmp_path: Path) -> Iterator[Any]:
    started: list[RunningAgent] = []

    def start(*extra: str, tls: AgentTls | None = None) -> RunningAgent:
        agent = _start(tmp_path, *extra, tls=tls)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        stop_process(agent.process)


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    """One agent for the tests that only send it requests (its log grows across them)."""
    agent = _start(tmp_path_factory.mktemp("shared"))
    yield agent
    agent.process.terminate()
    agent.process.wait(timeout=10)


def _enough_descriptors(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors (ulimit -n is {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def _raw(address: str, data: bytes, *, tls: ssl.SSLContext | None = None) -> tuple[int, list[Any]]:
    """Send ``data`` as it is; the HTTP status and the JSON lines of the answer."""
    sock = _connect(address)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="agent.test")
    with sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, [json.loads(line) for line in body.splitlines() if line.strip()]


def _post(call: str, body: bytes, token: str = TOKEN, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (
        f"POST /v1/{call} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode() + body


def _no_traceback(agent: RunningAgent) -> None:
    text = agent.log()
    assert "Traceback" not in text and 'File "' not in text, text


# -- nobody can stall the agent -------------------------------------------------------------------


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_300_idle_connections_do_not_stall_an_authorized_call(
    use_tls: bool, tmp_path: Path, run_agent: Any
) -> None:
    _enough_descriptors(1024)
    extra: tuple[str, ...] = ()
    tls = None
    if use_tls:
        ca = CertificateAuthority(tmp_path)
        agent_cert = ca.issue("agent.test", dns=("agent.test",))
        extra = ("--tls-cert", str(agent_cert.cert), "--tls-key", str(agent_cert.key))
        tls = AgentTls(ca_file=str(ca.cert), server_name="agent.test")
    agent = run_agent(*extra, tls=tls)
    idle = []
    try:
        for i in range(300):
            sock = _connect(agent.address)
            if i % 3 == 1:
                sock.sendall(b"POST /v1/info HTTP/1.1\r\nAuthoriz")  # a head that never ends
            elif i % 3 == 2:
                sock.sendall(b"\x16\x03\x01\x00")  # the start of a TLS ClientHello, no more
            idle.append(sock)
        started = time.monotonic()
        assert agent.client().call("restore/cleanup", {"set_id": "s1"}) == {}
        assert time.monotonic() - started < 1.0
    finally:
        for sock in idle:
            sock.close()
    _no_traceback(agent)


@pytest.fixture
def quick_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The agent's server in this process, with a 1 s request time limit."""
    monkeypatch.setattr(server, "REQUEST_TIMEOUT_S", 1.0)
    node = Node(
        NodeConfig(nodetool=["false"], data_dirs=[tmp_path], staging_dir=tmp_path / "staging"),
        LocalStorage(str(tmp_path / "s")),
    )
    with serving_agent(node, TOKEN) as address:
        yield address


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float:
    """Seconds until the agent closes ``sock`` (sending ``trickle`` byte by byte meanwhile)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    for i in range(int(seconds / 0.2)):
        if trickle:
            try:
                sock.sendall(trickle[i % len(trickle) : i % len(trickle) + 1])
            except OSError:
                return time.monotonic() - started
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    raise AssertionError(f"connection still open after {seconds} s")


def test_slow_and_idle_requests_time_out(quick_server: str) -> None:
    with _connect(quick_server) as idle:
        assert _closed_within(idle, 5) < 2.5
    with _connect(quick_server) as slowloris:  # a byte of head every 0.2 s, for ever
        assert _closed_within(slowloris, 5, trickle=b"POST /v1/info HTTP/1.1\r\nX-A: aaaaaaaa\r\n") < 2.5
    with _connect(quick_server) as slow_body:  # a complete head, then a body that never comes
        slow_body.sendall(_post("restore/cleanup", b'{"set_id"', length=20))
        assert _closed_within(slow_body, 5) < 2.5
    # one request per connection: after the answer the agent closes it (no idle keep-alive)
    with _connect(quick_server) as sock:
        sock.sendall(_post("restore/cleanup", b'{"set_id": "s1"}'))
        sock.settimeout(5)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.0 200") and b'{"result":{}}' in answer


def test_a_long_answer_is_not_cut_by_the_request_time_limit(
    quick_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(node: Any, body: Any, progress: Any) -> dict[str, Any]:
        for i in range(5):
            time.sleep(0.5)
            progress({"step": i})
        return {"done": True}

    monkeypatch.setitem(server.CALLS, "test/slow", slow)
    seen: list[Any] = []
    client = AgentClient(quick_server, culprit="t", token=TOKEN)
    assert client.call("test/slow", on_progress=seen.append) == {"done": True}  # 2.5 s > 1 s
    assert seen


def test_body_limit_and_bad_heads(shared_agent: RunningAgent) -> None:
    agent = shared_agent
    status, lines = _raw(agent.address, _post("restore/prepare", b"", length=server.MAX_BODY + 1))
    assert status == 413 and len(lines) == 1 and "over the agent's limit" in lines[0]["error"]
    # not authorized: refused on its head, the body is never waited for
    status, lines = _raw(agent.address, _post("restore/prepare", b"", token="x" * 20, length=100))
    assert status == 401 and lines == [{"error": "bad or missing agent token"}]
    status, lines = _raw(agent.address, b"GARBAGE\r\n\r\n")
    assert status == 400 and "bad request line" in lines[0]["error"]
    status, lines = _raw(agent.address, b"POST /v1/info HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n")
    assert status == 431
    status, lines = _raw(agent.address, _post("../../etc/passwd", b"{}"))
    assert status == 404 and "unknown call" in lines[0]["error"]
    _no_traceback(agent)


@pytest.mark.parametrize(
    ("call", "body", "message"),
    [
        ("restore/cleanup", b"{not json", "bad request"),
        ("restore/cleanup", b"[1, 2]", "must be a JSON object"),
        ("restore/cleanup", b"[" * 100000 + b"]" * 100000, "bad request"),
        ("restore/cleanup", b'{"set_id": 5}', "set_id: a non-empty string is required"),
        ("node/start", b'{"wait_s": Infinity}', "Infinity is not a JSON value"),
        ("restore/cleanup", b'{"set_id": "../../x"}', "not a usable snapshot tag"),
        ("restore/prepare", b'{"set_id": "s", "store": "x", "files": [7]}', "files[0]"),
        ("restore/prepare", b'{"set_id": "s", "store": "x", "files": [{"size": -1}]}', "files[0]"),
        ("restore/load", b'{"set_id": "s", "hosts": ["203.0.113.9"]}', "unknown field 'hosts'"),
        ("clear", b'{"tag": "t", "keyspaces": ["ks"], "offline": "yes"}', "offline: true or false"),
        ("restore/check", b'{"keyspaces": ["ks"], "tables": [1], "force": false}', "list of strings"),
    ],
)
def test_bad_calls_are_one_line_errors(
    call: str, body: bytes, message: str, shared_agent: RunningAgent
) -> None:
    agent = shared_agent
    before = agent.log().count("\n")
    status, lines = _raw(agent.address, _post(call, body))
    assert status in (200, 400) and len(lines) == 1 and message in lines[0]["error"], lines
    assert len(lines[0]["error"]) < 400
    time.sleep(0.2)
    assert agent.log().count("\n") - before <= 1  # one log line at most
    _no_traceback(agent)


def test_a_client_dropped_mid_answer_leaves_one_log_line(tmp_path: Path, run_agent: Any) -> None:
    nodetool = tmp_path / "nodetool"
    nodetool.write_text("#!/bin/sh\nsleep 1\n")
    nodetool.chmod(0o755)
    agent = run_agent("--nodetool-cmd", str(nodetool))
    for _ in range(3):
        sock = _connect(agent.address)
        sock.sendall(_post("snapshot", b'{"tag": "t1", "keyspaces": ["ks"]}'))
        sock.recv(10)  # the answer has begun
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # reset
        # and one that vanishes before its answer begins
        sock = _connect(agent.address)
        sock.sendall(_post("clear", b'{"tag": "t2", "keyspaces": ["ks"]}'))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    time.sleep(2.5)
    assert agent.client().call("restore/cleanup", {"set_id": "s"}) == {}  # still serving
    _no_traceback(agent)


# -- one call per snapshot tag at a time ----------------------------------------------------------


def test_calls_for_one_tag_never_interleave(tmp_path: Path, run_agent: Any) -> None:
    trace = tmp_path / "trace"
    nodetool = tmp_path / "nodetool"
    # snapshot -t TAG KS / clearsnapshot -t TAG -- KS
    nodetool.write_text(f'#!/bin/sh\necho "start $1 $3" >> {trace}\nsleep 0.6\necho "end $1 $3" >> {trace}\n')
    nodetool.chmod(0o755)
    agent = run_agent("--nodetool-cmd", str(nodetool))
    client = agent.client()
    calls = [
        ("snapshot", {"tag": "a", "keyspaces": ["ks"]}),
        ("clear", {"tag": "a", "keyspaces": ["ks"]}),
        ("snapshot", {"tag": "a", "keyspaces": ["ks"]}),
        ("snapshot", {"tag": "b", "keyspaces": ["ks"]}),
    ]
    threads = [threading.Thread(target=client.call, args=call) for call in calls]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    events = trace.read_text().split("\n")[:-1]
    assert len(events) == 8
    tag_a = [e for e in events if e.endswith(" a")]
    assert [e.split()[0] for e in tag_a] == ["start", "end"] * 3  # one after the other
    # another tag runs meanwhile
    assert events.index("start snapshot b") < events.index(tag_a[-1])


# -- no secret on a command line, no host from the caller -----------------------------------------


def _loader_node(tmp_path: Path, loader: list[str]) -> Node:
    staged = tmp_path / "staging" / "set-1" / "node" / "ks" / "t"
    staged.mkdir(parents=True)
    (staged / "nb-1-big-Data.db").write_bytes(b"x")
    return Node(
        NodeConfig(
            nodetool=["false"],
            data_dirs=[tmp_path],
            staging_dir=tmp_path / "staging",
            cql_host="127.0.0.7",
            cql_port=19042,
            cql_user="cassandra",
            cql_password="s3cret-Pa55word",
            sstableloader=loader,
        ),
        LocalStorage(str(tmp_path / "s")),
    )


def test_sstableloader_never_gets_the_password_nor_the_callers_hosts(tmp_path: Path) -> None:
    seen = tmp_path / "argv"
    script = tmp_path / "sstableloader"
    # what every local user sees: the process's command line, from /proc
    script.write_text(f'#!/bin/sh\ntr "\\0" " " < /proc/$$/cmdline > {seen}\necho "$@" >> {seen}\n')
    script.chmod(0o755)
    node = _loader_node(tmp_path, [str(script)])
    with pytest.raises(TargetError, match=r"only on its command line.*-ap CLASS"):
        node.load_staged("set-1", lambda info: None)
    assert not seen.exists()
    node.config.sstableloader = [str(script), "-ap", "com.example.FileAuthProvider"]
    assert node.load_staged("set-1", lambda info: None) == {"loaded": ["ks.t"]}
    argv = seen.read_text()
    assert "s3cret" not in argv and "-pw" not in argv and "-u " not in argv
    assert "-d 127.0.0.7 -p 19042" in argv  # the node's own address, from the agent's settings
    with pytest.raises(UsageError, match="unknown field 'hosts'"):
        server.check_fields("restore/load", {"set_id": "set-1", "hosts": ["203.0.113.9"]})


# -- restore/schema runs only the set's own CREATE statements -------------------------------------


def _record(kind: str, keyspace: str, name: str, statement: str) -> dict[str, str]:
    return {"type": kind, "keyspace": keyspace, "name": name, "statement": statement}


GOOD = [
    _record(
        "keyspace",
        "bank",
        "bank",
        "CREATE KEYSPACE bank WITH replication = {'class': 'SimpleStrategy', 'replication_factor': '1'}"
        "  AND durable_writes = true;",
    ),
    _record("type", "bank", "addr", "CREATE TYPE bank.addr (\n    street text\n);"),
    _record(
        "table",
        "bank",
        "accounts",
        "CREATE TABLE bank.accounts (\n    id int PRIMARY KEY,\n    note text\n)"
        " WITH comment = 'a; DROP x'\n    AND compaction = {'class': 'SizeTieredCompactionStrategy'};",
    ),
    _record("table", "bank", "Quoted", 'CREATE TABLE IF NOT EXISTS "bank"."Quoted" (k int PRIMARY KEY);'),
    _record("index", "bank", "accounts_note_idx", "CREATE INDEX accounts_note_idx ON bank.accounts (note);"),
    _record(
        "index",
        "bank",
        "sai",
        "CREATE CUSTOM INDEX sai ON bank.accounts (note) USING 'StorageAttachedIndex';",
    ),
    _record("function", "bank", "f", "CREATE FUNCTION bank.f(x int) ... LANGUAGE java AS $$ evil $$;"),
]


def test_the_sets_own_create_statements_pass() -> None:
    statements, skipped = checked_statements(GOOD, ["bank", "coordinator"])
    assert [s.kind for s in statements] == ["keyspace", "type", "table", "table", "index", "index"]
    assert skipped == ["function bank.f"]  # code is never run


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (_record("table", "bank", "t", "DROP KEYSPACE bank"), "expected CREATE"),
        (_record("table", "bank", "t", "CREATE TABLE bank.t (k int PRIMARY KEY); DROP KEYSPACE bank"),
         "more than one statement"),
        (_record("table", "bank", "t", "CREATE TABLE bank.t (k int PRIMARY KEY);\nDROP KEYSPACE bank;"),
         "more than one statement"),
        (_record("table", "bank", "t", "CREATE TABLE bank.t (k int PRIMARY KEY) /* ; */ ; GRANT ALL ON ALL "
         "KEYSPACES TO x"), "more than one statement"),
        (_record("table", "bank", "t", "CREATE TABLE bank.t (k int PRIMARY KEY) WITH comment = 'unended"),
         "unterminated"),
        (_record("table", "bank", "t", "CREATE ROLE evil WITH PASSWORD = 'x' AND SUPERUSER = true"),
         "only CREATE KEYSPACE"),
        (_record("table", "bank", "t", "CREATE TABLE system_auth.t (k int PRIMARY KEY)"), "creates table"),
        (_record("table", "bank", "t", "CREATE TABLE bank.other (k int PRIMARY KEY)"), "creates 'other'"),
        (_record("table", "bank", "t", "ALTER TABLE bank.t ADD x int"), "expected CREATE"),
        (_record("table", "bank", "t", "INSERT INTO bank.t (k) VALUES (1)"), "expected CREATE"),
        (_record("table", "bank", "t", "BEGIN BATCH INSERT INTO bank.t (k) VALUES (1) APPLY BATCH"),
         "expected CREATE"),
        (_record("keyspace", "bank", "bank", "CREATE KEYSPACE other WITH replication = {}"), "in keyspace"),
        (_record("table", "system_auth", "roles", "CREATE TABLE system_auth.roles (k int PRIMARY KEY)"),
         "not one of the set's keyspaces"),
        (_record("table", "elsewhere", "t", "CREATE TABLE elsewhere.t (k int PRIMARY KEY)"),
         "not one of the set's keyspaces"),
        (_record("index", "bank", "i", "CREATE INDEX i ON system_auth.roles (salted_hash)"), "in keyspace"),
        (_record("trigger", "bank", "t", "CREATE TRIGGER t ON bank.t USING 'x'"), "not restored"),
        (_record("type", "bank", "t", "CREATE TABLE bank.t (k int PRIMARY KEY)"), "creates table"),
        ({"type": "table", "keyspace": "bank", "name": 5, "statement": "x"}, "strings required"),
        ("CREATE TABLE bank.t (k int PRIMARY KEY)", "strings required"),
    ],
)  # fmt: skip
def test_hostile_schema_statements_are_refused(record: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        checked_statements([GOOD[0], record], ["bank"])


def test_restore_schema_refuses_before_touching_cassandra(run_agent: Any) -> None:
    """The agent has no Cassandra here: every refusal below comes before any CQL."""
    agent = run_agent("--cql", "127.0.0.1:1")
    client = agent.client()
    hostile = [
        {
            "keyspaces": ["bank"],
            "tables": [],
            "statements": [_record("table", "bank", "t", "DROP TABLE bank.t")],
        },
        {"keyspaces": ["system_auth"], "tables": ["system_auth.roles"], "statements": [], "force": True},
        {"keyspaces": ["bank"], "tables": ["system_auth.roles"], "statements": [], "force": True},
        {"keyspaces": ["bank"], "tables": ['bank.t" ; DROP'], "statements": []},
    ]
    for body in hostile:
        with pytest.raises(TargetError, match=r"refused|system keyspace|not in the set's|not a Cassandra"):
            client.call("restore/schema", body)
    _no_traceback(agent)


def test_parse_create_names() -> None:
    assert parse_create('CREATE TABLE "Ks"."T" (k int PRIMARY KEY)').keyspace == "Ks"
    assert parse_create("create table KS.t (k int primary key)").keyspace == "ks"
    assert parse_create("CREATE INDEX ON bank.t (v)").name == ""
    with pytest.raises(UsageError, match="more than one statement"):
        parse_create("CREATE TABLE bank.t (k int PRIMARY KEY) WITH comment = $$x$$; DROP TABLE bank.t")


# -- what the agent writes stays private ----------------------------------------------------------


def test_staged_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    from txbackup.agent import blobs

    storage = LocalStorage(str(tmp_path / "s"))
    src = tmp_path / "nb-1-big-Data.db"
    src.write_bytes(b"sstable" * 1000)
    stored = blobs.put_file(storage, "cassandra/c/sstables", str(src))
    node = Node(
        NodeConfig(nodetool=["false"], data_dirs=[tmp_path], staging_dir=tmp_path / "staging",
                   state_dir=tmp_path / "state"),
        storage,
    )  # fmt: skip
    record = {"keyspace": "ks", "table": "t", "name": src.name, "sha256": stored.sha256, "size": stored.size}
    old = os.umask(0)
    try:
        node.prepare("set-1", "cassandra/c/sstables", [record], lambda info: None)
        node._remember("set-1", ["ks"])
    finally:
        os.umask(old)
    staged = tmp_path / "staging" / "set-1" / "node" / "ks" / "t" / src.name
    assert staged.read_bytes() == src.read_bytes()
    for path in (staged, tmp_path / "state" / "set-1.json"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for folder in (tmp_path / "staging", *staged.parents[:4], tmp_path / "state"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    # a blob that inflates beyond its recorded size is cut short, nothing kept
    with pytest.raises(IntegrityError, match="more than the recorded"):
        node.prepare("set-2", "cassandra/c/sstables", [dict(record, size=10)], lambda info: None)
    assert not (tmp_path / "staging" / "set-2").exists()


def test_calls_beyond_the_limit_are_told_to_wait(quick_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def blocked(node: Any, body: Any, progress: Any) -> dict[str, Any]:
        release.wait(10)
        return {}

    monkeypatch.setattr(server, "MAX_CALLS", 1)
    monkeypatch.setitem(server.CALLS, "test/blocked", blocked)
    client = AgentClient(quick_server, culprit="t", token=TOKEN)
    first = threading.Thread(target=client.call, args=("test/blocked",))
    first.start()
    time.sleep(0.3)
    try:
        status, lines = _raw(quick_server, _post("restore/cleanup", b'{"set_id": "s"}'))
        assert status == 503 and "busy" in lines[0]["error"]
    finally:
        release.set()
        first.join()
    assert client.call("restore/cleanup", {"set_id": "s"}) == {}


@pytest.mark.parametrize(
    ("option", "command"),
    [
        ("--nodetool-cmd", "nodetool -h 127.0.0.1 -pw s3cret"),
        ("--nodetool-cmd", "nodetool --password=s3cret"),
        ("--sstableloader-cmd", "sstableloader -u cassandra -pw s3cret"),
        ("--sstableloader-cmd", "sstableloader -ts /ts.jks -tspw s3cret"),
    ],
)
def test_a_password_in_a_configured_command_is_refused(
    option: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from txbackup.cli import main

    argv = [
        "agent",
        "--no-token",
        "--port",
        "0",
        "--cassandra-data",
        str(tmp_path),
        "--storage",
        str(tmp_path),
    ]
    assert main([*argv, option, command]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "every local user" in err and "s3cret" not in err, err


# -- a restore's import: through the JMX helper, nodetool without one, never both for a folder ---


class _Helper:
    def __init__(self, fail: Exception | None = None, alive: bool = True) -> None:
        self.fail, self.alive, self.calls = fail, alive, []  # type: ignore[var-annotated]

    def call(self, op: str, timeout: float, **fields: Any) -> int:
        self.calls.append((op, fields))
        if self.fail is not None:
            raise self.fail
        for staged in Path(fields["dir"]).iterdir():
            staged.unlink()  # "moved into the table"
        return 3


class _Supervisor:
    def __init__(self, helper: _Helper | None) -> None:
        self.helper, self.last_error = helper, "no JDK"

    def ensure(self) -> _Helper | None:
        return self.helper


def _staged_node(tmp_path: Path, helper: _Helper | None) -> tuple[Node, Path]:
    calls = tmp_path / "nodetool-calls"
    nodetool = tmp_path / "nodetool"
    nodetool.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nrm -f "$4"/*\n')
    nodetool.chmod(0o700)
    node = Node(
        NodeConfig(nodetool=[str(nodetool)], data_dirs=[tmp_path], staging_dir=tmp_path / "staging"),
        LocalStorage(str(tmp_path / "s")),
    )
    node.jmx = _Supervisor(helper)  # type: ignore[assignment]
    for table in ("accounts", "state"):
        folder = tmp_path / "staging" / "set1" / "node1" / "bank" / table
        folder.mkdir(parents=True)
        (folder / "nb-1-big-Data.db").write_bytes(b"x")
    return node, calls


def test_import_goes_through_the_jmx_helper(tmp_path: Path) -> None:
    helper = _Helper()
    node, calls = _staged_node(tmp_path, helper)
    assert node.import_staged("set1", lambda _: None) == {"imported": ["bank.accounts", "bank.state"]}
    assert [(op, f["keyspace"], f["table"]) for op, f in helper.calls] == [
        ("import", "bank", "accounts"), ("import", "bank", "state")
    ]  # fmt: skip
    assert not calls.exists()  # no nodetool


@pytest.mark.parametrize("helper", [None, _Helper(alive=False)])
def test_import_without_a_live_helper_uses_nodetool(tmp_path: Path, helper: _Helper | None) -> None:
    node, calls = _staged_node(tmp_path, helper)
    assert node.import_staged("set1", lambda _: None) == {"imported": ["bank.accounts", "bank.state"]}
    assert [line.split()[:3] for line in calls.read_text().splitlines()] == [
        ["import", "bank", "accounts"], ["import", "bank", "state"]
    ]  # fmt: skip


def test_an_import_the_helper_lost_is_not_run_again_by_nodetool(tmp_path: Path) -> None:
    from txbackup.agent.jmx import HelperUnavailable

    helper = _Helper(fail=HelperUnavailable("import (JMX): no answer within 600 s"))
    node, calls = _staged_node(tmp_path, helper)
    with pytest.raises(TargetError, match=r"import of bank\.accounts through JMX: .*no answer.*resume"):
        node.import_staged("set1", lambda _: None)
    assert not calls.exists() and len(helper.calls) == 1
