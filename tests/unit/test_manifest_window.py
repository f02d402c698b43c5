"""The manifest's pause window in epoch ms (issue 13, part 4): written by new sets, derived
for sets written before, refused when it contradicts the ISO times."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from tests.unit.test_manifest_catalog import make_manifest, save_raw, storage  # noqa: F401 (fixture)
from txbackup.clock import epoch_ms, iso_local, parse_time_zone
from txbackup.engine.manifest import read_manifest, write_manifest
from txbackup.errors import IntegrityError, UsageError

START_MS = 1795774501000  # 2026-11-27T10:15:01.000Z


def test_new_sets_carry_the_ms(storage):  # noqa: F811
    write_manifest(storage, make_manifest("s1"))
    with storage.open_read("sets/s1/manifest.json") as f:
        pause = json.load(f)["pause"]
    assert (pause["started_at_ms"], pause["ended_at_ms"], pause["midpoint_ms"]) == (
        START_MS, START_MS + 200, START_MS + 100,
    )  # fmt: skip


def test_a_set_written_before_the_ms_reads_as_before(storage):  # noqa: F811
    data = make_manifest("s1").to_dict()
    for key in ("started_at_ms", "ended_at_ms", "midpoint_ms"):
        del data["pause"][key]
    save_raw(storage, "s1", data)
    manifest = read_manifest(storage, "s1")
    assert manifest.pause.midpoint_ms == START_MS + 100
    assert manifest.restore_point == "2026-11-27T10:15:01.100Z"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"started_at_ms": START_MS + 1}, "'started_at_ms' (1795774501001) does not match 'started_at'"),
        ({"midpoint_ms": True}, "field 'midpoint_ms' must be int, found bool"),
        ({"ended_at_ms": "1795774501200"}, "field 'ended_at_ms' must be int, found str"),
        ({"ended_at": None}, "field 'ended_at_ms' (1795774501200) does not match 'ended_at' (None)"),
        ({"time_zone": "UTC"}, "pause: unknown field 'time_zone'"),
    ],
)
def test_a_window_that_contradicts_itself_is_refused(storage, change, problem):  # noqa: F811
    data = make_manifest("s1").to_dict()
    data["pause"].update(change)
    save_raw(storage, "s1", data)
    with pytest.raises(IntegrityError, match=re.escape(problem)):
        read_manifest(storage, "s1")


def test_zones_and_ms():
    moment = datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=UTC)  # Paris springs forward at 01:00Z
    paris = parse_time_zone("Europe/Paris")
    assert iso_local(moment, paris) == "2026-03-29T01:59:59.999+01:00"
    after = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert iso_local(after, paris) == "2026-03-29T03:00:00.000+02:00"
    assert epoch_ms(moment) == 1774745999999  # floored, never rounded up into the next ms
    assert epoch_ms(datetime(1970, 1, 1)) == 0  # naive = UTC
    for bad in ("Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Europe", "UTC\n", "x" * 65):
        with pytest.raises(UsageError, match="not an IANA time zone name"):
            parse_time_zone(bad)
