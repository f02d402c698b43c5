"""Interop with the real Java scalar-admin (com.scalar-labs:scalar-admin from Maven Central).

(a) the Java CLI pauses, checks and unpauses our Python server;
(b) our Python client and ``txbackup`` CLI drive a Java rpc.Admin server built on
    the jar's generated classes (tests/java/AdminPeerServer.java);
(c) the Java CLI's ``-n`` and ``-m`` against our server while a request is in flight.

The jars come from ``tests/java/fetch-jars``; without them these tests are
skipped (and fail under CI=true).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from tests.servers.java_peers import (
    describe,
    grpc_status_of,
    java_admin_cli,
    java_admin_cli_async,
    java_admin_peer,
    java_admin_server,
    parse_check_paused,
)
from txbackup.admin.client import AdminClient, Endpoint
from txbackup.demo.sample_service import SampleServer, call_work, start_sample_server
from txbackup.errors import PauseError

pytestmark = pytest.mark.java


@pytest.fixture
async def sample() -> AsyncIterator[SampleServer]:
    server = await start_sample_server()
    yield server
    await server.stop()


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


def txbackup_cli(args: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txbackup", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# (a) the Java client against our Python server


async def test_java_cli_pauses_checks_unpauses_python_server(sample: SampleServer) -> None:
    target = addr(sample.port)

    result = await java_admin_cli_async(["-c", "CHECK_PAUSED", "-a", target])
    assert result.returncode == 0, describe(result)
    assert parse_check_paused(result.stdout) == {target: False}

    result = await java_admin_cli_async(["-c", "PAUSE", "-a", target])
    assert result.returncode == 0, describe(result)
    assert "Pause completed at" in result.stdout
    assert sample.gate.paused

    result = await java_admin_cli_async(["-c", "CHECK_PAUSED", "-a", target])
    assert result.returncode == 0, describe(result)
    assert parse_check_paused(result.stdout) == {target: True}
    assert sample.gate.paused

    result = await java_admin_cli_async(["-c", "UNPAUSE", "-a", target])
    assert result.returncode == 0, describe(result)
    assert "Unpause started at" in result.stdout
    assert not sample.gate.paused

    # case-insensitive command names, as the Java CLI allows
    result = await java_admin_cli_async(["-c", "check_paused", "-a", target])
    assert result.returncode == 0, describe(result)
    assert parse_check_paused(result.stdout) == {target: False}


async def test_java_cli_pauses_python_and_java_servers_together(sample: SampleServer) -> None:
    with java_admin_peer() as peer:
        targets = f"{addr(sample.port)},{peer.address}"
        result = await java_admin_cli_async(["-c", "PAUSE", "-a", targets])
        assert result.returncode == 0, describe(result)
        assert sample.gate.paused
        assert peer.wait_event("Pause") == "Pause wait_outstanding=true max_pause_wait_time=unset"

        result = await java_admin_cli_async(["-c", "CHECK_PAUSED", "-a", targets])
        assert result.returncode == 0, describe(result)
        assert parse_check_paused(result.stdout) == {addr(sample.port): True, peer.address: True}

        result = await java_admin_cli_async(["-c", "UNPAUSE", "-a", targets])
        assert result.returncode == 0, describe(result)
        assert not sample.gate.paused
        peer.wait_event("Unpause")


def test_java_cli_unreachable_server_exits_1() -> None:
    with java_admin_server() as port:
        pass  # now nothing listens on that port
    result = java_admin_cli(["-c", "PAUSE", "-a", addr(port)])
    assert result.returncode == 1, describe(result)
    assert grpc_status_of(result) == "UNAVAILABLE", describe(result)


def test_java_cli_usage_error_exits_2() -> None:
    result = java_admin_cli(["-c", "FREEZE", "-a", "127.0.0.1:1"])
    assert result.returncode == 2, describe(result)
    assert "expected one of [PAUSE, UNPAUSE, CHECK_PAUSED]" in result.stderr


# (b) our Python client and CLI against the Java server


async def test_python_client_against_java_server() -> None:
    with java_admin_peer() as peer:
        async with AdminClient(Endpoint.parse(peer.address)) as client:
            assert await client.check_paused() is False
            await client.pause()
            assert peer.wait_event("Pause") == ("Pause wait_outstanding=true max_pause_wait_time=unset")
            assert await client.check_paused() is True
            await client.unpause()
            peer.wait_event("Unpause")
            assert await client.check_paused() is False

            # no-wait and an explicit max wait reach the Java decoder as sent
            await client.pause(wait_outstanding=False, max_pause_wait_ms=1500)
            assert peer.wait_event("Pause") == ("Pause wait_outstanding=false max_pause_wait_time=1500")
            # proto3 `optional`: an explicit 0 is present on the wire, not "unset"
            await client.pause(wait_outstanding=True, max_pause_wait_ms=0)
            assert peer.wait_event("Pause") == "Pause wait_outstanding=true max_pause_wait_time=0"
            assert await client.check_paused() is True
            await client.unpause()


async def test_python_client_old_java_server_without_check_paused() -> None:
    with java_admin_peer(check_paused=False) as peer:
        async with AdminClient(Endpoint.parse(peer.address)) as client:
            assert await client.check_paused() is None
            await client.pause()
            assert await client.check_paused() is None
            await client.unpause()
        assert [e.split()[0] for e in peer.events()] == [
            "CheckPaused",
            "Pause",
            "CheckPaused",
            "Unpause",
        ]


async def test_python_client_reports_java_server_pause_failure() -> None:
    with java_admin_peer(fail_pause="FAILED_PRECONDITION") as peer:
        async with AdminClient(Endpoint.parse(peer.address)) as client:
            with pytest.raises(PauseError) as info:
                await client.pause()
            assert "FAILED_PRECONDITION" in str(info.value)
            assert peer.address in str(info.value)
            assert await client.check_paused() is False


def test_txbackup_cli_pause_and_status_against_java_server() -> None:
    with java_admin_peer() as peer:
        result = txbackup_cli(["status", "--endpoints", peer.address, "--json"])
        assert result.returncode == 0, describe(result)
        assert json.loads(result.stdout) == [
            {"endpoint": peer.address, "state": "serving", "paused": False, "error": None}
        ]

        result = txbackup_cli(["pause", "--endpoints", peer.address, "--hold", "0.2s", "--json"])
        assert result.returncode == 0, describe(result)
        window = json.loads(result.stdout)
        assert window["endpoints"] == [peer.address]
        assert window["duration_ms"] >= 200
        assert window["started_at"] <= window["restore_point"] <= window["ended_at"]
        kinds = [e.split()[0] for e in peer.events()]
        # the pause confirmed (CheckPaused after Pause), then the window verified before the unpause
        assert kinds == ["CheckPaused", "Pause", "CheckPaused", "CheckPaused", "Unpause"], peer.events()

        # the pause was released: the Java server says so
        result = txbackup_cli(["status", "--endpoints", peer.address, "--json"])
        assert result.returncode == 0, describe(result)
        assert json.loads(result.stdout)[0]["state"] == "serving"


def test_txbackup_cli_pause_failing_java_server_fails() -> None:
    with java_admin_peer(fail_pause="FAILED_PRECONDITION") as peer:
        result = txbackup_cli(["pause", "--endpoints", peer.address, "--hold", "0s"])
        assert result.returncode == 1, describe(result)
        assert "FAILED_PRECONDITION" in result.stderr
        assert peer.address in result.stderr


def test_txbackup_cli_status_old_java_server() -> None:
    with java_admin_peer(check_paused=False) as peer:
        result = txbackup_cli(["status", "--endpoints", peer.address, "--json"])
        assert result.returncode == 0, describe(result)
        status = json.loads(result.stdout)[0]
        assert status["state"] == "unknown (old server)"
        assert status["paused"] is None


def test_java_cli_against_java_server_control() -> None:
    """The peer server itself speaks the protocol the reference client expects."""
    with java_admin_peer() as peer:
        result = java_admin_cli(["-c", "PAUSE", "-n", "-m", "250", "-a", peer.address])
        assert result.returncode == 0, describe(result)
        assert peer.wait_event("Pause") == "Pause wait_outstanding=false max_pause_wait_time=250"
        result = java_admin_cli(["-c", "CHECK_PAUSED", "-a", peer.address])
        assert parse_check_paused(result.stdout) == {peer.address: True}, describe(result)


# (c) -n and -m against our server while a request is in flight


async def test_java_cli_no_wait_pauses_with_request_in_flight(sample: SampleServer) -> None:
    target = addr(sample.port)
    work = asyncio.create_task(call_work(target, 4000, timeout=30))
    await wait_until(lambda: sample.gate.in_flight == 1)

    started = time.monotonic()
    result = await java_admin_cli_async(["-c", "PAUSE", "-n", "-a", target])
    assert result.returncode == 0, describe(result)
    assert sample.gate.paused
    assert sample.gate.in_flight == 1, "-n must not wait for the in-flight request"
    assert not work.done()
    assert time.monotonic() - started < 4.0

    result = await java_admin_cli_async(["-c", "UNPAUSE", "-a", target])
    assert result.returncode == 0, describe(result)
    assert not sample.gate.paused
    assert await work == b"done 4000"


async def test_java_cli_max_wait_too_short_fails_and_reopens(sample: SampleServer) -> None:
    target = addr(sample.port)
    work = asyncio.create_task(call_work(target, 5000, timeout=30))
    await wait_until(lambda: sample.gate.in_flight == 1)

    started = time.monotonic()
    result = await java_admin_cli_async(["-c", "PAUSE", "-m", "300", "-a", target])
    elapsed = time.monotonic() - started
    assert result.returncode == 1, describe(result)
    assert grpc_status_of(result) == "FAILED_PRECONDITION", describe(result)
    assert not sample.gate.paused, "a pause that did not drain must reopen the gate"
    assert elapsed < 5.0, "the server must give up after -m, not after the request ends"
    assert not work.done()
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work


async def test_java_cli_max_wait_long_enough_waits_for_drain(sample: SampleServer) -> None:
    target = addr(sample.port)
    work = asyncio.create_task(call_work(target, 1500, timeout=30))
    await wait_until(lambda: sample.gate.in_flight == 1)

    result = await java_admin_cli_async(["-c", "PAUSE", "-m", "20000", "-a", target])
    assert result.returncode == 0, describe(result)
    assert work.done(), "PAUSE with wait must answer only after the in-flight request ended"
    assert await work == b"done 1500"
    assert sample.gate.paused
    assert sample.gate.in_flight == 0

    # new requests wait behind the closed gate until the unpause
    late = asyncio.create_task(call_work(target, 0, timeout=30))
    await asyncio.sleep(0.3)
    assert not late.done()
    result = await java_admin_cli_async(["-c", "UNPAUSE", "-a", target])
    assert result.returncode == 0, describe(result)
    assert await late == b"done 0"
