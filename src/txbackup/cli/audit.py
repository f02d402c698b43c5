"""txbackup audit: check a backup set at ScalarDB's transaction level."""

from __future__ import annotations

import argparse
import os
import sys

from txbackup.cli.common import (
    add_json,
    add_key_args,
    add_repository_args,
    open_keyring,
    open_repository,
    print_json,
    set_id_arg,
)
from txbackup.config import load_cluster
from txbackup.engine.audit import (
    COORDINATOR_NAMESPACE,
    FAILING,
    SYSTEM_NAMESPACE,
    AuditOptions,
    AuditPlan,
    AuditReport,
    audit_live,
    audit_set,
)
from txbackup.engine.manifest import read_manifest
from txbackup.engine.progress import HumanReporter, JsonReporter
from txbackup.errors import UsageError
from txbackup.secrets import check_secret, dsn_secret, resolve_secret
from txbackup.settings import check_name

NAME = "audit"
HELP = "check a backup set at ScalarDB's level: torn transactions, records left PREPARED"
DESCRIPTION = """\
Read the ScalarDB tables of every target of the set and check that ScalarDB
would see one consistent point. SQLite targets are read from their artifacts;
PostgreSQL and MySQL/MariaDB targets are restored first into scratch databases
on a server you name with --scratch NAME=DSN (a libpq DSN; mysql://user@host:port
for MySQL, every database restored under its own name; their password with
--scratch-password-env/-file, never in the DSN), read, then dropped (unless
--keep-scratch). Other kinds (cassandra, dynamodb, cosmos) are reported "not
audited", which makes the set not proven clean.

ScalarDB tables are found by their metadata columns (tx_id, tx_state,
tx_version, tx_prepared_at, tx_committed_at); the coordinator is table
"state" of the coordinator namespace; the system namespace ("scalardb") must
list every table in its "metadata" table.

Checks (level; exact or heuristic):
  committed-without-coordinator  torn, exact*: a COMMITTED record whose
      transaction has no coordinator row (the coordinator was copied before it
      committed). *Not for ScalarDB 3.19's coordinator cleanup or one-phase commit.
  committed-but-aborted  torn, exact: COMMITTED record, coordinator says ABORTED.
  split-transaction  torn, exact: a record that lazy recovery will roll back
      while another record of its transaction is COMMITTED (half applied).
  prepared / deleted  recovery, exact: a record left PREPARED or DELETED and
      how lazy recovery resolves it: roll forward (coordinator COMMITTED),
      roll back (ABORTED, or no row and prepared over 15 s ago), pending
      (no row, not yet expired: a warning). Group-commit ids parent$child are
      resolved through the parent's row and its tx_child_ids.
  newer-than-restore-point  warning, heuristic: a record committed/prepared or
      a coordinator row created after the set's pause window ended (+ --clock-skew).
  bad-state, coordinator-conflict, no-coordinator, no-system-namespace,
  table-not-in-metadata, scratch-left (a scratch database not dropped)  error/warning, exact.

With --live (and no ID), the databases the cluster file's targets name are read
in place instead: a restored copy (give a cluster file describing it), or a
stopped system. Not a running one: its tables are read one after the other, so
transactions committing meanwhile would look torn.

Exit code 0: the set is clean (records awaiting a consistent lazy recovery are
listed but allowed; --strict refuses them too); 1: findings, or a target not
audited. --json prints every finding (check, level, target, table, record key,
tx id, verdict).

examples:
  txbackup audit -c cluster.toml 20261127T101500Z-3f9a
  txbackup audit -c cluster.toml 20261127T101500Z-3f9a \\
      --scratch ledger=postgresql://audit@10.0.0.9:5432/ --scratch-password-env ledger=AUDIT_PG
  txbackup audit -c restored-copy.toml --live"""

MAX_LINES = 50


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    add_key_args(parser)
    parser.add_argument(
        "set_id", metavar="ID", nargs="?", type=set_id_arg, help="the backup set (see txbackup list)"
    )
    parser.add_argument(
        "--live", action="store_true",
        help="no set: read the cluster file's databases in place (a restored copy, a stopped system)",
    )  # fmt: skip
    parser.add_argument(
        "--scratch", action="append", default=[], metavar="NAME=DSN",
        help="restore postgres/mysql target NAME on this server to read it (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--scratch-password-env", action="append", default=[], metavar="NAME=VARIABLE",
        help="the password of NAME's scratch server is in this environment variable",
    )  # fmt: skip
    parser.add_argument(
        "--scratch-password-file", action="append", default=[], metavar="NAME=FILE",
        help="... or in this file (readable by its owner only)",
    )  # fmt: skip
    parser.add_argument("--keep-scratch", action="store_true", help="leave the scratch databases in place")
    parser.add_argument(
        "--coordinator-namespace", default=COORDINATOR_NAMESPACE, metavar="NS",
        help=f"ScalarDB's coordinator namespace (default {COORDINATOR_NAMESPACE})",
    )  # fmt: skip
    parser.add_argument(
        "--system-namespace", default=SYSTEM_NAMESPACE, metavar="NS",
        help=f"ScalarDB's system namespace (default {SYSTEM_NAMESPACE})",
    )  # fmt: skip
    parser.add_argument(
        "--clock-skew", type=int, default=1000, metavar="MS",
        help="clock difference allowed between ScalarDB's hosts and txbackup's (default 1000 ms)",
    )  # fmt: skip
    parser.add_argument(
        "--strict", action="store_true", help="records awaiting lazy recovery fail the audit too"
    )
    add_json(parser)


def _pairs(items: list[str], flag: str, what: str) -> dict[str, str]:
    """``NAME=VALUE`` items; a message never shows the value (it may be a DSN)."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{flag}: expected NAME={what}")
        check_name(name, what="target name", culprit=flag)
        if name in found:
            raise UsageError(f"{flag} {name}=...: given twice")
        found[name] = value
    return found


def scratch_from_args(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """NAME -> {"dsn": ..., "password": ...}, the password read now from where it was named."""
    dsns = _pairs(args.scratch, "--scratch", "DSN")
    env = _pairs(args.scratch_password_env, "--scratch-password-env", "VARIABLE")
    files = _pairs(args.scratch_password_file, "--scratch-password-file", "FILE")
    for name in [*env, *files]:
        if name not in dsns:
            raise UsageError(f"--scratch-password-* {name}=...: no --scratch {name}=DSN")
        if name in env and name in files:
            raise UsageError(f"{name}: give either --scratch-password-env or --scratch-password-file")
    scratch: dict[str, dict[str, str]] = {}
    for name, dsn in dsns.items():
        found = dsn_secret(dsn)
        if found is not None:  # argv is visible to every user of the machine (ps)
            raise UsageError(
                f"--scratch {name}=...: the DSN holds {found}; give the password with"
                f" --scratch-password-env {name}=VARIABLE or --scratch-password-file {name}=FILE"
            )
        conf = {"password_env": env[name]} if name in env else {}
        if name in files:
            conf = {"password_file": os.path.abspath(files[name])}
        check_secret(conf, culprit=f"--scratch-password-* {name}")
        dest = {"dsn": dsn}
        password = resolve_secret(conf, culprit=f"scratch of {name}")
        if password is not None:
            dest["password"] = password
        scratch[name] = dest
    return scratch


def run(args: argparse.Namespace) -> int:
    if args.clock_skew < 0:
        raise UsageError("--clock-skew must be >= 0 ms")
    for flag, value in (("--coordinator-namespace", args.coordinator_namespace),
                        ("--system-namespace", args.system_namespace)):  # fmt: skip
        if not value or len(value) > 128:
            raise UsageError(f"{flag}: give a namespace name (1 to 128 characters)")
    scratch = scratch_from_args(args)
    if args.live:
        return _live(args, scratch)
    if args.set_id is None:
        raise UsageError("which set? give its ID (see txbackup list), or --live")
    storage, _, config = open_repository(args)
    if scratch and config is None:
        raise UsageError("--scratch restores targets of the cluster file: give --config")
    keyring = open_keyring(args, storage)  # an encrypted repository's sets need it
    manifest = read_manifest(storage, args.set_id, keyring=keyring)
    plan = AuditPlan(
        storage=storage,
        keyring=keyring,
        manifest=manifest,
        targets=config.targets if config is not None else [],
        scratch=scratch,
        options=AuditOptions(
            coordinator_namespace=args.coordinator_namespace,
            clock_skew_ms=args.clock_skew,
            strict=args.strict,
        ),
        system_namespace=args.system_namespace,
        keep_scratch=args.keep_scratch,
        # progress on stderr either way: stdout carries the one answer
        reporter=JsonReporter(sys.stderr) if args.json else HumanReporter(),
    )
    return _answer(args, audit_set(plan), f"set {manifest.set_id}")


def _live(args: argparse.Namespace, scratch: dict[str, dict[str, str]]) -> int:
    if args.set_id is not None or scratch or args.keep_scratch:
        raise UsageError("--live reads the cluster file's databases: no set ID, --scratch or --keep-scratch")
    if not args.config or args.storage:
        raise UsageError("--live needs the cluster file (--config) naming the databases to read")
    config = load_cluster(args.config)
    options = AuditOptions(
        coordinator_namespace=args.coordinator_namespace, clock_skew_ms=args.clock_skew, strict=args.strict
    )
    reporter = JsonReporter(sys.stderr) if args.json else HumanReporter()
    report = audit_live(config.targets, options, args.system_namespace, reporter)
    return _answer(args, report, f"the databases of {args.config}")


def _answer(args: argparse.Namespace, report: AuditReport, what: str) -> int:
    if args.json:
        print_json(report.to_dict())
        return 0 if report.clean else 1
    failing = [f for f in report.findings if f.level in FAILING]
    others = [f for f in report.findings if f.level not in FAILING]
    for finding in [*failing, *others][:MAX_LINES]:
        print(finding.line())
    if len(report.findings) > MAX_LINES:
        print(f"... and {len(report.findings) - MAX_LINES} more findings (--json lists them all)")
    for line in report.not_audited:
        print(line)
    counts = ", ".join(f"{n} {check}" for check, n in sorted(report.counts().items())) or "no findings"
    verdict = "clean" if report.clean else "NOT clean"
    print(
        f"{what}: {verdict}: {report.records} records in {len(report.tables)} tables,"
        f" {report.coordinator_rows} coordinator rows; {counts}"
    )
    return 0 if report.clean else 1
