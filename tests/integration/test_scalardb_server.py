"""Our client against a real ScalarDB server (com.scalar-labs:scalardb-server 3.13.6 from
Maven Central, consensus commit on SQLite through JDBC), with real transactions in flight
held open by ScalarDB's own gRPC client (tests/java/ScalarDbTxHolder.java).

What this server does on the wire (3.13.6, ``com.scalar.db.server.AdminService``):
- Pause closes the gate; with wait_outstanding it waits ``max_pause_wait_time`` ms
  (30 000 when unset) for open transactions; if they do not finish it reopens the
  gate and answers ``FAILED_PRECONDITION "failed to finish processing outstanding
  requests within the time limit."``.
- CheckPaused is implemented (the gate state).
- An open transaction (its bidirectional stream) counts as one request in flight from
  begin to commit/abort; a transaction begun before a no-wait pause can still commit
  during the pause. A new transaction during the pause is refused with
  ``UNAVAILABLE "the server is paused"``, which ScalarDB's client retries with backoff.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.servers.java_peers import (
    ScalarDbServer,
    describe,
    grpc_status_of,
    java_admin_cli,
    parse_check_paused,
    scalardb_server,
    scalardb_tx_holder,
)
from txbackup.admin.client import AdminClient, Endpoint
from txbackup.errors import PauseError

pytestmark = pytest.mark.java


@pytest.fixture(scope="module")
def scalardb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScalarDbServer]:
    folder: Path = tmp_path_factory.mktemp("scalardb")
    with scalardb_server(folder) as server:
        yield server


@pytest.fixture
async def client(scalardb: ScalarDbServer) -> AsyncIterator[AdminClient]:
    async with AdminClient(Endpoint.parse(scalardb.address)) as admin:
        yield admin
        # leave the module's server open for the next test
        await admin.unpause()


def txbackup_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txbackup", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


async def test_pause_check_unpause(scalardb: ScalarDbServer, client: AdminClient) -> None:
    assert await client.check_paused() is False, "ScalarDB 3.13 implements CheckPaused"
    await client.pause()
    assert await client.check_paused() is True
    await client.unpause()
    assert await client.check_paused() is False
    log = scalardb.log_text()
    assert "Paused" in log and "Unpaused" in log


async def test_pause_fails_when_a_transaction_stays_open(
    scalardb: ScalarDbServer, client: AdminClient
) -> None:
    with scalardb_tx_holder(scalardb.port) as holder:
        assert holder.send("begin").startswith("begun ")

        started = time.monotonic()
        with pytest.raises(PauseError) as info:
            await client.pause(max_pause_wait_ms=500)
        assert "FAILED_PRECONDITION" in str(info.value)
        assert scalardb.address in str(info.value)
        assert time.monotonic() - started < 5
        assert await client.check_paused() is False, "the server reopens its gate"

        assert holder.send("abort").startswith("aborted ")


async def test_pause_waits_for_the_open_transaction(scalardb: ScalarDbServer, client: AdminClient) -> None:
    with scalardb_tx_holder(scalardb.port) as holder:
        assert holder.send("begin").startswith("begun ")

        pause = asyncio.create_task(client.pause(max_pause_wait_ms=20000))
        await asyncio.sleep(0.5)
        assert not pause.done(), "Pause must wait for the open transaction"
        assert (await asyncio.to_thread(holder.send, "abort")).startswith("aborted ")
        await asyncio.wait_for(pause, 10)
        assert await client.check_paused() is True

        # a new transaction waits (ScalarDB's client retries UNAVAILABLE) until the unpause
        holder.write("begin")
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(holder.expect, 1.0)
        assert any("the server is paused" in line for line in holder.output), holder.output
        await client.unpause()
        answer = await asyncio.to_thread(holder.expect, 30.0)
        assert answer.startswith("begun "), holder.output
        assert holder.send("abort").startswith("aborted ")


async def test_no_wait_pause_lets_an_open_transaction_commit(
    scalardb: ScalarDbServer, client: AdminClient
) -> None:
    with scalardb_tx_holder(scalardb.port) as holder:
        assert holder.send("coordinator") == "created"
        assert holder.send("begin").startswith("begun ")
        await client.pause(wait_outstanding=False)
        assert await client.check_paused() is True
        # admitted before the pause: it goes on and commits while the server is paused
        answer = await asyncio.to_thread(holder.send, "commit")
        assert answer.startswith("committed "), holder.output
        assert await client.check_paused() is True
        await client.unpause()


def test_txbackup_cli_pause_and_status(scalardb: ScalarDbServer) -> None:
    result = txbackup_cli(["status", "--endpoints", scalardb.address, "--json"])
    assert result.returncode == 0, describe(result)
    assert json.loads(result.stdout)[0]["state"] == "serving"

    result = txbackup_cli(["pause", "--endpoints", scalardb.address, "--hold", "0.2s", "--json"])
    assert result.returncode == 0, describe(result)
    window = json.loads(result.stdout)
    assert window["endpoints"] == [scalardb.address]
    assert window["duration_ms"] >= 200

    result = txbackup_cli(["status", "--endpoints", scalardb.address, "--json"])
    assert json.loads(result.stdout)[0]["state"] == "serving", describe(result)


def test_java_cli_against_scalardb_server(scalardb: ScalarDbServer) -> None:
    result = java_admin_cli(["-c", "PAUSE", "-a", scalardb.address])
    assert result.returncode == 0, describe(result)
    result = java_admin_cli(["-c", "CHECK_PAUSED", "-a", scalardb.address])
    assert parse_check_paused(result.stdout) == {scalardb.address: True}, describe(result)
    result = java_admin_cli(["-c", "UNPAUSE", "-a", scalardb.address])
    assert result.returncode == 0, describe(result)

    with scalardb_tx_holder(scalardb.port) as holder:
        assert holder.send("begin").startswith("begun ")
        result = java_admin_cli(["-c", "PAUSE", "-m", "300", "-a", scalardb.address])
        assert result.returncode == 1, describe(result)
        assert grpc_status_of(result) == "FAILED_PRECONDITION", describe(result)
        assert holder.send("abort").startswith("aborted ")
