"""The retention policy: restic's forget semantics on set times (UTC)."""

from __future__ import annotations

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


times = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2026, 11, 27), timezones=st.just(UTC)
)
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
