"""The server side of the scalar-admin pause: a gate every application request goes through.

``PauseGate`` counts in-flight requests. ``pause()`` closes the gate for new
requests and, when asked, waits for the in-flight ones to drain; if they do not
drain in time it reopens the gate and raises ``DrainTimeout`` (ScalarDL's
behaviour), unless the gate was already closed by an earlier pause: that one
was told it succeeded, so the gate stays closed and ``DrainTimeoutStillPaused``
says so (ScalarDL's and ScalarDB Cluster 3.19's TIMED_OUT_STILL_PAUSED). While
closed, new requests wait for the unpause, or are rejected with ``GateClosed``
in reject mode.

Unlike ScalarDB and ScalarDL, a paused gate has a *lease*: if nobody unpauses
it within ``lease_seconds`` it unpauses by itself, so a crashed orchestrator
never leaves the application paused forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from txbackup.errors import PauseError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
"""What rejected requests are told to wait before retrying."""


class GateClosed(Exception):
    """A request arrived while the gate is closed and the gate rejects instead of waiting."""

    def __init__(self, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__("paused for backup")
        self.retry_after = retry_after


class PauseAborted(PauseError):
    """The pause did not take: the gate was reopened before in-flight requests drained."""


class DrainTimeout(PauseAborted):
    """In-flight requests did not drain in time; the gate has been reopened."""


class DrainTimeoutStillPaused(PauseAborted):
    """In-flight requests did not drain in time, and the gate stays closed: an earlier
    pause closed it, and reopening it would revoke that pause."""


class PauseGate:
    """Admission gate for application requests, driven by Pause/Unpause.

    Single event loop only: every method must run on the loop that uses the gate.
    """

    def __init__(
        self,
        reject_when_paused: bool = False,
        lease_seconds: float | None = 60.0,
        default_max_wait_ms: int = 30000,
    ) -> None:
        if lease_seconds is not None and lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive or None, not {lease_seconds}")
        if default_max_wait_ms < 0:
            raise ValueError(f"default_max_wait_ms must be >= 0, not {default_max_wait_ms}")
        self.reject_when_paused = reject_when_paused
        self.lease_seconds = lease_seconds
        self.default_max_wait_ms = default_max_wait_ms
        self._paused = False
        self._in_flight = 0
        # Bumped on every reopen, so a pause waiting for the drain notices it.
        self._epoch = 0
        self._opened = asyncio.Event()
        self._opened.set()
        # Set (and replaced) whenever the drain wait may be over.
        self._changed = asyncio.Event()
        self._lease: asyncio.TimerHandle | None = None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """Admit one application request for the duration of the ``async with`` body.

        Waits while the gate is closed, or raises ``GateClosed`` in reject mode.
        """
        while self._paused:
            if self.reject_when_paused:
                raise GateClosed()
            # Cancellation here is harmless: nothing is counted yet.
            await self._opened.wait()
        # No await between the check above and the count: nothing can slip through.
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._notify()

    async def pause(self, wait_outstanding: bool = True, max_wait_ms: int | None = None) -> None:
        """Close the gate; with ``wait_outstanding``, wait for in-flight requests to drain.

        Raises ``DrainTimeout`` (gate reopened) if they do not drain within
        ``max_wait_ms`` (default ``default_max_wait_ms``), and ``PauseAborted`` if
        the gate is reopened by someone else meanwhile. If the caller is cancelled
        while waiting, a gate this call closed is reopened: an unconfirmed pause
        must not stay in force.
        """
        wait_ms = self.default_max_wait_ms if max_wait_ms is None else max_wait_ms
        if wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, not {wait_ms}")
        closed_here = not self._paused
        self._close()
        if not wait_outstanding:
            return
        try:
            await self._drain(wait_ms / 1000, reopen=closed_here)
        except asyncio.CancelledError:
            if closed_here:
                self._open("pause cancelled while waiting for in-flight requests")
            raise

    async def unpause(self) -> None:
        """Open the gate and let waiting requests in. Unpausing an open gate does nothing."""
        if self._paused:
            self._open("unpaused")

    def _close(self) -> None:
        if not self._paused:
            self._paused = True
            self._opened.clear()
            log.info("paused; %d requests in flight", self._in_flight)
        self._arm_lease()

    def _open(self, reason: str) -> None:
        self._cancel_lease()
        self._paused = False
        self._epoch += 1
        self._opened.set()
        self._notify()
        log.info("%s; gate open", reason)

    async def _drain(self, timeout: float, reopen: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        epoch = self._epoch
        while self._in_flight > 0:
            if self._epoch != epoch:
                raise PauseAborted("the gate was reopened before in-flight requests drained")
            remaining = deadline - loop.time()
            if remaining <= 0:
                waited_ms = round(timeout * 1000)
                message = f"{self._in_flight} requests still in flight after {waited_ms} ms"
                if not reopen:  # the closure is an earlier pause's, which was told it succeeded
                    raise DrainTimeoutStillPaused(f"{message}; the gate stays closed under an earlier pause")
                self._open(message)
                raise DrainTimeout(f"{message}; gate reopened")
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                pass
        if self._epoch != epoch:
            raise PauseAborted("the gate was reopened before in-flight requests drained")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _arm_lease(self) -> None:
        self._cancel_lease()
        if self.lease_seconds is not None:
            loop = asyncio.get_running_loop()
            self._lease = loop.call_later(self.lease_seconds, self._lease_expired)

    def _cancel_lease(self) -> None:
        if self._lease is not None:
            self._lease.cancel()
            self._lease = None

    def _lease_expired(self) -> None:
        self._lease = None
        log.warning("pause lease of %gs expired; unpausing by itself", self.lease_seconds)
        self._open("lease expired")
