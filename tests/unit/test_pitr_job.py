"""The shared point-in-time job (targets/pitr): plan once, journaled steps, the window
check and its wait, and polling with a deadline and progress."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from txbackup.clock import iso_ms, utc_now
from txbackup.errors import TargetError, UsageError
from txbackup.jobs import MemoryJournal
from txbackup.targets.pitr.job import PointInTimeJob, wait_until_restorable
from txbackup.targets.pitr.polling import Poller, Stopped, WaitTimeout

LABEL = 'target "t" (test)'


def poller(timeout_s: float = 1.0, progress_s: float = 60.0) -> Poller:
    return Poller(LABEL, 0.001, timeout_s, progress_s=progress_s)


def test_plan_runs_once_and_a_resume_must_keep_the_point() -> None:
    journal = MemoryJournal()
    point = iso_ms(utc_now() - timedelta(minutes=1))
    checks: list[str] = []

    def check(name: str) -> dict[str, str]:
        checks.append(name)
        return {"name": name}

    job = PointInTimeJob(LABEL, journal, point, poller())
    assert job.plan(lambda: check("a")) == {"restore_point": point, "name": "a"}
    again = PointInTimeJob(LABEL, journal, point, poller())
    assert again.plan(lambda: check("b"))["name"] == "a"  # the recorded plan, not a new one
    assert checks == ["a"]
    other = iso_ms(utc_now())
    with pytest.raises(UsageError, match=f"planned for restore point {point}, not {other}"):
        PointInTimeJob(LABEL, journal, other, poller()).plan(dict)


def test_steps_are_skipped_once_recorded_and_recorded_only_once_done() -> None:
    journal = MemoryJournal()
    job = PointInTimeJob(LABEL, journal, iso_ms(utc_now()), poller())

    def crash() -> dict[str, str]:
        raise RuntimeError("crash while acting")

    with pytest.raises(RuntimeError):
        job.step("one", crash)
    assert not journal.is_done("one")
    assert job.step("one", lambda: {"arn": "x"}) == {"arn": "x"}
    assert job.step("one", lambda: {"arn": "y"}) == {"arn": "x"}


def test_window_check_waits_for_a_recent_point_then_refuses_outside() -> None:
    now = utc_now()
    point = now - timedelta(seconds=30)
    looks = iter([now - timedelta(minutes=5), now - timedelta(minutes=2), now])
    job = PointInTimeJob(LABEL, MemoryJournal(), iso_ms(point), poller())
    earliest = now - timedelta(days=1)
    assert job.check_window("table a", lambda: (earliest, next(looks)), 5.0) == (earliest, now)
    with pytest.raises(
        TargetError, match=r"table a: restore point .* is after the restorable window .* retry later"
    ):
        job.check_window("table a", lambda: (earliest, now - timedelta(minutes=5)), 0.01)
    with pytest.raises(TargetError, match="is before the restorable window"):
        job.check_window("table a", lambda: (point + timedelta(seconds=1), now), 0.01)


def test_set_completes_only_once_restorable(caplog: pytest.LogCaptureFixture) -> None:
    until = utc_now()
    looks = iter([until - timedelta(minutes=1), until + timedelta(seconds=1)])
    assert wait_until_restorable(poller(), "instance a", lambda: next(looks), until, 5.0) > until
    with pytest.raises(TargetError, match="the backup set is not complete") as caught:
        wait_until_restorable(poller(), "instance a", lambda: until - timedelta(minutes=1), until, 0.01)
    assert "\n" not in str(caught.value)


def test_polling_reports_progress_times_out_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="txbackup.targets.pitr.polling"),
        pytest.raises(WaitTimeout) as caught,
    ):
        poller(timeout_s=0.05, progress_s=0.0).wait("copy b", lambda: (False, "creating"))
    assert "timed out after 0.05s waiting for copy b (still creating)" in str(caught.value)
    assert "waiting for copy b: creating for" in caplog.text
    stopping = poller(timeout_s=5.0)
    threading.Timer(0.05, stopping.stop.set).start()
    with pytest.raises(Stopped):
        stopping.wait("copy c", lambda: (False, "creating"))


@pytest.mark.parametrize("kind", ["dynamodb", "cosmos", "rds", "azuredb"])
def test_point_in_time_kinds_import_one_way(kind: str) -> None:
    """target -> restore -> the cloud API, never back: a kind's restore and API modules
    import neither its target module nor each other the wrong way (the old cosmos circle)."""
    import ast

    import txbackup.targets

    folder = Path(txbackup.targets.__file__).parent / kind
    for module in ("restore", "aws", "azure", "arm"):
        path = folder / f"{module}.py"
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module is not None
        }
        assert f"txbackup.targets.{kind}.target" not in imported, path
        if module != "restore":
            assert f"txbackup.targets.{kind}.restore" not in imported, path


def test_the_cli_shows_wait_progress_without_verbose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any command run: the polling progress lines pass the default WARNING level."""
    from txbackup.cli import main

    logger = logging.getLogger("txbackup.targets.pitr.polling")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    main(["list", "--storage", str(tmp_path / "nothing-here")])
    assert logger.getEffectiveLevel() == logging.INFO
