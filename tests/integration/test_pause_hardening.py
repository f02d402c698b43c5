"""Pause hardening (issue 13, part 3) against real grpc.aio servers on 127.0.0.1:
ABORTED retried, each ErrorInfo reason followed by its rule, CheckPaused after Pause."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import empty_pb2

from tests.servers.faulty_admin import Script, faulty_admin
from txbackup.admin.client import MAX_PAUSE_ATTEMPTS, AdminClient, ClientOptions, Endpoint, PauseRefused
from txbackup.admin.fleet import Fleet, paused
from txbackup.admin.outcomes import error_reason, status_details
from txbackup.admin.rpc import admin_pb2, admin_pb2_grpc
from txbackup.demo.sample_service import SampleServer, call_work, start_sample_server
from txbackup.errors import PauseError


@pytest.fixture
async def healthy() -> AsyncIterator[SampleServer]:
    server = await start_sample_server()
    yield server
    await server.stop()


def ep(server: SampleServer) -> Endpoint:
    return Endpoint("127.0.0.1", server.port)


async def test_aborted_twice_then_paused(healthy: SampleServer) -> None:
    async with faulty_admin(Script(aborts=2)) as faulty:
        fleet = Fleet([faulty.endpoint, ep(healthy)])
        async with paused(fleet) as window:
            assert faulty.admin.paused and healthy.gate.paused
        await fleet.close()
        assert faulty.admin.calls[:4] == ["Pause", "Pause", "Pause", "CheckPaused"]
        assert window.attempts == {str(faulty.endpoint): 3}
        assert not faulty.admin.paused and not healthy.gate.paused


async def test_aborted_forever_gives_up_and_leaves_the_other_pause_alone(healthy: SampleServer) -> None:
    async with faulty_admin(Script(aborts=1000)) as faulty:
        # backoff 50 ms doubling to 1 s, jittered: 8 calls take at most ~3.6 s plus the calls
        fleet = Fleet([faulty.endpoint, ep(healthy)], ClientOptions(timeout=8.0))
        started = time.monotonic()
        with pytest.raises(PauseError) as info:
            await fleet.pause()
        took = time.monotonic() - started
        await fleet.close()
        message = str(info.value)
        assert f"{faulty.endpoint}: ABORTED: Pause failed: lost a race (PAUSE_IN_PROGRESS:" in message
        assert "\n" not in message
        assert f"after {MAX_PAUSE_ATTEMPTS} attempts" in message
        assert faulty.admin.count("Pause") == MAX_PAUSE_ATTEMPTS
        assert took < 8.0  # inside the call's deadline
        # the gate there is another pause's: unpausing it would revoke that pause
        assert faulty.admin.count("Unpause") == 0
        assert not healthy.gate.paused


async def test_aborted_retries_stop_at_the_deadline() -> None:
    async with faulty_admin(Script(aborts=1000)) as faulty:
        async with AdminClient(faulty.endpoint, ClientOptions(timeout=0.3)) as client:
            started = time.monotonic()
            with pytest.raises(PauseRefused) as info:
                await client.pause(wait_outstanding=False)
            assert time.monotonic() - started < 0.3 + 0.3  # the deadline, and some slack for a busy machine
        assert 1 < info.value.attempts < MAX_PAUSE_ATTEMPTS
        assert info.value.code == "ABORTED" and info.value.not_ours


async def test_retry_gets_the_drain_wait_that_is_left() -> None:
    async with faulty_admin(Script(aborts=1)) as faulty:
        async with AdminClient(faulty.endpoint, ClientOptions(timeout=1.0)) as client:
            assert await client.pause(max_pause_wait_ms=2000) == 2
        first, second = faulty.admin.waits
        assert first == 2000 and second is not None and 1000 < second < 2000


async def test_timed_out_still_paused_is_paused_and_not_unpaused(healthy: SampleServer) -> None:
    script = Script(fail_reason="TIMED_OUT_STILL_PAUSED", paused_at_start=True)
    async with faulty_admin(script) as faulty:
        fleet = Fleet([faulty.endpoint, ep(healthy)])
        with pytest.raises(PauseError) as info:
            await fleet.pause(max_pause_wait_ms=100)
        await fleet.close()
        message = str(info.value)
        said = "FAILED_PRECONDITION: Pause failed: did not drain (TIMED_OUT_STILL_PAUSED:"
        assert f"{faulty.endpoint}: {said}" in message
        assert "STAYS PAUSED" in message and "not unpaused" in message
        assert faulty.admin.count("Pause") == 1  # FAILED_PRECONDITION: not retried
        assert faulty.admin.count("Unpause") == 0 and faulty.admin.paused
        assert not healthy.gate.paused  # ours is undone


async def test_timed_out_is_not_retried_nor_unpaused(healthy: SampleServer) -> None:
    async with faulty_admin(Script(fail_reason="TIMED_OUT")) as faulty:
        fleet = Fleet([faulty.endpoint, ep(healthy)])
        with pytest.raises(PauseError) as info:
            await fleet.pause(max_pause_wait_ms=100)
        await fleet.close()
        assert "(TIMED_OUT: in-flight requests did not drain" in str(info.value)
        assert "--max-pause-wait" in str(info.value)
        assert faulty.admin.calls == ["Pause"]
        assert not healthy.gate.paused


async def test_a_node_that_says_paused_but_serves_fails_the_pause(healthy: SampleServer) -> None:
    async with faulty_admin(Script(lie=True)) as faulty:
        fleet = Fleet([faulty.endpoint, ep(healthy)])
        with pytest.raises(PauseError) as info:
            await fleet.pause()
        await fleet.close()
        expected = f"{faulty.endpoint}: answered that it paused, but CheckPaused says it is serving"
        assert expected in str(info.value)
        assert faulty.admin.calls[:2] == ["Pause", "CheckPaused"]
        assert faulty.admin.count("Unpause") == 1  # it said it paused: it is unpaused with the rest
        assert not healthy.gate.paused


async def test_older_server_without_check_paused_is_paused_unverified(healthy: SampleServer) -> None:
    async with faulty_admin(Script(check_paused=False)) as faulty:
        fleet = Fleet([faulty.endpoint, ep(healthy)])
        async with paused(fleet) as window:
            assert faulty.admin.paused
        await fleet.close()
        assert window.unverified == [str(faulty.endpoint)]
        assert not faulty.admin.paused


STILL = "TIMED_OUT_STILL_PAUSED"
OTHER = status_details(grpc.StatusCode.FAILED_PRECONDITION, "x", "com.example.other", STILL)
WRONG_CODE = status_details(grpc.StatusCode.ABORTED, "x", "com.scalar.db.cluster.admin", STILL)


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe not a protobuf", OTHER, WRONG_CODE, b""],
    ids=["malformed", "another-domain", "contradicting-code", "empty"],
)
async def test_a_reason_not_believed_is_unpaused_as_before(healthy: SampleServer, raw: bytes) -> None:
    script = Script(fail_reason="TIMED_OUT_STILL_PAUSED", raw_details=raw)
    async with faulty_admin(script) as faulty:
        fleet = Fleet([faulty.endpoint, ep(healthy)])
        with pytest.raises(PauseError) as info:
            await fleet.pause()
        await fleet.close()
        assert f"{faulty.endpoint}: FAILED_PRECONDITION: Pause failed: did not drain" in str(info.value)
        assert "STAYS PAUSED" not in str(info.value)
        # no reason we trust: its pause may have taken effect, so it is unpaused
        assert faulty.admin.count("Unpause") == 1
        assert not healthy.gate.paused


# our own server (admin/server.py) answers with the same reasons, domain txbackup.admin


async def test_our_server_says_timed_out_and_reopens(healthy: SampleServer) -> None:
    stuck = asyncio.create_task(call_work(healthy.target, 30_000, timeout=30))
    try:
        while healthy.gate.in_flight == 0:
            await asyncio.sleep(0.01)
        async with AdminClient(ep(healthy)) as client:
            with pytest.raises(PauseRefused) as info:
                await client.pause(max_pause_wait_ms=200)
        reason = info.value.reason
        assert reason is not None and (reason.domain, reason.reason) == ("txbackup.admin", "TIMED_OUT")
        assert not healthy.gate.paused
    finally:
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)


async def test_our_server_keeps_an_earlier_pause_and_the_fleet_leaves_it(healthy: SampleServer) -> None:
    other = await start_sample_server()
    stuck = asyncio.create_task(call_work(healthy.target, 30_000, timeout=30))
    try:
        while healthy.gate.in_flight == 0:
            await asyncio.sleep(0.01)
        await healthy.gate.pause(wait_outstanding=False)  # someone else's pause, told it succeeded
        fleet = Fleet([ep(healthy), ep(other)])
        with pytest.raises(PauseError) as info:
            await fleet.pause(max_pause_wait_ms=200)
        await fleet.close()
        assert f"{ep(healthy)}: FAILED_PRECONDITION" in str(info.value)
        assert "(TIMED_OUT_STILL_PAUSED:" in str(info.value)
        assert healthy.gate.paused  # the earlier pause still holds
        assert not other.gate.paused
    finally:
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)
        await other.stop()


async def test_our_server_says_gate_open_when_unpaused_mid_drain(healthy: SampleServer) -> None:
    stuck = asyncio.create_task(call_work(healthy.target, 30_000, timeout=30))
    try:
        while healthy.gate.in_flight == 0:
            await asyncio.sleep(0.01)
        channel = grpc.aio.insecure_channel(healthy.target)
        async with channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            request = admin_pb2.PauseRequest(wait_outstanding=True, max_pause_wait_time=5000)
            pausing = asyncio.ensure_future(stub.Pause(request, timeout=10))
            while not healthy.gate.paused:
                await asyncio.sleep(0.01)
            await stub.Unpause(empty_pb2.Empty(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pausing
        assert info.value.code() == grpc.StatusCode.ABORTED
        reason = error_reason(info.value)
        assert reason is not None and reason.reason == "GATE_OPEN"
    finally:
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)
