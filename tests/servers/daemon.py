"""A test server run as a child process on 127.0.0.1, with its own temporary folder.

    with Daemon("s3proxy", lambda port, folder: [...argv...], ready=probe) as daemon:
        daemon.port, daemon.folder    # the port it listens on, its temporary folder
        daemon.kill()                 # SIGKILL now (a "server died mid-upload" fault)
        daemon.restart()              # start it again: same port, same folder (what it kept)
        daemon.log_tail()             # the last lines it wrote (stdout and stderr)

The port is picked free just before the start (bind to port 0, close); a server
that loses that race exits at once and is started again on another port. The
folder (and everything the server wrote in it) is removed at exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

START_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Daemon:
    """One server process; ``argv(port, folder)`` says how to start it.

    ``ready(port)`` (default: the TCP port accepts connections) is polled until it
    is true, for at most ``start_timeout`` seconds.
    """

    def __init__(
        self,
        name: str,
        argv: Callable[[int, Path], Sequence[str]],
        *,
        env: dict[str, str] | None = None,
        ready: Callable[[int], bool] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self._argv = argv
        self._env = env
        self._ready = ready or port_open
        self._start_timeout = start_timeout
        self.port = 0
        self.folder = Path()
        self.started_in = 0.0  # seconds from spawn to ready
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    def __enter__(self) -> Daemon:
        self.folder = Path(tempfile.mkdtemp(prefix=f"txb-{self.name}-"))
        try:
            for attempt in range(START_ATTEMPTS):
                if self._start(last=attempt == START_ATTEMPTS - 1):
                    return self
        except BaseException:
            self.__exit__(None, None, None)
            raise
        raise AssertionError("unreachable")

    def _start(self, last: bool, port: int = 0) -> bool:
        self.port = port or free_port()
        self._log = self.folder / f"{self.name}.log"
        started = time.monotonic()
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                list(self._argv(self.port, self.folder)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self.folder,
                start_new_session=True,  # a kill reaches the server's own children too
            )
        deadline = started + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                if last:
                    raise RuntimeError(
                        f"{self.name} exited with {self._proc.returncode} at start:\n{self.log_tail()}"
                    )
                return False  # most likely lost the race for the port: try another one
            if self._ready(self.port):
                self.started_in = time.monotonic() - started
                return True
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} not ready after {self._start_timeout:.0f} s:\n{self.log_tail()}")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self.folder != Path():
            shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def kill(self) -> None:
        """SIGKILL the server (and its process group) now, as a crash would."""
        self._signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()

    def restart(self) -> None:
        """Stop the server if it runs, then start it again on the same port and folder."""
        self.stop()
        self._start(last=True, port=self.port)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def log_tail(self, lines: int = 30) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])


class DaemonServer:
    """A test server object around one ``Daemon``: the lifecycle every emulator shares.

    Subclasses say how to make the daemon (``_make_daemon``) and what to derive from
    its port once it serves (``_started``: endpoints, URLs).
    """

    def __init__(self) -> None:
        self._daemon: Daemon | None = None

    def _make_daemon(self) -> Daemon:
        raise NotImplementedError

    def _started(self, port: int) -> None:
        """Called once the daemon serves on ``port``."""

    def __enter__(self) -> Self:
        self._daemon = self._make_daemon()
        self._daemon.__enter__()
        self._started(self._daemon.port)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._daemon is not None:
            self._daemon.__exit__(kind, exc, tb)
            self._daemon = None

    @property
    def daemon(self) -> Daemon:
        assert self._daemon is not None, "server not started"
        return self._daemon

    @property
    def started_in(self) -> float:
        return self.daemon.started_in

    @property
    def alive(self) -> bool:
        return self._daemon is not None and self._daemon.alive

    def kill(self) -> None:
        """SIGKILL the server now; it stays dead until ``restart`` (what it kept in memory is gone)."""
        self.daemon.kill()

    def restart(self) -> None:
        """Start the server again on the same endpoint and folder (in-memory servers come back empty)."""
        self.daemon.restart()
