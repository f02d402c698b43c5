"""txbackup unlock: show the storage locks with their owners; remove stale ones."""

from __future__ import annotations

import argparse

from txbackup.cli.common import add_json, add_repository_args, open_repository, print_json
from txbackup.clock import utc_now
from txbackup.locks import LockInfo, break_stale, read_locks

NAME = "unlock"
HELP = "show the storage locks and their owners; remove stale ones (never a live one)"
DESCRIPTION = """\
Lists every lock in the storage with its owner (command, mode, pid, user,
host, heartbeat) and whether it is live or stale. A lock is stale when its
heartbeat is older than 5 minutes, or its owner ran on this machine and that
process is gone. --remove-stale removes every stale lock; naming a LOCK_ID
removes that one if it is stale and refuses (exit 1, naming its owner) if it
is live. Backups, cleanup and prune also remove stale locks they meet.

example: txbackup unlock -c cluster.toml --remove-stale"""


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    parser.add_argument("lock_id", metavar="LOCK_ID", nargs="?", help="remove this lock if it is stale")
    parser.add_argument("--remove-stale", action="store_true", help="remove every stale lock")
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    storage, _, _ = open_repository(args)
    removed = []
    if args.lock_id is not None or args.remove_stale:
        removed = break_stale(storage, args.lock_id)
    found = read_locks(storage)
    now = utc_now()
    if args.json:
        def entry(lock: LockInfo, reason: str | None = None) -> dict[str, str]:
            found = {"lock": lock.name, "mode": lock.mode, "owner": lock.describe(now)}
            return found if reason is None else found | {"reason": reason}

        print_json(
            {
                "removed": [entry(lock, r) for lock, r in removed],
                "live": [entry(lock) for lock in found.live],
                "stale": [entry(lock, r) for lock, r in found.stale],
                "malformed": [{"lock": n, "reason": r} for n, r in found.unreadable],
            }
        )
        return 0
    lines = [
        *(f"removed stale lock {lock.name} ({lock.describe(now)}): {r}" for lock, r in removed),
        *(f"live   {lock.name}: {lock.describe(now)}" for lock in found.live),
        *(f"stale  {lock.name}: {lock.describe(now)}: {r}" for lock, r in found.stale),
        *(f"malformed {n}: {r} (txbackup cleanup removes it)" for n, r in found.unreadable),
    ]
    print("\n".join(lines or ["no locks"]))
    return 0
