"""Real, throw-away Apache Cassandra 5.0 nodes for tests (no pytest inside).

    with CassandraCluster(1) as cluster:          # or CassandraCluster(3): 127.0.0.1-3
        node = cluster.nodes[0]
        node.nodetool("status")                   # stdout of nodetool, raises on failure
        session = cluster.session()               # a cassandra-driver session

The server is ``cassandra-all`` from Maven Central (``tests/java/fetch-cassandra``
copies it with its dependencies into ``.cache/jars/cassandra``), started with
``java`` directly (``org.apache.cassandra.service.CassandraDaemon``), not with
the ``bin/cassandra`` launcher: it runs as root without ``-R``. Each node has
its own temporary folder (yaml, data, commit log, logs), listens on 127.0.0.i
with the cluster's storage and native ports (free ports picked at start, the
same on every address), a JMX port of its own on 127.0.0.1, ``num_tokens: 1``
with evenly spread tokens and ``auto_bootstrap: false``. Heap: 512 MiB.

``node.nodetool_command`` is a small script in the node's folder that runs
``org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p <jmx port>`` with the
same classpath: exactly what a ``txbackup agent`` gets as ``--nodetool-cmd``.
``node.sstableloader_command`` does the same for ``BulkLoader``.

Measured on the 2-core test machine: one node is ready (CQL port open) in
about 7 s; a nodetool call takes about 0.5-1 s (a JVM start).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
JARS = REPO / ".cache" / "jars" / "cassandra"
FETCH = REPO / "tests" / "java" / "fetch-cassandra"
CLUSTER_NAME = "txbackup-test"
MAIN = "org.apache.cassandra.service.CassandraDaemon"
NODETOOL_MAIN = "org.apache.cassandra.tools.NodeTool"
LOADER_MAIN = "org.apache.cassandra.tools.BulkLoader"

# conf/jvm17-server.options of Cassandra 5.0 (JPMS): without them the JVM dies at start
JPMS = [
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]  # fmt: skip
SERVER_JVM = [
    "-Xms512m",
    "-Xmx512m",
    "-Xss256k",
    "-XX:+UseG1GC",
    "-XX:TieredStopAtLevel=1",  # C1 only: a quicker start on two cores; tests are short
    "-XX:+ExitOnOutOfMemoryError",
]
TOOL_JVM = ["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
MIN_TOKEN = -(2**63)


def missing_reason() -> str | None:
    """Why a node cannot be started here (None when it can)."""
    if shutil.which("java") is None:
        return "java is not installed"
    if not list(JARS.glob("cassandra-all-*.jar")):
        return f"Cassandra jars missing in {JARS}: run {FETCH.relative_to(REPO)} (needs mvn)"
    if importlib.util.find_spec("cassandra") is None:
        return "the Python cassandra-driver is not installed"
    return None


def classpath() -> str:
    return str(JARS / "*")


def jamm_jar() -> Path:
    found = sorted(JARS.glob("jamm-*.jar"))
    if not found:
        raise RuntimeError(f"no jamm jar in {JARS}: run {FETCH}")
    return found[-1]


def spread_tokens(count: int) -> list[int]:
    """``count`` Murmur3 tokens spread evenly over the ring."""
    step = 2**64 // count
    return [MIN_TOKEN + i * step for i in range(count)]


def _free_on(addresses: Sequence[str], avoid: set[int]) -> int:
    """A TCP port free on every address of ``addresses``."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((addresses[0], 0))
            port: int = probe.getsockname()[1]
        if port in avoid:
            continue
        try:
            for address in addresses[1:]:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {addresses}")


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


_LOGBACK = """<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""

_LOGBACK_TOOLS = """<configuration>
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %date{ISO8601} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
</configuration>
"""


def _tool_script(path: Path, main: str, args: Sequence[str], home: Path) -> None:
    """A shell script running a Cassandra tool class with the test classpath."""
    argv = [
        shutil.which("java") or "java",
        *TOOL_JVM,
        *JPMS,
        f"-Dlogback.configurationFile=file://{home / 'logback-tools.xml'}",
        f"-Dcassandra.storagedir={home / 'tools'}",
        f"-Duser.home={home}",
        "-cp",
        classpath(),
        main,
        *args,
    ]
    quoted = " ".join(_shell_quote(a) for a in argv)
    path.write_text(f'#!/bin/sh\nexec {quoted} "$@"\n')
    path.chmod(0o755)


def _shell_quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"


class CassandraNode:
    """One node of a test cluster (started and stopped by its ``CassandraCluster``)."""

    def __init__(self, cluster: CassandraCluster, index: int, token: int, jmx_port: int) -> None:
        self.cluster = cluster
        self.index = index
        self.address = f"127.0.0.{index + 1}"
        self.token = token
        self.jmx_port = jmx_port
        self.root = cluster.root / f"node{index + 1}"
        self.data_dir = self.root / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self.nodetool_command = self.root / "nodetool"
        self.sstableloader_command = self.root / "sstableloader"
        self.service_command = self.root / "service"

    @property
    def native_port(self) -> int:
        return self.cluster.native_port

    @property
    def log(self) -> Path:
        return self.root / "logs" / "system.log"

    def _yaml(self) -> str:
        c = self.cluster
        seeds = f"{c.nodes[0].address}:{c.storage_port}"
        dirs = {k: self.root / k for k in ("commitlog", "saved_caches", "hints", "cdc_raw")}
        lines = [
            f"cluster_name: {CLUSTER_NAME}",
            "num_tokens: 1",
            f"initial_token: {self.token}",
            "partitioner: org.apache.cassandra.dht.Murmur3Partitioner",
            "endpoint_snitch: SimpleSnitch",
            "seed_provider:",
            "  - class_name: org.apache.cassandra.locator.SimpleSeedProvider",
            "    parameters:",
            f'      - seeds: "{seeds}"',
            "commitlog_sync: periodic",
            "commitlog_sync_period: 10000ms",
            "commitlog_segment_size: 8MiB",
            f"listen_address: {self.address}",
            f"rpc_address: {self.address}",
            f"storage_port: {c.storage_port}",
            f"native_transport_port: {c.native_port}",
            "start_native_transport: true",
            "auto_bootstrap: false",
            f"data_file_directories: [{self.data_dir}]",
            f"commitlog_directory: {dirs['commitlog']}",
            f"saved_caches_directory: {dirs['saved_caches']}",
            f"hints_directory: {dirs['hints']}",
            f"cdc_raw_directory: {dirs['cdc_raw']}",
            "auto_snapshot: false",
            "concurrent_compactors: 1",
            "concurrent_reads: 8",
            "concurrent_writes: 8",
            "concurrent_counter_writes: 8",
            "memtable_flush_writers: 1",
            "native_transport_max_threads: 16",
            "read_request_timeout: 20000ms",
            "write_request_timeout: 20000ms",
            "range_request_timeout: 20000ms",
            "request_timeout: 30000ms",
        ]
        return "\n".join(lines) + "\n"

    def prepare(self) -> None:
        for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw", "logs", "tools"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "cassandra.yaml").write_text(self._yaml())
        (self.root / "logback.xml").write_text(_LOGBACK.format(log=self.log))
        (self.root / "logback-tools.xml").write_text(_LOGBACK_TOOLS)
        _tool_script(
            self.nodetool_command, NODETOOL_MAIN, ["-h", "127.0.0.1", "-p", str(self.jmx_port)], self.root
        )
        self._write_service()
        _tool_script(
            self.sstableloader_command, LOADER_MAIN, ["-sp", str(self.cluster.storage_port)], self.root
        )

    def _server_argv(self) -> list[str]:
        return [
            shutil.which("java") or "java",
            *SERVER_JVM,
            *JPMS,
            f"-javaagent:{jamm_jar()}",
            f"-Dcassandra.config=file://{self.root / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={self.root}",
            f"-Dcassandra.logdir={self.root / 'logs'}",
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.jmx.local.port={self.jmx_port}",
            "-Dcom.sun.management.jmxremote.authenticate=false",
            f"-Dlogback.configurationFile=file://{self.root / 'logback.xml'}",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=1000",
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-Dcassandra.load_ring_state=false",
            f"-Duser.home={self.root}",
            "-cp",
            classpath(),
            MAIN,
        ]

    @property
    def pid_file(self) -> Path:
        return self.root / "cassandra.pid"

    def _write_service(self) -> None:
        """``<root>/service start|stop``: the node as an init script would run it (what a
        ``txbackup agent`` gets as ``--start-cmd`` / ``--stop-cmd`` for the cold method)."""
        java = " ".join(_shell_quote(a) for a in self._server_argv())
        log = _shell_quote(str(self.root / "logs" / "stdout.log"))
        pid = _shell_quote(str(self.pid_file))
        self.service_command.write_text(
            f"""#!/bin/sh
cd {_shell_quote(str(self.root))}
case "$1" in
start)
    setsid {java} >> {log} 2>&1 < /dev/null &
    echo $! > {pid}
    ;;
stop)
    p=$(cat {pid} 2>/dev/null) || exit 0
    kill "$p" 2>/dev/null || exit 0
    i=0
    # gone, or a zombie (the test process that started it has not reaped it yet)
    while kill -0 "$p" 2>/dev/null && [ "$(awk '{{print $3}}' /proc/$p/stat 2>/dev/null)" != Z ]; do
        i=$((i + 1))
        [ $i -eq 600 ] && kill -9 "$p"
        [ $i -gt 900 ] && exit 1
        sleep 0.1
    done
    ;;
esac
"""
        )
        self.service_command.chmod(0o755)

    def start(self) -> None:
        """Start the JVM (returns at once; ``wait_ready`` waits for the CQL port)."""
        if self.process is not None and self.process.poll() is None:
            return
        out = open(self.root / "logs" / "stdout.log", "ab")  # noqa: SIM115 (kept by the process)
        try:
            self.process = subprocess.Popen(
                self._server_argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        finally:
            out.close()
        self.pid_file.write_text(f"{self.process.pid}\n")

    def _file_pid(self) -> int | None:
        """The pid in the pid file when that process is alive and not our child
        (a node restarted by ``service start``)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if self.process is not None and self.process.pid == pid:
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not _port_open(self.address, self.native_port):
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"Cassandra node {self.address} exited ({code}): {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Cassandra node {self.address} not ready in {timeout}s: {self.log_tail()}"
                )
            time.sleep(0.2)

    @property
    def running(self) -> bool:
        return (self.process is not None and self.process.poll() is None) or self._file_pid() is not None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        other = self._file_pid()
        if other is not None:
            subprocess.run([str(self.service_command), "stop"], timeout=timeout + 30, check=False)
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        other = self._file_pid()
        if other is not None:
            with contextlib.suppress(OSError):
                os.kill(other, signal.SIGKILL)
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def nodetool(self, *args: str, timeout: float = 120) -> str:
        """Run nodetool against this node; its stdout (RuntimeError when it fails)."""
        done = subprocess.run(
            [str(self.nodetool_command), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"nodetool {' '.join(args)} on {self.address}: {done.stdout}{done.stderr}")
        return done.stdout

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            text = ""
        with contextlib.suppress(OSError):
            text += (self.root / "logs" / "stdout.log").read_text(errors="replace")[-4000:]
        return "\n".join(text.splitlines()[-lines:])


class CassandraCluster:
    """``size`` nodes on 127.0.0.1..size, all in one temporary folder."""

    def __init__(self, size: int = 1) -> None:
        if not 1 <= size <= 3:
            raise ValueError("tests may use 127.0.0.1-127.0.0.3 only: 1 to 3 nodes")
        self.size = size
        self.root = Path(tempfile.mkdtemp(prefix="txb-cass-"))
        addresses = [f"127.0.0.{i + 1}" for i in range(size)]
        self.storage_port = _free_on(addresses, set())
        self.native_port = _free_on(addresses, {self.storage_port})
        used = {self.storage_port, self.native_port}
        jmx: list[int] = []
        for _ in range(size):
            jmx.append(_free_on(["127.0.0.1"], used))
            used.add(jmx[-1])
        self.nodes = [CassandraNode(self, i, t, jmx[i]) for i, t in enumerate(spread_tokens(size))]
        self._drivers: list[Any] = []
        self.start_seconds = 0.0

    @property
    def contact_points(self) -> list[str]:
        return [n.address for n in self.nodes]

    def start(self, timeout: float = 240) -> CassandraCluster:
        started = time.monotonic()
        try:
            for node in self.nodes:
                node.prepare()
            seed, *others = self.nodes
            seed.start()
            seed.wait_ready(timeout)
            for node in others:  # one at a time: the machine has two cores
                node.start()
                node.wait_ready(timeout)
            if others:
                self.wait_all_up(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def wait_all_up(self, timeout: float = 120) -> None:
        """Until every node sees every node Up and Normal."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                status = node.nodetool("status")
                up = sum(1 for line in status.splitlines() if line.startswith("UN "))
                if up == self.size:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not all nodes up after {timeout}s:\n{status}")
                time.sleep(1)

    def session(self, keyspace: str | None = None, node: int | None = None, consistency: str = "ONE") -> Any:
        """A cassandra-driver session (closed with the cluster). ``node``: talk to that node only;
        ``consistency``: the default consistency level (e.g. ``ALL``)."""
        from cassandra import ConsistencyLevel  # type: ignore[import-untyped]
        from cassandra.cluster import (  # type: ignore[import-untyped]
            EXEC_PROFILE_DEFAULT,
            Cluster,
            ExecutionProfile,
        )
        from cassandra.policies import WhiteListRoundRobinPolicy  # type: ignore[import-untyped]

        points = self.contact_points if node is None else [self.nodes[node].address]
        profile = ExecutionProfile(
            load_balancing_policy=WhiteListRoundRobinPolicy(points),
            request_timeout=60,
            consistency_level=ConsistencyLevel.name_to_value[consistency],
        )
        driver = Cluster(
            points,
            port=self.native_port,
            protocol_version=5,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=10,
            control_connection_timeout=10,
        )
        self._drivers.append(driver)
        return driver.connect(keyspace)

    def stop(self, graceful: bool = False) -> None:
        """Stop every node: SIGKILL (the data is thrown away), or SIGTERM when ``graceful``."""
        for driver in self._drivers:
            with contextlib.suppress(Exception):
                driver.shutdown()
        self._drivers.clear()
        for node in reversed(self.nodes):
            if graceful:
                node.stop()
            else:
                node.kill()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> CassandraCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if os.environ.get("TXBACKUP_KEEP_CASSANDRA") != "1":
            self.remove()
