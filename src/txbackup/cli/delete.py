"""txbackup delete: remove one backup set (the path forget takes)."""

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
    set_id_arg,
)
from txbackup.cli.prune import add_wait_lock, finish, lock_args, targets_of
from txbackup.durations import MAX_DURATION_S
from txbackup.engine.immutable import refuse_retained
from txbackup.engine.manifest import read_manifest
from txbackup.engine.prune import Report, forget_set
from txbackup.engine.threads import in_thread
from txbackup.errors import TxbackupError
from txbackup.locks import SHARED, acquire
from txbackup.repository.layout import manifest_path, set_prefix

NAME = "delete"
HELP = "delete a backup set from storage and the catalog"
DESCRIPTION = """\
Delete a set as forget does: its manifest first (so an interrupted delete never
leaves a set that looks complete), then its artifacts, then its catalog row,
then what it owns outside the repository (DynamoDB on-demand backups: give
--config so the target is known; a failure is remembered in trash/<set>.json
and retried by prune). Shared Cassandra blobs are left to prune. A set under
S3 Object Lock retention is refused, naming the date. A set without a
manifest (a partial one) has its folder and catalog row removed."""


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    add_key_args(parser)
    parser.add_argument("set_id", metavar="ID", type=set_id_arg)
    add_wait_lock(parser)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    storage, catalog, config = open_repository(args)
    keyring = open_keyring(args, storage)  # an encrypted repository's manifest needs it
    if catalog.get(args.set_id) is None and next(storage.iterate(set_prefix(args.set_id)), None) is None:
        raise TxbackupError(f"set {args.set_id}: no such backup set")
    wait = flag_duration(args.wait_lock, "--wait-lock", maximum=MAX_DURATION_S)
    report = Report()
    warnings: list[str] = []

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        with cancel_on_signals(task):
            lock = await acquire(storage, NAME, mode=SHARED, wait_s=wait, **lock_args(warnings))
            try:
                await in_thread(work, NAME)
            finally:
                lock.release()

    def work() -> None:
        refuse_retained(storage, args.set_id)  # under S3 Object Lock: refused whole, before any remove
        if storage.stat(manifest_path(args.set_id)) is None:
            storage.remove_prefix(set_prefix(args.set_id))  # partial: nothing outside is recorded
            catalog.delete(args.set_id)
            report.forgotten.append(args.set_id)
            return
        manifest = read_manifest(storage, args.set_id, keyring=keyring)
        forget_set(storage, catalog, manifest, targets_of(config), report, keyring)

    run_async(main())
    for line in warnings:
        print(f"txbackup: warning: {line}", file=sys.stderr)
    if report.retained:
        what, until = report.retained[0]
        if args.set_id not in report.forgotten:
            raise TxbackupError(f"{what}: kept: retained until {until} (S3 Object Lock)")
    if args.json:
        print_json({"deleted": args.set_id} | report.to_json())
    else:
        print(f"deleted set {args.set_id}")
        for line in report.lines()[:-1]:
            print(line)
    return finish(report, NAME)
