"""Time as txbackup records it: UTC, to the millisecond, ISO-8601 with a ``Z``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from typing import Any, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from txbackup.errors import UsageError


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


# --- the pause window for people and machines (issue 13, part 4): epoch ms and a local zone ---

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+){0,2}")


def parse_time_zone(name: str, flag: str = "--time-zone") -> ZoneInfo:
    """The IANA time zone ``name`` (``UTC``, ``Europe/Paris``, ``Asia/Tokyo``); a name
    that is not one is a one-line ``UsageError``. The name is checked for shape
    before it reaches the zone database (it becomes a file path there)."""
    if len(name) <= 64 and _ZONE_NAME.fullmatch(name):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise UsageError(f"{flag} {name[:80]!r}: not an IANA time zone name (e.g. UTC, Europe/Paris, Asia/Tokyo)")


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since 1970-01-01T00:00Z, floored (a naive datetime is taken as UTC);
    exact: integer arithmetic, no float rounding."""
    delta = as_utc(moment) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def iso_local(moment: datetime, zone: tzinfo) -> str:
    """``2026-11-28T23:31:51.123+09:00``: ISO-8601 in ``zone``, with its offset."""
    local = as_utc(moment).astimezone(zone)
    return local.isoformat(timespec="milliseconds")


def moment_fields(name: str, moment: datetime | None, zone: tzinfo | None = None) -> dict[str, Any]:
    """``{name}_ms`` (epoch ms) and, with ``zone``, ``{name}_local`` (ISO-8601 with offset)."""
    fields: dict[str, Any] = {f"{name}_ms": None if moment is None else epoch_ms(moment)}
    if zone is not None:
        fields[f"{name}_local"] = None if moment is None else iso_local(moment, zone)
    return fields
