"""backup / list / show / verify / restore / delete as a user runs them, on SQLite targets."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_engine import count, make_db
from tests.servers.processes import TXBACKUP, sample_server_process, txbackup


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    make_db(tmp_path / "a.db", 10)
    make_db(tmp_path / "b.db", 20_000)
    with sample_server_process("--lease", "4s") as (_, endpoint):
        config = tmp_path / "cluster.toml"
        config.write_text(
            f"""
[applications]
endpoints = ["{endpoint}"]

[storage]
path = "store"

[[targets]]
name = "a"
kind = "sqlite"
path = "{tmp_path / "a.db"}"

[[targets]]
name = "b"
kind = "sqlite"
path = "{tmp_path / "b.db"}"
"""
        )
        yield config, endpoint


def paused_state(endpoint: str) -> str:
    result = txbackup("status", "--endpoints", endpoint, "--json")
    return str(json.loads(result.stdout)[0]["state"])


def test_backup_list_show_verify_restore_delete(cluster: tuple[Path, str], tmp_path: Path) -> None:
    config, endpoint = cluster
    result = txbackup("backup", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    phases = [e["name"] for e in events if e["event"] == "phase"]
    assert phases == ["preflight", "pause", "capture", "unpaused", "export", "commit"]
    final = events[-1]
    assert final["event"] == "result" and final["restore_point"]
    set_id = final["set_id"]

    listing = json.loads(txbackup("list", "-c", str(config), "--json").stdout)
    assert [(r["set_id"], r["status"]) for r in listing] == [(set_id, "complete")]
    shown = txbackup("show", "-c", str(config), set_id)
    assert shown.returncode == 0 and "restore point" in shown.stdout
    verified = txbackup("verify", "-c", str(config), set_id)
    assert verified.returncode == 0 and "intact" in verified.stdout

    out = tmp_path / "out"
    out.mkdir()
    restored = txbackup(
        "restore", "-c", str(config), set_id, "--to", f"a={out / 'a.db'}", "--to", f"b={out / 'b.db'}"
    )
    assert restored.returncode == 0, restored.stderr
    assert count(out / "a.db") == 10 and count(out / "b.db") == 20_000

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
    set_id = json.loads(txbackup("backup", "-c", str(config), "--json").stdout.splitlines()[-1])["set_id"]
    victim = next((config.parent / "store" / "sets" / set_id / "b").iterdir())
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x55
    victim.write_bytes(bytes(data))
    result = txbackup("verify", "-c", str(config), set_id)
    assert result.returncode == 1 and victim.name in result.stderr


def test_wrong_config_is_one_line_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[targets]]\nname = "x"\nkind = "oracle"\n')
    result = txbackup("backup", "-c", str(bad))
    assert result.returncode == 2
    known = r"\(known: [a-z, ]*sqlite[a-z, ]*\)"
    expected = f"txbackup: cluster file {re.escape(str(bad))}: target \"x\": unknown kind 'oracle' {known}\n"
    assert re.fullmatch(expected, result.stderr)


@pytest.mark.parametrize("phase", ["capture", "export"])
def test_killed_backup_never_complete(cluster: tuple[Path, str], phase: str) -> None:
    """SIGKILL the backup when it reaches a phase: no set is ever listed complete."""
    config, endpoint = cluster
    proc = subprocess.Popen(
        [*TXBACKUP, "backup", "-c", str(config), "--json"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "phase" and event["name"] == phase:
            proc.send_signal(signal.SIGKILL)
            break
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


def test_sqlite_rollback_journal_refused_at_preflight(cluster: tuple[Path, str], tmp_path: Path) -> None:
    config, endpoint = cluster
    db = sqlite3.connect(tmp_path / "a.db")
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    result = txbackup("backup", "-c", str(config))
    assert result.returncode == 1 and "WAL" in result.stderr
    assert paused_state(endpoint) == "serving"


def test_sigterm_during_export_marks_failed_and_cleans_up(cluster: tuple[Path, str]) -> None:
    config, endpoint = cluster
    make_db(config.parent / "big.db", 1_000_000)
    text = config.read_text().replace('"b.db"', '"big.db"').replace(str(config.parent / "b.db"), "")
    config.write_text(text.replace('path = ""', f'path = "{config.parent / "big.db"}"'))
    proc = subprocess.Popen(
        [*TXBACKUP, "backup", "-c", str(config), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "phase" and event["name"] == "export":
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "interrupted" in err
    rows = json.loads(txbackup("list", "-c", str(config), "--json").stdout)
    assert [r["status"] for r in rows] == ["failed"]
    assert [p for p in (config.parent / "store").glob("sets/*/*/*") if not p.name.startswith(".")] == []
    assert paused_state(endpoint) == "serving"
