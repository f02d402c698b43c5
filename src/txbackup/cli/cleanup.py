"""txbackup cleanup: remove what killed backups left behind."""

from __future__ import annotations

import argparse
import asyncio
import sys

from txbackup.admin.fleet import cancel_on_signals
from txbackup.cli.common import add_json, add_repository_args, open_repository, print_json, run_async
from txbackup.durations import parse_duration
from txbackup.engine.cleanup import LEFTOVER_AGE_S, CleanupReport, clean
from txbackup.engine.threads import in_thread
from txbackup.errors import TxbackupError
from txbackup.locks import acquire

NAME = "cleanup"
HELP = "remove what killed backups left behind (running sets, partial files, local copies)"
DESCRIPTION = f"""\
A backup killed outright (SIGKILL, a crashed host) cannot clean up after
itself. This command, which every backup also runs before it pauses anything:

- marks "running" sets whose process is gone as failed (or complete, if their
  manifest was written just before), and removes their partial files;
- removes set folders without a manifest, and half-saved files
  (.txbackup-tmp-*) older than --min-age (default {LEFTOVER_AGE_S / 60:g}m);
- removes stale storage locks (no heartbeat for 5 minutes, or their process
  on this machine is gone) and malformed ones, naming their owner;
- removes the private temporary folders ($TMPDIR/txbackup-UID/run-*) of runs
  of this user on this machine whose process is gone: they may hold plaintext
  copies of database data.

It takes the storage lock, so it never runs beside a backup of the same
storage: if one is running it fails naming it (or waits with --wait-lock).

example: txbackup cleanup -c cluster.toml"""


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    parser.add_argument(
        "--min-age",
        metavar="DURATION",
        default=f"{LEFTOVER_AGE_S:g}s",
        help="leave half-saved files younger than this (default %(default)s)",
    )
    parser.add_argument(
        "--wait-lock",
        metavar="DURATION",
        default="0s",
        help="if a backup holds the storage lock, wait up to this long (default: fail at once)",
    )
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    min_age = parse_duration(args.min_age)
    wait = parse_duration(args.wait_lock)
    storage, catalog, _ = open_repository(args)
    warnings: list[str] = []

    async def main() -> CleanupReport:
        task = asyncio.current_task()
        assert task is not None
        with cancel_on_signals(task):
            lock = await acquire(storage, NAME, wait_s=wait, warn=warnings.append)
            try:
                return await in_thread(lambda: clean(storage, catalog, lock, min_age_s=min_age), NAME)
            finally:
                lock.release()

    report = run_async(main())
    warnings += catalog.problems
    if args.json:
        print_json(report.to_json() | {"warnings": warnings})
    else:
        for line in warnings:
            print(f"txbackup: warning: {line}", file=sys.stderr)
        for line in report.lines() or ["nothing to clean"]:
            print(line)
    if report.problems:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise TxbackupError(f"cleanup incomplete: {report.problems[0]}{more}")
    return 0
