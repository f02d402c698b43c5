"""Which sets a retention policy keeps: restic's ``forget`` semantics, on set times.

A set's time is its restore point (the midpoint of its pause), or its
``created_at`` when it has none, in UTC. Sets are taken newest first (ties:
the larger set id first); for each:

- ``--keep-within D`` keeps it if its time is after *newest - D*, where
  *newest* is the newest set time not in the future (restic: relative to the
  newest snapshot, not to now, so a repository whose backups stopped is not
  emptied by the clock; if every set is in the future, all are within);
- ``--keep-last N`` keeps the N newest;
- ``--keep-hourly/daily/weekly/monthly/yearly N`` keep, for N distinct hours
  (days, ISO weeks, months, years), the newest set of each, newest buckets
  first; a bucket rule whose count is not used up when the oldest set is
  reached keeps that oldest set too ("oldest daily"), as restic does since
  0.15: it lengthens the history kept;
- a count of ``unlimited`` (restic: -1) keeps one set of every bucket.

A set is kept if any rule keeps it; the reasons list every rule that did.
An empty policy is refused by the caller: forgetting everything must never be
what an omitted flag means.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from txbackup.clock import as_utc, utc_now
from txbackup.errors import UsageError

UNLIMITED = -1
MAX_COUNT = 1_000_000

_WITHIN = re.compile(  # ASCII digits only: \d would take any script's digits
    r"(?:([0-9]{1,4})y)?(?:([0-9]{1,5})m)?(?:([0-9]{1,5})w)?(?:([0-9]{1,6})d)?(?:([0-9]{1,7})h)?"
)


@dataclass(frozen=True)
class Within:
    """A calendar duration (restic's ``1y2m3d4h``; ``m`` is months, ``w`` 7 days)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @property
    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def before(self, moment: datetime) -> datetime:
        """``moment`` minus this duration, calendar-wise (Go's ``AddDate``: a day past the
        end of the month overflows into the next, as restic computes it)."""
        month0 = moment.month - 1 - self.months
        year = moment.year - self.years + month0 // 12
        month = month0 % 12 + 1
        try:
            last = calendar.monthrange(year, month)[1]
            day = moment.day
            base = moment.replace(year=year, month=month, day=min(day, last))
            if day > last:
                base += timedelta(days=day - last)
            return base - timedelta(days=self.days, hours=self.hours)
        except (ValueError, OverflowError):  # before year 1: everything is after it
            return datetime.min.replace(tzinfo=UTC)

    def __str__(self) -> str:
        parts = [(self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h")]
        return "".join(f"{n}{unit}" for n, unit in parts if n) or "0h"


def parse_within(text: str) -> Within:
    """``30d``, ``2w``, ``12h``, ``1y6m`` (restic's units: y, m = months, d, h; plus w)."""
    match = _WITHIN.fullmatch(text.strip()) if isinstance(text, str) and len(text) <= 40 else None
    if match is None or not any(match.groups()):
        raise UsageError(
            f"--keep-within {str(text)[:40]!r}: expected a duration such as 30d, 2w, 12h or 1y6m"
            " (y years, m months, w weeks, d days, h hours)"
        )
    years, months, weeks, days, hours = (int(g or 0) for g in match.groups())
    return Within(years, months, days + 7 * weeks, hours)


def parse_count(text: str) -> int:
    """A keep count: a non-negative integer, or ``unlimited`` (or -1, as restic takes it)."""
    if text.strip().lower() in ("unlimited", "-1"):
        return UNLIMITED
    if not re.fullmatch(r"[0-9]{1,7}", text.strip()) or int(text) > MAX_COUNT:
        raise UsageError(f"keep count {text[:20]!r}: expected a number from 0 to {MAX_COUNT}, or unlimited")
    return int(text)


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Within = field(default_factory=Within)

    @property
    def empty(self) -> bool:
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        return not any(counts) and self.within.zero

    def describe(self) -> str:
        found = [
            f"{'all' if n == UNLIMITED else n} {what}"
            for n, what in ((self.last, "last"), (self.hourly, "hourly"), (self.daily, "daily"),
                            (self.weekly, "weekly"), (self.monthly, "monthly"), (self.yearly, "yearly"))
            if n
        ]  # fmt: skip
        if not self.within.zero:
            found.append(f"all within {self.within} of the newest")
        return "keep " + ", ".join(found) if found else "keep nothing"


@dataclass(frozen=True)
class Item:
    """One complete set as the policy sees it."""

    set_id: str
    time: datetime


@dataclass(frozen=True)
class Decision:
    set_id: str
    time: datetime
    keep: bool
    reasons: tuple[str, ...]


@dataclass
class _Bucket:
    count: int
    bucker: Callable[[datetime, int], int]
    reason: str
    last: int | None = None


def _hour(t: datetime, _: int) -> int:
    return t.year * 1_000_000 + t.month * 10_000 + t.day * 100 + t.hour


def _day(t: datetime, _: int) -> int:
    return t.year * 10_000 + t.month * 100 + t.day


def _week(t: datetime, _: int) -> int:
    year, week, _weekday = t.isocalendar()
    return year * 100 + week


def _month(t: datetime, _: int) -> int:
    return t.year * 100 + t.month


def _year(t: datetime, _: int) -> int:
    return t.year


def _always(_: datetime, nr: int) -> int:
    return nr


def apply(items: Sequence[Item], policy: Policy, now: datetime | None = None) -> list[Decision]:
    """Every item with its decision, newest first (see the module doc)."""
    ordered = sorted(items, key=lambda i: (as_utc(i.time), i.set_id), reverse=True)
    if not ordered:
        return []
    now = as_utc(now or utc_now())
    past = [as_utc(i.time) for i in ordered if as_utc(i.time) < now]
    newest = max(past) if past else None
    threshold = None
    if not policy.within.zero:
        # restic: with every set in the future, the newest is "year 1", so all are kept
        threshold = datetime.min.replace(tzinfo=UTC) if newest is None else policy.within.before(newest)
    buckets = [
        _Bucket(policy.last, _always, "last"),
        _Bucket(policy.hourly, _hour, "hourly"),
        _Bucket(policy.daily, _day, "daily"),
        _Bucket(policy.weekly, _week, "weekly"),
        _Bucket(policy.monthly, _month, "monthly"),
        _Bucket(policy.yearly, _year, "yearly"),
    ]
    decisions = []
    for nr, item in enumerate(ordered):
        moment = as_utc(item.time)
        reasons: list[str] = []
        if threshold is not None and moment > threshold:
            reasons.append(f"within {policy.within}")
        oldest = nr == len(ordered) - 1
        for bucket in buckets:
            if bucket.count == 0:
                continue
            value = bucket.bucker(moment, nr)
            if value != bucket.last or oldest:
                reasons.append(f"oldest {bucket.reason}" if value == bucket.last else bucket.reason)
                bucket.last = value
                if bucket.count > 0:
                    bucket.count -= 1
        decisions.append(Decision(item.set_id, moment, bool(reasons), tuple(reasons)))
    return decisions
