"""Metrics of real runs: `txbackup backup` as a CronJob runs it, pushed to a real Pushgateway
(Debian's prometheus-pushgateway) and written as a node-exporter textfile."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e.support import sqlite_targets, write_cluster
from tests.integration.test_engine import make_db
from tests.servers import pushgateway as pushgateway_server
from tests.servers.daemon import free_port
from tests.servers.processes import sample_server_process, txbackup
from tests.servers.pushgateway import Pushgateway, parse_samples
from txbackup.metrics import Family as MetricFamily
from txbackup.metrics import MetricsError, push, render

HOSTILE = 'we"ird\\name}\nfake 1'


@pytest.fixture(scope="module")
def gateway() -> Iterator[Pushgateway]:
    require(pushgateway_server.missing_reason())
    with Pushgateway() as server:
        yield server


def by_target(samples: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    return {labels["target"]: value for labels, value in samples}


def _labels(job: str, command: str) -> dict[str, str]:
    return {"job": job, "command": command, "instance": ""}


def test_push_put_then_post_keeps_what_the_post_leaves_out(gateway: Pushgateway) -> None:
    job = "unit-put-post"
    first = render(
        [
            MetricFamily("txbackup_last_success_timestamp_seconds", "t").add(100, command="x"),
            MetricFamily("txbackup_target_bytes", "b").add(1, target=HOSTILE, kind="sqlite"),
        ]
    )
    push(gateway.url, job, [("command", "x")], first, replace=True)
    second = render([MetricFamily("txbackup_target_bytes", "b").add(2, target="other", kind="sqlite")])
    push(gateway.url, job, [("command", "x")], second, replace=False)
    # the gateway parsed our escaping back to the very name
    assert gateway.samples("txbackup_target_bytes", job) == [
        (_labels(job, "x") | {"target": "other", "kind": "sqlite"}, 2.0)
    ]
    assert gateway.samples("txbackup_last_success_timestamp_seconds", job) == [(_labels(job, "x"), 100.0)]
    push(gateway.url, job, [("command", "x")], first, replace=True)
    assert gateway.samples("txbackup_target_bytes", job) == [
        (_labels(job, "x") | {"target": HOSTILE, "kind": "sqlite"}, 1.0)
    ]
    assert gateway.samples("fake", job) == []


def test_push_failures_are_one_line_metrics_errors(gateway: Pushgateway) -> None:
    with pytest.raises(MetricsError, match=r"HTTP 400") as caught:
        push(gateway.url, "bad", [], "this is { not the text format\n", replace=True)
    assert "\n" not in str(caught.value)
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsError, match="refused"):
        push(dead, "job", [], "a 1\n", replace=True, timeout=5)


@pytest.fixture
def cluster(tmp_path: Path, gateway: Pushgateway) -> Iterator[tuple[Path, str]]:
    make_db(tmp_path / "a.db", 10)
    make_db(tmp_path / "b.db", 500)
    with sample_server_process("--lease", "4s") as (_, endpoint):
        job = f"e2e-{tmp_path.name}"[:100]
        metrics = f'\n[metrics]\npushgateway = "{gateway.url}"\njob = "{job}"\ntextfile = "node/m.prom"\n'
        (tmp_path / "node").mkdir()
        rest = sqlite_targets(tmp_path, "a", "b") + metrics
        config = write_cluster(tmp_path / "cluster.toml", endpoint, 'path = "store"', rest)
        yield config, job


def test_backup_success_then_failure_as_a_cronjob_alert_sees_it(
    cluster: tuple[Path, str], gateway: Pushgateway, tmp_path: Path
) -> None:
    config, job = cluster
    textfile = tmp_path / "node" / "m.prom"
    ok = txbackup("backup", "-c", str(config), "--json")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout.splitlines()[-1])
    labels = _labels(job, "backup")

    def backup_samples(name: str) -> list[tuple[dict[str, str], float]]:
        return [s for s in gateway.samples(name, job) if s[0]["command"] == "backup"]

    assert gateway.samples("txbackup_last_run_exit_code", job) == [(labels, 0.0)]
    [(_, success_at)] = gateway.samples("txbackup_last_success_timestamp_seconds", job)
    pause_s = result["timings"]["pause_ms"] / 1000
    assert gateway.samples("txbackup_backup_pause_seconds", job) == [(labels, pause_s)]
    stored = sum(t["stored_bytes"] for t in result["targets"].values())
    assert gateway.samples("txbackup_backup_stored_bytes", job) == [(labels, float(stored))]
    per_target = by_target(gateway.samples("txbackup_target_bytes", job))
    assert per_target == {n: float(t["bytes"]) for n, t in result["targets"].items()}
    assert by_target(gateway.samples("txbackup_target_success", job)) == {"a": 1.0, "b": 1.0}
    text = textfile.read_text()
    assert parse_samples(text, "txbackup_last_success_timestamp_seconds") == [
        ({"command": "backup"}, success_at)
    ]

    # verify has its own file beside the backup's, and its own group in the gateway
    verified = txbackup("verify", "-c", str(config), result["set_id"])
    assert verified.returncode == 0, verified.stderr
    own = parse_samples((tmp_path / "node" / "m-verify.prom").read_text(), "txbackup_last_run_exit_code")
    assert own == [({"command": "verify"}, 0.0)]
    kept = parse_samples(textfile.read_text(), "txbackup_last_run_exit_code")
    assert kept == [({"command": "backup"}, 0.0)]
    assert gateway.samples("txbackup_last_run_success", job) == [
        (labels, 1.0), (_labels(job, "verify"), 1.0)
    ]

    # target b's database is gone: preflight fails, exit 1, nothing paused
    (tmp_path / "b.db").unlink()
    failed = txbackup("backup", "-c", str(config), "--json")
    assert failed.returncode == 1
    assert backup_samples("txbackup_last_run_exit_code") == [(labels, 1.0)]
    assert backup_samples("txbackup_last_run_success") == [(labels, 0.0)]
    # the alert "no success for 26h" still sees the earlier success, in both places
    assert backup_samples("txbackup_last_success_timestamp_seconds") == [(labels, success_at)]
    text = textfile.read_text()
    backup = {"command": "backup"}
    assert parse_samples(text, "txbackup_last_success_timestamp_seconds") == [(backup, success_at)]
    assert parse_samples(text, "txbackup_last_run_exit_code") == [(backup, 1.0)]
    assert by_target(parse_samples(text, "txbackup_target_success")) == {"a": 0.0, "b": 0.0}


def test_bad_input_is_exit_2_in_the_metrics_file(tmp_path: Path) -> None:
    textfile = tmp_path / "m.prom"
    missing = str(tmp_path / "missing.toml")
    result = txbackup("backup", "-c", missing, "--metrics-file", str(textfile))
    assert result.returncode == 2
    exit_code = parse_samples(textfile.read_text(), "txbackup_last_run_exit_code")
    assert exit_code == [({"command": "backup"}, 2.0)]
    wrong = txbackup("backup", "-c", missing, "--metrics-file", str(tmp_path / "m.txt"))
    assert wrong.returncode == 2 and "only *.prom" in wrong.stderr and len(wrong.stderr.splitlines()) == 1


def test_an_unreachable_pushgateway_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    make_db(tmp_path / "a.db", 3)
    with sample_server_process() as (_, endpoint):
        dead = f"http://127.0.0.1:{free_port()}"
        metrics = f'\n[metrics]\npushgateway = "{dead}"\ntimeout = "3s"\n'
        rest = sqlite_targets(tmp_path, "a") + metrics
        config = write_cluster(tmp_path / "c.toml", endpoint, 'path = "store"', rest)
        result = txbackup("backup", "-c", str(config))
        as_json = txbackup("backup", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    assert "warning: metrics not pushed: pushgateway " in result.stderr
    assert "backup set" in result.stdout
    assert as_json.returncode == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert events[-1]["event"] == "result"  # the warning comes before the result, as every event
    [warning] = [e for e in events if e["event"] == "warning"]
    assert warning["message"].startswith("metrics not pushed: pushgateway http://127.0.0.1:")
