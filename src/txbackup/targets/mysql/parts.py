"""MySQL/MariaDB dumps in parts (``jobs = N > 1``): one snapshot exported by N sessions,
restored by N clients.

Inside the pause the capture starts the same consistent snapshot on N sessions
and proves they hold the same data (``MysqlCapture._prove``). After it, the
sessions export the databases in parallel, each part into an artifact of its
own; per database ``<db>.parts/``:

- ``0-schema.sql``: the header (with the database's character set), every
  table's ``DROP TABLE IF EXISTS`` + ``CREATE TABLE``, sequences, views;
- ``1-data-NNNNN.sql``: the rows of one table, or of one range of a big
  table's integer primary key (``low < key <= high``), as multi-row
  ``INSERT``s behind the same header (no foreign-key checks; unique checks
  stay on, so that parts of one table can load at once: ``UNIQUE_CHECKS_BESIDE``);
- ``2-triggers-routines.sql``: triggers and routines, after the rows.

Each is a plain script for the ``mariadb`` client, like ``<db>.sql``
(jobs = 1). They load in name order, and the data parts in any order or
all at once: ``0-schema``, then the ``1-data`` parts in parallel, then
``2-triggers-routines``. The data parts are numbered biggest first, so the
name order is also a good order to hand them to N clients.

A table is split when its primary key is a single integer column and its
estimated size (``information_schema.TABLES.DATA_LENGTH``) is over a quarter
of what one session should export (the total over ``4 * jobs``, at least
``PART_MIN_BYTES``): into even ranges between the key's ``MIN`` and ``MAX``
in the snapshot (the first and last range open-ended, so every row is in
exactly one). Other tables (composite, textual or no primary key) are one
part each, the biggest first.

Restore runs each phase with up to ``jobs`` clients of the restoring target.
Its journal records whole databases: a database an interrupted job had not
finished is loaded again from its ``0-schema.sql``, which drops and
recreates its tables.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any

import pymysql

from txbackup.errors import IntegrityError, TargetError
from txbackup.procs import find_tool, run_from_stream
from txbackup.safepaths import shown
from txbackup.targets.base import ArtifactReader, ArtifactWriter, iter_chunks
from txbackup.targets.layouts import mysql_artifact
from txbackup.targets.mysql.script import ScriptGuard, version_id
from txbackup.targets.mysql.target import (
    _FOOTER,
    INTEGERS,
    Column,
    MysqlCapture,
    MysqlTarget,
    _message,
    _write_behind,
    client_command,
    comment,
    has_sandbox,
    ident,
)

SCHEMA = "0-schema.sql"
POST = "2-triggers-routines.sql"
PART_MIN_BYTES = 8 << 20
"""A table is split in ranges only when it is bigger than this (and than its share)."""
MAX_RANGES = 256


def data_name(number: int) -> str:
    return f"1-data-{number:05d}.sql"


class _Cancelled(Exception):
    """Another worker failed: this one stops."""


@dataclass
class _Part:
    """One artifact of the dump: ``produce(session, write)`` writes it."""

    db: str
    name: str
    produce: Callable[[MysqlCapture, Callable[[bytes], object]], None]
    where: str  # what a failure names
    size: int = 0  # estimated bytes (data parts), for the order


@dataclass
class _Plan:
    parts: list[_Part] = field(default_factory=list)


def export_parts(capture: MysqlCapture, out: ArtifactWriter) -> None:
    """Export every database of ``capture`` into ``<db>.parts/`` with its ``jobs`` sessions."""
    target = capture.target
    sessions = [capture, *(_sibling(capture, conn) for conn in capture.others)]
    try:
        for session in sessions:
            session._query(f"SET SESSION group_concat_max_len = {capture._concat_limit}")
        plan = _plan(capture, len(sessions))
    except pymysql.MySQLError as exc:
        raise target.error(f"planning the export: {_message(exc)}") from None
    pending = iter(plan.parts)
    lock = threading.Lock()
    stop = threading.Event()
    failed: list[BaseException] = []

    def take() -> _Part | None:
        with lock:
            return None if stop.is_set() else next(pending, None)

    def work(session: MysqlCapture) -> None:
        try:
            while (part := take()) is not None:
                with out.open(f"{part.db}.parts/{part.name}") as stream:
                    write = partial(_write_unless_stopped, stream, stop)
                    try:
                        # the session reads (and the server renders) the next chunk while
                        # this thread compresses and stores the one before
                        _write_behind(partial(part.produce, session), write)
                    except pymysql.MySQLError as exc:
                        raise target.error(f"{part.where}: {_message(exc)}") from None
        except _Cancelled:
            return
        except BaseException as exc:
            failed.append(exc)
            stop.set()

    workers = [
        threading.Thread(target=work, args=(s,), name=f"mysql-export-{i + 1}", daemon=True)
        for i, s in enumerate(sessions[1:], 1)
    ]
    for worker in workers:
        worker.start()
    try:
        work(sessions[0])  # the engine's export thread is the first worker
    finally:
        for worker in workers:
            worker.join()
    if failed:
        raise failed[0]


def _write_unless_stopped(stream: IO[bytes], stop: threading.Event, data: bytes) -> None:
    if stop.is_set():
        raise _Cancelled
    stream.write(data)


def _sibling(capture: MysqlCapture, conn: Any) -> MysqlCapture:
    """``capture`` read through another session holding the same snapshot."""
    other = MysqlCapture(capture.target)
    other.conn = conn
    other.mariadb = capture.mariadb
    other.tables = capture.tables
    other.schemas = capture.schemas
    other._position = dict(capture._position)
    other._concat_limit = capture._concat_limit
    return other


def _plan(capture: MysqlCapture, jobs: int) -> _Plan:
    """Every part of every database: schemas and triggers first (small, and each session
    may take one), then the data parts biggest first, numbered in that order."""
    small: list[_Part] = []
    data: list[tuple[str, _Part]] = []
    for db in capture._position["databases"]:
        where = f"database {shown(db, 80)}"
        small.append(_Part(db, SCHEMA, partial(_schema, db), where))
        small.append(_Part(db, POST, partial(_post, db), where))
        tables, columns, keys = capture._catalog(db)
        sizes = {
            str(name): int(size or 0)
            for name, size in capture._query(
                "SELECT TABLE_NAME, DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                (db,),
            )
        }
        base = [t.name for t in tables if t.kind in ("BASE TABLE", "SYSTEM VERSIONED")]
        share = max(PART_MIN_BYTES, sum(sizes.get(t, 0) for t in base) // (4 * jobs))
        for table in base:
            cols = columns.get(table, [])
            if not cols:
                continue
            key = keys.get(table)
            size = sizes.get(table, 0)
            ranges: list[tuple[Any, Any]] = [(None, None)]
            if key is not None and key[1] in INTEGERS and size > share:
                ranges = _ranges(capture, db, table, key[0], min(MAX_RANGES, -(-size // share)))
            for low, high in ranges:
                span = "" if (low, high) == (None, None) else f", key range ({low}, {high}]"
                produce = partial(_data, db, table, cols, key, low, high, span)
                part = _Part(db, "", produce, f"{where}, table {shown(table, 80)}", size // len(ranges))
                data.append((db, part))
    data.sort(key=lambda d: -d[1].size)
    numbers: dict[str, int] = {}
    for db, part in data:
        numbers[db] = numbers.get(db, 0) + 1
        part.name = data_name(numbers[db])
    return _Plan(small + [part for _, part in data])


def _ranges(capture: MysqlCapture, db: str, table: str, key: str, count: int) -> list[tuple[Any, Any]]:
    """``count`` even ranges of the integer ``key`` between its MIN and MAX in the snapshot:
    (None, b1], (b1, b2], ..., (bn, None)."""
    k = ident(key)
    low, high = capture._query(f"SELECT MIN({k}), MAX({k}) FROM {ident(db)}.{ident(table)}")[0]
    if low is None or count < 2:
        return [(None, None)]
    low, high = int(low), int(high)
    bounds = sorted({low + (high - low) * i // count for i in range(1, count)})
    edges: list[Any] = [None, *bounds, None]
    return list(itertools.pairwise(edges))


def _schema(db: str, session: MysqlCapture, write: Callable[[bytes], object]) -> None:
    session.conn.select_db(db)  # unqualified names in the views' definitions
    write(session._header(db, schema=True, what=", schema"))
    tables, _, _ = session._catalog(db)
    for table in tables:
        if table.kind in ("BASE TABLE", "SYSTEM VERSIONED"):
            write(session._table_ddl(db, table.name))
    session._dump_schema_rest(db, tables, write)
    write(_FOOTER)


def _post(db: str, session: MysqlCapture, write: Callable[[bytes], object]) -> None:
    session.conn.select_db(db)
    write(session._header(db, schema=False, what=", triggers and routines"))
    session._dump_triggers_and_routines(db, write)
    write(_FOOTER)


def _data(
    db: str,
    table: str,
    columns: list[Column],
    key: tuple[str, str] | None,
    low: Any,
    high: Any,
    span: str,
    session: MysqlCapture,
    write: Callable[[bytes], object],
) -> None:
    write(session._header(db, schema=False, what=f", rows of table {ident(table)}{span}", beside=True))
    write(f"{comment(f'-- rows of {ident(table)}{span}')}\n".encode())
    session._dump_rows(db, table, columns, key, write, low, high)
    write(_FOOTER)


# -- restore ------------------------------------------------------------------------------------


def scripts(names: list[str], culprit: str) -> dict[str, list[list[str]]]:
    """The artifact names of a set -> per database its scripts in three phases (schema, data
    parts, triggers and routines); a ``<db>.sql`` is a schema phase of its own. A database
    whose parts are incomplete or mixed with a ``<db>.sql`` is refused."""
    found: dict[str, list[list[str]]] = {}
    whole: set[str] = set()
    for name in names:
        parsed = mysql_artifact(name)
        if parsed is None:
            raise IntegrityError(f"{culprit}: unexpected artifact {shown(name)}")
        db, part = parsed
        phases = found.setdefault(db, [[], [], []])
        if part is None:
            whole.add(db)
            phases[0].append(name)
        else:
            phases[0 if part == SCHEMA else 2 if part == POST else 1].append(name)
    for db, phases in found.items():
        if db in whole and (len(phases[0]) > 1 or phases[1] or phases[2]):
            raise IntegrityError(f"{culprit}: database {shown(db, 80)} has both a dump and parts")
        if db not in whole and (not phases[0] or not phases[2]):
            missing = SCHEMA if not phases[0] else POST
            raise IntegrityError(f"{culprit}: the parts of database {shown(db, 80)} lack {missing}")
        phases[1].sort()
    return found


def restore_parts(
    target: MysqlTarget, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool
) -> None:
    """Restore a set holding ``<db>.parts/`` (and maybe ``<db>.sql``) artifacts, each phase
    with up to ``target.jobs`` clients at once."""
    found = scripts(src.names(), target.label)
    server, rename = target._destination(dest, set(found))
    todo = [db for db in found if not src.journal.is_done(f"database/{db}")]
    if not todo:
        return
    client = find_tool("mariadb", alternatives=("mysql",), culprit=target.label, bin_dir=target.bin_dir)
    sandbox = has_sandbox(client, culprit=target.label)
    conn = target.connect(server)
    server_info = str(conn.get_server_info())

    def guard() -> ScriptGuard:
        return ScriptGuard(
            target.label, server_version=version_id(server_info), mariadb="mariadb" in server_info.lower()
        )

    try:
        with conn.cursor() as cur:
            fresh = [db for db in todo if not src.journal.is_done(f"database/{db}/started")]
            target._refuse_non_empty(cur, server, [rename[db] for db in fresh], force)
            if not sandbox:
                # without --sandbox nothing stops the client from running a command: read
                # every script first, and touch nothing if one holds any
                for db in todo:
                    for name in (n for phase in found[db] for n in phase):
                        with src.open(name) as stream:
                            guard().check(iter_chunks(stream))
            for db in todo:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {ident(rename[db])}")
                src.journal.mark_done(f"database/{db}/started", {"database": rename[db]})
    except pymysql.MySQLError as exc:
        raise target.error(f"{server.address()}: {_message(exc)}") from None
    finally:
        conn.close()
    base, env = client_command(client, server, sandbox=sandbox)
    stop = threading.Event()

    def load(db: str, name: str) -> None:
        with src.open(name) as stream:
            # each line reaches the client only once the guard has read it
            chunks = guard().checked(iter_chunks(stream))
            if name in data_parts:
                chunks = unique_checks_on(chunks)
            chunks = _unless_stopped(chunks, stop)
            run_from_stream([*base, f"--database={rename[db]}"], chunks, culprit=target.label, env=env)

    data_parts = {name for db in todo for name in found[db][1]}
    for phase in range(3):
        _parallel([(db, name) for db in todo for name in found[db][phase]], load, target.jobs, stop)
    for db in todo:
        src.journal.mark_done(f"database/{db}", {"database": rename[db]})


_UNIQUE_OFF = b"SET UNIQUE_CHECKS=0;"


def unique_checks_on(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``pieces`` (cut at line ends), with a header line ``SET UNIQUE_CHECKS=0;`` sent as
    ``SET UNIQUE_CHECKS=1;``: data parts written before ``UNIQUE_CHECKS_BESIDE`` turn the
    checks off, and loaded beside other parts of their table they could deadlock. Only the
    header is read (its lines up to the first that is neither empty, a comment nor a SET);
    every byte after it passes as it came."""
    header = True
    for piece in pieces:
        if header:
            lines = piece.split(b"\n")
            for i, line in enumerate(lines):
                if line == _UNIQUE_OFF:
                    lines[i] = b"SET UNIQUE_CHECKS=1;"
                elif line and not line.startswith((b"--", b"SET ")):
                    header = False
                    break
            piece = b"\n".join(lines)
        yield piece


def _unless_stopped(chunks: Iterator[bytes], stop: threading.Event) -> Iterator[bytes]:
    for chunk in chunks:
        if stop.is_set():
            raise _Cancelled  # the client is killed: another part failed
        yield chunk


def _parallel(
    work: list[tuple[str, str]], run: Callable[[str, str], None], jobs: int, stop: threading.Event
) -> None:
    """``run(db, name)`` for each of ``work``, up to ``jobs`` at once; the first failure stops
    the others (their clients are killed) and is raised once they have."""
    pending = iter(work)
    lock = threading.Lock()
    failed: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                item = None if stop.is_set() else next(pending, None)
            if item is None:
                return
            try:
                run(*item)
            except _Cancelled:
                return
            except BaseException as exc:
                failed.append(exc)
                stop.set()
                return

    threads = [
        threading.Thread(target=worker, name=f"mysql-restore-{i + 1}", daemon=True)
        for i in range(min(jobs, len(work)) - 1)
    ]
    for thread in threads:
        thread.start()
    try:
        worker()
    finally:
        for thread in threads:
            thread.join()
    if failed:
        raise failed[0]
    if stop.is_set():
        raise TargetError("restore stopped")  # not reached: a stop always comes with a failure
