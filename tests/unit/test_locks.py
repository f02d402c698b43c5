"""The storage lock: one holder, deterministic ties, stale locks recognised, heartbeat, loss."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from txbackup.clock import utc_now
from txbackup.errors import StorageError
from txbackup.locks import (
    HELD,
    PENDING,
    LockBusy,
    LockInfo,
    LockLost,
    StorageLock,
    _Blocked,
    acquire,
    new_lock_id,
    read_locks,
)
from txbackup.owner import Owner, process_start
from txbackup.storage import LocalStorage
from txbackup.storage.base import ObjectInfo, list_names, save_bytes


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(str(tmp_path / "store"))


def plant(storage: LocalStorage, owner: Owner, *, age_s: float = 0.0, state: str = HELD) -> LockInfo:
    """A lock written by someone else (``owner``), its heartbeat ``age_s`` old."""
    now = utc_now() - timedelta(seconds=age_s)
    info = LockInfo(new_lock_id(now), state, "backup", owner, now, now)
    save_bytes(storage, info.name, info.to_json())
    return info


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def test_acquire_writes_our_lock_and_release_removes_it(storage: LocalStorage) -> None:
    lock = await acquire(storage, "backup")
    [name] = list_names(storage, "locks/")
    with storage.open_read(name) as f:
        doc = json.load(f)
    assert doc["state"] == HELD and doc["command"] == "backup"
    assert doc["owner"]["pid"] == os.getpid() and doc["owner"]["started"] == process_start(os.getpid())
    lock.check()
    lock.release()
    lock.release()  # idempotent
    assert list_names(storage, "locks/") == []


async def test_a_live_lock_blocks_naming_its_owner(storage: LocalStorage) -> None:
    first = await acquire(storage, "backup")
    try:
        with pytest.raises(LockBusy) as info:
            await acquire(storage, "cleanup")
        message = str(info.value)
        assert f"storage {storage.root}: locked by txbackup backup, pid {os.getpid()}" in message
        assert "--wait-lock" in message and "\n" not in message
        assert list_names(storage, "locks/") == [first.info.name]  # type: ignore[union-attr]  # ours withdrawn
    finally:
        first.release()


async def test_wait_lock_waits_for_the_holder_then_takes_it(storage: LocalStorage) -> None:
    first = await acquire(storage, "backup")
    seen: list[float] = []
    threading.Timer(0.5, first.release).start()
    started = time.monotonic()
    second = await acquire(
        storage, "backup", wait_s=10, poll_s=0.1, waiting=lambda lock, left: seen.append(left)
    )
    assert 0.4 < time.monotonic() - started < 5 and seen
    second.release()


async def test_wait_lock_gives_up_at_its_deadline(storage: LocalStorage) -> None:
    first = await acquire(storage, "backup")
    try:
        started = time.monotonic()
        with pytest.raises(LockBusy, match=r"try again later$"):
            await acquire(storage, "backup", wait_s=0.5, poll_s=0.1)
        assert time.monotonic() - started < 3
    finally:
        first.release()


def here(pid: int, started: int | None) -> Owner:
    me = Owner.current()
    return Owner("bob", me.host, pid, started, me.machine)


@pytest.mark.parametrize(
    ("owner", "age", "why"),
    [
        (lambda: here(dead_pid(), None), 0, "is gone"),
        (lambda: here(os.getpid(), 1), 0, "another process"),  # our pid, another start time: reused
        (lambda: Owner("bob", "elsewhere", 4242, 7, "another-machine"), 400, "no heartbeat for 4"),
    ],
    ids=["dead-pid", "reused-pid", "old-heartbeat"],
)
async def test_stale_locks_are_reported_and_removed(
    storage: LocalStorage, owner: Any, age: int, why: str
) -> None:
    stale = plant(storage, owner(), age_s=age)
    warnings: list[str] = []
    lock = await acquire(storage, "backup", warn=warnings.append)
    assert list_names(storage, "locks/") == [lock.info.name]  # type: ignore[union-attr]
    [warning] = warnings
    assert stale.name in warning and "pid" in warning and why in warning
    lock.release()


async def test_a_remote_lock_with_a_fresh_heartbeat_blocks(storage: LocalStorage) -> None:
    plant(storage, Owner("bob", "elsewhere", 4242, 7, "another-machine"), age_s=60)
    with pytest.raises(LockBusy, match="locked by txbackup backup, pid 4242 of bob on elsewhere"):
        await acquire(storage, "backup")


def hostile(name_id: str, **changes: Any) -> bytes:
    me = Owner.current()
    doc = json.loads(LockInfo(name_id, HELD, "backup", me, utc_now(), utc_now()).to_json())
    for key, value in changes.items():
        if key.startswith("owner_"):
            doc["owner"][key.removeprefix("owner_")] = value
        else:
            doc[key] = value
    return json.dumps(doc).encode()


async def test_malformed_locks_are_ignored_with_a_warning(storage: LocalStorage) -> None:
    ids = [f"20261127T101500123Z-0000000{i}" for i in range(8)]
    bad = {
        "locks/evil.json": b"{}",
        f"locks/{ids[0]}.json": b"{not json",
        f"locks/{ids[1]}.json": b"[" * 100_000,  # deeper than any parser should go
        f"locks/{ids[2]}.json": b" " * 70_000 + b"{}",  # larger than any lock
        f"locks/{ids[3]}.json": hostile(ids[3], owner_pid=2**70),
        f"locks/{ids[4]}.json": hostile(ids[4], lock_id=ids[5]),
        f"locks/{ids[5]}.json": hostile(ids[5], command="rm -rf /"),
        f"locks/{ids[6]}.json": hostile(ids[6], state="mine"),
        f"locks/{ids[7]}.json": hostile(ids[7], heartbeat_at="yesterday"),
    }
    for name, data in bad.items():
        save_bytes(storage, name, data)
    warnings: list[str] = []
    lock = await acquire(storage, "backup", warn=warnings.append)
    assert len(warnings) == len(bad) and all("malformed lock" in w and "\n" not in w for w in warnings)
    lock.release()


async def test_a_heartbeat_far_in_the_future_does_not_block_for_ever(storage: LocalStorage) -> None:
    future = utc_now() + timedelta(days=365)
    owner = Owner("mallory", "elsewhere", 4242, 7, "another-machine")
    planted = LockInfo(new_lock_id(utc_now()), HELD, "backup", owner, future, future)
    save_bytes(storage, planted.name, planted.to_json())
    warnings: list[str] = []
    lock = await acquire(storage, "backup", warn=warnings.append)
    assert len(warnings) == 1 and "in the future" in warnings[0]
    lock.release()


def test_simultaneous_writers_exactly_one_wins(storage: LocalStorage) -> None:
    """Every writer saves its pending lock before anybody lists: the oldest id wins, alone."""
    writers = 5
    barrier = threading.Barrier(writers)
    listed: set[str] = set()

    class Racing(LocalStorage):
        def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
            me = threading.current_thread().name
            if prefix == "locks/" and me.startswith("racer") and me not in listed:
                listed.add(me)
                barrier.wait(timeout=10)  # everybody has saved before anybody lists
            return super().iterate(prefix)

    racing = Racing(storage.root)
    results: dict[int, object] = {}

    def race(i: int) -> None:
        try:
            results[i] = asyncio.run(acquire(racing, "backup"))
        except LockBusy as exc:
            results[i] = exc

    threads = [threading.Thread(target=race, args=(i,), name=f"racer-{i}") for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [r for r in results.values() if isinstance(r, StorageLock)]
    assert len(results) == writers and len(winners) == 1
    assert [n for n in list_names(storage, "locks/")] == [winners[0].info.name]  # type: ignore[union-attr]
    winners[0].release()


def test_an_older_pending_lock_yields_to_a_held_one(storage: LocalStorage) -> None:
    """B listed before A's (older) lock was visible, and took the storage: A must not take it too."""
    a = StorageLock(storage, "backup")
    old = utc_now() - timedelta(seconds=1)
    a.info = LockInfo(new_lock_id(old), PENDING, "backup", a.owner, old, old)  # A chose its id first...
    b = StorageLock(storage, "backup")
    assert b.attempt() is True  # ...but B saved and listed before A's save landed
    a._save(PENDING)
    a._pending_since = time.monotonic()
    outcome = a.attempt()
    assert isinstance(outcome, _Blocked) and outcome.by.lock_id == b.lock_id
    assert list_names(storage, "locks/") == [b.info.name]  # type: ignore[union-attr]
    b.release()


def test_a_newer_pending_lock_withdraws_and_the_older_one_waits_for_it(storage: LocalStorage) -> None:
    a, b = StorageLock(storage, "backup"), StorageLock(storage, "backup")
    a._save(PENDING)
    a._pending_since = time.monotonic()
    time.sleep(0.002)
    b._save(PENDING)
    b._pending_since = time.monotonic()
    assert a.attempt() is False  # B is newer and pending: wait for it to decide
    outcome = b.attempt()
    assert isinstance(outcome, _Blocked) and outcome.by.lock_id == a.lock_id  # B sees older A: withdraws
    assert a.attempt() is True
    a.release()


def test_heartbeat_refreshes_and_a_removed_lock_is_lost(storage: LocalStorage) -> None:
    lock = StorageLock(storage, "backup", refresh_every=0.05)
    assert lock.attempt() is True
    first = read_locks(storage).live[0].heartbeat_at
    time.sleep(0.3)
    assert read_locks(storage).live[0].heartbeat_at > first
    name = lock.info.name  # type: ignore[union-attr]
    # as another process removing it as stale. The heartbeat's stat-then-save has a
    # window: a remove landing between them is undone by the save, so remove again
    # until the heartbeat sees it gone (a real stale-breaker removes a lock only after
    # STALE_AFTER_S without a heartbeat, never while one beats every 50 ms)
    deadline = time.monotonic() + 5
    while lock._lost is None and time.monotonic() < deadline:
        if storage.stat(name) is not None:
            storage.remove(name)
        time.sleep(0.1)
    with pytest.raises(LockLost, match="was removed by another process"):
        lock.check()
    lock.release()


async def test_unwritable_storage_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    storage = LocalStorage(str(tmp_path / "file" / "store"))
    with pytest.raises(StorageError) as info:
        await acquire(storage, "backup")
    assert str(tmp_path / "file" / "store") in str(info.value) and "writable" in str(info.value)
    assert "\n" not in str(info.value)
