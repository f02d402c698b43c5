"""parse_duration: units, bare seconds, and clear errors."""

from __future__ import annotations

import pytest

from txbackup.durations import parse_duration
from txbackup.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("10", 10.0),
        ("0", 0.0),
        ("1.5s", 1.5),
        (".25", 0.25),
        (" 30s ", 30.0),
        ("250 ms", 0.25),
    ],
)
def test_parses(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "s", "ms", "-1", "-5s", "1x", "1.2.3", "10sec", "1m30s", "inf", "nan", "1e3", "٣"]
)
def test_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="malformed duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
    assert info.value.exit_code == 2
