"""txbackup against a real ScalarDB: consistent sets, read back through ScalarDB.

A ScalarDB server 3.13 (``com.scalar-labs:scalardb-server`` from Maven Central) runs
consensus commit at SERIALIZABLE over multi-storage: namespace ``bank_a`` and the
coordinator in a PostgreSQL database, ``bank_b`` in a MariaDB server, each storage with
its own ``scalardb`` metadata namespace; the schema is made with ScalarDB's Admin API.
A Java client (``tests/java/ScalarDbBank.java``, ScalarDB's gRPC client) moves money
between an account of ``bank_a`` and one of ``bank_b`` in every transaction, from a few
threads, while:

- ``txbackup backup`` takes sets (cluster file: both storages with every namespace, the
  coordinator and the system namespace; the application to pause is the ScalarDB
  server's admin service), and after each one
- a naive copy is taken: ``pg_dump``, a short gap, then ``mariadb-dump
  --single-transaction``, each consistent on its own, no pause.

Once the load stops, every set is restored (``txbackup restore --to``) into a fresh
PostgreSQL database and a scratch MariaDB server, and read **through ScalarDB** (a
consensus-commit transaction manager on the restored storages, lazy recovery of any
record left uncommitted included): every account in one transaction, the books must
balance (the total is intact, and each transfer is counted on both sides). The naive
copies are loaded and read the same way: at least one must not balance, or this test
could not tell a consistent set from a torn one.

``TXBACKUP_SCALARDB_ROUNDS`` (default 3) sets the number of sets and naive copies. Run
with ``pytest -s`` to see the counts and timings.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.e2e.support import write_cluster
from tests.servers import mariadb as mariadb_servers
from tests.servers.java_peers import scalardb_server
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.processes import txbackup
from tests.servers.scalardb_bank import (
    MARIA_DATABASES,
    Books,
    MultiStorage,
    NaiveCopy,
    ScalarDbBank,
    bank_classpath,
    grpc_properties,
    naive_copy,
    restored_copy,
    scalardb_bank,
)

pytestmark = [
    pytest.mark.java,
    pytest.mark.postgres,
    pytest.mark.mariadb,
    pytest.mark.scalardb,
    pytest.mark.timeout(300),
]

ROUNDS = int(os.environ.get("TXBACKUP_SCALARDB_ROUNDS", "3"))
ACCOUNTS = 16  # on each side
BALANCE = 1000
THREADS = 4
LOAD_BEFORE_S = 1.0  # transfers running before the first backup
NAIVE_GAP_S = 0.3  # between pg_dump and mariadb-dump: transfers commit in between


def test_scalardb_sets_read_back_balanced_and_naive_copies_tear(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    require(mariadb_servers.missing_reason())
    bank_classpath()  # skips, or fails under CI=true, before any server starts when not fetched
    started = time.monotonic()
    with MariaDBServer() as maria, MariaDBServer() as scratch:
        live = MultiStorage(postgres_server, postgres_server.create_database("sdb"), maria)
        with scalardb_server(tmp_path / "server", storage=live.properties()) as server:
            up = time.monotonic() - started
            client = grpc_properties(tmp_path / "client.properties", server.port)
            with scalardb_bank(client, ACCOUNTS, BALANCE) as bank:
                bank.setup()
                config = write_cluster(
                    tmp_path / "cluster.toml",
                    server.address,
                    f'path = "{tmp_path / "backups"}"',
                    live.cluster_targets(tmp_path / "secrets"),
                )
                bank.start(THREADS)
                time.sleep(LOAD_BEFORE_S)
                sets: list[str] = []
                naive: list[NaiveCopy] = []
                backup_s: list[float] = []
                timings: list[dict[str, int]] = []
                loaded = time.monotonic()
                try:
                    for i in range(ROUNDS):
                        before = bank.committed()
                        t = time.monotonic()
                        result = _backup(config)
                        backup_s.append(time.monotonic() - t)
                        sets.append(result["set_id"])
                        timings.append(result["timings"])
                        naive.append(naive_copy(live, tmp_path / f"naive{i}", NAIVE_GAP_S))
                        assert bank.committed() > before, "no transfer during the backup and the copy"
                finally:
                    load = bank.stop()
                loaded = time.monotonic() - loaded
                live_books = bank.books()

                checking = time.monotonic()
                txbackup_read = [
                    _read(bank, tmp_path, live, scratch, f"t{i}", set_id=s) for i, s in enumerate(sets)
                ]
                naive_read = [
                    _read(bank, tmp_path, live, scratch, f"n{i}", naive=n) for i, n in enumerate(naive)
                ]
                txbackup_books = [books for books, _ in txbackup_read]
                naive_books = [books for books, _ in naive_read]
                checking = time.monotonic() - checking
                drill = _drill(config, live, scratch)
    elapsed = time.monotonic() - started

    torn = [b for b in naive_books if not b.ok]
    drill_seconds = {n: t["restore_seconds"] for n, t in drill["restore"]["targets"].items()}
    naive_audit = [found for _, found in naive_read]
    print(
        f"\nScalarDB 3.13 multi-storage (PostgreSQL + MariaDB), {THREADS} threads, {elapsed:.0f} s in all "
        f"(servers up {up:.0f} s, load {loaded:.0f} s, restores and reads {checking:.0f} s): "
        f"{load.committed} transfers, {load.conflicts} conflicts, {load.unknown} unknown\n"
        f"  txbackup: {len(txbackup_books)} sets, {sum(not b.ok for b in txbackup_books)} unbalanced; "
        f"backup s: {', '.join(f'{s:.1f}' for s in backup_s)}; pausing (drain) ms "
        f"{[t['drain_ms'] for t in timings]}, pause window ms {[t['pause_ms'] for t in timings]}, "
        f"export ms {[t['export_ms'] for t in timings]}; read tries {[b.tries for b in txbackup_books]}\n"
        f"  naive:    {len(naive_books)} copies, {len(torn)} torn "
        f"(copy ms: {[n.ms for n in naive]}): {'; '.join(b.summary() for b in torn)}; "
        f"audit: {[sorted(set(found)) for found in naive_audit]}\n"
        f"  drill of set {drill['set_id']}: restore s {drill['restore']['total_seconds']}"
        f" ({', '.join(f'{n} {t}' for n, t in drill_seconds.items())}),"
        f" audit {drill['audit']['records']} records clean"
    )
    assert load.errors == 0, load.last_error
    assert live_books.ok, live_books.summary()
    assert load.committed <= live_books.transfers_a <= load.committed + load.unknown, live_books.summary()
    for i, (books, found) in enumerate(txbackup_read):
        assert books.ok, f"set {sets[i]}: {books.summary()}"
        assert not found, f"set {sets[i]}: the audit says torn: {found}"
    # the audit, reading each copy before ScalarDB's lazy recovery rewrites it, flags every
    # naive copy whose books came out unbalanced
    for books, found in naive_read:
        assert books.ok or found, f"a naive copy tore ({books.summary()}) but the audit found it clean"
    # each set saw the load going on: more transfers than the one before, fewer than at the end
    counts = [b.transfers_a for b in txbackup_books]
    assert counts == sorted(set(counts)) and counts[0] > 0 and counts[-1] < live_books.transfers_a, counts
    assert torn, "no naive copy tore: this setup cannot tell a consistent set from a torn one"


def _drill(config: Path, live: MultiStorage, scratch: MariaDBServer) -> dict[str, Any]:
    """``txbackup drill --latest`` of the live cluster file, its drill places a new database on
    the PostgreSQL server and the scratch MariaDB server: restored, audited clean (a real
    ScalarDB's data), checked, dropped; its result."""
    pg = live.pg
    drill_db = f"drill_{live.pg_database}"
    drill_config = config.with_name("drill.toml")
    drill_config.write_text(
        config.read_text()
        + f'\n[drill.targets.pg]\ndsn = "host={pg.host} port={pg.port} dbname={drill_db}"\n'
        f'[drill.targets.maria]\ndsn = "mysql://{scratch.user}@{scratch.host}:{scratch.port}"\n'
        '[[drill.checks]]\ntarget = "pg"\nsql = "SELECT count(*) FROM coordinator.state"\n'
        "expect_nonzero = true\n"
    )
    result = txbackup("drill", "-c", str(drill_config), "--latest", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    assert answer["ok"] and answer["audit"]["clean"] and answer["checks"][0]["passed"], answer
    assert answer["cleanup"]["targets"]["pg"]["removed"] == [drill_db], answer["cleanup"]
    assert set(answer["cleanup"]["targets"]["maria"]["removed"]) >= set(MARIA_DATABASES), answer["cleanup"]
    return answer


def _backup(config: Path) -> dict[str, Any]:
    """``txbackup backup --json`` of ``config``, which must succeed with the pause verified
    (ScalarDB 3.13's server answers CheckPaused): its result."""
    result = txbackup("backup", "-c", str(config), "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    final: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    assert final["event"] == "result" and final["pause"]["verified"], final
    return final


def _read(
    bank: ScalarDbBank,
    work: Path,
    live: MultiStorage,
    scratch: MariaDBServer,
    label: str,
    *,
    set_id: str | None = None,
    naive: NaiveCopy | None = None,
) -> tuple[Books, list[str]]:
    """Restore a set (or load a naive copy) into fresh places, audit it (``_audit``), then read
    its books through ScalarDB: the books and the audit's torn findings."""
    with restored_copy(
        live, scratch, label, config=work / "cluster.toml", set_id=set_id, naive=naive
    ) as copy:
        torn = _audit(work, label, copy)
        return bank.books(copy.write_properties(work / f"{label}.properties")), torn


def _audit(work: Path, label: str, copy: MultiStorage) -> list[str]:
    """``txbackup audit --live`` of a restored copy, before ScalarDB reads it (lazy recovery
    rewrites what it finds): the checks of the torn findings and of records left pending,
    ``[]`` for a clean copy. Anything else the audit reports (errors, other warnings) fails
    the test: it would mean the audit does not understand what a real ScalarDB wrote."""
    config = write_cluster(
        work / f"{label}-audit.toml",
        "127.0.0.1:1",  # not contacted: a live audit reads the databases only
        f'path = "{work / "unused"}"',
        copy.cluster_targets(work / f"{label}-secrets"),
    )
    result = txbackup("audit", "-c", str(config), "--live", "--json", timeout=120)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    torn = [f["check"] for f in report["findings"] if f["level"] == "torn"]  # the copy is torn
    # a copy taken without a pause may hold a transaction between prepare and commit: a
    # record left PREPARED with no coordinator row yet, "pending" (a warning) until it expires
    findings = report["findings"]
    pending = [f for f in findings if f["level"] == "warning" and f["check"] in ("prepared", "deleted")]
    others = [f for f in report["findings"] if f["level"] not in ("torn", "recovery") and f not in pending]
    assert not others and not report.get("not_audited"), report
    assert (result.returncode == 1) == bool(torn or pending), (result.returncode, report)
    return torn + [f"{f['check']} (pending)" for f in pending]
