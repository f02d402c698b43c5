"""The agent's live JMX connection to its node: a long-lived Java helper, so that a
snapshot inside the pause is one call, not a nodetool JVM start.

``nodetool snapshot`` starts a JVM for every call: 0.5-2 s on a small machine,
inside the pause. The agent instead keeps ``JmxHelper.java`` (shipped beside
this module, run as a single-file source program, JDK only) running, connected
to the node's JMX port, and speaks JSON lines with it (the protocol is at the
top of that file). A snapshot then costs the flush and the hard links.

- It is started when the agent starts and at every preflight (outside the
  pause), and again by a supervisor thread when it dies (back-off up to a minute).
- Its first answer names the node's host id, which must be the host id the
  agent reads over CQL: a JMX address that reaches another node is refused.
- The JMX password travels on the helper's stdin, never on its command line.
- What it prints is read as untrusted: one JSON object per line, bounded,
  every field typed; anything else and the helper is killed (and restarted).
- When it is not available (no java, the JMX port unreachable, JMX over TLS,
  a dead helper not restarted yet), the agent falls back to nodetool with a
  warning (``Node.snapshot``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from txbackup import strictjson
from txbackup.errors import TargetError

log = logging.getLogger("txbackup.agent")

SOURCE = Path(__file__).with_name("JmxHelper.java")
JVM_OPTIONS = ("-XX:+UseSerialGC", "-Xms16m", "-Xmx96m", "-XX:TieredStopAtLevel=1", "-Xshare:auto")
"""A small JVM: it holds one connection and answers a few calls a day."""
START_TIMEOUT_S = 30.0
"""Compiling the source and connecting (about 1 s here; more on a loaded node)."""
RETRY_AFTER_S = 30.0
"""After a failed start, a preflight does not try again for this long (the supervisor does,
in the background): a JMX port that does not answer must not cost every backup a wait."""
MAX_LINE = 64 << 10
"""The longest answer line read from the helper; a longer one is a broken helper."""


class HelperUnavailable(TargetError):
    """The helper could not be used (not started, died, timed out, answered garbage):
    whether the call reached the node is unknown."""


class CallUncertain(TargetError):
    """The connection to the node broke during the call: the node may have done it."""


class JmxHelper:
    """One helper process, connected to ``host:port``. Calls are serialized (one at a time)."""

    def __init__(
        self,
        host: str,
        port: int,
        java: Sequence[str] = ("java",),
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.java = list(java)
        self.user = user
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.host_id = ""
        self.release_version = ""
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._lock = threading.Lock()
        self._next_id = 0

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the helper and connect; ``HelperUnavailable`` naming why not."""
        argv = [*self.java, *JVM_OPTIONS, str(SOURCE)]
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C meant for the agent is the agent's to handle
                close_fds=True,
            )
        except OSError as exc:
            raise HelperUnavailable(f"JMX helper: cannot run {argv[0]}: {exc.strerror or exc}") from None
        assert self.process.stdout is not None and self.process.stderr is not None
        self._lines = queue.Queue()
        threading.Thread(
            target=_read_lines, args=(self.process.stdout, self._lines), name="jmx-helper-out", daemon=True
        ).start()
        threading.Thread(
            target=_keep_tail, args=(self.process.stderr, self._stderr), name="jmx-helper-err", daemon=True
        ).start()
        connect = {"op": "connect", "host": self.host, "port": self.port}
        if self.user is not None:
            connect |= {"user": self.user, "password": self.password or ""}
        answer = self._exchange(connect, timeout, what="connect")
        if answer.get("ok") is not True:
            self.close()
            raise HelperUnavailable(f"JMX {self.host}:{self.port}: {_error_text(answer)}")
        self.host_id = _field(answer, "host_id")
        self.release_version = _field(answer, "release_version")

    def call(self, op: str, timeout: float, **fields: Any) -> int:
        """Run ``op`` on the node; the milliseconds it took there. ``TargetError`` with
        the node's one-line message when the node refused it; ``CallUncertain`` when the
        connection broke during the call; ``HelperUnavailable`` when the helper failed
        (it is then killed: the supervisor starts another)."""
        answer = self._exchange({"op": op, **fields}, timeout, what=op)
        if answer.get("ok") is not True:
            if answer.get("uncertain") is True:
                raise CallUncertain(f"{op} (JMX): the connection to the node broke: {_error_text(answer)}")
            raise TargetError(f"{op} failed (JMX): {_error_text(answer)}")
        ms = answer.get("ms")
        return ms if type(ms) is int and ms >= 0 else 0

    def _exchange(self, request: dict[str, Any], timeout: float, what: str) -> dict[str, Any]:
        with self._lock:
            process = self.process
            if process is None or process.poll() is not None or process.stdin is None:
                raise HelperUnavailable(f"JMX helper not running{self._why()}")
            request_id = 0
            if request["op"] != "connect":  # the connect line has no id: it is always the first
                self._next_id += 1
                request_id = self._next_id
                request = {"id": request_id, **request}
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
            except OSError:
                self._kill()
                raise HelperUnavailable(f"JMX helper: gone before {what}{self._why()}") from None
            deadline = time.monotonic() + timeout
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._kill()
                raise HelperUnavailable(f"{what} (JMX): no answer within {timeout:g} s") from None
            if line is None:
                self._kill()
                raise HelperUnavailable(f"JMX helper: exited during {what}{self._why()}")
            try:
                answer = strictjson.loads(line, max_depth=2)
                if not isinstance(answer, dict):
                    raise ValueError("not a JSON object")
                if request["op"] != "connect" and answer.get("id") != request_id:
                    raise ValueError(f"answer to request {answer.get('id')!r}, not {request_id}")
                if not isinstance(answer.get("ok"), bool):
                    raise ValueError("no ok field")
            except ValueError as exc:
                self._kill()
                raise HelperUnavailable(f"JMX helper: bad answer to {what}: {exc}") from None
            return answer

    def _why(self) -> str:
        tail = [line for line in self._stderr if line.strip()]
        return f" ({tail[-1][:300]})" if tail else ""

    def _kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def close(self) -> None:
        """End the helper: stdin closed (it exits on its own), killed if it lingers."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()


def _read_lines(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    """Every line the helper prints, then None at its end (or at an over-long line,
    which ends the reading: the helper is broken)."""
    try:
        while True:
            line = stream.readline(MAX_LINE + 1)
            if not line or len(line) > MAX_LINE:
                break
            lines.put(line)
    except (OSError, ValueError):
        pass
    lines.put(None)


def _keep_tail(stream: IO[bytes], tail: collections.deque[str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for raw in stream:
            tail.append(raw[:1000].decode("utf-8", "replace").rstrip())


def _field(answer: dict[str, Any], key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str) or not value or len(value) > 200:
        raise HelperUnavailable(f"JMX helper: no {key} in its answer")
    return value


def _error_text(answer: dict[str, Any]) -> str:
    error = answer.get("error")
    text = error if isinstance(error, str) and error else "no reason given"
    return " ".join(text.split())[:400]


class Supervisor:
    """Keeps one helper running: ``current()`` is a ready helper or None (never waits);
    a thread starts one, and again whenever it dies, backing off while it fails.

    ``make`` builds and starts a helper (raising ``TargetError`` when it cannot);
    ``check`` is called on a started helper before it is used (the host id test)."""

    def __init__(self, make: Callable[[], JmxHelper], check: Callable[[JmxHelper], None]) -> None:
        self._make = make
        self._check = check
        self._helper: JmxHelper | None = None
        self._lock = threading.Lock()  # one start at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error = "not started yet"
        self.restarts = 0
        self._failed_at: float | None = None

    def current(self) -> JmxHelper | None:
        helper = self._helper
        if helper is not None and helper.alive:
            return helper
        if helper is not None:
            self.last_error = "the JMX helper died"
            self._wake.set()  # the supervisor starts another
        return None

    def ensure(self, retry_after: float = RETRY_AFTER_S) -> JmxHelper | None:
        """A ready helper, started now if there is none (outside the pause only); None
        when it cannot be started (``last_error`` says why), or when a start failed less
        than ``retry_after`` seconds ago (the supervisor keeps trying meanwhile)."""
        helper = self.current()
        if helper is not None:
            return helper
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() - failed_at < retry_after:
            return None
        with self._lock:
            helper = self.current()
            if helper is not None:
                return helper
            return self._start()

    def _start(self) -> JmxHelper | None:
        old, self._helper = self._helper, None
        if old is not None:
            old.close()
        helper: JmxHelper | None = None
        try:
            helper = self._make()
            self._check(helper)
        except TargetError as exc:
            if helper is not None:
                helper.close()
            if str(exc) != self.last_error:
                log.warning("%s; snapshots use nodetool until it works", exc)
            self.last_error = str(exc)
            self._failed_at = time.monotonic()
            return None
        if old is not None or self.restarts:
            log.warning("JMX helper started again (pid %s)", helper.pid)
        self.restarts += 1
        self._helper = helper
        self.last_error = ""
        self._failed_at = None
        return helper

    def run(self) -> None:
        """Start the helper, and again whenever it dies (in a daemon thread)."""

        def loop() -> None:
            delay = 1.0
            while not self._stop.is_set():
                if self.current() is None:
                    delay = 1.0 if self.ensure(retry_after=0) is not None else min(60.0, delay * 2)
                self._wake.wait(timeout=delay if self._helper is None else 2.0)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="jmx-supervisor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            helper, self._helper = self._helper, None
        if helper is not None:
            helper.close()
