"""Waiting on a cloud service, with a deadline, a stop signal and progress.

Every wait of a point-in-time kind (a table becoming ACTIVE, an account coming
online, a restorable window catching up with the restore point) is a probe
polled until it says done. A wait can take hours (a large RDS restore), so the
state is logged every ``progress_s`` whatever the poll interval: a person
watching sees it move, and a log shows where a long wait stood when it ended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from txbackup.errors import TargetError

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]
"""Returns (done, state): ``state`` says where the wait stands, for progress and timeouts."""


class Stopped(TargetError):
    """Another part of the same job failed: this one stops at its next step or poll."""


class WaitTimeout(TargetError):
    """A wait reached its deadline (the message names what and its last state)."""


class Poller:
    """Polls probes for one target; ``stop`` ends every wait of the job at once."""

    def __init__(self, label: str, poll_s: float, timeout_s: float, *, progress_s: float = 60.0) -> None:
        self.label = label
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.progress_s = progress_s
        self.stop = threading.Event()

    def sleep(self, seconds: float | None = None) -> None:
        """Sleep one poll interval (or ``seconds``); ``Stopped`` when the job is stopped."""
        if self.stop.wait(self.poll_s if seconds is None else max(0.0, seconds)):
            raise Stopped(f"{self.label}: stopped (another part of this job failed)")

    def wait(self, what: str, probe: Probe, timeout_s: float | None = None) -> str:
        """Poll ``probe`` until done; returns its last state. ``WaitTimeout`` after the
        timeout (the target's ``wait_timeout`` unless given)."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        deadline = started + limit
        last_log = started
        while True:
            done, state = probe()
            if done:
                return state
            now = time.monotonic()
            if now >= deadline:
                raise WaitTimeout(
                    f"{self.label}: timed out after {limit:g}s waiting for {what} (still {state})"
                )
            if now - last_log >= self.progress_s:
                last_log = now
                log.info("%s: waiting for %s: %s for %ds", self.label, what, state, round(now - started))
            self.sleep(min(self.poll_s, deadline - now))
