"""Amazon DynamoDB tables (kind ``dynamodb``): point-in-time recovery or on-demand backups.

Settings::

    [[targets]]
    name = "dynamo"
    kind = "dynamodb"
    region = "eu-west-1"                   # required
    tables = ["bank.accounts", "bank.transfers"]   # ScalarDB names them <namespace>.<table>
    coordinator_table = "coordinator.state"  # ScalarDB's; always included ("" for none)
    mode = "pitr"                          # or "on-demand"
    min_pause = "10s"                      # the guide's rule; shorter is allowed, with a warning
    backup_settle = "60s"                  # on-demand: quiet time around CreateBackup (AWS: +-1 minute)
    enable_pitr = false                    # true: turn PITR on where it is off (else preflight fails)
    access_key_id_env = "AWS_KEY_ID"       # optional (or *_file); default: the standard AWS chain
    secret_access_key_env = "AWS_SECRET"   # with access_key_id_*
    session_token_env = "AWS_TOKEN"        # optional
    endpoint_url = "http://127.0.0.1:5000" # optional (tests, VPC endpoints)
    autoscaling_endpoint_url = "..."       # optional; defaults to endpoint_url
    parallel = 8                           # tables backed up / restored at once
    poll_interval = "10s"                  # how often to look at tables and backups being made
    wait_timeout = "24h"                   # longest wait for one table or backup
    restore_window_wait = "10m"            # how long to wait for PITR to catch up with the restore point

DynamoDB cannot be dumped inside a pause at scale, so nothing is exported but
the settings of each table. Preflight (before the pause) checks that every
table exists, with the given credentials, in the given region, and that PITR
is enabled on each (required in ``pitr`` mode; ``enable_pitr`` turns it on),
and notes each table's restorable window.

``pitr`` mode: capture does nothing; the pause is held for ``min_pause`` and
the restore point is its midpoint, which a restore hands to
RestoreTableToPointInTime. ``on-demand`` mode: capture calls CreateBackup for
every table in parallel, inside the pause; export waits until all are
AVAILABLE and the set records their ARNs. AWS documents an on-demand backup
as containing every write committed up to one minute before the request and
none committed more than one minute after it; in between, either. So capture
first waits ``backup_settle`` (default 60 s) inside the pause, then requests
the backups, and the pause is held at least ``2 x backup_settle + 5 s``: no
write falls in the uncertain two minutes. A shorter settle is allowed, with a
warning (moto's backups are exact; AWS's are documented to +-1 minute). The
target's ``capture_delay_s`` says how long its capture waits on purpose: the
engine's capture deadline (``[backup] capture_deadline``) must exceed it.

Either way export records every table's settings (key schema and
indexes, billing mode and capacity, table class, auto scaling targets and
policies, TTL, stream, tags, PITR, encryption, deletion protection) in the
manifest and in the artifact ``tables.json``.

Restore follows the ScalarDB guide's procedure as a resumable job (see
``dynamodb.restore``): restore each table at the point into an alias table,
back the alias up, delete the original only once that backup is AVAILABLE,
restore the original from it, re-apply every recorded setting, delete the
alias. ``--to NAME=suffix:-restored`` (or ``prefix:restored_``) restores into
new tables instead and touches nothing existing. Restoring in place over
existing tables needs ``--force``.

The on-demand backups belong to the set but live in AWS (their ARNs are in
its manifest): ``txbackup forget``/``delete``/``prune`` delete them through
``discard`` once the set is gone (``engine.prune``: a tombstone remembers them
until that succeeds).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from txbackup.clock import iso_ms
from txbackup.durations import MAX_CALL_S
from txbackup.errors import TargetError, UsageError
from txbackup.jobs import MemoryJournal, StepJournal
from txbackup.safepaths import shown
from txbackup.settings import (
    check_keys,
    setting_bool,
    setting_duration,
    setting_int,
    setting_opt_str,
    setting_optional_name,
    setting_str,
    setting_str_list,
)
from txbackup.targets.awsapi import read_credentials
from txbackup.targets.base import ArtifactReader, ArtifactWriter, Recorded, Scope, dsn_only
from txbackup.targets.dynamodb.aws import Aws, AwsError, Credentials, read_settings
from txbackup.targets.dynamodb.restore import (
    ON_DEMAND,
    PITR,
    RestoreJob,
    check_table_name,
    parse_destination,
)
from txbackup.targets.pitr import PITR_MIN_PAUSE_S, check_min_pause, log_warnings, window_text
from txbackup.targets.pitr.journal import FaultHook

log = logging.getLogger(__name__)

KIND = "dynamodb"
BACKUP_SETTLE_S = 60.0
"""AWS: an on-demand backup holds every write committed up to 1 min before the
request and none committed more than 1 min after it."""
SETTINGS_ARTIFACT = "tables.json"
_BACKUP_ARN = re.compile(r"arn:[^:/\s]+:dynamodb:[^:/\s]*:[^:/\s]*:table/([^/\s]+)/backup/[^/\s]+")
"""An on-demand backup's ARN; group 1 is the table it is a backup of."""
_KEYS = {
    "region",
    "endpoint_url",
    "autoscaling_endpoint_url",
    "tables",
    "coordinator_table",
    "mode",
    "min_pause",
    "backup_settle",
    "enable_pitr",
    "access_key_id_env",
    "access_key_id_file",
    "secret_access_key_env",
    "secret_access_key_file",
    "session_token_env",
    "session_token_file",
    "parallel",
    "poll_interval",
    "wait_timeout",
    "restore_window_wait",
}

T = TypeVar("T")
R = TypeVar("R")


def _parallel(items: list[T], work: Callable[[T], R], workers: int) -> dict[T, R]:
    """``work`` on every item, at most ``workers`` at once; the first error is raised
    (after every call has ended)."""
    results: dict[T, R] = {}
    errors: list[BaseException] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        futures = {pool.submit(work, item): item for item in items}
        for future in concurrent.futures.as_completed(futures):
            exc = future.exception()
            if exc is None:
                results[futures[future]] = future.result()
            else:
                errors.append(exc)
    if errors:
        raise errors[0]
    return results


class DynamoCapture:
    """On-demand backups requested inside the pause (on-demand mode), or nothing (pitr)."""

    def __init__(self, target: DynamoTarget, set_id: str) -> None:
        self.target = target
        self.set_id = set_id
        self.backups: dict[str, str] = {}
        self.settings: dict[str, dict[str, Any]] = {}
        self.windows: dict[str, list[str]] = {}
        self._exported = False

    def backup_name(self, table: str) -> str:
        return f"{table}-txb-{self.set_id}"[:255]

    def create_backups(self) -> None:
        aws = self.target.aws()

        def backup(table: str) -> str:
            # no waiting out AWS's limits here: the applications are paused
            made = aws.call("create_backup", table, TableName=table, BackupName=self.backup_name(table))
            arn = str(made["BackupDetails"]["BackupArn"])
            self.backups[table] = arn
            return arn

        _parallel(self.target.tables, backup, self.target.parallel)

    def position(self) -> Mapping[str, Any]:
        found: dict[str, Any] = {
            "mode": self.target.mode,
            "region": self.target.region,
            "tables": self.settings,
        }
        if self.backups:
            found["backups"] = dict(self.backups)
        if self.windows:
            found["pitr_windows"] = dict(self.windows)
        return found

    def export(self, out: ArtifactWriter) -> None:
        aws = self.target.aws()
        workers = self.target.parallel
        if self.backups:
            _parallel(sorted(self.backups.values()), aws.wait_backup, workers)
        self.settings = _parallel(self.target.tables, lambda t: read_settings(aws, t), workers)
        for table in self.target.tables:
            window = aws.pitr_window(table)
            if window is not None:
                self.windows[table] = [iso_ms(window[0]), iso_ms(window[1])]
            elif self.target.mode == PITR:
                raise self.target.error(
                    f"point-in-time recovery was turned off on table {table} during the backup"
                )
        document = {"mode": self.target.mode, "backups": self.backups, "tables": self.settings}
        with out.open(SETTINGS_ARTIFACT) as stream:
            stream.write(json.dumps(document, indent=2, sort_keys=True).encode() + b"\n")
        self._exported = True

    def release(self) -> None:
        """A set that was not exported will never be committed: its backups go."""
        if self._exported or not self.backups:
            return
        backups, self.backups = self.backups, {}
        aws = self.target.aws()
        for arn in backups.values():
            with contextlib.suppress(Exception):
                aws.call("delete_backup", arn, BackupArn=arn)


class DynamoTarget:
    kind = KIND

    def __init__(
        self,
        name: str,
        region: str,
        tables: list[str],
        mode: str = PITR,
        *,
        endpoint_url: str | None = None,
        autoscaling_endpoint_url: str | None = None,
        credentials: Credentials | None = None,
        min_pause_s: float = PITR_MIN_PAUSE_S,
        settle_s: float = BACKUP_SETTLE_S,
        enable_pitr: bool = False,
        parallel: int = 8,
        poll_s: float = 10.0,
        wait_timeout_s: float = 24 * 3600.0,
        window_wait_s: float = 600.0,
    ) -> None:
        self.name = name
        self.region = region
        self.tables = tables
        self.mode = mode
        self.endpoint_url = endpoint_url
        self.autoscaling_endpoint_url = autoscaling_endpoint_url or endpoint_url
        self.credentials = credentials or Credentials()
        self.settle_s = settle_s if mode == ON_DEMAND else 0.0
        self.capture_delay_s = self.settle_s
        self.min_pause_s = max(min_pause_s, 2 * self.settle_s + 5.0) if self.settle_s else min_pause_s
        self.warnings = check_min_pause(name, self.min_pause_s)
        if mode == ON_DEMAND and settle_s < BACKUP_SETTLE_S:
            self.warnings.append(
                f'target "{name}": backup_settle = {settle_s:g}s is below the {BACKUP_SETTLE_S:g}s AWS '
                "documents for on-demand backups (a backup may hold or miss writes made up to a minute "
                "around its request): the tables' backups may not be consistent with each other"
            )
        self.enable_pitr = enable_pitr
        self.parallel = parallel
        self.poll_s = poll_s
        self.wait_timeout_s = wait_timeout_s
        self.window_wait_s = window_wait_s
        self.label = f'target "{name}" (dynamodb {region})'
        self.fault_hook: FaultHook | None = None  # tests: simulate a crash after a restore step
        self._aws: Aws | None = None

    def error(self, message: str) -> TargetError:
        return TargetError(f"{self.label}: {message}")

    def aws(self) -> Aws:
        """The target's AWS clients (made once; boto3 clients are thread-safe)."""
        if self._aws is None:
            self._aws = Aws(
                self.label,
                self.region,
                self.endpoint_url,
                self.autoscaling_endpoint_url,
                self.credentials,
                self.poll_s,
                self.wait_timeout_s,
            )
        return self._aws

    def describe(self) -> Mapping[str, Any]:
        found: dict[str, Any] = {
            "kind": KIND,
            "region": self.region,
            "mode": self.mode,
            "tables": list(self.tables),
        }
        if self.endpoint_url:
            found["endpoint_url"] = self.endpoint_url
        return found

    def preflight(self) -> None:
        log_warnings(self.warnings)
        aws = self.aws()

        def look(table: str) -> tuple[bool, tuple[datetime, datetime] | None]:
            if aws.describe_table(table) is None:
                return False, None
            return True, aws.pitr_window(table)

        found = _parallel(self.tables, look, self.parallel)
        missing = [t for t in self.tables if not found[t][0]]
        if missing:
            raise self.error(
                f"table(s) {', '.join(missing)} not found in {aws.where()} "
                "(wrong region, or not created by the ScalarDB schema loader yet?)"
            )
        disabled = [t for t in self.tables if found[t][1] is None]
        if disabled and self.enable_pitr:
            for table in disabled:
                spec = {"PointInTimeRecoveryEnabled": True}
                aws.call_retrying(
                    "update_continuous_backups", table, TableName=table, PointInTimeRecoverySpecification=spec
                )
                log.warning(
                    "%s: enabled point-in-time recovery on table %s (enable_pitr = true)", self.label, table
                )
        elif disabled and self.mode == PITR:
            raise self.error(
                f"point-in-time recovery is disabled on table(s) {', '.join(disabled)}: enable it "
                f"(aws dynamodb update-continuous-backups --table-name {disabled[0]} "
                "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true) "
                "or set enable_pitr = true"
            )
        elif disabled:
            log.warning("%s: point-in-time recovery is disabled on %s", self.label, ", ".join(disabled))
        for table in self.tables:
            window = found[table][1]
            if window is not None:
                log.info("%s: table %s: %s", self.label, table, window_text(*window))

    def capture(self, set_id: str) -> DynamoCapture:
        capture = DynamoCapture(self, set_id)
        if self.mode == ON_DEMAND:
            # the pause has just begun: let the writes of the last minute age out of
            # the uncertain window of CreateBackup first (see the module doc)
            time.sleep(self.settle_s)
            try:
                capture.create_backups()
            except BaseException:
                capture.release()
                raise
        return capture

    def check_record(self, record: Recorded) -> None:
        """Every table the set names (the position's settings, backups and windows, the
        description) is a configured one (the coordinator's included), every recorded
        backup is one of that very table, and the region is the configured one: a
        restore deletes and recreates the tables it names."""
        scope = Scope(self.label, record)
        covered = set(self.tables)
        for name in record.names:
            if name != SETTINGS_ARTIFACT:
                scope.fail(f"artifact {shown(name, 80)} is not {SETTINGS_ARTIFACT}")
        position = record.position
        scope.text(position.get("region"), "the position's region", required=False)
        scope.same(position.get("region"), self.region, "the position's region", "region")
        scope.text(position.get("mode"), "the position's mode", required=False)
        for key in ("tables", "backups", "pitr_windows"):
            where = f"the position's {key}"
            for table, value in scope.mapping(position.get(key), where, required=False).items():
                scope.covered(table, covered, where, "table")
                if key == "tables":
                    scope.mapping(value, f"{where}[{shown(table, 80)}]")
                elif key == "backups":
                    arn = scope.text(value, f"{where}[{shown(table, 80)}]")
                    match = _BACKUP_ARN.fullmatch(arn)
                    if match is None or match.group(1) != table:
                        scope.fail(f"{where}: {shown(arn, 160)} is not a backup of table {table}")
        described = scope.description(KIND)
        if described is not None:
            scope.described_covered(described, "tables", covered, "table")
            scope.same(described.get("region"), self.region, "the description's region", "region")

    def discard(self, record: Recorded) -> list[str]:
        """Delete the on-demand backups a forgotten set recorded; return their ARNs.

        The record is untrusted (it comes from a tombstone in storage): it is
        checked like a restore's first (every ARN a backup of a configured table
        of this region), so a planted tombstone cannot make us delete other
        backups. A backup already gone counts as deleted (a retry after a
        partial failure)."""
        self.check_record(record)
        backups = record.position.get("backups") or {}
        aws = self.aws()
        deleted = []
        for table in sorted(backups):
            arn = str(backups[table])
            try:
                aws.call_retrying("delete_backup", arn, BackupArn=arn)
            except AwsError as exc:
                if exc.code != "BackupNotFoundException":
                    raise
            deleted.append(arn)
        return deleted

    def _rename(self, dest: Mapping[str, str] | None) -> tuple[str, str] | None:
        dsn = dsn_only(dest, self.label)
        return None if dsn is None else parse_destination(dsn, self.label)

    def check_destination(self, dest: Mapping[str, str] | None, record: Recorded | None = None) -> None:
        """A ``--to`` that is not ``suffix:``/``prefix:`` is refused before the storage is read."""
        self._rename(dest)

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        self.check_record(Recorded.of_reader(src))  # before anything is contacted
        rename = self._rename(dest)
        region = src.position.get("region")
        if region and region != self.region:
            raise self.error(
                f"the backup set was taken in region {region}; the cluster file says {self.region}"
            )
        journal: StepJournal = getattr(src, "journal", None) or MemoryJournal()
        job = RestoreJob(
            self.aws(),
            journal,
            src.position,
            src.restore_point,
            rename,
            force,
            self.parallel,
            self.window_wait_s,
            hook=self.fault_hook,
        )
        try:
            job.run()
        except AwsError as exc:
            raise TargetError(str(exc)) from exc


def from_config(name: str, conf: Mapping[str, Any]) -> DynamoTarget:
    culprit = f'target "{name}"'
    check_keys(conf, _KEYS, culprit=culprit)
    region = setting_str(conf, "region", culprit=culprit)
    tables = setting_str_list(conf, "tables", culprit=culprit, required=True)
    # "": the coordinator lives in another storage (multi-storage), not demanded here
    coordinator = setting_optional_name(conf, "coordinator_table", "coordinator.state", culprit=culprit)
    if coordinator and coordinator not in tables:
        tables.append(coordinator)
    for table in tables:
        check_table_name(table, culprit)
    mode = setting_str(conf, "mode", PITR, culprit=culprit)
    if mode not in (PITR, ON_DEMAND):
        raise UsageError(f'{culprit}: mode must be "{PITR}" or "{ON_DEMAND}", not {mode!r}')
    return DynamoTarget(
        name,
        region,
        tables,
        mode,
        endpoint_url=setting_opt_str(conf, "endpoint_url", culprit=culprit),
        autoscaling_endpoint_url=setting_opt_str(conf, "autoscaling_endpoint_url", culprit=culprit),
        credentials=read_credentials(conf, culprit),
        min_pause_s=setting_duration(conf, "min_pause", "10s", culprit=culprit, maximum=MAX_CALL_S),
        # the pause holds twice the settle time: bounded like every wait on a pause
        settle_s=setting_duration(conf, "backup_settle", "60s", culprit=culprit, maximum=MAX_CALL_S / 4),
        enable_pitr=setting_bool(conf, "enable_pitr", False, culprit=culprit),
        parallel=setting_int(conf, "parallel", 8, culprit=culprit, minimum=1, maximum=50),
        poll_s=setting_duration(conf, "poll_interval", "10s", culprit=culprit),
        wait_timeout_s=setting_duration(conf, "wait_timeout", "24h", culprit=culprit),
        window_wait_s=setting_duration(conf, "restore_window_wait", "10m", culprit=culprit),
    )
