"""The one journaled point-in-time restore job every point-in-time kind builds on.

A restore to a point in a cloud service is a few long steps (ask for a copy at
the point, wait for it, adjust it...), each of which may be cut short by a
crash, a timeout or a person pressing Ctrl-C. The job makes every kind's
restore resumable the same way (``txbackup restore --resume JOB``):

* ``plan`` runs first and alone: every check that can refuse the restore (the
  point inside the source's restorable window, a destination that is free)
  before the first change, then records what the job decided (the new names,
  the point). A resumed job reads the plan back instead of deciding again, so
  a pattern or default changed meanwhile cannot send it elsewhere.
* every later step runs only if the journal does not have it, and is recorded
  only once it has taken effect: a kind's step must therefore look at the world
  first (a crash between acting and recording repeats it).

The kinds' jobs (``dynamodb.restore``, ``cosmos.restore``, ``rds.restore``)
subclass ``PointInTimeJob`` and add their steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from txbackup.clock import iso_ms
from txbackup.errors import TargetError, UsageError
from txbackup.jobs import StepJournal
from txbackup.targets.pitr import outside_window, parse_restore_point
from txbackup.targets.pitr.journal import FaultHook, Journal
from txbackup.targets.pitr.polling import Poller, WaitTimeout

PLAN = "plan"

Window = Callable[[], tuple[datetime, datetime]]
"""The source's restorable window now: (earliest, latest). Raises ``TargetError``
when the source has none (backups off, source gone)."""


class PointInTimeJob:
    """Plan, then journaled steps (see the module doc)."""

    def __init__(
        self,
        label: str,
        journal: StepJournal,
        restore_point: str | None,
        poller: Poller,
        *,
        hook: FaultHook | None = None,
        needs_point: bool = True,
    ) -> None:
        self.label = label
        self.journal = Journal(journal, label, hook)
        self.poller = poller
        self.point: datetime | None = parse_restore_point(restore_point, label) if needs_point else None

    @property
    def at(self) -> datetime:
        """The restore point (for the kinds that always restore to one)."""
        if self.point is None:
            raise TargetError(f"{self.label}: this restore has no restore point")
        return self.point

    def plan(self, check: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        """The plan step: ``check()`` on a fresh job (its result is recorded with the
        restore point); the recorded plan on a resumed one, which must be of the same point."""
        if self.journal.is_done(PLAN):
            planned = self.journal.data(PLAN)
            recorded = planned.get("restore_point")
            if self.point is not None and recorded is not None and recorded != iso_ms(self.point):
                raise UsageError(
                    f"{self.label}: this restore job was planned for restore point {recorded}, "
                    f"not {iso_ms(self.point)}: resume it with the same backup set"
                )
            return planned
        planned = {"restore_point": iso_ms(self.point) if self.point else None, **check()}
        self.journal.done(PLAN, planned)
        return planned

    def step(self, name: str, act: Callable[[], Mapping[str, Any] | None]) -> dict[str, Any]:
        """Run ``act`` unless ``name`` is in the journal; record what it returns."""
        if self.journal.is_done(name):
            return self.journal.data(name)
        data = dict(act() or {})
        self.journal.done(name, data)
        return data

    def check_window(self, subject: str, window: Window, wait_s: float) -> tuple[datetime, datetime]:
        """Refuse a restore point outside ``subject``'s restorable window (one line, the
        window shown). A point that is past but not yet restorable (the latest restorable
        time trails the present by minutes) is waited for, with progress, up to ``wait_s``."""
        point = self.at
        earliest, latest = window()
        if latest < point <= datetime.now(UTC):

            def caught_up() -> tuple[bool, str]:
                nonlocal earliest, latest
                earliest, latest = window()
                return latest >= point, f"restorable up to {iso_ms(latest)}"

            with contextlib.suppress(WaitTimeout):
                self.poller.wait(
                    f"{subject}'s latest restorable time to pass {iso_ms(point)}", caught_up, wait_s
                )
        problem = outside_window(point, earliest, latest)
        if problem:
            hint = (
                " (the latest restorable time trails the present by minutes: retry later, "
                "or allow a longer restore_window_wait)"
                if latest < point <= datetime.now(UTC)
                else ""
            )
            raise TargetError(f"{self.label}: {subject}: {problem}; refusing to restore{hint}")
        return earliest, latest


def wait_until_restorable(
    poller: Poller, subject: str, latest: Callable[[], datetime], until: datetime, timeout_s: float
) -> datetime:
    """At backup: wait until ``subject``'s latest restorable time (``latest()``) has passed
    ``until`` (the pause's end): before that, the service could not yet restore to the
    set's point, and the set must not be committed. Returns the latest restorable time;
    ``TargetError`` (the set is not complete) after ``timeout_s``."""
    found = latest()

    def probe() -> tuple[bool, str]:
        nonlocal found
        found = latest()
        return found >= until, f"restorable up to {iso_ms(found)}"

    try:
        poller.wait(
            f"{subject}'s latest restorable time to pass the pause end {iso_ms(until)}", probe, timeout_s
        )
    except WaitTimeout as exc:
        raise TargetError(
            f"{exc}: the backup set is not complete (the service cannot restore to its point yet); "
            "check the service's automated backups, or allow a longer restorable_wait"
        ) from None
    return found
