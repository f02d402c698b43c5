"""txbackup prune: remove what no set uses any more (under an exclusive lock)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping
from typing import Any

from txbackup.admin.fleet import cancel_on_signals
from txbackup.cli.common import (
    add_json,
    add_key_args,
    add_repository_args,
    flag_duration,
    open_keyring,
    open_repository,
    print_json,
    run_async,
)
from txbackup.cli.runmetrics import Run, add_metrics_arg, run_recorded
from txbackup.config import ClusterConfig
from txbackup.durations import MAX_DURATION_S, format_duration
from txbackup.engine.prune import GRACE_S, Report, prune
from txbackup.engine.threads import in_thread
from txbackup.errors import TxbackupError
from txbackup.locks import EXCLUSIVE, SHARED, LockInfo, acquire
from txbackup.targets.base import Target

NAME = "prune"
HELP = "remove unreferenced Cassandra blobs, manifest-less set folders, and what forgotten sets own outside"
DESCRIPTION = f"""\
Garbage collection, under an exclusive storage lock (it fails naming the
holder if a backup, forget or cleanup runs; --wait-lock waits):

- retries deleting what forgotten sets own outside the repository (DynamoDB
  on-demand backups remembered in trash/<set>.json; give --config);
- removes set folders without a manifest older than --grace;
- removes content-addressed Cassandra blobs that no manifest references, once
  older than --grace (default {format_duration(GRACE_S)}). The lock keeps backups out; the grace
  also protects blobs a backup uploaded but has not committed when its lock was
  broken by hand. No blob is removed unless every set's file lists could be read.

Objects under S3 Object Lock retention are kept and reported. Stale locks (dead
process, no heartbeat) are removed with their owner named; see txbackup unlock.

example: txbackup prune -c cluster.toml --dry-run"""


def add_grace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grace", metavar="DURATION", default=format_duration(GRACE_S),
        help="leave unreferenced objects younger than this (default %(default)s;"
        " longer than any backup's upload)",
    )  # fmt: skip


def add_wait_lock(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait-lock", metavar="DURATION", default="0s",
        help="if another process holds a conflicting lock, wait up to this long (default: fail at once)",
    )  # fmt: skip


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    add_key_args(parser)
    add_grace(parser)
    parser.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    add_wait_lock(parser)
    add_metrics_arg(parser)
    add_json(parser)


def targets_of(config: ClusterConfig | None) -> Mapping[str, Target]:
    return {} if config is None else {t.name: t for t in config.targets}


def lock_args(warnings: list[str]) -> dict[str, Any]:
    def waiting(holder: LockInfo, left: float) -> None:
        print(f"txbackup: waiting up to {left:.0f}s for the lock of {holder.describe()}", file=sys.stderr)

    return {"warn": warnings.append, "waiting": waiting}


def say(args: argparse.Namespace) -> Callable[[str], None]:
    """Progress lines (stderr: stdout is the answer)."""
    return lambda line: print(f"txbackup: {line}", file=sys.stderr, flush=True)


def finish(report: Report, command: str) -> int:
    """Exit code: problems, or what forgotten sets still own outside, make it 1."""
    if report.problems:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise TxbackupError(f"{command} incomplete: {report.problems[0]}{more}")
    if report.pending and not report.dry_run:
        set_id, target, why = report.pending[0]
        raise TxbackupError(
            f"{command}: set {set_id}, target {target}: not yet deleted outside the repository: {why}"
            " (remembered; the next prune retries)"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    return run_recorded(NAME, args, _run)  # metrics of every outcome, when configured


def _run(args: argparse.Namespace, metrics: Run) -> int:
    grace = flag_duration(args.grace, "--grace", maximum=366 * 86400.0)
    wait = flag_duration(args.wait_lock, "--wait-lock", maximum=MAX_DURATION_S)
    storage, _, config = open_repository(args)
    if config is not None:
        metrics.configure(config.metrics)
    keyring = open_keyring(args, storage)  # an encrypted repository's manifests need it
    targets = targets_of(config)
    warnings: list[str] = []

    async def main() -> Report:
        task = asyncio.current_task()
        assert task is not None
        with cancel_on_signals(task):
            mode = SHARED if args.dry_run else EXCLUSIVE
            lock = await acquire(storage, NAME, mode=mode, wait_s=wait, **lock_args(warnings))
            try:
                return await in_thread(
                    lambda: prune(
                        storage, lock, targets, grace_s=grace, dry_run=args.dry_run, say=say(args),
                        keyring=keyring,
                    ),
                    NAME,
                )
            finally:
                lock.release()

    report = run_async(main())
    if args.json:
        print_json(report.to_json() | {"warnings": warnings})
    else:
        for line in warnings:
            print(f"txbackup: warning: {line}", file=sys.stderr)
        for line in report.lines():
            print(line)
    return finish(report, NAME)
