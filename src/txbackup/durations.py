"""Durations on the command line: ``500ms``, ``60s``, ``2m``, ``1h``, or bare seconds."""

from __future__ import annotations

import re

from txbackup.errors import UsageError

_DURATION = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>ms|s|m|h)?")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a non-negative number with an optional unit ms, s, m or h.

    A bare number is seconds. Raises ``UsageError`` on anything else.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise UsageError(
            f"malformed duration {text!r}: expected a number with an optional unit "
            "ms, s, m or h (e.g. 500ms, 60s, 2m; a bare number is seconds)"
        )
    return float(match["number"]) * _SECONDS_PER_UNIT[match["unit"] or "s"]
