"""The journal of one target's restore job, as every point-in-time kind uses it.

It wraps the engine's ``StepJournal`` (persisted in the catalog, so a job
resumes with ``txbackup restore --resume``): serialised between the threads of
a job (DynamoDB restores tables in parallel), each recorded step logged, and a
fault hook through which the tests simulate a crash right after a step took
effect (before it is recorded) or right after it was recorded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from txbackup.jobs import StepJournal

log = logging.getLogger(__name__)

FaultHook = Callable[[str, str], None]
"""Called as ``hook(step, "acted")`` after a step took effect and ``hook(step,
"done")`` after it was recorded (tests raise from it to simulate a crash)."""


class Journal:
    """A thread-safe view of one target's ``StepJournal``."""

    def __init__(self, inner: StepJournal, label: str, hook: FaultHook | None = None) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._hook = hook
        self.label = label

    def is_done(self, step: str) -> bool:
        with self._lock:
            return self._inner.is_done(step)

    def data(self, step: str) -> dict[str, Any]:
        """What ``step`` recorded ({} when nothing, or not done)."""
        with self._lock:
            return dict(self._inner.data(step) or {})

    def done(self, step: str, data: Mapping[str, Any] | None = None) -> None:
        if self._hook is not None:
            self._hook(step, "acted")
        with self._lock:
            self._inner.mark_done(step, data)
        log.info("%s: %s: done", self.label, step)
        if self._hook is not None:
            self._hook(step, "done")
