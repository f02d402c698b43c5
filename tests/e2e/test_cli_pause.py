"""txbackup pause / unpause / status, run as processes against sample-server processes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.servers.processes import TXBACKUP, sample_server_process, txbackup


@pytest.fixture(scope="module")
def two_servers() -> Iterator[str]:
    with sample_server_process("--lease", "3s") as (_, a), sample_server_process("--lease", "3s") as (_, b):
        yield f"{a},{b}"


def states(endpoints: str) -> list[str]:
    result = txbackup("status", "--endpoints", endpoints, "--json")
    return [row["state"] for row in json.loads(result.stdout)]


def dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_help_lists_commands() -> None:
    out = txbackup("--help").stdout
    for command in ("pause", "unpause", "status", "sample-server"):
        assert command in out


def test_pause_hold_json(two_servers: str) -> None:
    result = txbackup("pause", "--endpoints", two_servers, "--hold", "300ms", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert sorted(data["endpoints"]) == sorted(two_servers.split(","))
    assert 290 <= data["duration_ms"] < 3000
    assert data["started_at"] < data["restore_point"] < data["ended_at"]
    assert states(two_servers) == ["serving", "serving"]


def test_pause_text_output(two_servers: str) -> None:
    result = txbackup("pause", "-a", two_servers)
    assert result.returncode == 0, result.stderr
    assert "restore point" in result.stdout


def test_unreachable_endpoint_one_line_error_and_nothing_left_paused(two_servers: str) -> None:
    dead = dead_endpoint()
    result = txbackup("pause", "--endpoints", f"{two_servers},{dead}", "--hold", "5s")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and dead in result.stderr and "connection refused" in result.stderr
    assert states(two_servers) == ["serving", "serving"]


def test_malformed_endpoint_usage_error() -> None:
    result = txbackup("pause", "--endpoints", "localhost")
    assert result.returncode == 2
    expected = "txbackup: --endpoints: malformed endpoint 'localhost': expected host:port"
    assert result.stderr.strip() == expected


def test_status_exit_code_with_unreachable(two_servers: str) -> None:
    result = txbackup("status", "--endpoints", f"{two_servers},{dead_endpoint()}")
    assert result.returncode == 1
    assert "serving" in result.stdout and "connection refused" in result.stdout


def _pause_in_background(endpoints: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*TXBACKUP, "pause", "--endpoints", endpoints, "--hold", "60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while states(endpoints) != ["paused", "paused"]:
        assert time.monotonic() < deadline, "pause did not take effect"
        time.sleep(0.05)
    return proc


def test_sigterm_during_hold_unpauses_at_once(two_servers: str) -> None:
    proc = _pause_in_background(two_servers)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143 and "interrupted by SIGTERM" in err
    assert states(two_servers) == ["serving", "serving"]


def test_sigkill_during_hold_servers_unpause_on_lease(two_servers: str) -> None:
    proc = _pause_in_background(two_servers)
    killed_at = time.monotonic()
    proc.kill()
    proc.wait()
    assert states(two_servers) == ["paused", "paused"]  # nobody unpaused them...
    while states(two_servers) != ["serving", "serving"]:  # ...but the lease (3 s) does
        assert time.monotonic() - killed_at < 8, "the lease did not unpause the servers"
        time.sleep(0.1)
    assert time.monotonic() - killed_at >= 1.0


def test_unpause_command(two_servers: str) -> None:
    proc = _pause_in_background(two_servers)
    result = txbackup("unpause", "--endpoints", two_servers)
    assert result.returncode == 0, result.stderr
    assert states(two_servers) == ["serving", "serving"]
    proc.kill()
    proc.wait()
