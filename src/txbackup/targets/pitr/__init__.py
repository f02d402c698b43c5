"""What every point-in-time-restore target shares (DynamoDB PITR, Cosmos DB
continuous backup, RDS/Aurora, Azure Database flexible servers): the pause rule,
the restore point, the restorable window (here); the one journaled restore job
(``job``), its journal (``journal``) and the polling with progress (``polling``).

The ScalarDB guide's rule: pause for at least 10 seconds and restore to the
midpoint of the pause. A PITR target sets ``min_pause_s`` (the engine holds the
pause for the longest of all targets); below ``PITR_MIN_PAUSE_S`` it is allowed,
with the warning written here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from txbackup.clock import floor_ms, iso_ms
from txbackup.errors import TargetError, UsageError

log = logging.getLogger(__name__)

PITR_MIN_PAUSE_S = 10.0
"""The guide's shortest pause for a point-in-time restore to land inside it."""


def check_min_pause(name: str, seconds: float) -> list[str]:
    """Warnings for a PITR target configured with ``seconds`` of pause (the target
    keeps them and logs them at preflight, i.e. when a backup is about to pause)."""
    if seconds >= PITR_MIN_PAUSE_S:
        return []
    return [
        f'target "{name}": min_pause = {seconds:g}s is below the {PITR_MIN_PAUSE_S:g}s the ScalarDB '
        "backup guide requires; the restore point (the pause midpoint) may then fall outside "
        "the pause, given clock skew and the service's restore granularity"
    ]


def log_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        log.warning("%s", warning)


def parse_restore_point(text: str | None, culprit: str) -> datetime:
    """The set's restore point (ISO-8601 UTC, e.g. ``2026-11-27T10:15:00.123Z``) as an aware datetime."""
    if not text:
        raise TargetError(f"{culprit}: the backup set has no restore point (no pause window recorded)")
    try:
        point = datetime.fromisoformat(text)
    except ValueError:
        raise TargetError(f"{culprit}: malformed restore point {text!r} in the backup set") from None
    return point.replace(tzinfo=UTC) if point.tzinfo is None else point.astimezone(UTC)


def window_text(earliest: datetime, latest: datetime) -> str:
    return f"restorable window {iso_ms(earliest)} .. {iso_ms(latest)}"


def outside_window(point: datetime, earliest: datetime, latest: datetime) -> str | None:
    """Why ``point`` cannot be restored to (None if it lies in the window, compared in ms)."""
    if point < floor_ms(earliest):
        return f"restore point {iso_ms(point)} is before the {window_text(earliest, latest)}"
    if point > latest:
        return f"restore point {iso_ms(point)} is after the {window_text(earliest, latest)}"
    return None


def restored_name(
    setting: str,
    pattern: str,
    fields: dict[str, str],
    set_id: str,
    check: Callable[[str, str], str],
    hint: str,
    culprit: str,
) -> str:
    """The new copy's name a ``restored_name``-style ``setting`` makes: ``pattern`` with the
    source's ``fields`` and ``{set}`` (the set id, lowercased), checked by the kind's own
    name ``check``; ``hint`` says how to name it by hand (``name the server with --to ...``)."""
    try:
        name = pattern.format(**fields, set=set_id.lower())
    except (KeyError, IndexError, ValueError):
        known = " and ".join(f"{{{key}}}" for key in (*fields, "set"))
        raise UsageError(f"{culprit}: {setting} {pattern!r}: only {known} can be used") from None
    try:
        return check(name, culprit)
    except UsageError as exc:
        raise UsageError(
            f"{exc} (made by {setting} = {pattern!r}: choose a shorter pattern, or {hint})"
        ) from None
