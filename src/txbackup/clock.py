"""Time as txbackup records it: UTC, to the millisecond, ISO-8601 with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC (a naive datetime is taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def floor_ms(moment: datetime) -> datetime:
    """``moment`` truncated to the millisecond."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def utc_now() -> datetime:
    """Now, in UTC, truncated to the millisecond."""
    return floor_ms(datetime.now(UTC))


@overload
def iso_ms(moment: datetime) -> str: ...
@overload
def iso_ms(moment: None) -> None: ...
def iso_ms(moment: datetime | None) -> str | None:
    """``2026-11-27T10:15:00.123Z``, or None for None."""
    if moment is None:
        return None
    moment = as_utc(moment)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
