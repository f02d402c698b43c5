"""Amazon RDS instances and Aurora clusters (kind ``rds``): point-in-time restore.

Settings::

    [[targets]]
    name = "bank-db"
    kind = "rds"
    region = "eu-west-1"                   # required
    instance = "bank-db"                   # the DB instance; or cluster = "bank-aurora" (exactly one)
    restored_name = "{id}-{set}"           # the new identifier: {id} (the source's), {set} (the set id)
    min_pause = "10s"                      # the guide's rule; shorter is allowed, with a warning
    restorable_wait = "15m"                # at backup: longest wait for the set's point to be restorable
    restore_window_wait = "15m"            # at restore: the same, for a point not yet restorable
    access_key_id_env = "AWS_KEY_ID"       # optional (or *_file); default: the standard AWS chain
    secret_access_key_env = "AWS_SECRET"   # with access_key_id_*
    session_token_env = "AWS_TOKEN"        # optional
    endpoint_url = "http://127.0.0.1:5000" # optional (tests, VPC endpoints)
    poll_interval = "30s"                  # how often to look at a restore in progress
    wait_timeout = "12h"                   # longest wait for the restored copy to be available

RDS keeps automated backups and transaction logs for the retention period, so
nothing is exported but a record of the source. Preflight (before the pause)
checks the instance or cluster exists with these credentials and that its
automated backups are on (``BackupRetentionPeriod`` > 0; else one line saying
how to turn them on), and notes the restorable window. Capture does nothing:
the engine holds the pause for ``min_pause`` and the restore point is its
midpoint. Export runs after the unpause and waits (with progress, at most
``restorable_wait``) until the service's ``LatestRestorableTime`` has passed
that moment, hence the pause's end: before that, RDS could not restore to the
set's point, so the set is not complete (the backup fails, saying so). The set
records the instance class, parameter, option and subnet groups, security
groups and port (for Aurora: the cluster's, and each instance's class,
parameter group and promotion tier) in the manifest and in ``rds.json``.

Restore (``rds.restore``) restores to the point into a **new** identifier
(``restored_name``, or ``--to NAME=identifier``) with those settings, as a
resumable job, and prints the new endpoint: ScalarDB's contact points must
change to it. Nothing existing is touched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from txbackup.clock import iso_ms, utc_now
from txbackup.durations import MAX_CALL_S
from txbackup.errors import TargetError, UsageError
from txbackup.jobs import MemoryJournal, StepJournal
from txbackup.safepaths import shown
from txbackup.settings import check_keys, setting_duration, setting_opt_str, setting_str
from txbackup.targets import pitr
from txbackup.targets.awsapi import CREDENTIAL_KEYS, AwsError, Credentials, read_credentials
from txbackup.targets.base import ArtifactReader, ArtifactWriter, Recorded, Scope, dsn_only
from txbackup.targets.pitr import PITR_MIN_PAUSE_S, check_min_pause, log_warnings, window_text
from txbackup.targets.pitr.job import wait_until_restorable
from txbackup.targets.pitr.journal import FaultHook
from txbackup.targets.rds.aws import (
    CLUSTER,
    INSTANCE,
    Rds,
    check_identifier,
    record_cluster,
    record_instance,
)
from txbackup.targets.rds.restore import RestoreJob, member_identifier

log = logging.getLogger(__name__)

KIND = "rds"
ARTIFACT = "rds.json"
DEFAULT_RESTORED_NAME = "{id}-{set}"
_SAMPLE_SET_ID = "20261127t101500z-3f9a"  # set ids all have this shape
_KEYS = {
    "region",
    "endpoint_url",
    "instance",
    "cluster",
    "restored_name",
    "min_pause",
    "restorable_wait",
    "restore_window_wait",
    "poll_interval",
    "wait_timeout",
    *CREDENTIAL_KEYS,
}


def restored_name(pattern: str, identifier: str, set_id: str, culprit: str) -> str:
    return pitr.restored_name(
        "restored_name",
        pattern,
        {"id": identifier},
        set_id,
        check_identifier,
        "name the copy with --to NAME=identifier",
        culprit,
    )


class RdsCapture:
    """Nothing to hold: the restore point is the pause midpoint; this records the source."""

    def __init__(self, target: RdsTarget, set_id: str, record: Mapping[str, Any]) -> None:
        self.target = target
        self.set_id = set_id
        self.record = dict(record)
        self.window: list[str] = []

    def position(self) -> Mapping[str, Any]:
        kind = self.target.source_kind
        found: dict[str, Any] = {
            "kind": kind,
            "region": self.target.region,
            "set_id": self.set_id,
            kind: self.record,
        }
        if self.window:
            found["window"] = list(self.window)
        return found

    def export(self, out: ArtifactWriter) -> None:
        """Wait until the source can be restored to the pause's end, check it is still
        the one captured, then write ``rds.json``."""
        target = self.target
        rds = target.rds()
        until = utc_now()  # export runs after the unpause: the pause ended before now
        kind, identifier = target.source_kind, target.identifier
        latest = wait_until_restorable(
            rds.poller,
            f"{kind} {identifier}",
            lambda: rds.window(kind, identifier)[1],
            until,
            target.restorable_wait_s,
        )
        now = target.inspect()
        if now.get("arn") != self.record.get("arn"):
            raise target.error(f"{kind} {identifier} was re-created during the backup")
        earliest, latest = rds.window(kind, identifier)
        self.window = [iso_ms(earliest), iso_ms(latest)]
        document = {
            **self.position(),
            "restore_point": "the set's restore point (its pause midpoint, see the manifest)",
            "restore_by_hand": (
                f"aws rds restore-db-instance-to-point-in-time --source-db-instance-identifier {identifier} "
                "--target-db-instance-identifier NEW --restore-time RESTORE_POINT (plus the class, groups "
                "and port recorded here)"
                if kind == INSTANCE
                else "aws rds restore-db-cluster-to-point-in-time --source-db-cluster-identifier "
                f"{identifier} --db-cluster-identifier NEW --restore-to-time RESTORE_POINT "
                "(plus the groups and port recorded here), then "
                "aws rds create-db-instance --db-cluster-identifier NEW per instance"
            ),
        }
        with out.open(ARTIFACT) as stream:
            stream.write(json.dumps(document, indent=2, sort_keys=True).encode() + b"\n")
        log.info("%s: restorable up to %s", target.label, iso_ms(latest))

    def release(self) -> None:
        return None


class RdsTarget:
    kind = KIND

    def __init__(
        self,
        name: str,
        region: str,
        *,
        instance: str | None = None,
        cluster: str | None = None,
        endpoint_url: str | None = None,
        credentials: Credentials | None = None,
        restored_name: str = DEFAULT_RESTORED_NAME,
        min_pause_s: float = PITR_MIN_PAUSE_S,
        restorable_wait_s: float = 900.0,
        window_wait_s: float = 900.0,
        poll_s: float = 30.0,
        wait_timeout_s: float = 12 * 3600.0,
    ) -> None:
        if (instance is None) == (cluster is None):
            raise UsageError(f'target "{name}": give instance = "ID" or cluster = "ID" (exactly one)')
        self.name = name
        self.region = region
        self.source_kind = INSTANCE if instance is not None else CLUSTER
        self.identifier = str(instance or cluster)
        self.endpoint_url = endpoint_url
        self.credentials = credentials or Credentials()
        self.restored_name = restored_name
        self.min_pause_s = min_pause_s
        self.warnings = check_min_pause(name, min_pause_s)
        self.restorable_wait_s = restorable_wait_s
        self.window_wait_s = window_wait_s
        self.poll_s = poll_s
        self.wait_timeout_s = wait_timeout_s
        self.label = f'target "{name}" (rds {self.source_kind} {self.identifier})'
        self.fault_hook: FaultHook | None = None  # tests: simulate a crash after a restore step
        self._rds: Rds | None = None
        self._record: dict[str, Any] | None = None

    def error(self, message: str) -> TargetError:
        return TargetError(f"{self.label}: {message}")

    def rds(self) -> Rds:
        if self._rds is None:
            self._rds = Rds(
                self.label, self.region, self.endpoint_url, self.credentials, self.poll_s, self.wait_timeout_s
            )
        return self._rds

    def describe(self) -> Mapping[str, Any]:
        found: dict[str, Any] = {"kind": KIND, "region": self.region, self.source_kind: self.identifier}
        if self.endpoint_url:
            found["endpoint_url"] = self.endpoint_url
        return found

    def preflight(self) -> None:
        log_warnings(self.warnings)
        self._record = self.inspect()
        earliest, latest = self.rds().window(self.source_kind, self.identifier)
        log.info(
            "%s: automated backups kept %s day(s); %s",
            self.label,
            self._record["backup_retention_days"],
            window_text(earliest, latest),
        )

    def inspect(self) -> dict[str, Any]:
        """The source (automated backups on), as a set records it."""
        rds = self.rds()
        found = rds.source(self.source_kind, self.identifier)
        if self.source_kind == INSTANCE:
            if found.get("DBClusterIdentifier"):
                raise self.error(
                    f"instance {self.identifier} belongs to Aurora cluster {found['DBClusterIdentifier']}: "
                    f'configure cluster = "{found["DBClusterIdentifier"]}" instead'
                )
            return record_instance(found)
        members = []
        for member in found.get("DBClusterMembers") or []:
            identifier = str(member.get("DBInstanceIdentifier"))
            desc = rds.instance(identifier)
            if desc is None:
                raise self.error(f"instance {identifier} of cluster {self.identifier} not found")
            members.append(desc)
        if not members and found.get("EngineMode", "provisioned") == "provisioned":
            raise self.error(f"cluster {self.identifier} has no instances")
        return record_cluster(found, members)

    def capture(self, set_id: str) -> RdsCapture:
        record = self._record if self._record is not None else self.inspect()
        return RdsCapture(self, set_id, record)

    def check_record(self, record: Recorded) -> None:
        """The set is of the configured instance or cluster, in the configured region, and
        every identifier it names is one a restore may make: a restore creates what it names."""
        scope = Scope(self.label, record)
        for name in record.names:
            if name != ARTIFACT:
                scope.fail(f"artifact {shown(name, 80)} is not {ARTIFACT}")
        position = record.position
        scope.same(
            scope.text(position.get("kind"), "the position's kind"), self.source_kind, "the position", "of"
        )
        scope.same(position.get("region"), self.region, "the position's region", "region")
        source = scope.mapping(position.get(self.source_kind), f"the position's {self.source_kind}")
        identifier = scope.text(source.get("identifier"), f"the position's {self.source_kind} identifier")
        scope.same(identifier, self.identifier, f"the position's {self.source_kind}", self.source_kind)
        if self.source_kind == CLUSTER:
            where = "the position's cluster instances"
            for member in scope.sequence(source.get("instances"), where):
                scope.text(scope.mapping(member, where).get("identifier"), f"{where}: an identifier")
        described = scope.description(KIND)
        if described is not None:
            scope.same(described.get("region"), self.region, "the description's region", "region")
            scope.same(
                described.get(self.source_kind), self.identifier, "the description", f"of {self.source_kind}"
            )

    def _new(self, dest: Mapping[str, str] | None) -> str | None:
        dsn = dsn_only(dest, self.label)
        return None if dsn is None else check_identifier(dsn, self.label)

    def check_destination(self, dest: Mapping[str, str] | None, record: Recorded | None = None) -> None:
        """A ``--to`` that is not an RDS identifier is refused before the storage is read."""
        self._new(dest)

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        self.check_record(Recorded.of_reader(src))  # before anything is contacted
        new = self._new(dest)
        set_id = str(src.position.get("set_id") or "")
        if new is None:
            if not set_id:
                raise self.error("the backup set records no set id: name the new copy with --to")
            new = restored_name(self.restored_name, self.identifier, set_id, self.label)
        if self.source_kind == CLUSTER:
            instances = src.position.get(CLUSTER, {}).get("instances") or []
            for i in range(len(instances)):
                member_identifier(new, i + 1, self.label)
        journal: StepJournal = getattr(src, "journal", None) or MemoryJournal()
        job = RestoreJob(
            self.rds(),
            journal,
            src.position,
            src.restore_point,
            new,
            self.window_wait_s,
            hook=self.fault_hook,
        )
        try:
            job.run()
        except AwsError as exc:
            raise TargetError(str(exc)) from exc


def from_config(name: str, conf: Mapping[str, Any]) -> RdsTarget:
    culprit = f'target "{name}"'
    check_keys(conf, _KEYS, culprit=culprit)
    instance = setting_opt_str(conf, "instance", culprit=culprit)
    cluster = setting_opt_str(conf, "cluster", culprit=culprit)
    if (instance is None) == (cluster is None):
        raise UsageError(f'{culprit}: give instance = "ID" or cluster = "ID" (exactly one)')
    check_identifier(
        str(instance or cluster), culprit, "instance identifier" if instance else "cluster identifier"
    )
    pattern = setting_str(conf, "restored_name", DEFAULT_RESTORED_NAME, culprit=culprit)
    if "restored_name" in conf:
        restored_name(pattern, str(instance or cluster), _SAMPLE_SET_ID, culprit)
    return RdsTarget(
        name,
        setting_str(conf, "region", culprit=culprit),
        instance=instance,
        cluster=cluster,
        endpoint_url=setting_opt_str(conf, "endpoint_url", culprit=culprit),
        credentials=read_credentials(conf, culprit),
        restored_name=pattern,
        min_pause_s=setting_duration(conf, "min_pause", "10s", culprit=culprit, maximum=MAX_CALL_S),
        restorable_wait_s=setting_duration(conf, "restorable_wait", "15m", culprit=culprit),
        window_wait_s=setting_duration(conf, "restore_window_wait", "15m", culprit=culprit),
        poll_s=setting_duration(conf, "poll_interval", "30s", culprit=culprit),
        wait_timeout_s=setting_duration(conf, "wait_timeout", "12h", culprit=culprit),
    )
