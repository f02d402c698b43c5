"""backup / list / show / verify / restore / delete as a user runs them, on SQLite targets."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.support import (
    backup_set_id,
    check_backup_events,
    restore_sqlite,
    sqlite_targets,
    verify_intact,
    write_cluster,
)
from tests.integration.test_engine import count, make_db
from tests.servers.processes import TXBACKUP, sample_server_process, txbackup


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    make_db(tmp_path / "a.db", 10)
    make_db(tmp_path / "b.db", 20_000)
    with sample_server_process("--lease", "4s") as (_, endpoint):
        config = write_cluster(
            tmp_path / "cluster.toml", endpoint, 'path = "store"', sqlite_targets(tmp_path, "a", "b")
        )
        yield config, endpoint


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The backup processes' environment: their own TMPDIR, so their local copies can be checked."""
    (tmp_path / "tmp").mkdir()
    return os.environ | {"TMPDIR": str(tmp_path / "tmp")}


def hold_pause(config: Path, seconds: float) -> None:
    """Make every backup of ``config`` hold the pause this long (as if capture were slow)."""
    config.write_text(config.read_text() + f'\n[backup]\nmin_pause = "{seconds}s"\n')


def assert_no_debris(config: Path, env: dict[str, str]) -> None:
    """No partial set, half-saved file, lock or local copy left; the applications serve."""
    store = config.parent / "store"
    left = [p for p in store.rglob("*") if p.is_file() and not p.name.startswith("catalog.db")]
    assert left == []
    assert list(Path(env["TMPDIR"]).glob("txbackup-*/run-*")) == []


def start_backup(config: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TXBACKUP, "backup", "-c", str(config), "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_phase(proc: subprocess.Popen[str], phase: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "phase" and event["name"] == phase:
            return
    raise AssertionError(f"backup ended before phase {phase}: {proc.wait()}")


def paused_state(endpoint: str) -> str:
    result = txbackup("status", "--endpoints", endpoint, "--json")
    return str(json.loads(result.stdout)[0]["state"])


def test_backup_list_show_verify_restore_delete(cluster: tuple[Path, str], tmp_path: Path) -> None:
    config, endpoint = cluster
    result = txbackup("backup", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    set_id = check_backup_events(result.stdout)["set_id"]

    listing = json.loads(txbackup("list", "-c", str(config), "--json").stdout)
    assert [(r["set_id"], r["status"]) for r in listing] == [(set_id, "complete")]
    shown = txbackup("show", "-c", str(config), set_id)
    assert shown.returncode == 0 and "restore point" in shown.stdout
    verify_intact(config, set_id)

    out = tmp_path / "out"
    restore_sqlite(config, set_id, out, ["a", "b"])
    assert count(out / "a.db") == 10 and count(out / "b.db") == 20_000
    catalog = tmp_path / "store" / "catalog.db"
    assert stat.S_IMODE(catalog.stat().st_mode) == 0o600  # history is private, whatever the umask

    again = txbackup("restore", "-c", str(config), set_id, "--target", "a", "--to", f"a={out / 'a.db'}")
    error = [line for line in again.stderr.splitlines() if line.startswith("txbackup:")]
    assert again.returncode == 1 and len(error) == 1 and "not empty" in error[0]

    # the catalog can be rebuilt from storage alone
    (tmp_path / "store" / "catalog.db").unlink()
    rebuilt = json.loads(txbackup("list", "-c", str(config), "--rebuild", "--json").stdout)
    assert [(r["set_id"], r["status"]) for r in rebuilt] == [(set_id, "complete")]

    deleted = txbackup("delete", "-c", str(config), set_id)
    assert deleted.returncode == 0
    assert json.loads(txbackup("list", "-c", str(config), "--json").stdout) == []
    assert paused_state(endpoint) == "serving"


def test_corrupt_artifact_named_by_verify(cluster: tuple[Path, str]) -> None:
    config, _ = cluster
    set_id = backup_set_id(config)
    victim = next((config.parent / "store" / "sets" / set_id / "b").iterdir())
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x55
    victim.write_bytes(bytes(data))
    # same size: plain verify (no data read) cannot see it on a folder; --read-data does
    assert txbackup("verify", "-c", str(config), set_id).returncode == 0
    result = txbackup("verify", "-c", str(config), set_id, "--read-data")
    assert result.returncode == 1 and victim.name in result.stderr


def test_wrong_config_is_one_line_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[targets]]\nname = "x"\nkind = "oracle"\n')
    result = txbackup("backup", "-c", str(bad))
    assert result.returncode == 2
    known = r"\(known: [a-z, -]*sqlite[a-z, -]*\)"
    expected = f"txbackup: cluster file {re.escape(str(bad))}: target \"x\": unknown kind 'oracle' {known}\n"
    assert re.fullmatch(expected, result.stderr)


@pytest.mark.parametrize("phase", ["capture", "export"])
def test_killed_backup_never_complete_and_cleanup_leaves_nothing(
    cluster: tuple[Path, str], env: dict[str, str], phase: str
) -> None:
    """SIGKILL the backup when it reaches a phase: no set is ever listed complete, and
    txbackup cleanup then removes everything the killed run left."""
    config, endpoint = cluster
    proc = start_backup(config, env)
    wait_for_phase(proc, phase)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = json.loads(txbackup("list", "-c", str(config), "--json").stdout)
    assert [r["status"] for r in rows] == ["running"]  # never "complete"
    manifests = list((config.parent / "store").glob("sets/*/manifest.json"))
    assert manifests == []
    # a pause held by the killed process ends by the servers' lease at the latest
    deadline = time.monotonic() + 15
    while paused_state(endpoint) != "serving":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    cleaned = txbackup("cleanup", "-c", str(config), "--min-age", "0s", "--json", env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    report = json.loads(cleaned.stdout)
    [failed] = report["sets_failed"]
    assert failed["set_id"] == rows[0]["set_id"] and f"pid {proc.pid}" in failed["reason"]
    [row] = json.loads(txbackup("list", "-c", str(config), "--json").stdout)
    assert row["status"] == "failed" and row["error"].startswith("abandoned: its backup (pid")
    assert_no_debris(config, env)


def test_the_next_backup_cleans_up_after_a_killed_one(cluster: tuple[Path, str], env: dict[str, str]) -> None:
    config, _ = cluster
    proc = start_backup(config, env)
    wait_for_phase(proc, "export")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = txbackup("backup", "-c", str(config), "--json", env=env)
    assert result.returncode == 0, result.stderr
    warnings = [json.loads(line) for line in result.stdout.splitlines()]
    assert any("marked failed" in w.get("message", "") for w in warnings)
    rows = json.loads(txbackup("list", "-c", str(config), "--json").stdout)
    assert [r["status"] for r in rows] == ["failed", "complete"]
    assert list(Path(env["TMPDIR"]).glob("txbackup-*/run-*")) == []


def test_two_backups_at_once_never_overlap(cluster: tuple[Path, str], env: dict[str, str]) -> None:
    """While one backup holds the pause, a second one fails naming it, and a third one
    with --wait-lock waits: its pause window starts after the first one's ends."""
    config, endpoint = cluster
    hold_pause(config, 3)
    first = start_backup(config, env)
    wait_for_phase(first, "capture")
    waiting = start_backup(config, env, "--wait-lock", "60s")
    refused = txbackup("backup", "-c", str(config), env=env)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("txbackup:")]
    assert refused.returncode == 1 and len(errors) == 1 and "Traceback" not in refused.stderr
    assert f"locked by txbackup backup, pid {first.pid}" in refused.stderr and "--wait-lock" in refused.stderr
    results = []
    for proc in (first, waiting):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1])["pause"])
    assert results[0]["ended_at"] < results[1]["started_at"]
    rows = json.loads(txbackup("list", "-c", str(config), "--json").stdout)
    assert [r["status"] for r in rows] == ["complete", "complete"]
    assert paused_state(endpoint) == "serving"


def test_sqlite_rollback_journal_refused_at_preflight(cluster: tuple[Path, str], tmp_path: Path) -> None:
    config, endpoint = cluster
    db = sqlite3.connect(tmp_path / "a.db")
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    result = txbackup("backup", "-c", str(config))
    assert result.returncode == 1 and "WAL" in result.stderr
    assert paused_state(endpoint) == "serving"


@pytest.mark.parametrize(
    ("sig", "code", "phase"),
    [
        (signal.SIGINT, 130, "capture"),
        (signal.SIGTERM, 143, "capture"),
        (signal.SIGINT, 130, "export"),
        (signal.SIGTERM, 143, "export"),
    ],
)
def test_signal_mid_run_unpauses_fails_the_set_and_leaves_nothing(
    cluster: tuple[Path, str], env: dict[str, str], sig: signal.Signals, code: int, phase: str
) -> None:
    config, endpoint = cluster
    if phase == "capture":
        hold_pause(config, 2)  # the signal lands inside the pause window
    else:
        make_db(config.parent / "big.db", 1_000_000)  # the signal lands during the export
        text = config.read_text()
        config.write_text(text.replace(str(config.parent / "b.db"), str(config.parent / "big.db")))
    proc = start_backup(config, env)
    wait_for_phase(proc, phase)
    if phase == "capture":
        assert paused_state(endpoint) == "paused"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code and f"interrupted by {sig.name}" in err, err
    assert "Traceback" not in err
    assert paused_state(endpoint) == "serving"
    [row] = json.loads(txbackup("list", "-c", str(config), "--json").stdout)
    assert row["status"] == "failed" and row["error"] == f"interrupted by {sig.name}"
    assert_no_debris(config, env)


def test_corrupt_catalog_is_one_line_and_list_rebuild_recovers(cluster: tuple[Path, str]) -> None:
    config, _ = cluster
    set_id = backup_set_id(config)
    catalog = config.parent / "store" / "catalog.db"
    catalog.write_bytes(b"this is not a database" * 200)
    for args in (["list"], ["backup"], ["show", set_id]):
        result = txbackup(*args, "-c", str(config))
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"txbackup: catalog {catalog}: ")
        assert "list --rebuild" in result.stderr
    rebuilt = txbackup("list", "-c", str(config), "--rebuild", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert [(r["set_id"], r["status"]) for r in json.loads(rebuilt.stdout)] == [(set_id, "complete")]
    [aside] = config.parent.glob("store/catalog.db.corrupt-*")
    assert aside.read_bytes() == b"this is not a database" * 200 and "moved aside" in rebuilt.stderr


def test_cleanup_help_and_nothing_to_clean(cluster: tuple[Path, str]) -> None:
    config, _ = cluster
    assert "cleanup" in txbackup("--help").stdout
    helped = txbackup("cleanup", "--help")
    assert helped.returncode == 0 and "--wait-lock" in helped.stdout and "--min-age" in helped.stdout
    result = txbackup("cleanup", "-c", str(config))
    assert result.returncode == 0 and result.stdout == "nothing to clean\n", result.stderr


def test_a_malformed_catalog_row_is_a_warning_not_a_traceback(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    db = sqlite3.connect(store / "catalog.db")
    db.execute(
        "CREATE TABLE sets (set_id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at TEXT NOT NULL,"
        " finished_at TEXT, targets_json TEXT NOT NULL DEFAULT '[]', error TEXT, manifest_path TEXT,"
        " restore_point TEXT)"
    )
    db.execute(
        "INSERT INTO sets (set_id, status, created_at)"
        " VALUES ('20261127T101500Z-aaaa', 'failed', 'x')"
    )
    db.execute(
        "INSERT INTO sets (set_id, status, created_at, targets_json)"
        " VALUES ('20261127T101500Z-bbbb', 'failed', 'x', '{oops')"
    )
    db.commit()
    db.close()
    result = txbackup("list", "--storage", str(store), "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert [r["set_id"] for r in json.loads(result.stdout)] == ["20261127T101500Z-aaaa"]
    [warning] = result.stderr.splitlines()
    assert warning.startswith("txbackup: warning: catalog ") and "20261127T101500Z-bbbb" in warning
