"""txbackup forget: apply a retention policy (restic's keep rules) to the complete sets."""

from __future__ import annotations

import argparse
import asyncio
import sys

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
from txbackup.cli.prune import add_grace, add_wait_lock, finish, lock_args, say, targets_of
from txbackup.cli.runmetrics import Run, add_metrics_arg, run_recorded
from txbackup.durations import MAX_DURATION_S
from txbackup.engine import retention
from txbackup.engine.manifest import list_manifests
from txbackup.engine.prune import Report, forget_all, policy_items, prune
from txbackup.engine.threads import in_thread
from txbackup.errors import UsageError
from txbackup.locks import EXCLUSIVE, SHARED, acquire

NAME = "forget"
HELP = "forget the complete sets a retention policy does not keep (--keep-last, --keep-daily...)"
DESCRIPTION = """\
Keep the sets a policy names and forget the others, with restic's rules: sets
are judged by their restore point (UTC), newest first; --keep-last N keeps the
N newest; --keep-hourly/daily/weekly/monthly/yearly N keep the newest set of
each of the N newest hours (days, ISO weeks, months, years) that have one (and
the oldest set, while a rule has counts left); --keep-within D keeps every set
newer than the newest set minus D (30d, 2w, 12h, 1y6m: m is months, as in
restic). A count may be "unlimited". A set any rule keeps is kept. Only complete
sets count; incomplete leftovers are cleanup's and prune's.

Forgetting a set removes its manifest (so it stops existing), its own files,
its catalog row, and what it owns outside the repository (DynamoDB on-demand
backups: give --config so their target is known; what fails is remembered in
trash/<set>.json and retried by every prune). Shared Cassandra blobs are
removed by prune (--prune runs it right after). A set under S3 Object Lock
retention is kept and reported. With no keep option at all it refuses: an
omitted flag must never forget everything.

example: txbackup forget -c cluster.toml --keep-daily 7 --keep-weekly 5 --dry-run"""

KEEPS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    add_key_args(parser)
    for keep in KEEPS:
        parser.add_argument(
            f"--keep-{keep}", metavar="N", type=_count, default=0,
            help=("keep the N newest sets" if keep == "last"
                  else f"keep the newest set of the N newest {keep} buckets") + " (a number or unlimited)",
        )  # fmt: skip
    parser.add_argument(
        "--keep-within", metavar="DURATION", type=_within, default=retention.Within(),
        help="keep every set newer than the newest set minus DURATION (30d, 2w, 12h, 1y6m)",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="only show what would be kept and forgotten")
    parser.add_argument("--prune", action="store_true", help="then run prune (under an exclusive lock)")
    add_grace(parser)
    add_wait_lock(parser)
    add_metrics_arg(parser)
    add_json(parser)


def _count(text: str) -> int:
    try:
        return retention.parse_count(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _within(text: str) -> retention.Within:
    try:
        return retention.parse_within(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    return run_recorded(NAME, args, _run)  # metrics of every outcome, when configured


def _run(args: argparse.Namespace, metrics: Run) -> int:
    counts = {keep: getattr(args, f"keep_{keep}") for keep in KEEPS}
    policy = retention.Policy(**counts, within=args.keep_within)
    if policy.empty:
        raise UsageError("forget: no keep option given (e.g. --keep-last 7): refusing to forget every set")
    grace = flag_duration(args.grace, "--grace", maximum=366 * 86400.0)
    wait = flag_duration(args.wait_lock, "--wait-lock", maximum=MAX_DURATION_S)
    storage, catalog, config = open_repository(args)
    if config is not None:
        metrics.configure(config.metrics)
    keyring = open_keyring(args, storage)  # an encrypted repository's manifests need it
    targets = targets_of(config)
    report = Report(dry_run=args.dry_run)
    warnings: list[str] = []
    mode = EXCLUSIVE if args.prune and not args.dry_run else SHARED

    async def main() -> list[retention.Decision]:
        task = asyncio.current_task()
        assert task is not None
        with cancel_on_signals(task):
            lock = await acquire(storage, NAME, mode=mode, wait_s=wait, **lock_args(warnings))
            try:
                def work() -> list[retention.Decision]:
                    manifests = list_manifests(storage, keyring=keyring)
                    decisions = retention.apply(policy_items(manifests), policy)
                    going = {d.set_id for d in decisions if not d.keep}
                    forget_all(storage, catalog, [m for m in manifests if m.set_id in going], targets,
                               report, say(args), keyring)  # fmt: skip
                    if args.prune:
                        prune(storage, lock, targets, grace_s=grace, dry_run=args.dry_run, say=say(args),
                              report=report, gone=going, keyring=keyring)  # fmt: skip
                    return decisions

                return await in_thread(work, NAME)
            finally:
                lock.release()

    decisions = run_async(main())
    rows = [
        {"set_id": d.set_id, "time": d.time.isoformat().replace("+00:00", "Z"),
         "action": "keep" if d.keep else "forget", "reasons": list(d.reasons)}
        for d in decisions
    ]  # fmt: skip
    if args.json:
        print_json({"policy": policy.describe(), "sets": rows} | report.to_json() | {"warnings": warnings})
    else:
        for line in warnings:
            print(f"txbackup: warning: {line}", file=sys.stderr)
        print(f"{policy.describe()}: {sum(d.keep for d in decisions)} of {len(decisions)} sets kept")
        for row in rows:
            action = str(row["action"]).upper()
            print(f"{action:<6}  {row['set_id']}  {row['time']}  {', '.join(row['reasons'])}".rstrip())
        lines = report.lines()
        print("\n".join(lines if args.prune else lines[:-1]))
    return finish(report, NAME)
