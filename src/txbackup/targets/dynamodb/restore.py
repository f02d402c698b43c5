"""Restoring DynamoDB tables: the guide's procedure as a resumable job.

A DynamoDB restore always creates a new table. To bring table ``T`` back in
place, every table of the target goes through these steps (in parallel with
the other tables, at most ``parallel`` at once); each step is recorded in the
job's journal (``T/<step>``) once it has taken effect, and is skipped when the
job is resumed:

==================  ======================================================
``alias-restored``  PITR-restore ``T`` at the restore point into the alias
                    table ``T-txb-<token>``; wait until ACTIVE (pitr mode)
``alias-backed-up`` on-demand backup of the alias; wait until AVAILABLE
                    (pitr mode; in on-demand mode the set's own backup of
                    ``T``, already AVAILABLE, plays this part)
``original-deleted`` check *now* that the backup is AVAILABLE, then delete
                    ``T`` (turning its deletion protection off first) and
                    wait until it is gone
``original-restored`` restore ``T`` from that backup; wait until ACTIVE
``settings-applied`` re-apply every recorded setting (billing and capacity,
                    table class, stream, TTL, tags, PITR, auto scaling,
                    deletion protection)
``alias-deleted``   delete the alias table (pitr mode)
==================  ======================================================

Every step first looks at the world, so repeating it after a crash between
acting and recording is harmless: an alias table that exists is ours (its name
carries the job's random token), a backup of the alias is found by its name, a
``T`` that exists at ``original-restored`` must have been restored from our
backup (``RestoreSummary.SourceBackupArn``) or the job stops. The original is
never deleted unless ``describe_backup`` says AVAILABLE right before.

Non-destructive restore (``--to NAME=suffix:-restored`` or ``prefix:...``):
each table is restored straight into its new name (steps ``restored-as`` and
``settings-applied``); nothing existing is touched and a new name that exists
already is refused before anything starts.

The alias backups are kept (their ARNs are in the journal); delete them once
the restored tables are trusted.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from txbackup.errors import TargetError, UsageError
from txbackup.jobs import StepJournal
from txbackup.targets.dynamodb.aws import Aws, AwsError, Stopped, apply_settings, restore_overrides
from txbackup.targets.pitr.job import PointInTimeJob
from txbackup.targets.pitr.journal import FaultHook

log = logging.getLogger(__name__)

PITR = "pitr"
ON_DEMAND = "on-demand"
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


def check_table_name(name: str, culprit: str) -> str:
    if not _TABLE_NAME.fullmatch(name):
        raise UsageError(
            f"{culprit}: {name!r} is not a valid DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)"
        )
    return name


def parse_destination(value: str, culprit: str) -> tuple[str, str]:
    """``suffix:TEXT`` or ``prefix:TEXT`` (``--to NAME=...``) -> (kind, text)."""
    kind, sep, text = value.partition(":")
    if not sep or kind not in ("suffix", "prefix") or not text or not re.fullmatch(r"[A-Za-z0-9_.-]+", text):
        raise UsageError(
            f"{culprit}: restore destination {value!r}: expected suffix:TEXT or prefix:TEXT "
            "(each table T is restored as T+TEXT or TEXT+T; A-Z a-z 0-9 _ . - only)"
        )
    return kind, text


class RestoreJob(PointInTimeJob):
    """One restore of one DynamoDB target (see the module doc)."""

    def __init__(
        self,
        aws: Aws,
        journal: StepJournal,
        position: Mapping[str, Any],
        restore_point: str | None,
        rename: tuple[str, str] | None,
        force: bool,
        parallel: int,
        window_wait_s: float,
        hook: FaultHook | None = None,
    ) -> None:
        mode = str(position.get("mode", ""))
        if mode not in (PITR, ON_DEMAND):
            raise TargetError(f"{aws.label}: the backup set records no capture mode (not a dynamodb set?)")
        super().__init__(aws.label, journal, restore_point, aws.poller, hook=hook, needs_point=mode == PITR)
        self.aws = aws
        self.mode = mode
        self.settings: dict[str, dict[str, Any]] = dict(position.get("tables") or {})
        self.backups: dict[str, str] = dict(position.get("backups") or {})
        if not self.settings:
            raise TargetError(f"{self.label}: the backup set records no tables")
        self.rename = rename
        self.force = force
        self.parallel = parallel
        self.window_wait_s = window_wait_s
        self.token = ""

    def new_name(self, table: str) -> str:
        if self.rename is None:
            return table
        kind, text = self.rename
        name = table + text if kind == "suffix" else text + table
        return check_table_name(name, self.label)

    # -- the job ------------------------------------------------------------

    def run(self) -> None:
        self.aws.stop.clear()
        self._plan()
        tables = sorted(self.settings)
        errors: dict[str, BaseException] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.parallel)) as pool:
            futures = {pool.submit(self._one, table): table for table in tables}
            try:
                for future in concurrent.futures.as_completed(futures):
                    exc = future.exception()
                    if exc is not None:
                        errors[futures[future]] = exc
                        self.aws.stop.set()  # the others stop at their next step or poll
            except BaseException:
                self.aws.stop.set()
                raise
        if errors:
            real = [e for e in errors.values() if not isinstance(e, Stopped)] or list(errors.values())
            first = real[0]
            if isinstance(first, TargetError):
                failed = ", ".join(sorted(errors))
                raise TargetError(
                    f"{first} [not finished: {failed}; the restore job can be resumed]"
                ) from first
            raise first

    def _plan(self) -> None:
        """Check everything before the first change; record the job's token."""
        planned = self.plan(self._check)
        self.token = str(planned["token"])
        if planned.get("rename") != (list(self.rename) if self.rename else None):
            raise UsageError(
                f"{self.label}: this restore job was started with destination {planned.get('rename')}; "
                "resume it with the same --to"
            )

    def _check(self) -> dict[str, Any]:
        if self.mode == PITR:
            for table in sorted(self.settings):
                self.check_window(
                    f"table {table}", functools.partial(self._window, table), self.window_wait_s
                )
        else:
            self._check_backups()
        if self.rename is not None:
            taken = [
                self.new_name(t) for t in sorted(self.settings) if self.aws.describe_table(self.new_name(t))
            ]
            if taken:
                raise TargetError(
                    f"{self.label}: destination table(s) {', '.join(taken)} exist already; "
                    "a non-destructive restore never replaces a table: choose another suffix or prefix"
                )
        else:
            existing = [t for t in sorted(self.settings) if self.aws.describe_table(t) is not None]
            if existing and not self.force:
                raise TargetError(
                    f"{self.label}: restoring in place replaces the existing table(s) {', '.join(existing)} "
                    "(each is deleted only once a backup of its restored copy is AVAILABLE): add --force, "
                    "or restore next to them with --to NAME=suffix:-restored"
                )
        return {
            "token": secrets.token_hex(4),
            "mode": self.mode,
            "rename": list(self.rename) if self.rename else None,
        }

    def _window(self, table: str) -> tuple[datetime, datetime]:
        """The source table's PITR window (it must exist and have PITR on).

        LatestRestorableDateTime trails the present by about five minutes: the
        shared ``check_window`` waits for a point that is past but not yet restorable."""
        if self.aws.describe_table(table) is None:
            raise TargetError(
                f"{self.label}: table {table} does not exist: a point-in-time restore needs it "
                f"(a deleted table's last state is in its system backup {table}$DeletedTableBackup)"
            )
        window = self.aws.pitr_window(table)
        if window is None:
            raise TargetError(
                f"{self.label}: point-in-time recovery is not enabled on table {table}: cannot restore it"
            )
        return window

    def _check_backups(self) -> None:
        for table in sorted(self.settings):
            arn = self.backups.get(table)
            if not arn:
                raise TargetError(f"{self.label}: the backup set records no backup of table {table}")
            status = self.aws.backup_status(arn)
            if status != "AVAILABLE":
                raise TargetError(
                    f"{self.label}: backup {arn} of table {table} is {status or 'gone'}: cannot restore"
                )

    # -- one table ------------------------------------------------------------

    def _one(self, table: str) -> None:
        if self.rename is not None:
            self._restore_as(table, self.new_name(table))
        else:
            self._in_place(table)

    def _restore_into(self, source: str, target: str) -> dict[str, Any]:
        """Start restoring ``source`` (at the point, or from the set's backup) into table ``target``."""
        overrides = restore_overrides(self.settings[source])
        if self.mode == PITR:
            return self.aws.call_retrying(
                "restore_table_to_point_in_time",
                source,
                SourceTableName=source,
                TargetTableName=target,
                RestoreDateTime=self.at,
                **overrides,
            )
        return self.aws.call_retrying(
            "restore_table_from_backup",
            source,
            TargetTableName=target,
            BackupArn=self.backups[source],
            **overrides,
        )

    def _restore_as(self, table: str, new: str) -> None:
        step = f"{table}/restored-as"
        if not self.journal.is_done(step):
            desc = self.aws.describe_table(new)
            if desc is None:
                self._restore_into(table, new)
            elif not self._restored_from_us(desc, table):
                raise TargetError(
                    f"{self.label}: table {new} appeared meanwhile and is not this job's restore of {table}"
                )
            self.aws.wait_active(new)
            self.journal.done(step, {"table": new})
        self._settings(table, new)

    def _restored_from_us(self, desc: Mapping[str, Any], source: str) -> bool:
        summary = desc.get("RestoreSummary") or {}
        if self.mode == ON_DEMAND:
            return bool(summary.get("SourceBackupArn") == self.backups[source])
        return bool(summary.get("SourceTableArn") == self.settings[source]["arn"])

    def _in_place(self, table: str) -> None:
        alias = check_table_name(f"{table}-txb-{self.token}"[-255:], self.label)
        backup = self._alias_backup(table, alias) if self.mode == PITR else self.backups[table]
        self._delete_original(table, backup)
        step = f"{table}/original-restored"
        if not self.journal.is_done(step):
            desc = self.aws.describe_table(table)
            if desc is None:
                self.aws.call_retrying(
                    "restore_table_from_backup",
                    table,
                    TargetTableName=table,
                    BackupArn=backup,
                    **restore_overrides(self.settings[table]),
                )
            elif (desc.get("RestoreSummary") or {}).get("SourceBackupArn") != backup:
                # it appeared after we saw the original gone: ours if restored from our backup
                raise TargetError(
                    f"{self.label}: table {table} was recreated by someone else while this restore had it "
                    f"deleted; it is left alone: the restored data is in backup {backup}"
                )
            self.aws.wait_active(table)
            self.journal.done(step, {"backup_arn": backup})
        self._settings(table, table)
        if self.mode == PITR:
            step = f"{table}/alias-deleted"
            if not self.journal.is_done(step):
                if self.aws.describe_table(alias) is not None:
                    self._delete_table(alias)
                self.aws.wait_gone(alias)
                self.journal.done(step)

    def _alias_backup(self, table: str, alias: str) -> str:
        step = f"{table}/alias-restored"
        if not self.journal.is_done(step):
            if self.aws.describe_table(alias) is None:
                if self.aws.describe_table(table) is None:
                    raise TargetError(
                        f"{self.label}: table {table} is gone and its restored copy {alias} does not exist"
                    )
                self._restore_into(table, alias)
            self.aws.wait_active(alias)
            self.journal.done(step, {"alias": alias})
        step = f"{table}/alias-backed-up"
        if not self.journal.is_done(step):
            arn = self.aws.find_backup(alias, alias)
            if arn is None:
                created = self.aws.call_retrying("create_backup", alias, TableName=alias, BackupName=alias)
                arn = str(created["BackupDetails"]["BackupArn"])
            self.aws.wait_backup(arn)
            self.journal.done(step, {"backup_arn": arn})
        return str(self.journal.data(step)["backup_arn"])

    def _delete_original(self, table: str, backup: str) -> None:
        step = f"{table}/original-deleted"
        if self.journal.is_done(step):
            return
        # the one rule that keeps data safe: checked against AWS now, not the journal
        status = self.aws.backup_status(backup)
        if status != "AVAILABLE":
            raise TargetError(
                f"{self.label}: backup {backup} is {status or 'gone'}, not AVAILABLE: "
                f"refusing to delete table {table}"
            )
        # whatever ``table`` holds now goes, even an earlier restore from this same backup:
        # ``original-restored`` runs only once this step is recorded
        desc = self.aws.describe_table(table)
        if desc is not None and desc.get("TableStatus") != "DELETING":
            self._delete_table(table)
        self.aws.wait_gone(table)
        self.journal.done(step)

    def _delete_table(self, table: str) -> None:
        desc = self.aws.wait_active(table)
        if desc.get("DeletionProtectionEnabled"):
            self.aws.call_retrying("update_table", table, TableName=table, DeletionProtectionEnabled=False)
            self.aws.wait_active(table)
        try:
            self.aws.call_retrying("delete_table", table, TableName=table)
        except AwsError as exc:
            if exc.code not in ("ResourceNotFoundException", "TableNotFoundException"):
                raise

    def _settings(self, table: str, target: str) -> None:
        step = f"{table}/settings-applied"
        if self.journal.is_done(step):
            return
        changed = apply_settings(self.aws, target, self.settings[table])
        self.journal.done(step, {"changed": changed})
        log.info("%s: table %s: re-applied %s", self.label, target, ", ".join(changed) or "nothing")
