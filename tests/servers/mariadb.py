"""A real, throw-away MariaDB server for tests (no pytest inside).

    with MariaDBServer() as db:
        db.connect("mydb")       # a pymysql connection over TCP
        name = db.create_database()

The server lives in a fresh temporary folder (its own datadir, socket, pid
file), listens on a free port of 127.0.0.1 only, has binary logging on (unless
``binlog=False``), and its root user has a known password over TCP
(``root@127.0.0.1``; names are not resolved). Durability is relaxed for speed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.servers.processes import stop_process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (
            f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None
        )
        if found:
            return found
    return None


def missing_reason() -> str | None:
    """Why a server cannot be started here (None when it can)."""
    if _which("mariadbd", "mysqld") is None:
        return "MariaDB server (mariadbd) is not installed"
    if _which("mariadb-install-db", "mysql_install_db") is None:
        return "mariadb-install-db is not installed"
    if _which("mariadb", "mysql") is None:
        return "the mariadb client is not installed"
    return None


class MariaDBServer:
    """Start with ``start()`` (or ``with``), stop with ``stop()``."""

    def __init__(self, *, password: str = "maria-test-secret", log_bin: bool = True) -> None:
        """``log_bin``: binary logging on (files ``binlog.NNNNNN`` in the server's folder)."""
        server = _which("mariadbd", "mysqld")
        install = _which("mariadb-install-db", "mysql_install_db")
        if server is None or install is None:
            raise RuntimeError("MariaDB server binaries not found")
        self.server_bin = server
        self.install_bin = install
        self.user = "root"
        self.password = password
        self.log_bin = log_bin
        self.host = "127.0.0.1"
        self.port = 0
        self.root: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def socket(self) -> str:
        assert self.root is not None
        return str(self.root / "mysqld.sock")

    def start(self) -> MariaDBServer:
        self.root = Path(tempfile.mkdtemp(prefix="txb-maria-"))
        user = ["--user=root"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [
                self.install_bin,
                "--no-defaults",
                f"--datadir={self.datadir}",
                *user,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                "--innodb-log-file-size=16M",
                "--innodb-buffer-pool-size=32M",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"mariadb-install-db failed: {done.stderr.strip()[-2000:]}")
        last = ""
        for _ in range(3):
            self.port = free_port()
            log = self.root / "error.log"
            self.proc = subprocess.Popen(
                [
                    self.server_bin,
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    f"--socket={self.socket}",
                    f"--port={self.port}",
                    f"--pid-file={self.root / 'mysqld.pid'}",
                    f"--log-error={log}",
                    "--bind-address=127.0.0.1",
                    "--skip-name-resolve",
                    *user,
                    *self._binlog_options(),
                    "--server-id=1",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--innodb-doublewrite=0",
                    "--innodb-log-file-size=16M",
                    "--innodb-buffer-pool-size=128M",
                    "--character-set-server=utf8mb4",
                    "--max-connections=100",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                self._set_password()
                return self
            last = self.log_tail()
            self._terminate()
        self.stop()
        raise RuntimeError(f"MariaDB did not start: {last}")

    def _binlog_options(self) -> list[str]:
        if not self.log_bin:
            return []
        assert self.root is not None
        return [f"--log-bin={self.root / 'binlog'}", "--binlog-format=ROW", "--sync-binlog=0"]

    def _wait_ready(self, timeout: float = 60) -> bool:
        """Wait until root (no password yet) can log in through the socket."""
        import pymysql

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                pymysql.connect(unix_socket=self.socket, user="root", connect_timeout=5).close()
                return True
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        return False

    def _set_password(self) -> None:
        """root gets the known password, and may log in over TCP from 127.0.0.1."""
        import pymysql

        conn = pymysql.connect(unix_socket=self.socket, user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                for host in ("localhost", "127.0.0.1"):
                    cur.execute(f"CREATE USER IF NOT EXISTS root@'{host}'")
                    cur.execute(f"ALTER USER root@'{host}' IDENTIFIED BY %s", (self.password,))
                    cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO root@'{host}' WITH GRANT OPTION")
        finally:
            conn.close()

    def log_tail(self, lines: int = 20) -> str:
        if self.root is None:
            return ""
        try:
            return "\n".join((self.root / "error.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def _terminate(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, 30)
        self.proc = None

    def stop(self) -> None:
        self._terminate()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> MariaDBServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- connecting ---------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password}

    def connect(self, database: str | None = None, **extra: Any) -> Any:
        """A pymysql connection (autocommit on) over TCP as root."""
        import pymysql

        return pymysql.connect(
            **self.params(),
            database=database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=5,
            **extra,
        )

    def execute(self, sql: str, database: str | None = None) -> None:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def rows(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        """Every row ``sql`` returns in ``database``."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database with a unique name; returns the name."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.execute(f"CREATE DATABASE `{name}`")
        return name
