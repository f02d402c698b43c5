"""The retention policy: restic's forget semantics on set times (UTC)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txbackup.engine.retention import UNLIMITED, Item, Policy, Within, apply, parse_count, parse_within
from txbackup.errors import UsageError

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def items(*times: str) -> list[Item]:
    return [Item(f"s{i:03d}", datetime.fromisoformat(t).replace(tzinfo=UTC)) for i, t in enumerate(times)]


def kept(found: list[Item], policy: Policy, now: datetime = NOW) -> dict[str, tuple[str, ...]]:
    return {d.set_id: d.reasons for d in apply(found, policy, now) if d.keep}


def test_keep_last_keeps_the_newest_whatever_the_input_order() -> None:
    found = items("2026-11-01T00:00", "2026-11-03T00:00", "2026-11-02T00:00", "2026-11-04T00:00")
    assert kept(found, Policy(last=2)) == {"s003": ("last",), "s001": ("last",)}
    decisions = apply(found, Policy(last=2), NOW)
    assert [d.set_id for d in decisions] == ["s003", "s001", "s002", "s000"]  # newest first
    assert [d.keep for d in decisions] == [True, True, False, False]


def test_keep_daily_keeps_the_newest_of_each_day_and_the_oldest_while_counts_remain() -> None:
    found = items(
        "2026-11-01T01:00", "2026-11-01T23:00",  # day 1: 23:00 is its newest
        "2026-11-02T05:00", "2026-11-02T06:00",
        "2026-11-03T07:00",
    )  # fmt: skip
    assert kept(found, Policy(daily=2)) == {"s004": ("daily",), "s003": ("daily",)}
    # 3 days, 5 allowed: each day's newest, and the oldest set too (restic >= 0.15)
    assert kept(found, Policy(daily=5)) == {
        "s004": ("daily",), "s003": ("daily",), "s001": ("daily",), "s000": ("oldest daily",),
    }  # fmt: skip


def test_weeks_are_iso_weeks_across_the_new_year() -> None:
    # Thu 2026-12-31 and Fri 2027-01-01 are both in ISO week 2026-W53; Mon 2027-01-04 is 2027-W01
    found = items("2026-12-31T10:00", "2027-01-01T10:00", "2027-01-04T10:00")
    later = NOW + timedelta(days=60)
    assert kept(found, Policy(weekly=2), later) == {"s002": ("weekly",), "s001": ("weekly",)}


def test_monthly_and_yearly_buckets_and_several_reasons() -> None:
    found = items("2025-06-15T00:00", "2025-12-31T23:59", "2026-01-01T00:00", "2026-11-27T10:00")
    assert kept(found, Policy(last=1, monthly=2, yearly=2)) == {
        "s003": ("last", "monthly", "yearly"),
        "s002": ("monthly",),
        "s001": ("yearly",),
    }


def test_unlimited_keeps_one_per_bucket() -> None:
    found = items(*(f"2026-11-{d:02d}T{h:02d}:00" for d in range(1, 11) for h in (1, 2)))
    result = kept(found, Policy(daily=UNLIMITED))
    assert len(result) == 11  # one per day, and the oldest
    assert parse_count("unlimited") == parse_count("-1") == UNLIMITED


def test_keep_within_is_relative_to_the_newest_set_not_to_now() -> None:
    # backups stopped in 2020: a clock-relative rule would forget them all
    found = items("2020-01-01T00:00", "2020-01-09T00:00", "2020-01-10T00:00")
    assert kept(found, Policy(within=parse_within("2d"))) == {"s002": ("within 2d",), "s001": ("within 2d",)}
    assert kept(found, Policy(within=parse_within("1w"))) == {"s002": ("within 7d",), "s001": ("within 7d",)}


def test_keep_within_ignores_sets_in_the_future_when_finding_the_newest() -> None:
    found = items("2026-11-20T00:00", "2026-11-27T00:00", "2030-01-01T00:00")
    result = kept(found, Policy(within=parse_within("3d")))
    assert set(result) == {"s001", "s002"}  # the future set is after the threshold too
    everything_future = items("2031-01-01T00:00", "2032-01-01T00:00")
    assert set(kept(everything_future, Policy(within=parse_within("1h")))) == {"s000", "s001"}


def test_calendar_months_overflow_like_go_adddate() -> None:
    # restic: latest.AddDate(0, -1, 0) on March 31 is "February 31", i.e. March 3 (2026)
    assert Within(months=1).before(datetime(2026, 3, 31, tzinfo=UTC)) == datetime(2026, 3, 3, tzinfo=UTC)
    assert Within(years=1).before(datetime(2028, 2, 29, tzinfo=UTC)) == datetime(2027, 3, 1, tzinfo=UTC)
    assert Within(years=9999).before(NOW) == datetime.min.replace(tzinfo=UTC)
    assert str(parse_within("1y6m2w3d4h")) == "1y6m17d4h"


@pytest.mark.parametrize("text", ["", "30", "5s", "1m1y", "d", "-3d", "12 parsecs", "9" * 50, "\uff13d"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--keep-within"):
        parse_within(text)


@pytest.mark.parametrize("text", ["", "-2", "3.5", "many", "9" * 50, "\uff11\uff12"])
def test_bad_counts_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="keep count"):
        parse_count(text)


def test_empty_policy_and_empty_list() -> None:
    assert Policy().empty and not Policy(within=Within(hours=1)).empty and not Policy(yearly=1).empty
    assert apply([], Policy(last=3)) == []


times = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 11, 27), timezones=st.just(UTC))
counts = st.sampled_from([0, 1, 2, 3, 7, UNLIMITED])


@settings(max_examples=300, deadline=None)
@given(st.lists(times, max_size=40), counts, counts, counts, counts, counts, counts, st.integers(0, 400))
def test_properties(found_times, last, hourly, daily, weekly, monthly, yearly, within_days) -> None:
    found = [Item(f"s{i:03d}", t) for i, t in enumerate(found_times)]
    policy = Policy(last, hourly, daily, weekly, monthly, yearly, Within(days=within_days))
    decisions = apply(found, policy, NOW)
    assert sorted(d.set_id for d in decisions) == sorted(i.set_id for i in found)
    assert [d.time for d in decisions] == sorted((d.time for d in decisions), reverse=True)
    assert all(bool(d.reasons) == d.keep for d in decisions)
    if found and not policy.empty:
        assert decisions[0].keep  # the newest set always survives a non-empty policy
    if last > 0:
        only_last = apply(found, Policy(last=last), NOW)
        assert [d.keep for d in only_last] == [n < last for n in range(len(found))]
    # raising a count never forgets a set that was kept
    if daily >= 0:
        raised = Policy(last, hourly, daily + 1, weekly, monthly, yearly, Within(days=within_days))
        more = apply(found, raised, NOW)
        before = {d.set_id for d in decisions if d.keep}
        assert before <= {d.set_id for d in more if d.keep}


# restic's own policy test (internal/data/snapshot_policy_test.go, TestApplyPolicy): its 103
# snapshot times, and for each of its cases without tags or within-bucket rules what its golden
# files (testdata/policy_keep_snapshots_N) say: how many are kept, the oldest kept, and how
# often each reason appears (first word: "oldest daily" counts as oldest)
RESTIC_TIMES = [
    "2014-09-01T10:20:30",
    "2014-09-02T10:20:30",
    "2014-09-05T10:20:30",
    "2014-09-06T10:20:30",
    "2014-09-08T10:20:30",
    "2014-09-09T10:20:30",
    "2014-09-10T10:20:30",
    "2014-09-11T10:20:30",
    "2014-09-20T10:20:30",
    "2014-09-22T10:20:30",
    "2014-08-08T10:20:30",
    "2014-08-10T10:20:30",
    "2014-08-12T10:20:30",
    "2014-08-13T10:20:30",
    "2014-08-13T10:20:30.1",
    "2014-08-15T10:20:30",
    "2014-08-18T10:20:30",
    "2014-08-20T10:20:30",
    "2014-08-21T10:20:30",
    "2014-08-22T10:20:30",
    "2014-10-01T10:20:30",
    "2014-10-02T10:20:30",
    "2014-10-05T10:20:30",
    "2014-10-06T10:20:30",
    "2014-10-08T10:20:30",
    "2014-10-09T10:20:30",
    "2014-10-10T10:20:30",
    "2014-10-11T10:20:30",
    "2014-10-20T10:20:30",
    "2014-10-22T10:20:30",
    "2014-11-08T10:20:30",
    "2014-11-10T10:20:30",
    "2014-11-12T10:20:30",
    "2014-11-13T10:20:30",
    "2014-11-13T10:20:30.1",
    "2014-11-15T10:20:30",
    "2014-11-18T10:20:30",
    "2014-11-20T10:20:30",
    "2014-11-21T10:20:30",
    "2014-11-22T10:20:30",
    "2015-09-01T10:20:30",
    "2015-09-02T10:20:30",
    "2015-09-05T10:20:30",
    "2015-09-06T10:20:30",
    "2015-09-08T10:20:30",
    "2015-09-09T10:20:30",
    "2015-09-10T10:20:30",
    "2015-09-11T10:20:30",
    "2015-09-20T10:20:30",
    "2015-09-22T10:20:30",
    "2015-08-08T10:20:30",
    "2015-08-10T10:20:30",
    "2015-08-12T10:20:30",
    "2015-08-13T10:20:30",
    "2015-08-13T10:20:30.1",
    "2015-08-15T10:20:30",
    "2015-08-18T10:20:30",
    "2015-08-20T10:20:30",
    "2015-08-21T10:20:30",
    "2015-08-22T10:20:30",
    "2015-10-01T10:20:30",
    "2015-10-02T10:20:30",
    "2015-10-05T10:20:30",
    "2015-10-06T10:20:30",
    "2015-10-08T10:20:30",
    "2015-10-09T10:20:30",
    "2015-10-10T10:20:30",
    "2015-10-11T10:20:30",
    "2015-10-20T10:20:30",
    "2015-10-22T10:20:30",
    "2015-10-22T10:20:30",
    "2015-10-22T10:20:30",
    "2015-10-22T10:20:30",
    "2015-10-22T10:20:30",
    "2015-11-08T10:20:30",
    "2015-11-10T10:20:30",
    "2015-11-12T10:20:30",
    "2015-11-13T10:20:30",
    "2015-11-13T10:20:30.1",
    "2015-11-15T10:20:30",
    "2015-11-18T10:20:30",
    "2015-11-20T10:20:30",
    "2015-11-21T10:20:30",
    "2015-11-22T10:20:30",
    "2016-01-01T01:02:03",
    "2016-01-01T01:03:03",
    "2016-01-01T07:08:03",
    "2016-01-03T07:02:03",
    "2016-01-04T10:23:03",
    "2016-01-04T11:23:03",
    "2016-01-04T12:23:03",
    "2016-01-04T12:24:03",
    "2016-01-04T12:28:03",
    "2016-01-04T12:30:03",
    "2016-01-04T16:23:03",
    "2016-01-05T09:02:03",
    "2016-01-06T08:02:03",
    "2016-01-07T10:02:03",
    "2016-01-08T20:02:03",
    "2016-01-09T21:02:03",
    "2016-01-12T21:02:03",
    "2016-01-12T21:08:03",
    "2016-01-18T12:02:03",
]

RESTIC_GOLDEN = {  # restic's case number: (policy, kept, oldest kept, reasons counted)
    1: (Policy(last=10), 10, "2016-01-04T12:30:03Z", {"last": 10}),
    2: (Policy(last=15), 15, "2016-01-04T10:23:03Z", {"last": 15}),
    3: (Policy(last=99), 99, "2014-08-13T10:20:30.1Z", {"last": 99}),
    4: (Policy(last=200), 103, "2014-08-08T10:20:30Z", {"last": 103}),
    5: (Policy(hourly=20), 20, "2015-11-13T10:20:30.1Z", {"hourly": 20}),
    6: (Policy(daily=3), 3, "2016-01-09T21:02:03Z", {"daily": 3}),
    7: (Policy(daily=10), 10, "2016-01-01T07:08:03Z", {"daily": 10}),
    8: (Policy(daily=30), 30, "2015-09-22T10:20:30Z", {"daily": 30}),
    9: (Policy(last=5, daily=5), 6, "2016-01-07T10:02:03Z", {"daily": 5, "last": 5}),
    10: (Policy(last=2, daily=10), 10, "2016-01-01T07:08:03Z", {"daily": 10, "last": 2}),
    11: (Policy(weekly=2), 2, "2016-01-12T21:08:03Z", {"weekly": 2}),
    12: (Policy(weekly=4), 4, "2016-01-03T07:02:03Z", {"weekly": 4}),
    13: (Policy(daily=3, weekly=4), 4, "2016-01-03T07:02:03Z", {"daily": 3, "weekly": 4}),
    14: (Policy(monthly=6), 6, "2014-11-22T10:20:30Z", {"monthly": 6}),
    15: (
        Policy(daily=2, weekly=2, monthly=6),
        7,
        "2014-11-22T10:20:30Z",
        {"daily": 2, "monthly": 6, "weekly": 2},
    ),
    16: (Policy(yearly=10), 4, "2014-08-08T10:20:30Z", {"oldest": 1, "yearly": 3}),
    17: (
        Policy(daily=7, weekly=2, monthly=3, yearly=10),
        11,
        "2014-08-08T10:20:30Z",
        {"daily": 7, "monthly": 3, "oldest": 1, "weekly": 2, "yearly": 3},
    ),
    21: (Policy(within=parse_within("1d")), 1, "2016-01-18T12:02:03Z", {"within": 1}),
    22: (Policy(within=parse_within("2d")), 1, "2016-01-18T12:02:03Z", {"within": 1}),
    23: (Policy(within=parse_within("7d")), 3, "2016-01-12T21:02:03Z", {"within": 3}),
    24: (Policy(within=parse_within("1m")), 19, "2016-01-01T01:02:03Z", {"within": 19}),
    25: (Policy(within=parse_within("1m14d")), 19, "2016-01-01T01:02:03Z", {"within": 19}),
    26: (Policy(within=Within(1, 1, 1, 0)), 63, "2015-08-08T10:20:30Z", {"within": 63}),
    27: (Policy(within=parse_within("13d23h")), 9, "2016-01-04T16:23:03Z", {"within": 9}),
    28: (Policy(within=parse_within("2m2h")), 23, "2015-11-18T10:20:30Z", {"within": 23}),
    29: (Policy(within=parse_within("1y2m3d3h")), 68, "2014-11-15T10:20:30Z", {"within": 68}),
    36: (Policy(last=UNLIMITED), 103, "2014-08-08T10:20:30Z", {"last": 103}),
    37: (Policy(last=UNLIMITED, hourly=UNLIMITED), 103, "2014-08-08T10:20:30Z", {"hourly": 90, "last": 103}),
    38: (Policy(hourly=UNLIMITED), 90, "2014-08-08T10:20:30Z", {"hourly": 90}),
    39: (
        Policy(daily=3, weekly=2, monthly=UNLIMITED, yearly=UNLIMITED),
        12,
        "2014-08-08T10:20:30Z",
        {"daily": 3, "monthly": 9, "oldest": 2, "weekly": 2, "yearly": 3},
    ),
}


@pytest.mark.parametrize("case", sorted(RESTIC_GOLDEN))
def test_restic_golden_cases(case: int) -> None:
    policy, count, oldest, reasons = RESTIC_GOLDEN[case]
    found = [
        Item(f"s{i:03d}", datetime.fromisoformat(t).replace(tzinfo=UTC)) for i, t in enumerate(RESTIC_TIMES)
    ]
    kept_ = [d for d in apply(found, policy, NOW) if d.keep]
    assert len(kept_) == count
    assert kept_[-1].time == datetime.fromisoformat(oldest.replace("Z", "+00:00"))
    assert dict(Counter(r.split(" ")[0] for d in kept_ for r in d.reasons)) == reasons
