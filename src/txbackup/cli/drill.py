"""txbackup drill: restore a set into scratch places, audit and check it, time it, clean up."""

from __future__ import annotations

import argparse
import sys

from txbackup.catalog import Catalog
from txbackup.cli.common import (
    add_config,
    add_json,
    add_key_args,
    open_checked,
    open_keyring,
    print_json,
    set_id_arg,
)
from txbackup.cli.runmetrics import Run, add_metrics_arg, run_recorded
from txbackup.config import load_cluster
from txbackup.engine.audit import COORDINATOR_NAMESPACE as COORDINATOR
from txbackup.engine.audit import SYSTEM_NAMESPACE, AuditOptions
from txbackup.engine.drill import DrillPlan, resolve_places, run_drill
from txbackup.engine.manifest import read_manifest
from txbackup.engine.progress import HumanReporter, JsonReporter
from txbackup.errors import UsageError
from txbackup.jobs import JobStore

NAME = "drill"
HELP = "restore drill: restore a set into scratch places, audit, check, time it, clean up"
DESCRIPTION = """\
Prove that a backup set restores, and measure how long it takes (the recovery
time objective of a runbook). Every target of the set is restored into its
drill place, [drill.targets.NAME] in the cluster file (the keys of
[restore.NAME]: dsn / host / port / user / database, path / dir, password_env /
password_file, rename), overwriting what an earlier drill left there. A drill
place equal to a target's own place (same host, port and database, or the same
SQLite file) is refused before anything is read: a drill never overwrites
production. Drills restore postgres, mysql and sqlite targets.

Then the drill places are audited at ScalarDB's level (as `txbackup audit
--live` would; `audit = false` in [drill] for data that is not ScalarDB's),
each [[drill.checks]] query is run in its target's drill place and its answer
compared (expect = "TEXT" or expect_nonzero = true), and `command` (an argv
list, run without a shell) is run with the drill places in its environment:
TXBACKUP_DRILL_SET, TXBACKUP_DRILL_<TARGET>_DSN / _DATABASES / _PASSWORD
(postgres, mysql) or _PATHS (sqlite); its exit code decides. Finally the
drill databases are dropped and files removed, unless --keep.

Progress goes to stderr; the result to stdout (--json: one document with the
set, the seconds of each target's restore, of the verification and in total,
the audit verdict, every check, the command, the clean-up). Each failure is
one line naming the step (restore, audit, check, command, cleanup), the
target and the cause, for cron's mail.

Exit code 0: restored, audited clean, every check passed, cleaned up;
1: any of them failed; 2: bad input (nothing was done).

examples:
  txbackup drill -c cluster.toml --latest
  txbackup drill -c cluster.toml 20261127T101500Z-3f9a --json
  # crontab: every Sunday at 03:00
  0 3 * * 0  txbackup drill -c /etc/txbackup/cluster.toml --latest --json > /var/log/txbackup-drill.json"""


def register(parser: argparse.ArgumentParser) -> None:
    add_config(parser, required=True)
    parser.add_argument(
        "set_id", metavar="ID", nargs="?", type=set_id_arg, help="the backup set (see txbackup list)"
    )
    parser.add_argument("--latest", action="store_true", help="drill the newest complete set")
    parser.add_argument("--keep", action="store_true", help="leave the restored drill places in place")
    add_key_args(parser)
    add_metrics_arg(parser)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    return run_recorded(NAME, args, _run)  # metrics of every outcome, when configured


def _run(args: argparse.Namespace, metrics: Run) -> int:
    if bool(args.set_id) == bool(args.latest):
        raise UsageError("which set? give a set id (see txbackup list) or --latest, not both")
    config = load_cluster(args.config)
    metrics.configure(config.metrics)
    if config.drill is None:
        raise UsageError(f"cluster file {config.path}: no [drill] table: say where each target is restored")
    drill = config.drill
    # every place checked (and refused if it is production) before the storage is read
    places = resolve_places(config.targets, drill["targets"])
    storage = open_checked(config.storage, config.storage_options)
    keyring = open_keyring(args, storage)
    set_id = args.set_id
    if args.latest:
        complete = [row for row in Catalog(config.catalog).list() if row.status == "complete"]
        if not complete:
            raise UsageError(f"no complete backup set in catalog {config.catalog} (see txbackup list)")
        set_id = complete[-1].set_id
    manifest = read_manifest(storage, set_id, keyring=keyring)
    scalardb = config.scalardb or {}
    plan = DrillPlan(
        storage=storage,
        manifest=manifest,
        places=places,
        jobs=JobStore(config.catalog),
        checks=drill["checks"],
        command=drill["command"],
        timeout_s=drill["timeout"],
        audit=drill["audit"],
        audit_options=AuditOptions(
            coordinator_namespace=scalardb.get("coordinator_namespace") or COORDINATOR
        ),
        system_namespace=scalardb.get("system_namespace") or SYSTEM_NAMESPACE,
        keep=args.keep,
        # progress on stderr either way: stdout carries the one answer
        reporter=JsonReporter(sys.stderr) if args.json else HumanReporter(),
        keyring=keyring,
    )
    result = run_drill(plan)
    for failure in result.failures:
        print(f"txbackup: {failure.line()}", file=sys.stderr)
    if args.json:
        print_json(result.to_dict())
        return 0 if result.ok else 1
    for name, target in result.targets.items():
        seconds = target["restore_seconds"]
        if seconds is None:
            print(f"{name}: not restored (into {target['destination']})")
        else:
            print(f"{name}: restored into {target['destination']} in {seconds:.2f} s")
    if result.total_seconds is not None:
        print(f"restore total {result.total_seconds:.2f} s (verification {result.verify_seconds or 0:.2f} s)")
    if result.audit is not None:
        verdict = "clean" if result.audit["clean"] else "NOT clean"
        print(f"audit: {verdict}, {result.audit.get('findings', 0)} findings")
    for check in result.checks:
        print(f"check {check['name']}: {'passed' if check['passed'] else 'FAILED'}")
    if result.command is not None:
        print(f"command {result.command['program']}: exit code {result.command['exit_code']}")
    cleaned = "kept (--keep)" if result.cleanup["kept"] else (
        "failed" if any("error" in t for t in result.cleanup["targets"].values()) else "done")  # fmt: skip
    print(f"cleanup: {cleaned}")
    print(f"drill of set {result.set_id}: {'PASSED' if result.ok else 'FAILED'}")
    return 0 if result.ok else 1
