"""The point of txbackup, on real servers: backups under load restore consistent.

The demo bank keeps its accounts in a PostgreSQL database and a MariaDB
database; every transfer is a local transaction on each (debit, a short sleep,
credit), nothing atomic across them. While clients keep moving money:

- ``TXBACKUP_E2E_ROUNDS`` (default 20) txbackup backups are taken, each
  restored into fresh databases and checked: the books must balance, every
  time;
- naive copies (``pg_dump`` then ``mariadb-dump --single-transaction``, each
  consistent on its own, no pause) are restored and checked the same way: at
  least one must be broken, or this test could not fail when consistency
  breaks; so must be at least one of a few backups that pause without waiting
  for in-flight transfers (``wait_outstanding=False``).

The same with a third database: the bank spans PostgreSQL, MariaDB and
DynamoDB (moto in server mode on 127.0.0.1, on-demand backups, restored into new
tables ``<table>-<label>``), transfers going round-robin over all six ordered
pairs; ``TXBACKUP_E2E_ROUNDS_3DB`` (default 10) backups, each restored and
checked, and naive copies (the DynamoDB one: a Scan of each table).

And with Cassandra as the third database (the session's one-node cluster, a
``txbackup agent`` beside it): ``TXBACKUP_E2E_ROUNDS_CASS`` (default 4) backups
are taken under load, the capture being a ``nodetool snapshot`` inside the pause
(a JVM start: about a second, so the pause window is that long), each followed
by a naive copy (``pg_dump``, ``mariadb-dump``, a SELECT of each Cassandra
table) checked at once. The Cassandra target restores into the keyspaces it
backed up, so the backups are restored once the load is stopped: one after the
other, PostgreSQL and MariaDB into fresh databases, Cassandra into its own
tables (``--force``: truncate, then ``nodetool import``), the books checked
across the three after each.

Run with ``pytest -s`` to see the counts.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.servers import moto as moto_servers
from tests.servers.cassandra import CassandraCluster
from tests.servers.cassandra_agents import TOKEN, agents_for, snapshot_tags
from tests.servers.mariadb import MariaDBServer
from tests.servers.moto import FAKE_AWS_ENV, REGION, UNSET_AWS_ENV, MotoServer
from tests.servers.postgres import PostgresServer
from txbackup.demo.bank import ACCOUNTS_PER_STORE, BooksReport
from txbackup.demo.scenario import BankScenario
from txbackup.demo.stores import (
    OPENING_BALANCE,
    BankError,
    CassandraDatabase,
    DynamoDatabase,
    MariaDatabase,
    PostgresDatabase,
)
from txbackup.engine.manifest import Manifest

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb, pytest.mark.timeout(600)]

ROUNDS = int(os.environ.get("TXBACKUP_E2E_ROUNDS", "20"))
NAIVE_EVERY = 4  # a naive copy after every 4th backup: 5 of them for 20 rounds
MIN_NAIVE = 5
NO_DRAIN_ROUNDS = 3
NO_DRAIN_GAP_MS = (50.0, 150.0)
ROUNDS_3DB = int(os.environ.get("TXBACKUP_E2E_ROUNDS_3DB", "10"))
NAIVE_EVERY_3DB = 3  # naive copies after backups 0, 3, 6, 9
ROUNDS_CASS = int(os.environ.get("TXBACKUP_E2E_ROUNDS_CASS", "4"))


def describe(kind: str, books: BooksReport) -> str:
    return f"{kind}: {books.summary()} ({books.transfers} whole transfers)"


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A moto server of its own (fake credentials; nothing can reach AWS)."""
    require(moto_servers.missing_reason())
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    for key in UNSET_AWS_ENV:
        monkeypatch.delenv(key, raising=False)
    with MotoServer() as server:
        yield server


def server_databases(
    postgres_server: PostgresServer, mariadb_server: MariaDBServer
) -> tuple[PostgresDatabase, MariaDatabase]:
    pg = PostgresDatabase(
        "ledger_pg",
        postgres_server.host,
        postgres_server.port,
        postgres_server.user,
        postgres_server.password,
        postgres_server.create_database("bank"),
    )
    maria = MariaDatabase(
        "ledger_maria",
        mariadb_server.host,
        mariadb_server.port,
        mariadb_server.user,
        mariadb_server.password,
        mariadb_server.create_database("bank"),
    )
    return pg, maria


async def test_backups_under_load_restore_consistent_and_naive_copies_do_not(
    postgres_server: PostgresServer, mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    pg, maria = server_databases(postgres_server, mariadb_server)
    scenario = BankScenario([pg, maria], tmp_path, clients=8, drop_restored=True)
    txbackup: list[BooksReport] = []
    naive: list[BooksReport] = []
    no_drain: list[BooksReport] = []
    pauses: list[int] = []
    captures: list[int] = []
    exports: list[int] = []
    started = time.monotonic()
    await scenario.start()
    try:
        assert scenario.load is not None
        rounds = 0
        while rounds < ROUNDS or len(naive) < MIN_NAIVE:
            if rounds < ROUNDS:
                before = scenario.load.stats.ok
                manifest = await scenario.backup()
                # the load ran across the backup: transfers went on around the pause
                assert scenario.load.stats.ok > before, "no transfer during the backup"
                t = manifest.timings
                pauses.append(t.pause_ms)
                captures.append(t.capture_ms)
                exports.append(t.export_ms)
                txbackup.append(await scenario.restore_backup(manifest, f"t{rounds:02d}"))
            if rounds % NAIVE_EVERY == 0 or rounds >= ROUNDS:
                copy = await scenario.naive(f"naive-{len(naive):02d}")
                naive.append(await scenario.restore_naive(copy, f"n{len(naive):02d}"))
            rounds += 1
        # the same backup without waiting for in-flight transfers: it must tear (at least once),
        # or this setup could not show that the drain matters. Capturing PostgreSQL and MariaDB
        # takes tens of ms, longer than the usual gap: widen it so transfers are still in flight.
        assert scenario.server is not None
        scenario.server.bank.gap_ms = NO_DRAIN_GAP_MS
        await asyncio.sleep(0.2)
        for i in range(NO_DRAIN_ROUNDS):
            manifest = await scenario.backup(wait_outstanding=False)
            no_drain.append(await scenario.restore_backup(manifest, f"nodrain{i}"))
    finally:
        load = await scenario.stop()
    live = await scenario.live_books()
    elapsed = time.monotonic() - started

    txbackup_broken = [b for b in txbackup if not b.ok]
    naive_broken = [b for b in naive if not b.ok]
    print(
        f"\nconsistency under load (PostgreSQL + MariaDB, 8 clients, {elapsed:.0f} s, "
        f"{load.ok} transfers, slowest {load.longest_ms:.0f} ms):\n"
        f"  txbackup: {len(txbackup)} backups restored, {len(txbackup_broken)} with violations\n"
        f"  naive:    {len(naive)} copies restored, {len(naive_broken)} with violations "
        f"({sum(len(b.half_applied) for b in naive)} transfers half applied in all)\n"
        f"  txbackup without waiting for in-flight transfers: {len(no_drain)} backups, "
        f"{sum(not b.ok for b in no_drain)} with violations\n"
        f"  pause window ms: median {statistics.median(pauses):g}, max {max(pauses)}; "
        f"capture ms: median {statistics.median(captures):g}, max {max(captures)}; "
        f"export ms: median {statistics.median(exports):g}, max {max(exports)}"
    )
    assert load.failed == 0, load.last_error
    assert live.ok, describe("live databases after the load", live)
    assert live.transfers == load.ok
    assert len(txbackup) == ROUNDS >= 1
    assert not txbackup_broken, "\n".join(describe("txbackup", b) for b in txbackup_broken)
    # every backup held more transfers than the one before: each saw the load going on
    counts = [b.transfers for b in txbackup]
    assert counts == sorted(set(counts)), counts
    assert naive_broken, "no naive copy showed a violation: this setup cannot tell consistent from not"
    assert any(not b.ok for b in no_drain), "pausing without the drain never tore: the load is too light"


@pytest.mark.timeout(300)
async def test_bank_over_postgres_mariadb_and_dynamodb(
    postgres_server: PostgresServer, mariadb_server: MariaDBServer, moto: MotoServer, tmp_path: Path
) -> None:
    pg, maria = server_databases(postgres_server, mariadb_server)
    dynamo = DynamoDatabase(
        "ledger_dynamo",
        REGION,
        moto.url,
        access_key_id="testing",
        secret_access_key="testing",
        mode="on-demand",
        min_pause="0s",  # the target warns below 10 s: fine here
        backup_settle="0s",  # moto's backups are exact (AWS's: +-1 minute)
        poll_interval="20ms",
    )
    scenario = BankScenario([pg, maria, dynamo], tmp_path, clients=8, drop_restored=True)
    txbackup: list[BooksReport] = []
    naive: list[BooksReport] = []
    pauses: list[int] = []
    captures: list[int] = []
    exports: list[int] = []
    restores: list[int] = []
    naive_ms: list[int] = []
    started = time.monotonic()
    await scenario.start()
    try:
        assert scenario.load is not None
        for i in range(ROUNDS_3DB):
            before = scenario.load.stats.ok
            manifest = await scenario.backup()
            assert scenario.load.stats.ok > before, "no transfer during the backup"
            assert sorted(t.name for t in manifest.targets) == ["ledger_dynamo", "ledger_maria", "ledger_pg"]
            t = manifest.timings
            pauses.append(t.pause_ms)
            captures.append(t.capture_ms)
            exports.append(t.export_ms)
            restoring = time.monotonic()
            txbackup.append(await scenario.restore_backup(manifest, f"r{i}"))
            restores.append(round((time.monotonic() - restoring) * 1000))
            if i % NAIVE_EVERY_3DB == 0:
                copy = await scenario.naive(f"naive-{len(naive):02d}")
                naive_ms.append(copy.ms)
                naive.append(await scenario.restore_naive(copy, f"n{len(naive)}"))
    finally:
        load = await scenario.stop()
    live = await scenario.live_books()
    pairs = await scenario.live_pairs()
    elapsed = time.monotonic() - started

    txbackup_broken = [b for b in txbackup if not b.ok]
    naive_broken = [b for b in naive if not b.ok]
    print(
        f"\nconsistency under load (PostgreSQL + MariaDB + DynamoDB on moto, 8 clients, {elapsed:.0f} s, "
        f"{load.ok} transfers, slowest {load.longest_ms:.0f} ms):\n"
        f"  txbackup: {len(txbackup)} backups restored, {len(txbackup_broken)} with violations\n"
        f"  naive:    {len(naive)} copies restored, {len(naive_broken)} with violations "
        f"({sum(len(b.half_applied) for b in naive)} transfers half applied in all; "
        f"{', '.join(b.summary() for b in naive_broken)})\n"
        f"  pause window ms: median {statistics.median(pauses):g}, max {max(pauses)}; "
        f"capture ms: median {statistics.median(captures):g}, max {max(captures)}; "
        f"export ms: median {statistics.median(exports):g}, max {max(exports)}; "
        f"restore (+ books) ms: median {statistics.median(restores):g}, max {max(restores)}; "
        f"naive copy ms: {naive_ms}\n"
        f"  transfers by pair: {', '.join(f'{a}->{b} {n}' for (a, b), n in sorted(pairs.items()))}"
    )
    assert load.failed == 0, load.last_error
    assert live.ok, describe("live databases after the load", live)
    assert live.transfers == load.ok
    names = [db.name for db in scenario.databases]
    assert {(a, b) for a in names for b in names if a != b} == set(pairs), pairs
    assert len(txbackup) == ROUNDS_3DB >= 1
    assert not txbackup_broken, "\n".join(describe("txbackup", b) for b in txbackup_broken)
    # every restore held the accounts of all three databases (none came back empty)
    assert {b.expected for b in txbackup} == {3 * ACCOUNTS_PER_STORE * OPENING_BALANCE}
    counts = [b.transfers for b in txbackup]
    assert counts == sorted(set(counts)), counts
    assert naive_broken, "no naive copy showed a violation: this setup cannot tell consistent from not"


@pytest.mark.cassandra
@pytest.mark.timeout(300)
async def test_bank_over_postgres_mariadb_and_cassandra(
    postgres_server: PostgresServer,
    mariadb_server: MariaDBServer,
    cassandra_cluster: CassandraCluster,
    tmp_path: Path,
) -> None:
    pg, maria = server_databases(postgres_server, mariadb_server)
    storage = tmp_path / "backups"  # the scenario's storage: the agent uploads the SSTables there
    with agents_for(cassandra_cluster.nodes, storage, tmp_path / "agents") as agents:
        cass = CassandraDatabase(
            "ledger_cass",
            tuple(cassandra_cluster.contact_points),
            cassandra_cluster.native_port,
            agents=tuple(a.address for a in agents),
            agent_token=TOKEN,
        )
        await asyncio.to_thread(cass.drop)  # what other tests left on the session's node
        scenario = BankScenario([pg, maria, cass], tmp_path, clients=8, drop_restored=True)
        manifests: list[Manifest] = []
        txbackup: list[BooksReport] = []
        naive: list[BooksReport] = []
        restores: list[int] = []
        naive_ms: list[int] = []
        started = time.monotonic()
        await scenario.start()
        try:
            assert scenario.load is not None
            for i in range(ROUNDS_CASS):
                before = scenario.load.stats.ok
                manifest = await scenario.backup()
                assert scenario.load.stats.ok > before, "no transfer during the backup"
                assert sorted(t.name for t in manifest.targets) == [
                    "ledger_cass",
                    "ledger_maria",
                    "ledger_pg",
                ]
                manifests.append(manifest)
                copy = await scenario.naive(f"naive-{i}")
                naive_ms.append(copy.ms)
                naive.append(await scenario.restore_naive(copy, f"n{i}"))
            # Cassandra is restored into its live tables: not while the bank runs
            with pytest.raises(BankError, match="stop the load first"):
                await scenario.restore_backup(manifests[0], "too-early")
        finally:
            load = await scenario.stop()
        loaded = time.monotonic() - started
        live = await scenario.live_books()
        pairs = await scenario.live_pairs()
        try:
            for i, manifest in enumerate(manifests):
                restoring = time.monotonic()
                txbackup.append(await scenario.restore_backup(manifest, f"r{i}"))
                restores.append(round((time.monotonic() - restoring) * 1000))
        finally:
            await asyncio.to_thread(cass.drop)
    elapsed = time.monotonic() - started

    timings = [m.timings for m in manifests]
    windows = ", ".join(f"{m.pause.started_at or '?'}..{(m.pause.ended_at or '?')[11:]}" for m in manifests)
    txbackup_broken = [b for b in txbackup if not b.ok]
    naive_broken = [b for b in naive if not b.ok]
    print(
        f"\nconsistency under load (PostgreSQL + MariaDB + Cassandra 5.0, one node, 8 clients, "
        f"load {loaded:.0f} s, {elapsed:.0f} s in all, {load.ok} transfers, "
        f"slowest {load.longest_ms:.0f} ms):\n"
        f"  txbackup: {len(txbackup)} backups restored (Cassandra in place, after the load), "
        f"{len(txbackup_broken)} with violations\n"
        f"  naive:    {len(naive)} copies restored, {len(naive_broken)} with violations "
        f"({sum(len(b.half_applied) for b in naive)} transfers half applied in all; "
        f"{'; '.join(b.summary() for b in naive_broken)})\n"
        f"  pause window ms: {[t.pause_ms for t in timings]} ({windows}); "
        f"pausing (drain) ms: {[t.drain_ms for t in timings]}\n"
        f"  capture ms: {[t.capture_ms for t in timings]}; export ms: {[t.export_ms for t in timings]}; "
        f"restore (+ books) ms: {restores}; naive copy ms: {naive_ms}\n"
        f"  transfers by pair: {', '.join(f'{a}->{b} {n}' for (a, b), n in sorted(pairs.items()))}"
    )
    assert load.failed == 0, load.last_error
    assert live.ok, describe("live databases after the load", live)
    assert live.transfers == load.ok
    names = [db.name for db in scenario.databases]
    assert {(a, b) for a in names for b in names if a != b} == set(pairs), pairs
    assert len(txbackup) == ROUNDS_CASS >= 3
    assert not txbackup_broken, "\n".join(describe("txbackup", b) for b in txbackup_broken)
    assert {b.expected for b in txbackup} == {3 * ACCOUNTS_PER_STORE * OPENING_BALANCE}
    counts = [b.transfers for b in txbackup]
    assert counts == sorted(set(counts)) and counts[-1] < live.transfers, counts
    assert len(naive) >= 2
    assert naive_broken, "no naive copy showed a violation: this setup cannot tell consistent from not"
    # each snapshot was cleared once its set was committed
    assert not snapshot_tags(cassandra_cluster.nodes[0]) & {m.set_id for m in manifests}
