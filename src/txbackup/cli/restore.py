"""txbackup restore: bring every target of a backup set back to its consistent point."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from txbackup.cli.common import (
    add_config,
    add_json,
    add_key_args,
    open_checked,
    open_keyring,
    print_json,
    print_table,
    set_id_arg,
)
from txbackup.config import ClusterConfig, load_cluster
from txbackup.engine.manifest import read_manifest
from txbackup.engine.progress import HumanReporter, JsonReporter
from txbackup.engine.restore import RestorePlan, restore_set
from txbackup.errors import StorageError, UsageError
from txbackup.jobs import COMPLETE, JobRow, JobStore
from txbackup.secrets import REDACTED, check_dsn, check_secret, resolve_secret
from txbackup.settings import check_name

NAME = "restore"
HELP = "restore a backup set (all targets, or some) into empty databases"
DESCRIPTION = """\
Read the set's manifest, re-read every artifact of the chosen targets against
its SHA-256 (a corrupt set is refused, naming the file, before anything is
written), then restore each target into its database from the cluster file, or
into the destination given with --to NAME=DSN (a libpq URL or key=value string
for postgres, a mysql://user@host:port/db URL for mysql, a file path for
sqlite), or by a [restore.NAME] section of the cluster file. Passwords never go
in a DSN (it is recorded in the catalog; one holding a password is refused):
a destination with the target's own user uses the target's password, another
one gets its password from password_env/password_file in [restore.NAME] or
from --to-password-env NAME=VARIABLE / --to-password-file NAME=FILE.

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
    parser.add_argument(
        "set_id", metavar="ID", nargs="?", type=set_id_arg, help="the backup set (see txbackup list)"
    )
    parser.add_argument(
        "--target", action="append", default=[], metavar="NAME", help="restore only this target (repeatable)"
    )
    parser.add_argument(
        "--to", action="append", default=[], metavar="NAME=DSN", help="restore target NAME into DSN instead"
    )
    parser.add_argument(
        "--to-password-env",
        action="append",
        default=[],
        metavar="NAME=VARIABLE",
        help="the password of NAME's destination is in this environment variable",
    )
    parser.add_argument(
        "--to-password-file",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="... or in this file (readable by its owner only)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty destination")
    parser.add_argument("--resume", metavar="JOB", help="continue an interrupted restore job")
    parser.add_argument("--jobs", action="store_true", help="list the restore jobs and exit")
    add_key_args(parser)
    add_json(parser)


def _pairs(items: list[str], flag: str, what: str) -> dict[str, str]:
    """``NAME=VALUE`` items of a repeatable flag; a message never shows the value (it may
    be a DSN holding a secret)."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            shown = f" {name!r}" if sep and name else ""
            raise UsageError(f"{flag}{shown}: expected NAME={what}")
        check_name(name, what="target name", culprit=flag)
        if name in found:
            raise UsageError(f"{flag} {name}=...: given twice")
        found[name] = value
    return found


def parse_destinations(items: list[str]) -> dict[str, str]:
    """``--to NAME=DSN`` items, each refused if its DSN holds a secret."""
    found = _pairs(items, "--to", "DSN")
    for name, dsn in found.items():
        check_dsn(dsn, culprit=f"--to {name}=...")
    return found


def parse_credentials(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """``--to-password-env/-file NAME=...``: where each destination's password is."""
    found: dict[str, dict[str, str]] = {}
    env = _pairs(args.to_password_env, "--to-password-env", "VARIABLE")
    files = _pairs(args.to_password_file, "--to-password-file", "FILE")
    both = sorted(env.keys() & files.keys())
    if both:
        raise UsageError(f"{both[0]}: give either --to-password-env or --to-password-file, not both")
    for name, var in env.items():
        found[name] = {"password_env": var}
    for name, path in files.items():
        found[name] = {"password_file": os.path.abspath(path)}
    for name, conf in found.items():
        check_secret(conf, culprit=f"--to-password-* {name}")
    return found


def _from_job(job: JobRow) -> tuple[list[str], dict[str, Any], dict[str, dict[str, str]], bool]:
    """(only, destinations, credentials, force) recorded by a job, checked: the catalog is
    a file like any other."""
    params = job.params
    if REDACTED in json.dumps(params):
        raise UsageError(
            f"restore job {job.job_id} was recorded with a password in a destination (now redacted): "
            "start a new restore, with the password in password_env/password_file"
        )
    only = params.get("only", [])
    destinations = params.get("destinations", {})
    credentials = params.get("credentials", {})
    force = params.get("force", False)

    def strings(value: object) -> bool:
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())

    if not (
        isinstance(only, list)
        and all(isinstance(n, str) for n in only)
        and isinstance(destinations, dict)
        and all(isinstance(d, str) or strings(d) for d in destinations.values())
        and isinstance(credentials, dict)
        and all(strings(c) and set(c) <= {"password_env", "password_file"} for c in credentials.values())
        and isinstance(force, bool)
    ):
        raise StorageError(f"restore job {job.job_id}: malformed parameters in the catalog")
    return only, destinations, credentials, force


def _destinations(
    config: ClusterConfig, names: list[str], to: dict[str, str], passwords: dict[str, dict[str, str]]
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """(destinations, credentials) of the targets restored: their [restore.NAME] sections,
    then --to (which replaces a section's location) and --to-password-*."""
    destinations: dict[str, Any] = {}
    credentials: dict[str, dict[str, str]] = {}
    for name, section in config.restore.items():
        if name in names:
            location = {k: v for k, v in section.items() if k != "password"}
            if location:
                destinations[name] = location
            if section["password"]:
                credentials[name] = section["password"]
    paths = {t.name for t in config.targets if getattr(t, "destination_is_path", False)}
    for name, dsn in to.items():
        destinations[name] = os.path.abspath(dsn) if name in paths else dsn
    credentials.update(passwords)
    return destinations, credentials


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
    given = args.set_id or args.target or args.to or args.to_password_env or args.to_password_file
    if args.resume:
        if given:
            raise UsageError("--resume JOB takes no set id, --target or --to: the job has them")
        job = jobs.get(args.resume)
        if job.status == COMPLETE:
            raise UsageError(f"restore job {job.job_id} is already complete")
        set_id = job.set_id
        only, destinations, credentials, force = _from_job(job)
        storage = open_checked(config.storage, config.storage_options)
        keyring = open_keyring(args, storage)
        manifest = read_manifest(storage, set_id, keyring=keyring)
    elif args.set_id:
        set_id, only, force = args.set_id, args.target, args.force
        to, passwords = parse_destinations(args.to), parse_credentials(args)
        storage = open_checked(config.storage, config.storage_options)
        keyring = open_keyring(args, storage)
        manifest = read_manifest(storage, set_id, keyring=keyring)
        names = only or [t.name for t in manifest.targets]
        destinations, credentials = _destinations(config, names, to, passwords)
    else:
        raise UsageError("which set? give a set id (see txbackup list) or --resume JOB")
    for name, conf in credentials.items():  # a missing variable or a bad file: before any restore
        resolve_secret(conf, culprit=f"restore of {name}")
    plan = RestorePlan(
        storage=storage,
        manifest=manifest,
        targets=config.targets,
        jobs=jobs,
        only=only,
        destinations=destinations,
        credentials=credentials,
        force=force,
        job_id=args.resume,
        reporter=JsonReporter() if args.json else HumanReporter(),
        keyring=keyring,
    )
    job_id, restored = restore_set(plan)
    if args.json:
        plan.reporter.event("result", set_id=set_id, job_id=job_id, restored=restored)
    else:
        point = plan.manifest.restore_point
        print(f"restored set {set_id} (restore point {point}): {', '.join(restored)}  [job {job_id}]")
    return 0
