"""A real, throw-away PostgreSQL server for tests (no pytest inside).

    with PostgresServer() as pg:
        pg.dsn("mydb")           # libpq conninfo, password included
        name = pg.create_database()

The cluster lives in a fresh temporary folder owned by the ``postgres`` user
(``initdb`` and ``postgres`` refuse to run as root), listens on a free port of
127.0.0.1 only, and authenticates everyone with scram-sha-256, so a wrong
password is really refused. Durability is switched off for speed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

RUN_AS = "postgres"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server binaries (Debian layout or PATH), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def missing_reason() -> str | None:
    """Why a server cannot be started here (None when it can)."""
    if find_postgres_bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        return f"no {RUN_AS!r} system user to run PostgreSQL as"
    if shutil.which("runuser") is None and os.geteuid() == 0:
        return "runuser is missing"
    return None


class PostgresServer:
    """Start with ``start()`` (or ``with``), stop with ``stop()``."""

    def __init__(
        self, *, user: str = "postgres", password: str = "pg-test-secret", options: Sequence[str] = ()
    ) -> None:
        """``options``: more server settings (``"archive_mode=on"``...), after the defaults."""
        bindir = find_postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found")
        self.bindir = bindir
        self.user = user
        self.password = password
        self.options = list(options)
        self.host = "127.0.0.1"
        self.port = 0
        self.root: Path | None = None
        self._running = False

    # -- lifecycle ---------------------------------------------------------------------------
    def _as_owner(self, *argv: str) -> list[str]:
        return ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else list(argv)

    def _run(self, *argv: str, timeout: float = 120) -> None:
        assert self.root is not None
        done = subprocess.run(
            self._as_owner(*argv),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> PostgresServer:
        self.root = Path(tempfile.mkdtemp(prefix="txb-pg-"))
        os.chmod(self.root, 0o700)
        if os.geteuid() == 0:
            shutil.chown(self.root, RUN_AS, RUN_AS)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, RUN_AS, RUN_AS)
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.root / "data"),
            "-U", self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        last: Exception | None = None
        for _ in range(3):
            self.port = free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-c port={self.port}",
                    f"-c unix_socket_directories={self.root}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=60",
                    "-c shared_buffers=64MB",
                    *(f"-c {option}" for option in self.options),
                ]
            )
            try:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D", str(self.root / "data"),
                    "-l", str(self.root / "server.log"),
                    "-o", options,
                    "-w", "-t", "60",
                    "start",
                )  # fmt: skip
            except RuntimeError as exc:
                last = exc
                continue
            self._running = True
            self._wait_ready()
            return self
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start: {last}; log: {self.log_tail()}")

    def _wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=3):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        if self.root is None:
            return ""
        try:
            return "\n".join((self.root / "server.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.root is None:
            return
        if self._running:
            try:
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"),
                    "-m", "immediate", "-w", "stop", timeout=60,
                )  # fmt: skip
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill_postmaster()
            self._running = False
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def _kill_postmaster(self) -> None:
        assert self.root is not None
        try:
            pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 9)
        except (OSError, ValueError, IndexError):
            pass

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- connecting ---------------------------------------------------------------------------
    def params(self, dbname: str = "postgres") -> dict[str, str]:
        return {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "password": self.password,
            "dbname": dbname,
        }

    def dsn(self, dbname: str = "postgres", *, with_password: bool = True) -> str:
        """A libpq key/value conninfo string."""
        parts = self.params(dbname)
        if not with_password:
            del parts["password"]
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run statements in autocommit mode (CREATE DATABASE and the like)."""
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database with a unique name; returns the name."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name
