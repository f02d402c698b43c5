"""The pause window as people and machines read it (issue 13, part 4): epoch ms, ISO-8601
with offset in --time-zone, on pause, backup and show; manifests carry the ms."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.support import check_backup_events, sqlite_targets, write_cluster
from tests.integration.test_engine import make_db
from tests.servers.processes import sample_server_process, txbackup
from txbackup.engine.manifest import read_manifest
from txbackup.storage import open_storage


def ms_of(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with sample_server_process("--lease", "3s") as (_, address):
        yield address


def test_pause_json_has_ms_and_local_times(endpoint: str) -> None:
    result = txbackup("pause", "-a", endpoint, "--hold", "200ms", "--time-zone", "Asia/Tokyo", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["time_zone"] == "Asia/Tokyo"
    for name in ("started_at", "ended_at", "restore_point"):
        assert data[name].endswith("Z")
        assert data[f"{name}_ms"] == ms_of(data[name])
        local = data[f"{name}_local"]
        assert local.endswith("+09:00") and ms_of(local) == data[f"{name}_ms"]
    assert data["started_at_ms"] < data["restore_point_ms"] < data["ended_at_ms"]
    assert data["ended_at_ms"] - data["started_at_ms"] == data["duration_ms"] >= 200


def test_pause_default_zone_is_utc(endpoint: str) -> None:
    data = json.loads(txbackup("pause", "-a", endpoint, "--json").stdout)
    assert data["time_zone"] == "UTC" and data["started_at_local"].endswith("+00:00")


def test_pause_human_output_in_a_zone(endpoint: str) -> None:
    result = txbackup("pause", "-a", endpoint, "--time-zone", "America/New_York")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("(America/New_York)" in line and ("-05:00" in line or "-04:00" in line) for line in lines)
    assert any("(ms since epoch)" in line for line in lines)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "Europe/", ""])
def test_bad_zone_is_one_line_exit_2_and_nothing_paused(endpoint: str, zone: str) -> None:
    result = txbackup("pause", "-a", endpoint, "--hold", "5s", "--time-zone", zone)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not an IANA time zone name" in result.stderr
    status = json.loads(txbackup("status", "-a", endpoint, "--json").stdout)
    assert status[0]["state"] == "serving"


def test_backup_and_show_render_the_window_and_the_manifest_carries_ms(tmp_path: Path) -> None:
    make_db(tmp_path / "a.db", 10)
    with sample_server_process("--lease", "4s") as (_, address):
        targets = sqlite_targets(tmp_path, "a")
        config = write_cluster(tmp_path / "cluster.toml", address, 'path = "store"', targets)
        bad = txbackup("backup", "-c", str(config), "--time-zone", "Nowhere/Land")
        assert bad.returncode == 2 and "not an IANA time zone name" in bad.stderr
        result = txbackup("backup", "-c", str(config), "--json", "--time-zone", "Europe/Paris")
        assert result.returncode == 0, result.stderr
    final = check_backup_events(result.stdout)
    set_id, pause = final["set_id"], final["pause"]
    assert pause["time_zone"] == "Europe/Paris"
    assert pause["midpoint_ms"] == ms_of(pause["midpoint"]) == ms_of(pause["midpoint_local"])
    assert pause["midpoint_local"][-6:] in ("+01:00", "+02:00")

    manifest = read_manifest(open_storage(str(tmp_path / "store")), set_id)
    assert manifest.pause.started_at_ms == pause["started_at_ms"]
    assert manifest.pause.ended_at_ms == pause["ended_at_ms"]

    show = ["show", "-c", str(config), set_id, "--time-zone", "Asia/Kolkata"]
    shown = json.loads(txbackup(*show, "--json").stdout)
    assert shown["pause"]["midpoint_ms"] == pause["midpoint_ms"]
    assert shown["pause_local"]["midpoint_local"].endswith("+05:30")
    human = txbackup(*show).stdout
    assert "+05:30" in human and f"{pause['midpoint_ms']} ms" in human
