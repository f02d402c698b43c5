"""One writer at a time: an exclusive lock kept in the storage itself.

Two backups of one cluster must never overlap: the second one's pause would
end when the first one unpauses. Object stores have no exclusive create, so
the lock is made, like restic's, from plain saves and listings, in two steps:

1. save our lock ``locks/<id>.json`` (state ``pending``); the id starts with
   the time, so ids sort oldest first;
2. list ``locks/``. Another live ``held`` lock, or an older ``pending`` one:
   we lost; our lock is removed and we fail (or retry with ``wait``). Only
   newer ``pending`` locks: they will see ours and withdraw; we wait for them.
   No other live lock: we re-save ours as ``held`` and own the storage.

Why exactly one wins: of two locks, the one saved second is saved after the
first; so its owner's listing, which comes after its save, shows the first
lock. Hence two owners can never both list "nobody else" and both hold; and
an owner never waits on a lock newer than its own forever, since that lock's
owner sees the older lock and withdraws. Simultaneous writers are ordered by
their ids (time, then random), the same order for everybody.

Every lock has a **mode**, and only locks whose modes conflict take part in
the steps above (the argument holds pair by pair, since conflict is symmetric):

- ``backup`` (a backup, ``cleanup``; and every lock written before modes
  existed): conflicts with ``backup`` and ``exclusive`` (backups exclude each
  other, as the pause requires);
- ``shared`` (``forget``, ``delete``: they only take references away, which
  never harms a backup): conflicts with ``exclusive`` only;
- ``exclusive`` (``prune``): conflicts with every lock. A prune deletes blobs
  that no manifest references; a running backup may have uploaded (or decided
  to reuse) blobs its manifest will reference only at its commit, so prune
  must never run beside one (Medusa #363). An older txbackup, which knows no
  modes, treats every lock as conflicting: safe.

A held lock is refreshed (its heartbeat) every ``refresh_every`` seconds by a
thread. A lock is **stale**, and ignored (reported with its owner, then
removed) when its heartbeat is older than ``stale_after``, or when its owner
ran on this machine and that process is gone (pid no longer running, or
reused by another process: its start time differs). Everything read from
``locks/`` is untrusted: names and contents are validated, a malformed lock
is reported and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from txbackup import strictjson
from txbackup.clock import iso_ms, utc_now
from txbackup.errors import StorageError, TxbackupError
from txbackup.owner import Owner
from txbackup.repository import layout
from txbackup.storage.base import Storage, save_bytes

PREFIX = layout.LOCKS
STALE_AFTER_S = 300.0
"""A lock whose heartbeat is older than this is stale (its owner hung or died elsewhere)."""
REFRESH_EVERY_S = 30.0
"""How often a held lock's heartbeat is refreshed."""
SETTLE_S = 10.0
"""How long we wait for newer pending locks to withdraw before giving up."""
POLL_S = 0.2
MAX_LOCK_BYTES = 64 * 1024

PENDING = "pending"
HELD = "held"
SHARED = "shared"
BACKUP = "backup"
EXCLUSIVE = "exclusive"
MODES = (SHARED, BACKUP, EXCLUSIVE)
_CONFLICTS = {
    SHARED: frozenset({EXCLUSIVE}),
    BACKUP: frozenset({BACKUP, EXCLUSIVE}),
    EXCLUSIVE: frozenset(MODES),
}


def conflicts(mode: str, other: str) -> bool:
    """Whether a lock of ``mode`` and one of ``other`` may not be held together."""
    return other in _CONFLICTS[mode]
_COMMAND = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class LockBusy(TxbackupError):
    """The storage is locked by another live txbackup process."""


class LockLost(TxbackupError):
    """Our lock vanished or could not be refreshed: another process may now hold the storage."""


new_lock_id = layout.new_lock_id


@dataclass(frozen=True)
class LockInfo:
    """A lock as read from storage."""

    lock_id: str
    state: str
    command: str
    owner: Owner
    created_at: datetime
    heartbeat_at: datetime
    mode: str = BACKUP

    @property
    def name(self) -> str:
        return layout.lock_path(self.lock_id)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "lock_id": self.lock_id,
                "state": self.state,
                "command": self.command,
                "owner": self.owner.to_dict(),
                "created_at": iso_ms(self.created_at),
                "heartbeat_at": iso_ms(self.heartbeat_at),
                "mode": self.mode,
            }
        ).encode()

    @classmethod
    def parse(cls, lock_id: str, data: bytes) -> LockInfo:
        """Validate a lock read from storage; ValueError names the first bad field."""
        try:
            doc = strictjson.loads(data)
        except ValueError:
            raise ValueError("not JSON") from None
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("lock_id") != lock_id:
            raise ValueError("its lock_id does not match its name")
        state, command = doc.get("state"), doc.get("command")
        if state not in (PENDING, HELD):
            raise ValueError(f"unknown state {str(state)[:20]!r}")
        if not isinstance(command, str) or not _COMMAND.match(command):
            raise ValueError("bad command")
        mode = doc.get("mode", BACKUP)  # a lock of a txbackup without modes
        if mode not in MODES:
            raise ValueError(f"unknown mode {str(mode)[:20]!r}")
        return cls(
            lock_id, state, command, Owner.from_dict(doc.get("owner")),
            _time(doc.get("created_at")), _time(doc.get("heartbeat_at")), mode,
        )  # fmt: skip

    def age_s(self, now: datetime) -> float:
        """Seconds since the last heartbeat (0 if it is in our future: clocks differ)."""
        return max(0.0, (now - self.heartbeat_at).total_seconds())

    def describe(self, now: datetime | None = None) -> str:
        beat = f", heartbeat {self.age_s(now or utc_now()):.0f}s ago" if self.state == HELD else ""
        mode = "" if self.mode == BACKUP else f" ({self.mode} lock)"
        since = iso_ms(self.created_at)
        return f"txbackup {self.command}{mode}, {self.owner.describe()}, since {since}{beat}"


def _time(value: object) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("bad time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"bad time {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Found:
    """The locks in storage, sorted: live ones, stale ones (with why), unreadable names (with why)."""

    live: list[LockInfo]
    stale: list[tuple[LockInfo, str]]
    unreadable: list[tuple[str, str]]


def stale_reason(lock: LockInfo, now: datetime, stale_after: float = STALE_AFTER_S) -> str | None:
    gone = lock.owner.gone()
    if gone is not None:
        return gone
    if lock.age_s(now) > stale_after:
        return f"no heartbeat for {lock.age_s(now):.0f}s"
    if (lock.heartbeat_at - now).total_seconds() > stale_after:
        # a clock far ahead, or a planted lock: it would never age, and block every backup
        ahead = (lock.heartbeat_at - now).total_seconds()
        return f"heartbeat {ahead:.0f}s in the future (a clock that far ahead, or a planted lock)"
    return None


def read_locks(storage: Storage, stale_after: float = STALE_AFTER_S) -> Found:
    """Every lock in ``storage``, each judged live or stale."""
    now = utc_now()
    live, stale, unreadable = [], [], []
    for info in storage.iterate(PREFIX):
        name = info.name
        lock_id = layout.parse_lock_path(name)
        if lock_id is None:
            unreadable.append((name, "not a lock name"))
            continue
        try:
            if info.size > MAX_LOCK_BYTES:
                raise ValueError(f"{info.size} bytes, too large")
            with storage.open_read(name) as stream:
                lock = LockInfo.parse(lock_id, stream.read(MAX_LOCK_BYTES + 1))
        except StorageError:
            if storage.stat(name) is None:
                continue  # released between the listing and the read
            raise
        except ValueError as exc:
            unreadable.append((name, str(exc)))
            continue
        reason = stale_reason(lock, now, stale_after)
        if reason is None:
            live.append(lock)
        else:
            stale.append((lock, reason))
    return Found(live, stale, unreadable)


@dataclass(frozen=True)
class _Blocked:
    by: LockInfo


class StorageLock:
    """Our lock in ``storage``; see the module docstring for the protocol.

    ``attempt()`` makes one step and never sleeps (the caller waits, so a
    signal can interrupt it); ``acquire()`` drives it. Once held, a daemon
    thread refreshes the heartbeat; ``check()`` raises if the lock was lost.
    ``release()`` removes it; it is safe to call at any point, more than once.
    """

    def __init__(
        self,
        storage: Storage,
        command: str,
        *,
        mode: str = BACKUP,
        stale_after: float = STALE_AFTER_S,
        refresh_every: float = REFRESH_EVERY_S,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if not _COMMAND.match(command):
            raise ValueError(f"bad lock command {command!r}")
        if mode not in MODES:
            raise ValueError(f"bad lock mode {mode!r}")
        self.mode = mode
        self.storage = storage
        self.command = command
        self.stale_after = stale_after
        self.refresh_every = refresh_every
        self.warn = warn or (lambda message: None)
        self.owner = Owner.current()
        self.info: LockInfo | None = None
        self.held = False
        self._pending_since = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self._last_beat = 0.0
        self._reported: set[str] = set()

    @property
    def lock_id(self) -> str | None:
        return None if self.info is None else self.info.lock_id

    def _save(self, state: str) -> None:
        now = utc_now()
        if self.info is None:
            lock_id = new_lock_id(now)
            self.info = LockInfo(lock_id, state, self.command, self.owner, now, now, self.mode)
        else:
            self.info = LockInfo(
                self.info.lock_id, state, self.command, self.owner, self.info.created_at, now, self.mode
            )
        save_bytes(self.storage, self.info.name, self.info.to_json())

    def attempt(self) -> _Blocked | bool:
        """One step: True once held, False while waiting for newer locks to withdraw,
        ``_Blocked`` when another lock wins (ours is then withdrawn)."""
        if self.held:
            return True
        if self.info is None:
            try:
                self._save(PENDING)
            except StorageError as exc:
                raise StorageError(f"{exc} (is the storage writable?)") from None
            self._pending_since = time.monotonic()
        found = read_locks(self.storage, self.stale_after)
        self._report(found)
        others = [
            lock for lock in found.live if lock.lock_id != self.lock_id and conflicts(self.mode, lock.mode)
        ]
        winner = next((o for o in others if o.state == HELD), None)
        winner = winner or next((o for o in others if o.lock_id < (self.lock_id or "")), None)
        if winner is None and others and time.monotonic() - self._pending_since > SETTLE_S:
            winner = others[0]  # newer locks that never decide: their owners hang; yield to them
        if winner is not None:
            self.withdraw()
            return _Blocked(winner)
        if others:
            return False
        self._save(HELD)
        self.held = True
        self._last_beat = time.monotonic()
        self._thread = threading.Thread(target=self._heartbeat, name="txbackup-lock", daemon=True)
        self._thread.start()
        return True

    def _report(self, found: Found) -> None:
        """Warn once about each stale or unreadable lock; remove the stale ones."""
        for lock, reason in found.stale:
            if lock.lock_id not in self._reported:
                self._reported.add(lock.lock_id)
                self.warn(f"removing stale lock {lock.name} ({lock.describe()}): {reason}")
            with contextlib.suppress(StorageError):
                self.storage.remove(lock.name)
        for name, reason in found.unreadable:
            if name not in self._reported:
                self._reported.add(name)
                self.warn(f"ignoring malformed lock {name}: {reason} (txbackup cleanup removes it)")

    def withdraw(self) -> None:
        """Remove our lock (lost the race, or done); a next ``attempt`` starts afresh."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self.info is not None:
            name, self.info = self.info.name, None
            try:
                self.storage.remove(name)
            except StorageError as exc:
                self.warn(f"could not remove our lock {name} ({exc}); it goes stale by itself")
        self.held = False
        self._stop = threading.Event()

    release = withdraw

    def _heartbeat(self) -> None:
        stop = self._stop
        while not stop.wait(self.refresh_every):
            info = self.info
            if info is None:
                return
            try:
                if self.storage.stat(info.name) is None:
                    self._lost = f"lock {info.name} was removed by another process"
                    return
                self._save(HELD)
                self._last_beat = time.monotonic()
            except TxbackupError as exc:
                if time.monotonic() - self._last_beat > self.stale_after - self.refresh_every:
                    self._lost = f"lock {info.name} could not be refreshed: {exc}"
                    return

    def check(self) -> None:
        """Raise ``LockLost`` if another process may have taken the storage from us."""
        if not self.held:
            raise LockLost(f"storage {self.storage.describe()}: not locked by this process")
        if self._lost is None and time.monotonic() - self._last_beat > self.stale_after:
            self._lost = f"lock {self.lock_id} not refreshed for {self.stale_after:g}s"
        if self._lost is not None:
            raise LockLost(f"storage {self.storage.describe()}: {self._lost}")


async def acquire(
    storage: Storage,
    command: str,
    *,
    mode: str = BACKUP,
    wait_s: float = 0.0,
    poll_s: float = 1.0,
    warn: Callable[[str], None] | None = None,
    waiting: Callable[[LockInfo, float], None] | None = None,
    stale_after: float = STALE_AFTER_S,
    refresh_every: float = REFRESH_EVERY_S,
) -> StorageLock:
    """Lock ``storage`` for ``command``; if another process holds it, retry every
    ``poll_s`` for up to ``wait_s`` seconds (``waiting(lock, seconds_left)`` each
    time), then raise ``LockBusy`` naming the holder."""
    lock = StorageLock(
        storage, command, mode=mode, stale_after=stale_after, refresh_every=refresh_every, warn=warn
    )
    deadline = time.monotonic() + wait_s
    try:
        while True:
            outcome = lock.attempt()
            if outcome is True:
                return lock
            if outcome is False:
                await asyncio.sleep(POLL_S)
                continue
            assert isinstance(outcome, _Blocked)
            left = deadline - time.monotonic()
            if left <= 0:
                hint = "try again later" if wait_s else "try again later, or wait with --wait-lock DURATION"
                raise LockBusy(
                    f"storage {storage.describe()}: locked by {outcome.by.describe()}"
                    f" ({outcome.by.name}); {hint}"
                )
            if waiting is not None:
                waiting(outcome.by, left)
            await asyncio.sleep(min(poll_s, left))
    except BaseException:
        lock.release()
        raise


def break_stale(
    storage: Storage, lock_id: str | None = None, stale_after: float = STALE_AFTER_S
) -> list[tuple[LockInfo, str]]:
    """Remove the stale locks (only ``lock_id`` if given) and return them with why.
    A live lock is never removed: naming one raises ``LockBusy`` naming its owner
    (its heartbeat is fresh and its process is not known to be gone)."""
    found = read_locks(storage, stale_after)
    if lock_id is not None:
        name = layout.lock_path(lock_id)
        live = next((lock for lock in found.live if lock.lock_id == lock_id), None)
        if live is not None:
            raise LockBusy(f"lock {name} is live ({live.describe()}): not removed")
        if not any(lock.lock_id == lock_id for lock, _ in found.stale):
            raise TxbackupError(f"lock {name}: no such lock in storage {storage.describe()}")
    removed = []
    for lock, reason in found.stale:
        if lock_id is None or lock.lock_id == lock_id:
            storage.remove(lock.name)
            removed.append((lock, reason))
    return removed
