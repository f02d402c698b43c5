"""The real Java scalar-admin peers, run as subprocesses on 127.0.0.1.

- ``java_admin_cli(args)`` runs the reference Java client's CLI
  (``com.scalar-labs:scalar-admin`` 2.2.1, main class
  ``com.scalar.admin.AdminCommand``) with the jars that ``tests/java/fetch-jars``
  put in ``.cache/jars/admin``.
- ``java_admin_server(port)`` starts ``tests/java/AdminPeerServer.java``, an
  ``rpc.Admin`` server built on the jar's generated classes.
- ``scalardb_server(folder)`` starts a real ScalarDB 3.13 server (JDBC storage on
  SQLite) from ``.cache/jars/scalardb-server``; ``scalardb_tx_holder(port)`` runs
  ``tests/java/ScalarDbTxHolder.java``, a ScalarDB client that holds transactions open.

What the Java CLI does (observed with 2.2.1):
- ``-c PAUSE|UNPAUSE|CHECK_PAUSED`` (case-insensitive), ``-a host:port[,host:port]``
  (plain ``split(":")``: no IPv6), ``-n`` sends ``wait_outstanding=false``,
  ``-m <ms>`` sets ``max_pause_wait_time`` (left unset without ``-m``).
- It logs with log4j to **stdout**: ``<date> INFO com.scalar.admin.AdminCommand
  [main] Pause completed at <ISO> UTC (<epoch ms>)`` / ``Unpause started at ...``;
  CHECK_PAUSED logs a pretty-printed JSON object ``{"host:port": "true"}`` with
  the booleans as *strings*.
- Exit codes: 0 success; 1 any failed call (ERROR log lines and the gRPC status,
  e.g. ``Caused by: io.grpc.StatusRuntimeException: FAILED_PRECONDITION: ...``, on
  stdout, a stack trace on stderr); 2 bad usage (picocli's message on stderr).
- Calls have no deadline: a Pause that the server holds blocks the CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
JARS = REPO / ".cache" / "jars"
ADMIN_JARS = JARS / "admin"
PEER_CLASSES = JARS / "peer-classes"
SCALARDB_JARS = JARS / "scalardb-server"
SCALARDB_CLASSES = JARS / "scalardb-classes"
FETCH = REPO / "tests" / "java" / "fetch-jars"
CLI_MAIN = "com.scalar.admin.AdminCommand"
SERVER_MAIN = "AdminPeerServer"
# small, quick JVMs: these are short-lived tools
JVM_OPTS = ["-Xms16m", "-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


def _missing(what: str) -> None:
    message = f"{what} missing: run {FETCH.relative_to(REPO)} (needs mvn and a JDK)"
    if os.environ.get("CI") == "true":
        raise RuntimeError(message)
    pytest.skip(message)


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        _missing("java")
        raise AssertionError("unreachable")
    return java


def admin_classpath() -> str:
    """The classpath of the Java client; skips (or fails under CI=true) when not fetched."""
    if not list(ADMIN_JARS.glob("scalar-admin-*.jar")):
        _missing(f"scalar-admin jars in {ADMIN_JARS}")
    return str(ADMIN_JARS / "*")


def peer_classpath() -> str:
    classpath = admin_classpath()
    if not (PEER_CLASSES / f"{SERVER_MAIN}.class").exists():
        _missing(f"compiled {SERVER_MAIN} in {PEER_CLASSES}")
    return f"{classpath}{os.pathsep}{PEER_CLASSES}"


def java_admin_cli(args: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the Java scalar-admin CLI with ``args``; never raises on a non-zero exit.

    Blocks: from a coroutine that also serves gRPC, use ``java_admin_cli_async``.
    """
    command = [_java(), *JVM_OPTS, "-cp", admin_classpath(), CLI_MAIN, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


async def java_admin_cli_async(
    args: Sequence[str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``java_admin_cli`` in a worker thread, so the running event loop keeps serving."""
    return await asyncio.to_thread(java_admin_cli, list(args), timeout)


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """The command, exit code and output of a CLI run, for assertion messages."""
    return (
        f"exit {result.returncode}: {' '.join(result.args[-4:])}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )


def parse_check_paused(stdout: str) -> dict[str, bool]:
    """The ``{"host:port": "true"|"false"}`` object that CHECK_PAUSED logs, as booleans."""
    start, end = stdout.find("{"), stdout.rfind("}")
    if start < 0 or end < start:
        raise ValueError(f"no JSON object in CHECK_PAUSED output: {stdout!r}")
    raw = json.loads(stdout[start : end + 1])
    return {address: value == "true" for address, value in raw.items()}


_STATUS = re.compile(r"StatusRuntimeException: ([A-Z_]+)(?::|$)", re.MULTILINE)


def grpc_status_of(result: subprocess.CompletedProcess[str]) -> str | None:
    """The gRPC status code name a failed CLI run reports (e.g. ``FAILED_PRECONDITION``)."""
    match = _STATUS.search(result.stdout + result.stderr)
    return match.group(1) if match else None


@dataclass
class JavaAdminPeer:
    """A running ``AdminPeerServer``: its port and the calls it has received."""

    port: int
    process: subprocess.Popen[str]
    _lines: queue.Queue[str] = field(default_factory=queue.Queue)
    _events: list[str] = field(default_factory=list)
    _taken: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def events(self) -> list[str]:
        """Every ``event`` line so far, without the prefix, e.g.
        ``Pause wait_outstanding=true max_pause_wait_time=unset``, ``Unpause``,
        ``CheckPaused paused=true``."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return list(self._events)
            if line.startswith("event "):
                self._events.append(line[len("event ") :])

    def wait_event(self, prefix: str, timeout: float = 10.0) -> str:
        """The next event starting with ``prefix`` that no earlier ``wait_event`` returned,
        waiting up to ``timeout`` seconds for it to arrive."""
        deadline = time.monotonic() + timeout
        taken = self._taken.get(prefix, 0)
        while True:
            matching = [e for e in self.events() if e.startswith(prefix)]
            if len(matching) > taken:
                self._taken[prefix] = taken + 1
                return matching[taken]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new {prefix!r} event within {timeout}s: {self.events()}")
            time.sleep(0.02)


def _pump(stream: object, lines: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line.rstrip("\n"))


@contextmanager
def java_admin_peer(
    port: int = 0,
    *,
    pause_delay_ms: int = 0,
    fail_pause: str | None = None,
    check_paused: bool = True,
    fail_reason: str | None = None,
    abort_pause: int = 0,
    start_paused: bool = False,
    lie_paused: bool = False,
    start_timeout: float = 30.0,
) -> Iterator[JavaAdminPeer]:
    """Run ``AdminPeerServer`` on 127.0.0.1:``port`` (0: a free port) until the block ends.

    ``fail_pause`` is a gRPC status code name that Pause answers with (the server
    stays unpaused), with ``fail_reason`` as its ErrorInfo reason (domain
    com.scalar.db.cluster.admin, as ScalarDB Cluster 3.19 sends it); ``abort_pause``:
    the first N Pause calls answer ABORTED (reason PAUSE_IN_PROGRESS);
    ``start_paused``: paused from the start (by "an earlier pause"); ``lie_paused``:
    Pause answers OK but the server stays unpaused; ``check_paused=False`` makes
    CheckPaused answer UNIMPLEMENTED like an older server; ``pause_delay_ms`` delays
    Pause's answer.
    """
    args = [str(port)]
    if pause_delay_ms:
        args += ["--pause-delay-ms", str(pause_delay_ms)]
    if fail_pause:
        args += ["--fail-pause", fail_pause]
    if fail_reason:
        args += ["--fail-reason", fail_reason]
    if abort_pause:
        args += ["--abort-pause", str(abort_pause)]
    if start_paused:
        args.append("--paused")
    if lie_paused:
        args.append("--lie-paused")
    if not check_paused:
        args.append("--no-check-paused")
    command = [_java(), *JVM_OPTS, "-cp", peer_classpath(), SERVER_MAIN, *args]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    output: list[str] = []
    peer: JavaAdminPeer | None = None
    try:
        deadline = time.monotonic() + start_timeout
        while peer is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{SERVER_MAIN} did not start in {start_timeout}s: {output}")
            try:
                line = lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if process.poll() is not None:
                    raise RuntimeError(f"{SERVER_MAIN} exited with {process.returncode}: {output}") from None
                continue
            output.append(line)
            if line.startswith("listening "):
                peer = JavaAdminPeer(int(line.split()[1]), process, lines)
        yield peer
    finally:
        if process.stdin is not None:
            process.stdin.close()  # the server exits on end of file of stdin
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop_process(process, 5)


@contextmanager
def java_admin_server(port: int = 0) -> Iterator[int]:
    """Run the plain Java ``rpc.Admin`` server peer; yields the port it listens on."""
    with java_admin_peer(port) as peer:
        yield peer.port


# A real ScalarDB server


def scalardb_classpath(with_holder: bool = False) -> str:
    if not list(SCALARDB_JARS.glob("scalardb-server-*.jar")):
        _missing(f"ScalarDB server jars in {SCALARDB_JARS}")
    classpath = str(SCALARDB_JARS / "*")
    if with_holder:
        if not (SCALARDB_CLASSES / "ScalarDbTxHolder.class").exists():
            _missing(f"compiled ScalarDbTxHolder in {SCALARDB_CLASSES}")
        classpath += f"{os.pathsep}{SCALARDB_CLASSES}"
    return classpath


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[str], grace: float = 15.0) -> None:
    stop_process(process, grace)


@dataclass
class ScalarDbServer:
    port: int
    process: subprocess.Popen[str]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def scalardb_server(
    folder: Path, start_timeout: float = 60.0, storage: str | None = None
) -> Iterator[ScalarDbServer]:
    """Run ``com.scalar.db.server.ScalarDbServer`` (3.13.6) with consensus commit on a SQLite
    file in ``folder`` (or on the storage the properties lines ``storage`` describe, e.g.
    multi-storage), its gRPC port on a free port, until the block ends. The properties
    file is the owner's only (``storage`` may hold passwords).

    The server has no listen-address setting: it binds the port on every interface
    (``ServerBuilder.forPort``); the tests only ever connect to 127.0.0.1. Its
    Prometheus exporter (default port 8080) is turned off, and so is the 30 s
    decommissioning delay on SIGTERM.
    """
    classpath = scalardb_classpath()
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = folder / "server.properties"
    if storage is None:
        storage = (
            "scalar.db.storage=jdbc\n"
            f"scalar.db.contact_points=jdbc:sqlite:{folder / 'scalardb.sqlite3'}?busy_timeout=10000\n"
        )
    config.touch(mode=0o600)
    config.write_text(
        storage.rstrip("\n") + "\n"
        "scalar.db.transaction_manager=consensus-commit\n"
        f"scalar.db.server.port={port}\n"
        "scalar.db.server.prometheus_exporter_port=-1\n"
        "scalar.db.server.decommissioning_duration_secs=0\n"
    )
    log = folder / "server.log"
    command = [
        _java(),
        "-Xms64m",
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-cp",
        classpath,
        "com.scalar.db.server.ScalarDbServer",
        "--config",
        str(config),
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=folder
        )
    server = ScalarDbServer(port, process, log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ScalarDB server exited with {process.returncode}:\n{server.log_text()}")
            if "ScalarDB Server started" in server.log_text():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"ScalarDB server did not start in {start_timeout}s:\n{server.log_text()}")
            time.sleep(0.1)
        yield server
    finally:
        _stop(process)


class ScalarDbTxHolder:
    """Drives ``ScalarDbTxHolder``: ``send("begin")`` -> ``"begun <id>"`` and so on."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=_pump, args=(process.stdout, self.lines), daemon=True).start()

    def expect(self, timeout: float = 30.0) -> str:
        """The next answer line (not a log line) the holder prints."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"ScalarDbTxHolder said nothing in {timeout}s: {self.output[-20:]}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"ScalarDbTxHolder exited with {self.process.returncode}: {self.output[-20:]}"
                    ) from None
                continue
            self.output.append(line)
            if re.match(r"^(ready|created|begun|committed|aborted|error)\b", line):
                return line

    def send(self, command: str, timeout: float = 30.0) -> str:
        """Send one command and wait for its answer."""
        self.write(command)
        return self.expect(timeout)

    def write(self, command: str) -> None:
        """Send one command without waiting (read the answer later with ``expect``)."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()


@contextmanager
def scalardb_tx_holder(port: int) -> Iterator[ScalarDbTxHolder]:
    """Run the ScalarDB transaction holder against 127.0.0.1:``port``."""
    command = [
        _java(),
        *JVM_OPTS,
        "-cp",
        scalardb_classpath(with_holder=True),
        "ScalarDbTxHolder",
        str(port),
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    holder = ScalarDbTxHolder(process)
    try:
        ready = holder.expect(timeout=60)
        assert ready == "ready", ready
        yield holder
    finally:
        if process.stdin is not None:
            process.stdin.close()  # aborts open transactions and exits
        _stop(process, grace=10)
