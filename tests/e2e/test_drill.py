"""``txbackup drill`` end to end on ScalarDB-shaped SQLite stores: a set restored into drill
places, timed, audited, checked by SQL and by a command, cleaned up; a drill place equal
to production refused before anything happens; a failing check or command fails the drill
(exit 1) naming it, and the clean-up still runs."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.test_audit import ACCOUNTS, backup, make_bank
from tests.servers.processes import txbackup
from txbackup.demo.sample_service import SampleServer
from txbackup.jobs import JobStore

CHECKER = """\
import os, sys, time
paths = os.environ["TXBACKUP_DRILL_A_PATHS"].split(os.pathsep)
assert all(os.path.isfile(p) for p in paths), paths
assert os.environ["TXBACKUP_DRILL_SET"] and os.environ["TXBACKUP_DRILL_TARGETS"] == "a b c"
print("checked", len(paths), "file(s)")
print("x" * 10000)  # a chatty command: its output is kept bounded
time.sleep(float(os.environ.get("CHECKER_SLEEP", "0")))
sys.exit(int(os.environ.get("CHECKER_EXIT", "0")))
"""


def cluster(
    tmp: Path, live: Path, drill: Path, extra: str = "", places: dict[str, Path] | None = None
) -> Path:
    places = places or {name: drill / f"{name}.db" for name in ("a", "b", "c")}
    (tmp / "checker.py").write_text(CHECKER)
    text = '[applications]\nendpoints = ["127.0.0.1:1"]\n[storage]\npath = "store"\n'
    text += '[catalog]\npath = "catalog.db"\n'
    for name in ("a", "b", "c"):
        text += f'[[targets]]\nname = "{name}"\nkind = "sqlite"\npath = "{live / f"{name}.db"}"\n'
    text += f'[drill]\ncommand = ["{sys.executable}", "{tmp / "checker.py"}"]\ntimeout = "60s"\n'
    for name, path in places.items():
        text += f'[drill.targets.{name}]\npath = "{path}"\n'
    text += (
        '[[drill.checks]]\nname = "accounts-a"\ntarget = "a"\n'
        f'sql = \'SELECT count(*) FROM "bank_a$accounts"\'\nexpect = "{ACCOUNTS}"\n'
        '[[drill.checks]]\nname = "money-b"\ntarget = "b"\n'
        'sql = \'SELECT sum(balance) FROM "bank_b$accounts"\'\nexpect_nonzero = true\n'
    ) + extra
    config = tmp / "cluster.toml"
    config.write_text(text)
    return config


def digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def drill(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    result = txbackup("drill", "-c", str(config), "--json", *args, env=env)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


async def test_drill_restores_times_audits_checks_and_cleans_up(app: SampleServer, tmp_path: Path) -> None:
    live, places = tmp_path / "live", tmp_path / "drill"
    live.mkdir()
    bank, paths = make_bank(live)
    bank.close()
    first = await backup(app, paths, tmp_path)
    latest = await backup(app, paths, tmp_path)
    before = digest(paths)
    config = cluster(tmp_path, live, places)
    code, result, stderr = drill(config, "--latest")
    assert code == 0 and result["ok"], stderr
    assert result["set_id"] == latest and result["failures"] == []
    restore = result["restore"]
    assert set(restore["targets"]) == {"a", "b", "c"}
    for target in restore["targets"].values():
        assert target["kind"] == "sqlite" and 0 <= target["restore_seconds"] <= restore["total_seconds"]
    assert restore["verify_seconds"] is not None and restore["total_seconds"] > 0
    assert result["audit"]["clean"] and result["audit"]["records"] == 2 * ACCOUNTS + 2
    assert [(c["name"], c["passed"]) for c in result["checks"]] == [("accounts-a", True), ("money-b", True)]
    assert result["checks"][0]["answer"] == str(ACCOUNTS)
    command = result["command"]
    assert command["exit_code"] == 0 and command["output_truncated"] and len(command["output"]) == 4096
    assert result["cleanup"]["kept"] is False
    assert result["cleanup"]["targets"]["a"]["removed"] == [str(places / "a.db")]
    assert not places.exists() or not any(places.iterdir()), "the drill files are removed"
    assert digest(paths) == before, "production is never touched"
    # a person's run: --keep leaves the copy, which the next drill overwrites (force)
    result_h = txbackup("drill", "-c", str(config), first, "--keep")
    assert result_h.returncode == 0, result_h.stderr
    assert f"drill of set {first}: PASSED" in result_h.stdout and "cleanup: kept (--keep)" in result_h.stdout
    assert "a: restored into path=" in result_h.stdout and "audit: clean" in result_h.stdout
    assert (places / "a.db").is_file()
    code, result, stderr = drill(config, first)
    assert code == 0, stderr
    assert not (places / "a.db").exists()
    jobs = JobStore(str(tmp_path / "catalog.db")).list()
    assert len(jobs) == 3 and all(job.status == "complete" for job in jobs)


async def test_failing_check_and_command_fail_the_drill(app: SampleServer, tmp_path: Path) -> None:
    live, places = tmp_path / "live", tmp_path / "drill"
    live.mkdir()
    bank, paths = make_bank(live)
    bank.close()
    set_id = await backup(app, paths, tmp_path)
    extra = '[[drill.checks]]\nname = "too-many"\ntarget = "a"\nsql = "SELECT 20 + 1"\nexpect = "20"\n'
    config = cluster(tmp_path, live, places, extra)
    env = {**os.environ, "CHECKER_EXIT": "3"}
    metrics = tmp_path / "drill.prom"
    result = txbackup("drill", "-c", str(config), set_id, "--metrics-file", str(metrics), env=env)
    assert result.returncode == 1, result.stderr
    # the failed drill is what a weekly alert sees
    exit_code = [line for line in metrics.read_text().splitlines() if line.startswith("txbackup_last_run_ex")]
    assert exit_code == ['txbackup_last_run_exit_code{command="drill"} 1']
    lines = [line for line in result.stderr.splitlines() if "drill failed" in line]
    assert lines == [
        "txbackup: drill failed: step check, target a: check too-many: answered '21', expected '20'",
        f"txbackup: drill failed: step command: command {sys.executable} exited with 3: {'x' * 200}",
    ], result.stderr
    assert f"drill of set {set_id}: FAILED" in result.stdout and "check too-many: FAILED" in result.stdout
    assert not (places / "a.db").exists(), "a failed drill cleans up too"
    # a query that does not run names the check and its error
    extra = '[[drill.checks]]\nname = "typo"\ntarget = "c"\nsql = "SELECT * FROM nowhere"\n'
    code, answer, stderr = drill(cluster(tmp_path, live, places, extra), set_id)
    assert code == 1 and answer["checks"][-1]["passed"] is False
    assert "drill failed: step check, target c: check typo: no such table: nowhere" in stderr
    # a query and a command past the timeout are stopped, and named
    endless = (
        '[[drill.checks]]\nname = "endless"\ntarget = "c"\n'
        'sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"\n'
    )
    slow = cluster(tmp_path, live, places, endless)
    slow.write_text(slow.read_text().replace('timeout = "60s"', 'timeout = "1s"'))
    env = {**os.environ, "CHECKER_SLEEP": "30"}
    started = time.monotonic()
    code, answer, stderr = drill(slow, set_id, env=env)
    assert code == 1 and time.monotonic() - started < 25, stderr
    assert "drill failed: step check, target c: check endless: interrupted" in stderr, stderr
    assert f"drill failed: step command: command {sys.executable} timed out after 1 s" in stderr, stderr
    # a restore that fails names its target (no --resume hint: the drill cleans up)
    (tmp_path / "blocker").write_text("a file, not a folder")
    bad = {"a": places / "a.db", "b": tmp_path / "blocker" / "b.db", "c": places / "c.db"}
    code, answer, stderr = drill(cluster(tmp_path, live, places, places=bad), set_id)
    assert code == 1 and [f["step"] for f in answer["failures"]] == ["restore"], answer["failures"]
    assert answer["failures"][0]["target"] == "b" and "--resume" not in stderr
    assert f"drill failed: step restore, target b: restore of set {set_id}, target b into" in stderr
    assert answer["restore"]["targets"]["a"]["restore_seconds"] is not None
    assert answer["restore"]["targets"]["b"]["restore_seconds"] is None
    assert answer["cleanup"]["targets"]["a"]["removed"] == [str(places / "a.db")], "restored: removed"
    assert answer["audit"] is None and answer["checks"] == []


async def test_drill_place_equal_to_production_is_refused(app: SampleServer, tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    bank, paths = make_bank(live)
    bank.close()
    set_id = await backup(app, paths, tmp_path)
    before = digest(paths)
    drill_dir = tmp_path / "drill"
    for places, says in (
        ({"a": drill_dir / "a.db", "b": live / "b.db", "c": drill_dir / "c.db"}, "target b: the drill place"),
        # another target's production file, reached through another spelling of the path
        ({"a": live / ".." / "live" / "c.db", "b": drill_dir / "b.db", "c": drill_dir / "c.db"},
         "is target c's production place"),
        ({"a": drill_dir / "a.db", "b": drill_dir / "b.db"}, "target c has no drill place"),
        ({"a": drill_dir / "x.db", "b": drill_dir / "x.db", "c": drill_dir / "c.db"},
         "targets a and b have the same drill place"),
    ):  # fmt: skip
        config = cluster(tmp_path, live, drill_dir, places=places)
        result = txbackup("drill", "-c", str(config), set_id)
        assert result.returncode == 2 and says in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert digest(paths) == before and not drill_dir.exists()
    assert JobStore(str(tmp_path / "catalog.db")).list() == [], "refused before any restore job"
    # bad input: exit 2, one line
    config = cluster(tmp_path, live, drill_dir, extra='[[drill.checks]]\ntarget = "zz"\nsql = "SELECT 1"\n')
    result = txbackup("drill", "-c", str(config), set_id)
    assert result.returncode == 2 and "no target named 'zz'" in result.stderr, result.stderr
    config = cluster(tmp_path, live, drill_dir)
    for args, says in ((["--latest", set_id], "not both"), ([], "which set?")):
        result = txbackup("drill", "-c", str(config), *args)
        assert result.returncode == 2 and says in result.stderr, result.stderr
