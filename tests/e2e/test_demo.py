"""``txbackup demo`` as a user runs it, and the bank it is built on (SQLite only)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers.processes import TXBACKUP, txbackup
from txbackup.demo.bank import books_of
from txbackup.demo.scenario import BankScenario
from txbackup.demo.stores import Ledger, sqlite_databases

pytestmark = pytest.mark.timeout(120)


def report_line(stdout: str, label: str) -> str:
    lines = [line for line in stdout.splitlines() if line.strip().startswith(label)]
    assert len(lines) == 1, stdout
    return lines[0]


def test_demo_books_balance_and_reruns_in_its_own_folder(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = txbackup("demo", "--dir", str(folder), "--seconds", "3", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"restored backup +books balance: total (\d+) = expected \1$", out, re.M), out
    assert re.search(r"pause window +\d+ ms, measured", out), out
    assert re.search(r"capture +\d+ ms", out) and re.search(r"export +\d+ ms", out), out
    transfers = int(re.search(r"transfers +(\d+) during the run", out).group(1))  # type: ignore[union-attr]
    assert transfers > 100, out
    # the naive copy is reported honestly, whatever it found
    assert re.search(r"restored naive +books (balance|BROKEN)", report_line(out, "restored naive")), out
    assert (folder / "live" / "bank_a.db").is_file()

    # a folder the demo made may be reused; --json answers in JSON on stdout only
    again = txbackup("demo", "--dir", str(folder), "--seconds", "2", "--json", timeout=90)
    assert again.returncode == 0, again.stdout + again.stderr
    data = json.loads(again.stdout)
    assert data["ok"] is True and data["books"]["txbackup"]["ok"] is True
    assert data["books"]["txbackup"]["total"] == data["books"]["txbackup"]["expected"] == 200 * 1000
    assert data["books"]["live"]["ok"] is True
    assert data["backup"]["pause"]["duration_ms"] >= 0 and data["transfers"]["ok"] > 0
    backup = data["backup"]
    print(
        f"\ndemo: {data['transfers']['ok']} transfers, pause window {backup['pause']['duration_ms']} ms, "
        f"capture {backup['capture_ms']} ms, export {backup['export_ms']} ms, "
        f"naive copy: {data['books']['naive']['half_applied']} transfers half applied"
    )


def test_demo_temporary_folder_is_removed() -> None:
    result = txbackup("demo", "--seconds", "1", "--clients", "2", "--json", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["folder_kept"] is False
    assert not Path(data["folder"]).exists()


def test_demo_refuses_a_non_empty_folder_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("do not touch\n")
    result = txbackup("demo", "--dir", str(tmp_path), "--seconds", "1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(tmp_path) in result.stderr and "not empty" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


@pytest.mark.parametrize("args", [["--seconds", "0"], ["--clients", "0"], ["--seconds", "x"]])
def test_demo_bad_input(args: list[str], tmp_path: Path) -> None:
    result = txbackup("demo", "--dir", str(tmp_path / "d"), *args)
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "d").exists()


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def test_sigint_stops_the_demo_and_its_service(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*TXBACKUP, "demo", "--dir", str(tmp_path / "d"), "--seconds", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"bank service on (127\.0\.0\.1):(\d+)", line)
        assert match, line
        host, port = match.group(1), int(match.group(2))
        assert port_open(host, port)
        time.sleep(1.0)  # the load is running
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 15
    assert "interrupted" in err and "nothing left paused" in err and "Traceback" not in err, err
    assert out == ""
    assert not port_open(host, port)


async def test_cancelled_during_the_pause_unpauses_and_stops(tmp_path: Path) -> None:
    """What Ctrl-C does inside the pause: the backup is cancelled, the bank unpaused,
    the load goes on until stopped, and the live books still balance."""
    scenario = BankScenario(sqlite_databases(tmp_path / "live"), tmp_path, clients=4)
    (tmp_path / "live").mkdir()
    await scenario.start()
    try:
        assert scenario.server is not None and scenario.load is not None
        gate = scenario.server.gate
        backup = asyncio.create_task(scenario.backup(min_pause_s=30))
        deadline = time.monotonic() + 10
        while not gate.paused:
            assert time.monotonic() < deadline, "never paused"
            await asyncio.sleep(0.01)
        backup.cancel()
        with pytest.raises(asyncio.CancelledError):
            await backup
        assert not gate.paused
        before = scenario.load.stats.ok
        await asyncio.sleep(0.3)
        assert scenario.load.stats.ok > before  # transfers flow again
    finally:
        stats = await scenario.stop()
    assert stats.failed == 0, stats.last_error
    assert scenario.server is None
    live = await scenario.live_books()
    assert live.ok, live.summary()
    assert live.transfers == stats.ok
    assert scenario.catalog.list()[0].status == "failed"


async def test_without_waiting_for_in_flight_transfers_a_backup_tears(tmp_path: Path) -> None:
    """The drain is what makes the pause work: pausing without waiting for the
    in-flight transfers captures some of them half applied, and the books say so."""
    # a wider gap between debit and credit than the demo's: more transfers in flight at capture
    scenario = BankScenario(sqlite_databases(tmp_path / "live"), tmp_path, clients=8, gap_ms=(5.0, 15.0))
    (tmp_path / "live").mkdir()
    await scenario.start()
    torn, whole = [], []
    try:
        await asyncio.sleep(0.3)
        for i in range(5):
            manifest = await scenario.backup(wait_outstanding=False)
            torn.append(await scenario.restore_backup(manifest, f"nodrain-{i}"))
            manifest = await scenario.backup()
            whole.append(await scenario.restore_backup(manifest, f"drain-{i}"))
    finally:
        await scenario.stop()
    print(f"\nwithout the drain: {sum(not b.ok for b in torn)} of {len(torn)} backups torn")
    assert any(not b.ok for b in torn), [b.summary() for b in torn]
    assert all(b.ok for b in whole), [b.summary() for b in whole]


def test_books_detect_a_half_applied_transfer() -> None:
    a = Ledger("a", accounts=2, balance=2000 - 5, transfers={"t1": -5})
    b_whole = Ledger("b", accounts=2, balance=2000 + 5, transfers={"t1": 5})
    b_missing = Ledger("b", accounts=2, balance=2000, transfers={})
    assert books_of([a, b_whole]).ok
    broken = books_of([a, b_missing])
    assert not broken.ok and broken.half_applied == ["t1"] and broken.total == 3995
    assert broken.summary() == "books BROKEN: total 3995 != expected 4000, 1 transfer half applied"
    # a database whose balances disagree with its own transfer rows
    lying = books_of([Ledger("a", 2, 2000, {"t1": -5}), b_whole])
    assert not lying.ok and lying.local_errors and not lying.half_applied
