"""A bank on a real ScalarDB (3.13, multi-storage over PostgreSQL and MariaDB), and its copies.

- ``MultiStorage``: where ScalarDB keeps its data. Namespace ``bank_a`` and the
  coordinator live in one PostgreSQL database (ScalarDB namespaces are schemas there),
  ``bank_b`` in MariaDB (a namespace is a database there); each storage also holds
  ScalarDB's own metadata namespace ``scalardb`` for its tables. ``properties()`` is
  the multi-storage configuration (consensus commit, SERIALIZABLE), for the server and
  for reading a copy directly; ``cluster_targets()`` the ``[[targets]]`` of a cluster
  file backing up every namespace, the coordinator and the system namespace.
- ``scalardb_bank(properties)`` runs ``tests/java/ScalarDbBank.java``: setup through
  ScalarDB's Admin API, transfers between ``bank_a`` and ``bank_b`` from worker threads,
  and ``books()`` reading every account in one ScalarDB transaction (lazy recovery
  included), live or from a copy.
- ``fresh_copy()`` makes the empty places a copy is restored into (a new PostgreSQL
  database; the scratch MariaDB server emptied of the bank's databases: ScalarDB names a
  MariaDB database after its namespace, so a copy keeps the names and needs a server of
  its own); ``restore_set()`` restores a txbackup set there with ``txbackup restore``,
  ``naive_copy()``/``load_naive()`` take and load the copies made one database after the
  other. A check of a restored copy (the books, or ``txbackup audit``) reads it through
  ``copy.properties()``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers.java_peers import JARS, JVM_OPTS, _java, _missing, _pump, _stop, scalardb_classpath
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.processes import txbackup

BANK_CLASSES = JARS / "scalardb-bank-classes"
NAMESPACES = ("bank_a", "bank_b")
SYSTEM_NAMESPACE = "scalardb"  # ScalarDB's default scalar.db.system_namespace_name
COORDINATOR = "coordinator"
MARIA_DATABASES = ("bank_b", SYSTEM_NAMESPACE)


def _secret_file(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return path


@dataclass(frozen=True)
class MultiStorage:
    """The two storages of one ScalarDB: a PostgreSQL database and a MariaDB server."""

    pg: PostgresServer
    pg_database: str
    maria: MariaDBServer

    def properties(self) -> str:
        """ScalarDB's multi-storage configuration for these two (passwords included:
        write it to an owner-only file)."""
        storages: dict[str, tuple[str, PostgresServer | MariaDBServer]] = {
            "pg": (f"jdbc:postgresql://{self.pg.host}:{self.pg.port}/{self.pg_database}", self.pg),
            "maria": (f"jdbc:mysql://{self.maria.host}:{self.maria.port}/", self.maria),
        }
        lines = [
            "scalar.db.storage=multi-storage",
            "scalar.db.multi_storage.storages=pg,maria",
            "scalar.db.multi_storage.default_storage=pg",
            # the coordinator and the system namespace of the PostgreSQL storage with bank_a;
            # each storage keeps the metadata of its own tables in its own `scalardb`
            f"scalar.db.multi_storage.namespace_mapping=bank_a:pg,bank_b:maria,{COORDINATOR}:pg",
            "scalar.db.consensus_commit.isolation_level=SERIALIZABLE",
        ]
        for name, (url, server) in storages.items():
            prefix = f"scalar.db.multi_storage.storages.{name}"
            lines += [
                f"{prefix}.storage=jdbc",
                f"{prefix}.contact_points={url}",
                f"{prefix}.username={server.user}",
                f"{prefix}.password={server.password}",
                # small pools: the session's PostgreSQL serves other tests too
                f"{prefix}.jdbc.connection_pool.min_idle=2",
                f"{prefix}.jdbc.connection_pool.max_total=16",
                f"{prefix}.jdbc.table_metadata.connection_pool.min_idle=0",
                f"{prefix}.jdbc.admin.connection_pool.min_idle=0",
            ]
        return "\n".join(lines) + "\n"

    def write_properties(self, path: Path, extra: str = "") -> Path:
        """``properties()`` (then ``extra`` lines) into the owner-only file ``path``."""
        return _secret_file(path, self.properties() + extra)

    def cluster_targets(self, secrets: Path) -> str:
        """``[[targets]]`` backing up both storages: every bank namespace, the coordinator
        and the system namespace (passwords in owner-only files under ``secrets``)."""
        pg_password = _secret_file(secrets / "pg.password", self.pg.password)
        maria_password = _secret_file(secrets / "maria.password", self.maria.password)
        return (
            "\n[[targets]]\n"
            'name = "pg"\nkind = "postgres"\n'
            f'host = "{self.pg.host}"\nport = {self.pg.port}\nuser = "{self.pg.user}"\n'
            f'password_file = "{pg_password}"\n'
            f'databases = ["{self.pg_database}"]\n'
            f'include = ["bank_a", "{SYSTEM_NAMESPACE}"]\n'
            f'coordinator_namespace = "{COORDINATOR}"\n'
            "\n[[targets]]\n"
            'name = "maria"\nkind = "mysql"\n'
            f'host = "{self.maria.host}"\nport = {self.maria.port}\nuser = "{self.maria.user}"\n'
            f'password_file = "{maria_password}"\n'
            f"databases = {list(MARIA_DATABASES)!r}\n".replace("'", '"')
        )


def fresh_copy(pg: PostgresServer, scratch: MariaDBServer, label: str) -> MultiStorage:
    """Empty places for one restored copy: a new database on ``pg``, and ``scratch`` without
    the bank's MariaDB databases (a previous copy there is dropped: one copy at a time)."""
    conn = scratch.connect()
    try:
        with conn.cursor() as cur:
            for db in MARIA_DATABASES:
                cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    finally:
        conn.close()
    name = f"sdb_{label}_{uuid.uuid4().hex[:6]}"
    pg.execute(f'CREATE DATABASE "{name}"')
    return MultiStorage(pg, name, scratch)


def restore_set(config: Path, set_id: str, copy: MultiStorage) -> None:
    """``txbackup restore`` of the whole set into ``copy`` (same users and passwords as the
    live servers: no password needed on the command line)."""
    pg, maria = copy.pg, copy.maria
    result = txbackup(
        "restore",
        "-c",
        str(config),
        set_id,
        "--to",
        f"pg=host={pg.host} port={pg.port} user={pg.user} dbname={copy.pg_database}",
        "--to",
        f"maria=mysql://{maria.user}@{maria.host}:{maria.port}",
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"txbackup restore {set_id} failed ({result.returncode}): {result.stderr}")


@contextmanager
def restored_copy(
    live: MultiStorage,
    scratch: MariaDBServer,
    label: str,
    *,
    config: Path | None = None,
    set_id: str | None = None,
    naive: NaiveCopy | None = None,
) -> Iterator[MultiStorage]:
    """A fresh copy (``fresh_copy``) holding the set ``set_id`` of the cluster file ``config``
    (``txbackup restore``) or the naive copy ``naive``, for the block; its PostgreSQL database is
    dropped after (the scratch MariaDB server's databases are dropped by the next copy). Check
    it inside the block: ``bank.books(copy.write_properties(...))``, an audit..."""
    copy = fresh_copy(live.pg, scratch, label)
    try:
        if set_id is not None:
            assert config is not None, "a set is restored with its cluster file"
            restore_set(config, set_id, copy)
        else:
            assert naive is not None, "a set or a naive copy"
            load_naive(naive, copy)
        yield copy
    finally:
        with contextlib.suppress(Exception):
            live.pg.execute(f'DROP DATABASE "{copy.pg_database}" WITH (FORCE)')


@dataclass(frozen=True)
class NaiveCopy:
    pg_dump: Path
    maria_dump: Path
    ms: int


def naive_copy(live: MultiStorage, folder: Path, gap_s: float) -> NaiveCopy:
    """``pg_dump`` of the PostgreSQL database, ``gap_s`` seconds, then ``mariadb-dump
    --single-transaction`` of the bank's MariaDB databases: each consistent on its own,
    no pause, taken one after the other as someone without txbackup would."""
    folder.mkdir(parents=True, exist_ok=True)
    pg, maria = live.pg, live.maria
    pg_argv = [
        str(pg.bindir / "pg_dump"), *_pg_args(pg), "--format=plain", "--no-owner", "--no-privileges",
        f"--dbname={live.pg_database}",
    ]  # fmt: skip
    maria_argv = [
        _tool("mariadb-dump", "mysqldump"), *_maria_args(maria),
        "--single-transaction", "--skip-dump-date", "--databases", *MARIA_DATABASES,
    ]  # fmt: skip
    started = time.monotonic()
    pg_file, maria_file = folder / "pg.sql", folder / "maria.sql"
    with open(pg_file, "wb") as out:
        subprocess.run(pg_argv, stdout=out, check=True, env=_pg_env(pg), timeout=60)
    time.sleep(gap_s)
    with open(maria_file, "wb") as out:
        subprocess.run(maria_argv, stdout=out, check=True, env=_maria_env(maria), timeout=60)
    return NaiveCopy(pg_file, maria_file, round((time.monotonic() - started) * 1000))


def load_naive(naive: NaiveCopy, copy: MultiStorage) -> None:
    """Load a naive copy into the empty places of ``copy`` (``psql``, ``mariadb``)."""
    pg, maria = copy.pg, copy.maria
    psql = [
        str(pg.bindir / "psql"), *_pg_args(pg), "-X", "-q", "-v", "ON_ERROR_STOP=1",
        f"--dbname={copy.pg_database}", "-f", str(naive.pg_dump),
    ]  # fmt: skip
    subprocess.run(psql, check=True, capture_output=True, env=_pg_env(pg), timeout=60)
    with open(naive.maria_dump, "rb") as source:
        mariadb = [_tool("mariadb", "mysql"), *_maria_args(maria)]
        subprocess.run(
            mariadb, stdin=source, check=True, capture_output=True, env=_maria_env(maria), timeout=60
        )


def _pg_args(pg: PostgresServer) -> list[str]:
    return [f"--host={pg.host}", f"--port={pg.port}", f"--username={pg.user}", "--no-password"]


def _pg_env(pg: PostgresServer) -> dict[str, str]:
    return os.environ | {"PGPASSWORD": pg.password}


def _maria_args(maria: MariaDBServer) -> list[str]:
    return [
        "--no-defaults",
        "--protocol=TCP",
        f"--host={maria.host}",
        f"--port={maria.port}",
        f"--user={maria.user}",
    ]


def _maria_env(maria: MariaDBServer) -> dict[str, str]:
    return os.environ | {"MYSQL_PWD": maria.password}


def _tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"none of {', '.join(names)} on PATH")


# -- the Java bank -------------------------------------------------------------------------------

_BOOKS = re.compile(r"^books sum=(-?\d+) transfers_a=(\d+) transfers_b=(\d+) missing=(\d+) tries=(\d+)$")
_STOPPED = re.compile(r"^stopped committed=(\d+) conflicts=(\d+) unknown=(\d+) errors=(\d+) last=(.*)$")


@dataclass(frozen=True)
class Books:
    """Every account read in one ScalarDB transaction."""

    sum: int
    transfers_a: int
    transfers_b: int
    missing: int
    tries: int
    expected: int

    @property
    def ok(self) -> bool:
        """Balanced: the money is all there, and every transfer is on both sides."""
        return self.sum == self.expected and self.transfers_a == self.transfers_b and not self.missing

    def summary(self) -> str:
        return (
            f"sum {self.sum} (expected {self.expected}), transfers {self.transfers_a} in bank_a / "
            f"{self.transfers_b} in bank_b, {self.missing} accounts missing, read in {self.tries} tries"
        )


@dataclass(frozen=True)
class LoadStats:
    committed: int
    conflicts: int
    unknown: int
    errors: int
    last_error: str


class ScalarDbBank:
    """Drives ``ScalarDbBank`` (one command a line, one answer line each)."""

    def __init__(self, process: subprocess.Popen[str], accounts: int, balance: int) -> None:
        self.process = process
        self.accounts = accounts
        self.balance = balance
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=_pump, args=(process.stdout, self.lines), daemon=True).start()

    @property
    def expected(self) -> int:
        return 2 * self.accounts * self.balance

    def expect(self, timeout: float = 60.0) -> str:
        """The next answer line (log lines skipped); an ``error`` answer raises."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"ScalarDbBank said nothing in {timeout}s: {self.output[-20:]}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"ScalarDbBank exited with {self.process.returncode}: {self.output[-20:]}"
                    ) from None
                continue
            self.output.append(line)
            if line.startswith("error "):
                raise RuntimeError(f"ScalarDbBank: {line}")
            if re.match(r"^(ready|done|started|stopped|count|books)\b", line):
                return line

    def send(self, command: str, timeout: float = 60.0) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.expect(timeout)

    def setup(self) -> None:
        assert self.send(f"setup {self.accounts} {self.balance}", timeout=120) == "done"

    def start(self, threads: int) -> None:
        assert self.send(f"start {threads}") == "started"

    def committed(self) -> int:
        return int(self.send("count").split()[1])

    def stop(self) -> LoadStats:
        match = _STOPPED.match(self.send("stop"))
        assert match, self.output[-5:]
        c, k, u, e = (int(match.group(i)) for i in range(1, 5))
        return LoadStats(c, k, u, e, match.group(5))

    def books(self, properties: Path | None = None) -> Books:
        """Read every account in one transaction: through the client's own ScalarDB, or
        through a new transaction manager made from ``properties`` (a copy read directly)."""
        command = f"books {self.accounts}" + (f" {properties}" if properties else "")
        match = _BOOKS.match(self.send(command, timeout=90))
        assert match, self.output[-5:]
        s, ta, tb, missing, tries = (int(match.group(i)) for i in range(1, 6))
        return Books(s, ta, tb, missing, tries, self.expected)


def bank_classpath() -> str:
    classpath = scalardb_classpath()
    if not (BANK_CLASSES / "ScalarDbBank.class").exists():
        _missing(f"compiled ScalarDbBank in {BANK_CLASSES}")
    return f"{classpath}{os.pathsep}{BANK_CLASSES}"


@contextmanager
def scalardb_bank(properties: Path, accounts: int, balance: int) -> Iterator[ScalarDbBank]:
    """Run ``ScalarDbBank`` with the ScalarDB configuration file ``properties``."""
    command = [
        _java(),
        *[opt for opt in JVM_OPTS if not opt.startswith("-Xmx")],
        "-Xmx256m",
        "-cp",
        bank_classpath(),
        "ScalarDbBank",
        str(properties),
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    bank = ScalarDbBank(process, accounts, balance)
    try:
        assert bank.expect(timeout=60) == "ready"
        yield bank
    finally:
        if process.stdin is not None:
            process.stdin.close()  # stops the workers and exits
        _stop(process, grace=15)


def grpc_properties(path: Path, port: int) -> Path:
    """A client configuration going through the ScalarDB server on 127.0.0.1:``port``."""
    path.write_text(
        "scalar.db.transaction_manager=grpc\n"
        "scalar.db.contact_points=127.0.0.1\n"
        f"scalar.db.contact_port={port}\n"
    )
    return path
