"""Durations on the command line: ``500ms``, ``60s``, ``2m``, ``1h``, or bare seconds.

Every duration is bounded: a number too large for a timer, a gRPC deadline or
a protobuf ``int64`` of milliseconds must be refused when it is read, not
overflow later in the middle of a pause.
"""

from __future__ import annotations

import math
import re

from txbackup.errors import UsageError

_DURATION = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>ms|s|m|h)?")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

MAX_DURATION_S = 30 * 86400.0
"""The longest duration of any setting (30 days): nothing txbackup waits for lasts longer."""

MAX_CALL_S = 3600.0
"""The longest duration of anything that holds or waits on the applications' pause, or
becomes a scalar-admin (gRPC) deadline: call timeouts, pause waits, capture deadlines."""


def format_duration(seconds: float) -> str:
    """``seconds`` as the shortest of ``1h``, ``2m``, ``30s`` or ``500ms`` that is exact."""
    for unit in ("h", "m", "s"):
        count = seconds / _SECONDS_PER_UNIT[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{round(seconds * 1000)}ms"


def parse_duration(text: str, *, maximum: float = MAX_DURATION_S) -> float:
    """Seconds in ``text``: a non-negative number with an optional unit ms, s, m or h,
    at most ``maximum`` seconds.

    A bare number is seconds. Raises ``UsageError`` on anything else.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise UsageError(
            f"malformed duration {text!r}: expected a number with an optional unit "
            "ms, s, m or h (e.g. 500ms, 60s, 2m; a bare number is seconds)"
        )
    seconds = float(match["number"]) * _SECONDS_PER_UNIT[match["unit"] or "s"]
    if not math.isfinite(seconds) or seconds > maximum:
        raise UsageError(f"duration {text.strip()[:40]!r} is too long: at most {format_duration(maximum)}")
    return seconds
