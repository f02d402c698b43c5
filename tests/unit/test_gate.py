"""PauseGate: drain, drain timeout, waiting vs rejecting, lease, cancellation."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import pytest

from txbackup.admin.gate import DrainTimeout, DrainTimeoutStillPaused, GateClosed, PauseAborted, PauseGate

pytestmark = pytest.mark.timeout(10)


@dataclass
class Held:
    """An application request inside the gate until ``release()``."""

    task: asyncio.Task[None]
    entered: asyncio.Event
    released: asyncio.Event

    def release(self) -> None:
        self.released.set()


async def hold(gate: PauseGate) -> Held:
    """Start a request and return once it is admitted (or has started waiting)."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def request() -> None:
        async with gate.request():
            entered.set()
            await release.wait()

    held = Held(asyncio.create_task(request()), entered, release)
    await asyncio.sleep(0)
    return held


async def wait_until(predicate, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_open_gate_admits_and_counts() -> None:
    gate = PauseGate()
    held = await hold(gate)
    assert held.entered.is_set()
    assert gate.in_flight == 1
    held.release()
    await held.task
    assert gate.in_flight == 0
    assert not gate.paused


async def test_pause_waits_for_in_flight_requests_to_drain() -> None:
    gate = PauseGate(lease_seconds=None)
    held = await hold(gate)
    pause = asyncio.create_task(gate.pause(wait_outstanding=True, max_wait_ms=5000))
    await asyncio.sleep(0.1)
    assert not pause.done(), "pause returned while a request was in flight"
    assert gate.paused
    held.release()
    await asyncio.wait_for(pause, 1)
    assert gate.paused
    assert gate.in_flight == 0


async def test_pause_without_wait_returns_at_once() -> None:
    gate = PauseGate(lease_seconds=None)
    held = await hold(gate)
    await asyncio.wait_for(gate.pause(wait_outstanding=False, max_wait_ms=None), 0.5)
    assert gate.paused
    assert gate.in_flight == 1
    held.release()
    await held.task


async def test_drain_timeout_reopens_the_gate() -> None:
    gate = PauseGate(lease_seconds=None)
    held = await hold(gate)
    started = time.monotonic()
    with pytest.raises(DrainTimeout, match="1 requests still in flight after 200 ms"):
        await gate.pause(wait_outstanding=True, max_wait_ms=200)
    elapsed = time.monotonic() - started
    assert 0.18 <= elapsed < 2
    assert not gate.paused
    late = await hold(gate)
    assert late.entered.is_set(), "gate still closed after a failed pause"
    for h in (held, late):
        h.release()
        await h.task


async def test_drain_timeout_defaults_to_default_max_wait() -> None:
    gate = PauseGate(lease_seconds=None, default_max_wait_ms=150)
    held = await hold(gate)
    started = time.monotonic()
    with pytest.raises(DrainTimeout):
        await gate.pause(wait_outstanding=True, max_wait_ms=None)
    assert 0.13 <= time.monotonic() - started < 2
    held.release()
    await held.task


async def test_zero_wait_with_nothing_in_flight_pauses() -> None:
    gate = PauseGate(lease_seconds=None)
    await gate.pause(wait_outstanding=True, max_wait_ms=0)
    assert gate.paused


async def test_negative_wait_is_rejected() -> None:
    gate = PauseGate(lease_seconds=None)
    with pytest.raises(ValueError):
        await gate.pause(wait_outstanding=True, max_wait_ms=-1)
    assert not gate.paused


async def test_closed_gate_holds_new_requests_until_unpause() -> None:
    gate = PauseGate(lease_seconds=None)
    await gate.pause(wait_outstanding=True, max_wait_ms=100)
    held = await hold(gate)
    await asyncio.sleep(0.1)
    assert not held.entered.is_set(), "request admitted through a closed gate"
    assert gate.in_flight == 0
    await gate.unpause()
    await asyncio.wait_for(held.entered.wait(), 1)
    assert gate.in_flight == 1
    held.release()
    await held.task


async def test_reject_mode_raises_gate_closed() -> None:
    gate = PauseGate(reject_when_paused=True, lease_seconds=None)
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    with pytest.raises(GateClosed) as info:
        async with gate.request():
            pytest.fail("admitted through a closed gate")
    assert info.value.retry_after >= 1
    assert gate.in_flight == 0
    await gate.unpause()
    async with gate.request():
        assert gate.in_flight == 1


async def test_lease_expiry_unpauses_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="txbackup.admin.gate")
    gate = PauseGate(lease_seconds=0.3)
    started = time.monotonic()
    await gate.pause(wait_outstanding=True, max_wait_ms=100)
    held = await hold(gate)
    await asyncio.wait_for(held.entered.wait(), 2)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.5
    assert not gate.paused
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "pause lease of 0.3s expired; unpausing by itself"
    ]
    held.release()
    await held.task


async def test_unpause_cancels_the_lease(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="txbackup.admin.gate")
    gate = PauseGate(lease_seconds=0.3)
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    await asyncio.sleep(0.15)
    await gate.unpause()
    await asyncio.sleep(0.25)  # the lease would have expired by now
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    await asyncio.sleep(0.15)
    await gate.unpause()
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    await asyncio.sleep(0.2)  # the second lease would have expired by now
    assert gate.paused, "the lease of an undone pause unpaused a later pause"
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    await gate.unpause()


async def test_pausing_again_rearms_the_lease() -> None:
    gate = PauseGate(lease_seconds=0.3)
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    await asyncio.sleep(0.2)
    await gate.pause(wait_outstanding=True, max_wait_ms=100)
    await asyncio.sleep(0.2)  # 0.4 s after the first pause, 0.2 s after the second
    assert gate.paused
    await wait_until(lambda: not gate.paused)


async def test_no_lease_stays_paused() -> None:
    gate = PauseGate(lease_seconds=None)
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    await asyncio.sleep(0.2)
    assert gate.paused
    await gate.unpause()


async def test_unpause_is_idempotent() -> None:
    gate = PauseGate(lease_seconds=None)
    await gate.unpause()
    assert not gate.paused
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    await gate.unpause()
    await gate.unpause()
    assert not gate.paused
    async with gate.request():
        assert gate.in_flight == 1
    assert gate.in_flight == 0


async def test_cancelled_waiting_request_is_not_counted() -> None:
    gate = PauseGate(lease_seconds=None)
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    waiting = await hold(gate)
    waiting.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting.task
    assert gate.in_flight == 0
    await gate.unpause()
    await gate.pause(wait_outstanding=True, max_wait_ms=100)  # drains at once
    assert gate.paused


async def test_cancelled_in_flight_request_completes_the_drain() -> None:
    gate = PauseGate(lease_seconds=None)
    held = await hold(gate)
    pause = asyncio.create_task(gate.pause(wait_outstanding=True, max_wait_ms=5000))
    await asyncio.sleep(0.05)
    held.task.cancel()
    await asyncio.wait_for(pause, 1)
    assert gate.in_flight == 0
    assert gate.paused


async def test_unpause_during_drain_aborts_the_pause() -> None:
    gate = PauseGate(lease_seconds=None)
    held = await hold(gate)
    pause = asyncio.create_task(gate.pause(wait_outstanding=True, max_wait_ms=5000))
    await asyncio.sleep(0.05)
    await gate.unpause()
    with pytest.raises(PauseAborted) as info:
        await asyncio.wait_for(pause, 1)
    assert not isinstance(info.value, DrainTimeout)
    assert not gate.paused
    held.release()
    await held.task


async def test_a_failed_pause_leaves_the_earlier_pause_alone() -> None:
    """The gate an earlier pause closed is that pause's: a later pause that times out
    says the gate stays closed and does not reopen it (ScalarDL / ScalarDB Cluster 3.19:
    TIMED_OUT_STILL_PAUSED), so the earlier pause goes on and succeeds."""
    gate = PauseGate(lease_seconds=None)
    held = await hold(gate)
    long = asyncio.create_task(gate.pause(wait_outstanding=True, max_wait_ms=5000))
    await asyncio.sleep(0)
    with pytest.raises(DrainTimeoutStillPaused, match="the gate stays closed under an earlier pause"):
        await gate.pause(wait_outstanding=True, max_wait_ms=100)
    assert gate.paused
    held.release()
    await asyncio.wait_for(long, 1)
    assert gate.paused


async def test_cancelled_pause_reopens_the_gate_it_closed() -> None:
    gate = PauseGate(lease_seconds=None)
    held = await hold(gate)
    pause = asyncio.create_task(gate.pause(wait_outstanding=True, max_wait_ms=5000))
    await asyncio.sleep(0.05)
    assert gate.paused
    pause.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pause
    assert not gate.paused
    held.release()
    await held.task


async def test_cancelled_repeat_pause_leaves_the_earlier_pause() -> None:
    gate = PauseGate(lease_seconds=None)
    held = await hold(gate)
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    pause = asyncio.create_task(gate.pause(wait_outstanding=True, max_wait_ms=5000))
    await asyncio.sleep(0.05)
    pause.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pause
    assert gate.paused
    held.release()
    await held.task
    await gate.unpause()


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        PauseGate(lease_seconds=0)
    with pytest.raises(ValueError):
        PauseGate(default_max_wait_ms=-1)
