"""txbackup forget / prune / unlock / delete from the command line, and the lock modes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.prune_support import blob_of, cassandra_set
from tests.unit.test_locks import dead_pid, here, plant
from txbackup.engine.manifest import list_set_ids
from txbackup.locks import BACKUP, EXCLUSIVE, SHARED, LockBusy, LockInfo, acquire, new_lock_id
from txbackup.owner import Owner, process_start
from txbackup.repository import layout
from txbackup.storage import LocalStorage
from txbackup.storage.base import list_names, save_bytes

SRC = str(Path(__file__).resolve().parents[2] / "src")


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    command = [sys.executable, "-m", "txbackup", args[0], "--storage", str(repo / "repo"),
               "--catalog", str(repo / "catalog.db"), *args[1:]]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(str(tmp_path / "repo"))


def daily_sets(storage: LocalStorage, tmp_path: Path, days: int = 5) -> list[str]:
    start = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    ids = []
    for day in range(days):
        set_id = f"202611{20 + day}T030000Z-{day:04x}"
        contents = [b"common", f"day{day}".encode()]
        cassandra_set(storage, tmp_path, set_id, start + timedelta(days=day), contents)
        ids.append(set_id)
    return ids


def test_forget_without_a_policy_refuses_in_one_line(tmp_path: Path, storage: LocalStorage) -> None:
    daily_sets(storage, tmp_path, 2)
    done = cli(tmp_path, "forget", "--dry-run")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "no keep option" in done.stderr
    bad = cli(tmp_path, "forget", "--keep-within", "3 fortnights")
    assert bad.returncode == 2 and "--keep-within" in bad.stderr and "Traceback" not in bad.stderr
    assert len(list_set_ids(storage)) == 2


def test_forget_dry_run_then_forget_and_prune(tmp_path: Path, storage: LocalStorage) -> None:
    ids = daily_sets(storage, tmp_path)
    dry = cli(tmp_path, "forget", "--keep-last", "2", "--keep-within", "3d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    # within 3d of the newest (day 4 03:00) is strictly after day 1 03:00, as in restic
    assert lines[0].startswith("keep 2 last, all within 3d of the newest: 3 of 5 sets kept")
    assert lines[1].split()[:2] == ["KEEP", ids[4]] and lines[1].endswith("within 3d, last")
    assert lines[3].split()[:2] == ["KEEP", ids[2]] and lines[3].endswith("within 3d")
    assert lines[4].split()[:2] == ["FORGET", ids[1]] and lines[5].split()[:2] == ["FORGET", ids[0]]
    assert len(list_set_ids(storage)) == 5  # a dry run changes nothing
    dry_prune = cli(tmp_path, "forget", "--keep-last", "2", "--dry-run", "--prune", "--grace", "0s", "--json")
    counted = json.loads(dry_prune.stdout)  # the blobs of the sets it would forget are counted as garbage
    assert (counted["dry_run"], counted["blobs_removed"], counted["forgotten"]) == (True, 3, ids[:3])
    assert len(list_set_ids(storage)) == 5 and len(list_names(storage, "cassandra/")) == 6

    done = cli(tmp_path, "forget", "--keep-last", "2", "--prune", "--grace", "0s", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["forgotten"] == ids[:3] and [s["action"] for s in answer["sets"]].count("keep") == 2
    assert answer["blobs_removed"] == 3 and answer["objects_removed"] == 3 and not answer["problems"]
    assert list_set_ids(storage) == ids[3:]
    assert blob_of(b"common") in list_names(storage, "cassandra/")
    assert blob_of(b"day0") not in list_names(storage, "cassandra/")
    assert "reading 2 manifests" in done.stderr  # progress lines on stderr


def test_prune_and_delete_from_the_command_line(tmp_path: Path, storage: LocalStorage) -> None:
    ids = daily_sets(storage, tmp_path, 2)
    deleted = cli(tmp_path, "delete", ids[0])
    assert deleted.returncode == 0 and f"deleted set {ids[0]}" in deleted.stdout
    assert list_set_ids(storage) == [ids[1]] and blob_of(b"day0") in list_names(storage, "cassandra/")
    young = cli(tmp_path, "prune")  # default grace: 24h
    assert young.returncode == 0 and "kept 2 referenced and 1 younger than the grace period" in young.stdout
    old = cli(tmp_path, "prune", "--grace", "0s", "--json")
    assert json.loads(old.stdout)["blobs_removed"] == 1
    assert blob_of(b"day0") not in list_names(storage, "cassandra/")


def test_prune_fails_naming_a_running_backup(tmp_path: Path, storage: LocalStorage) -> None:
    holder = asyncio.run(acquire(storage, "backup"))
    try:
        done = cli(tmp_path, "prune")
        assert done.returncode == 1 and "locked by txbackup backup" in done.stderr
        assert done.stderr.count("\n") == 1
        assert cli(tmp_path, "forget", "--keep-last", "1").returncode == 0  # shared: beside a backup
    finally:
        holder.release()


def test_unlock_breaks_a_stale_lock_never_a_live_one(tmp_path: Path, storage: LocalStorage) -> None:
    pid = dead_pid()
    stale = plant(storage, here(pid, process_start(os.getpid())))
    live = plant(storage, Owner.current())
    shown = cli(tmp_path, "unlock")
    assert f"live   {live.name}: txbackup backup, pid {os.getpid()}" in shown.stdout
    assert f"stale  {stale.name}" in shown.stdout and "gone" in shown.stdout.split(stale.name)[1]
    refused = cli(tmp_path, "unlock", live.lock_id)
    assert refused.returncode == 1 and "is live" in refused.stderr and str(os.getpid()) in refused.stderr
    removed = cli(tmp_path, "unlock", "--remove-stale", "--json")
    answer = json.loads(removed.stdout)
    assert [r["lock"] for r in answer["removed"]] == [stale.name]
    assert [r["lock"] for r in answer["live"]] == [live.name]
    assert list_names(storage, "locks/") == [live.name]


def test_prune_removes_the_stale_lock_of_a_dead_backup(tmp_path: Path, storage: LocalStorage) -> None:
    pid = dead_pid()
    stale = plant(storage, here(pid, process_start(os.getpid())))
    done = cli(tmp_path, "prune", "--json")
    assert done.returncode == 0, done.stderr
    [warning] = json.loads(done.stdout)["warnings"]
    assert warning.startswith(f"removing stale lock {stale.name} (txbackup backup, pid {pid} of ")
    assert list_names(storage, "locks/") == []


@pytest.mark.parametrize(
    ("first", "second", "together"),
    [
        (SHARED, SHARED, True),
        (SHARED, BACKUP, True),
        (BACKUP, BACKUP, False),
        (EXCLUSIVE, SHARED, False),
        (SHARED, EXCLUSIVE, False),
        (BACKUP, EXCLUSIVE, False),
    ],
)
async def test_lock_modes(storage: LocalStorage, first: str, second: str, together: bool) -> None:
    held = await acquire(storage, "prune" if first == EXCLUSIVE else "backup", mode=first)
    try:
        if together:
            other = await acquire(storage, "forget", mode=second)
            other.release()
        else:
            with pytest.raises(LockBusy):
                await acquire(storage, "forget", mode=second)
    finally:
        held.release()


async def test_a_lock_without_mode_is_a_backup_lock(storage: LocalStorage) -> None:
    """Locks of a txbackup that knew no modes keep excluding prune (and backups)."""
    info = LockInfo(new_lock_id(datetime.now(UTC)), "held", "backup", Owner.current(),
                    datetime.now(UTC), datetime.now(UTC))  # fmt: skip
    doc = json.loads(info.to_json())
    del doc["mode"]
    save_bytes(storage, info.name, json.dumps(doc).encode())
    with pytest.raises(LockBusy):
        await acquire(storage, "prune", mode=EXCLUSIVE)
    (await acquire(storage, "forget", mode=SHARED)).release()
    assert layout.parse_lock_path(info.name) == info.lock_id
