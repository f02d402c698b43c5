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
from txbackup.engine.restore import (
    TARGET_DONE,
    RestorePlan,
    check_request,
    describe_destination,
    rename_databases,
    restore_set,
)
from txbackup.errors import StorageError, UsageError
from txbackup.jobs import COMPLETE, JobRow, JobStore
from txbackup.safepaths import shown
from txbackup.secrets import REDACTED, check_dsn, check_secret, resolve_secret
from txbackup.settings import check_name

NAME = "restore"
HELP = "restore a backup set (all targets, or some) into empty databases"
DESCRIPTION = """\
Read the set's manifest, check that every artifact of the chosen targets is in
storage with its recorded size (a missing or cut one is refused, naming the
file, before anything is written), then restore each target, reading every
artifact once and verifying its SHA-256 as it streams (a mismatch stops the
restore, fails its job and names the file, what the destination holds and how
to --resume once the artifact is fixed; --verify-first reads the whole set
first, as verify --read-data, and refuses a corrupt one before anything is
written) into its database from the cluster file, or
into the destination given with --to NAME=DSN (a libpq URL or key=value string
for postgres, a mysql://user@host:port/db URL for mysql, a file path for
sqlite), or by a [restore.NAME] section of the cluster file. Passwords never go
in a DSN (it is recorded in the catalog; one holding a password is refused):
a destination with the target's own user uses the target's password, another
one gets its password from password_env/password_file in [restore.NAME] or
from --to-password-env NAME=VARIABLE / --to-password-file NAME=FILE.

--rename-db OLD=NEW (repeatable; TARGET:OLD=NEW when several targets have a
database OLD) or `rename = { OLD = "NEW" }` in [restore.NAME] restores database
OLD of a postgres or mysql target as NEW: several databases of one target can
land next to their originals on the same server.

Everything given is checked before the storage is read (a bad --to or rename:
exit 2, nothing read); then each postgres/mysql destination is reached and one
that already holds tables is refused unless --force, before the set is
checked and before a job is created.

Each restore is a job recorded in the catalog: if it is interrupted, run
`txbackup restore -c FILE --resume JOB` to continue from its last completed
step. `--jobs` lists the jobs: set, targets, destinations, state.

examples:
  txbackup restore -c cluster.toml 20261127T101500Z-3f9a
  txbackup restore -c cluster.toml 20261127T101500Z-3f9a --target ledger \\
      --to ledger=postgresql://restore@10.0.0.9:5432/ledger_copy
  txbackup restore -c cluster.toml 20261127T101500Z-3f9a --target orders \\
      --rename-db orders=orders_copy --rename-db coordinator=coordinator_copy
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
    parser.add_argument(
        "--rename-db",
        action="append",
        default=[],
        metavar="[TARGET:]OLD=NEW",
        help="restore database OLD of the set as NEW (postgres, mysql; repeatable)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty destination")
    parser.add_argument(
        "--verify-first",
        action="store_true",
        help="read every artifact against its SHA-256 before writing anything (two reads of the set; "
        "by default each artifact is read once, verified while it is restored)",
    )
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


Renames = dict[str, dict[str, str]]


def parse_renames(items: list[str]) -> list[tuple[str | None, str, str]]:
    """``--rename-db [TARGET:]OLD=NEW`` items: (target or None, old, new). A target name
    never holds ``:``, so ``a:b=c`` with ``a`` not a target's name is left for the
    resolution to refuse."""
    found = []
    for item in items:
        head, sep, new = item.rpartition("=")
        target, colon, old = head.partition(":")
        if not colon:
            target, old = "", head
        if not sep or not old or not new:
            raise UsageError(f"--rename-db {shown(item, 80)}: expected OLD=NEW or TARGET:OLD=NEW")
        if target:
            check_name(target, what="target name", culprit="--rename-db")
        found.append((target or None, old, new))
    return found


def resolve_renames(
    config: ClusterConfig, names: list[str], flags: list[tuple[str | None, str, str]]
) -> Renames:
    """Target -> old -> new, from --rename-db: a flag without TARGET goes to the one target
    being restored (``names``) that has database OLD."""
    renames: Renames = {}
    for target, old, new in flags:
        if target is None:
            having = [
                t.name for t in config.targets
                if t.name in names and old in rename_databases(t)
            ]  # fmt: skip
            if not having:
                raise UsageError(
                    f"--rename-db {shown(old, 80)}=...: no postgres or mysql target being restored "
                    f"has database {shown(old, 80)}"
                )
            if len(having) > 1:
                raise UsageError(
                    f"--rename-db {shown(old, 80)}=...: targets {', '.join(having)} all have it; "
                    "say which: TARGET:OLD=NEW"
                )
            target = having[0]
        if old in renames.get(target, {}):
            raise UsageError(f"--rename-db {target}:{shown(old, 80)}: given twice")
        renames.setdefault(target, {})[old] = new
    return renames


def _from_job(job: JobRow) -> tuple[list[str], dict[str, Any], dict[str, dict[str, str]], Renames, bool]:
    """(only, destinations, credentials, renames, force) recorded by a job, checked: the
    catalog is a file like any other."""
    params = job.params
    if REDACTED in json.dumps(params):
        raise UsageError(
            f"restore job {job.job_id} was recorded with a password in a destination (now redacted): "
            "start a new restore, with the password in password_env/password_file"
        )
    only = params.get("only", [])
    destinations = params.get("destinations", {})
    credentials = params.get("credentials", {})
    renames = params.get("renames", {})
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
        and isinstance(renames, dict)
        and all(strings(r) and all(isinstance(k, str) for k in r) for r in renames.values())
        and isinstance(force, bool)
    ):
        raise StorageError(f"restore job {job.job_id}: malformed parameters in the catalog")
    return only, destinations, credentials, renames, force


def _destinations(
    config: ClusterConfig,
    names: list[str],
    to: dict[str, str],
    passwords: dict[str, dict[str, str]],
    flags: list[tuple[str | None, str, str]],
) -> tuple[dict[str, Any], dict[str, dict[str, str]], Renames]:
    """(destinations, credentials, renames) of the targets restored (``names``): their
    [restore.NAME] sections, then --to (which replaces a section's location),
    --to-password-* and --rename-db (added to a section's renames)."""
    destinations: dict[str, Any] = {}
    credentials: dict[str, dict[str, str]] = {}
    renames: Renames = {}
    for name, section in config.restore.items():
        if name in names:
            location = {k: v for k, v in section.items() if k not in ("password", "rename")}
            if location:
                destinations[name] = location
            if section["password"]:
                credentials[name] = section["password"]
            if section.get("rename"):
                renames[name] = dict(section["rename"])
    paths = {t.name for t in config.targets if getattr(t, "destination_is_path", False)}
    for name, dsn in to.items():
        destinations[name] = os.path.abspath(dsn) if name in paths else dsn
    credentials.update(passwords)
    for name, more in resolve_renames(config, names, flags).items():
        renames.setdefault(name, {}).update(more)
    return destinations, credentials, renames


def job_targets(job: JobRow, steps: dict[str, list[str]]) -> list[dict[str, Any]]:
    """What ``--jobs`` shows of each target of a job: name, destination, renames, state."""
    params = job.params
    names = params.get("targets") or params.get("only") or []
    destinations = params.get("destinations")
    destinations = destinations if isinstance(destinations, dict) else {}
    renames = params.get("renames")
    renames = renames if isinstance(renames, dict) else {}
    shown_targets = []
    for name in names if isinstance(names, list) else []:
        name = str(name)
        given = destinations.get(name)
        rename = renames.get(name)
        done = steps.get(name, [])
        state = "restored" if TARGET_DONE in done else "partly restored" if done else "not restored"
        shown_targets.append(
            {
                "name": name,
                "destination": describe_destination(
                    given if isinstance(given, str | dict) else None,
                    rename if isinstance(rename, dict) else None,
                ),
                "renames": rename if isinstance(rename, dict) else {},
                "state": state,
            }
        )
    return shown_targets


def list_jobs(jobs: JobStore, as_json: bool) -> None:
    rows = jobs.list()
    views = [(row, job_targets(row, jobs.steps(row.job_id))) for row in rows]
    if as_json:
        print_json([row.__dict__ | {"targets": targets} for row, targets in views])
        return
    table = []
    for row, targets in views:
        for t in targets or [{"name": "(all)", "destination": "", "state": ""}]:
            table.append(
                [row.job_id, row.set_id, row.status, t["name"], t["destination"], t["state"], row.updated_at,
                 row.error]
            )  # fmt: skip
    print_table(["JOB", "SET", "STATUS", "TARGET", "DESTINATION", "TARGET STATE", "UPDATED", "ERROR"], table)


def run(args: argparse.Namespace) -> int:
    config = load_cluster(args.config)
    jobs = JobStore(config.catalog)
    if args.jobs:
        list_jobs(jobs, args.json)
        return 0
    flag_values = (args.target, args.to, args.to_password_env, args.to_password_file, args.rename_db)
    given = args.set_id or any(flag_values)
    # everything given is checked against the cluster file before the storage is read
    if args.resume:
        if given:
            raise UsageError("--resume JOB takes no set id, --target, --to or --rename-db: the job has them")
        job = jobs.get(args.resume)
        if job.status == COMPLETE:
            raise UsageError(f"restore job {job.job_id} is already complete")
        set_id = job.set_id
        only, destinations, credentials, renames, force = _from_job(job)
        check_request(config.targets, only, destinations, credentials, renames)
    elif args.set_id:
        set_id, only, force = args.set_id, args.target, args.force
        to, passwords = parse_destinations(args.to), parse_credentials(args)
        flags = parse_renames(args.rename_db)
        names = only or [t.name for t in config.targets]
        destinations, credentials, renames = _destinations(config, names, to, passwords, flags)
        check_request(config.targets, only, destinations, credentials, renames)
    else:
        raise UsageError("which set? give a set id (see txbackup list) or --resume JOB")
    for name, conf in credentials.items():  # a missing variable or a bad file: before any restore
        resolve_secret(conf, culprit=f"restore of {name}")
    storage = open_checked(config.storage, config.storage_options)
    keyring = open_keyring(args, storage)  # an encrypted repository's key: before any set is read
    manifest = read_manifest(storage, set_id, keyring=keyring)
    if not args.resume:  # the [restore.NAME] sections of the set's targets
        names = only or [t.name for t in manifest.targets]
        destinations, credentials, renames = _destinations(config, names, to, passwords, flags)
    plan = RestorePlan(
        storage=storage,
        manifest=manifest,
        targets=config.targets,
        jobs=jobs,
        only=only,
        destinations=destinations,
        credentials=credentials,
        renames=renames,
        force=force,
        verify_first=args.verify_first,
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
