"""txbackup restore: bring every target of a backup set back to its consistent point."""

from __future__ import annotations

import argparse
import re
from urllib.parse import urlsplit

from txbackup.cli.common import add_config, add_json, print_json, print_table
from txbackup.config import load_cluster
from txbackup.engine.manifest import read_manifest
from txbackup.engine.progress import HumanReporter, JsonReporter
from txbackup.engine.restore import RestorePlan, restore_set
from txbackup.errors import UsageError
from txbackup.jobs import COMPLETE, JobStore
from txbackup.storage import open_storage

NAME = "restore"
HELP = "restore a backup set (all targets, or some) into empty databases"
DESCRIPTION = """\
Read the set's manifest, re-read every artifact of the chosen targets against
its SHA-256 (a corrupt set is refused, naming the file, before anything is
written), then restore each target into its database from the cluster file, or
into the destination given with --to NAME=DSN (a libpq URL for postgres, a
mysql://user@host:port/db URL for mysql, a file path for sqlite). Passwords
never go in --to: they come from the target's password_env/password_file.

A destination that already holds tables is refused unless --force.

Each restore is a job recorded in the catalog: if it is interrupted, run
`txbackup restore -c FILE --resume JOB` to continue from its last completed
step. `--jobs` lists the jobs.

examples:
  txbackup restore -c cluster.toml 20261127T101500Z-3f9a
  txbackup restore -c cluster.toml 20261127T101500Z-3f9a --target ledger \\
      --to ledger=postgresql://restore@10.0.0.9:5432/ledger_copy
  txbackup restore -c cluster.toml --resume restore-20261127T120000Z-0a1b2c"""


def register(parser: argparse.ArgumentParser) -> None:
    add_config(parser, required=True)
    parser.add_argument("set_id", metavar="ID", nargs="?", help="the backup set (see txbackup list)")
    parser.add_argument(
        "--target", action="append", default=[], metavar="NAME", help="restore only this target (repeatable)"
    )
    parser.add_argument(
        "--to", action="append", default=[], metavar="NAME=DSN", help="restore target NAME into DSN instead"
    )
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty destination")
    parser.add_argument("--resume", metavar="JOB", help="continue an interrupted restore job")
    parser.add_argument("--jobs", action="store_true", help="list the restore jobs and exit")
    add_json(parser)


_KV_PASSWORD = re.compile(r"(^|\s)password\s*=", re.IGNORECASE)


def parse_destinations(items: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items:
        name, sep, dsn = item.partition("=")
        if not sep or not name or not dsn:
            raise UsageError(f"--to {item!r}: expected NAME=DSN")
        if ("://" in dsn and urlsplit(dsn).password) or _KV_PASSWORD.search(dsn):
            raise UsageError(
                f"--to {name}=...: the DSN holds a password; restore jobs are recorded, so give "
                "the password through the target's password_env/password_file instead"
            )
        found[name] = dsn
    return found


def run(args: argparse.Namespace) -> int:
    config = load_cluster(args.config)
    jobs = JobStore(config.catalog)
    if args.jobs:
        rows = jobs.list()
        if args.json:
            print_json([row.__dict__ for row in rows])
        else:
            print_table(["JOB", "SET", "STATUS", "UPDATED", "ERROR"],
                        [[r.job_id, r.set_id, r.status, r.updated_at, r.error] for r in rows])  # fmt: skip
        return 0
    if args.resume:
        if args.set_id or args.target or args.to:
            raise UsageError("--resume JOB takes no set id, --target or --to: the job has them")
        job = jobs.get(args.resume)
        if job.status == COMPLETE:
            raise UsageError(f"restore job {job.job_id} is already complete")
        set_id, only = job.set_id, job.params["only"]
        destinations, force = job.params["destinations"], job.params["force"]
    elif args.set_id:
        set_id, only, destinations, force = args.set_id, args.target, parse_destinations(args.to), args.force
    else:
        raise UsageError("which set? give a set id (see txbackup list) or --resume JOB")
    storage = open_storage(config.storage)
    plan = RestorePlan(
        storage=storage,
        manifest=read_manifest(storage, set_id),
        targets=config.targets,
        jobs=jobs,
        only=only,
        destinations=destinations,
        force=force,
        job_id=args.resume,
        reporter=JsonReporter() if args.json else HumanReporter(),
    )
    job_id, restored = restore_set(plan)
    if args.json:
        plan.reporter.event("result", set_id=set_id, job_id=job_id, restored=restored)
    else:
        point = plan.manifest.restore_point
        print(f"restored set {set_id} (restore point {point}): {', '.join(restored)}  [job {job_id}]")
    return 0
