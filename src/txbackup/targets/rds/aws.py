"""The AWS side of the RDS target: the client, the instance and cluster it backs up,
their restorable windows, and what a restore must give the new copy.

RDS keeps a database's automated backups and transaction logs for the
retention period (``BackupRetentionPeriod``, 0 = off) and can restore to any
second between the earliest restorable time and ``LatestRestorableTime``,
which trails the present by about five minutes. A restore always makes a new
instance (or cluster): nothing carries over but what the request names, so the
set records the instance class, parameter group, option group, subnet group,
security groups and port, and the restore asks for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from txbackup.clock import utc_now
from txbackup.errors import TargetError, UsageError
from txbackup.targets import awsapi
from txbackup.targets.awsapi import AwsError, Credentials
from txbackup.targets.pitr.polling import Poller

INSTANCE = "instance"
CLUSTER = "cluster"
AVAILABLE = "available"
NOT_FOUND = frozenset({"DBInstanceNotFound", "DBInstanceNotFoundFault", "DBClusterNotFoundFault"})
FAILED = frozenset(
    {
        "failed",
        "incompatible-restore",
        "incompatible-parameters",
        "incompatible-network",
        "incompatible-option-group",
        "inaccessible-encryption-credentials",
        "restore-error",
        "storage-full",
        "deleting",
    }
)
"""States from which a restored copy will not become available by itself."""
_IDENTIFIER = re.compile(r"[A-Za-z](?:-?[A-Za-z0-9])*")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}")
"""A recorded group name or security group id (untrusted: checked before it is sent)."""


def check_identifier(value: str, culprit: str, what: str = "identifier") -> str:
    """An RDS instance or cluster identifier: 1-63 letters, digits and single hyphens,
    starting with a letter, not ending with a hyphen."""
    if len(value) > 63 or not _IDENTIFIER.fullmatch(value):
        raise UsageError(
            f"{culprit}: {value!r} is not a valid RDS {what} (1-63 letters, digits and single "
            "hyphens, starting with a letter, not ending with a hyphen)"
        )
    return value


def check_name(value: object, culprit: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise TargetError(f"{culprit}: the backup set records {what} {value!r}, not a valid name")
    return value


def _utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return None


class Rds:
    """The RDS client of one target (thread-safe), and its reads."""

    def __init__(
        self,
        label: str,
        region: str,
        endpoint_url: str | None,
        credentials: Credentials,
        poll_s: float,
        wait_timeout_s: float,
    ) -> None:
        self.label = label
        self.region = region
        self.endpoint_url = endpoint_url
        self.poller = Poller(label, poll_s, wait_timeout_s)
        self.client: Any = awsapi.client("rds", region, credentials, endpoint_url)

    def where(self) -> str:
        return awsapi.where(self.region, self.endpoint_url)

    def call(self, operation: str, subject: str = "", **params: Any) -> dict[str, Any]:
        return awsapi.call(
            self.label,
            getattr(self.client, operation),
            operation,
            subject,
            service="RDS",
            place=self.where(),
            not_found=NOT_FOUND,
            **params,
        )

    # -- reads ---------------------------------------------------------------------

    def instance(self, identifier: str) -> dict[str, Any] | None:
        """The instance's description, or None when there is none."""
        try:
            found = self.call(
                "describe_db_instances", f"instance {identifier}", DBInstanceIdentifier=identifier
            )
        except AwsError as exc:
            if exc.code in NOT_FOUND:
                return None
            raise
        listed = found.get("DBInstances") or []
        return dict(listed[0]) if listed else None

    def cluster(self, identifier: str) -> dict[str, Any] | None:
        """The cluster's description, or None when there is none."""
        try:
            found = self.call("describe_db_clusters", f"cluster {identifier}", DBClusterIdentifier=identifier)
        except AwsError as exc:
            if exc.code in NOT_FOUND:
                return None
            raise
        listed = found.get("DBClusters") or []
        return dict(listed[0]) if listed else None

    def describe(self, kind: str, identifier: str) -> dict[str, Any] | None:
        return self.instance(identifier) if kind == INSTANCE else self.cluster(identifier)

    def source(self, kind: str, identifier: str) -> dict[str, Any]:
        """The source instance or cluster, which must exist with automated backups on."""
        found = self.describe(kind, identifier)
        if found is None:
            raise TargetError(f"{self.label}: {kind} {identifier} not found in {self.where()}")
        retention = int(found.get("BackupRetentionPeriod") or 0)
        if retention <= 0:
            option = "--db-instance-identifier" if kind == INSTANCE else "--db-cluster-identifier"
            raise TargetError(
                f"{self.label}: automated backups are off on {kind} {identifier} (BackupRetentionPeriod 0): "
                f"no point-in-time restore is possible; turn them on with aws rds modify-db-{kind} "
                f"{option} {identifier} --backup-retention-period 7 --apply-immediately"
            )
        return found

    def window(self, kind: str, identifier: str) -> tuple[datetime, datetime]:
        """(earliest, latest) restorable times of the source now."""
        found = self.source(kind, identifier)
        latest = _utc(found.get("LatestRestorableTime"))
        if latest is None:
            raise TargetError(
                f"{self.label}: {kind} {identifier} has no latest restorable time yet "
                "(its first automated backup is not done)"
            )
        if kind == CLUSTER:
            earliest = _utc(found.get("EarliestRestorableTime"))
        else:
            earliest = self._instance_earliest(identifier, found)
        return earliest or latest, latest

    def _instance_earliest(self, identifier: str, found: Mapping[str, Any]) -> datetime | None:
        """An instance's description has no earliest restorable time: its automated
        backups' RestoreWindow has; else (none listed) the creation time bounded by
        the retention period."""
        try:
            backups = self.call(
                "describe_db_instance_automated_backups",
                f"instance {identifier}",
                DBInstanceIdentifier=identifier,
            ).get("DBInstanceAutomatedBackups", [])
        except AwsError as exc:
            if exc.code not in NOT_FOUND and exc.code != "DBInstanceAutomatedBackupNotFoundFault":
                raise
            backups = []
        times = [_utc((b.get("RestoreWindow") or {}).get("EarliestTime")) for b in backups]
        earliest = min((t for t in times if t is not None), default=None)
        if earliest is not None:
            return earliest
        created = _utc(found.get("InstanceCreateTime"))
        retained = utc_now() - timedelta(days=int(found.get("BackupRetentionPeriod") or 0))
        return max(created, retained) if created is not None else retained

    def wait_available(self, kind: str, identifier: str) -> dict[str, Any]:
        """Wait until the instance or cluster is available; returns its description."""
        key = "DBInstanceStatus" if kind == INSTANCE else "Status"
        found: dict[str, Any] = {}

        def probe() -> tuple[bool, str]:
            desc = self.describe(kind, identifier)
            if desc is None:
                raise TargetError(f"{self.label}: {kind} {identifier} is gone")
            found.update(desc)
            state = str(desc.get(key) or "unknown")
            if state in FAILED:
                raise TargetError(
                    f"{self.label}: {kind} {identifier} is {state}: it will not become available"
                )
            return state == AVAILABLE, state

        self.poller.wait(f"{kind} {identifier} to be available", probe)
        return found


def tags_of(desc: Mapping[str, Any]) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value")) for t in desc.get("TagList") or []}


def security_groups(desc: Mapping[str, Any]) -> list[str]:
    return sorted(str(g["VpcSecurityGroupId"]) for g in desc.get("VpcSecurityGroups") or [])


def _custom(name: object) -> str | None:
    """A group name worth asking for: None for the engine's default groups
    (``default.postgres15``, ``default:postgres-15``), which a restore gets anyway and
    which are named per engine version (the recorded one may not exist for the copy)."""
    text = str(name or "")
    return None if not text or text.startswith(("default.", "default:")) else text


def record_instance(desc: Mapping[str, Any]) -> dict[str, Any]:
    """What a restore of this instance must ask for (JSON-safe)."""
    groups = desc.get("DBParameterGroups") or []
    options = desc.get("OptionGroupMemberships") or []
    endpoint = desc.get("Endpoint") or {}
    return {
        "identifier": str(desc["DBInstanceIdentifier"]),
        "arn": str(desc.get("DBInstanceArn") or ""),
        "engine": str(desc.get("Engine") or ""),
        "engine_version": str(desc.get("EngineVersion") or ""),
        "instance_class": str(desc["DBInstanceClass"]),
        "parameter_group": _custom(groups[0].get("DBParameterGroupName")) if groups else None,
        "option_group": _custom(options[0].get("OptionGroupName")) if options else None,
        "subnet_group": str((desc.get("DBSubnetGroup") or {}).get("DBSubnetGroupName") or "") or None,
        "security_groups": security_groups(desc),
        "port": int(endpoint.get("Port") or desc.get("DbInstancePort") or 0) or None,
        "multi_az": bool(desc.get("MultiAZ", False)),
        "publicly_accessible": bool(desc.get("PubliclyAccessible", False)),
        "deletion_protection": bool(desc.get("DeletionProtection", False)),
        "backup_retention_days": int(desc.get("BackupRetentionPeriod") or 0),
        "endpoint": str(endpoint.get("Address") or ""),
    }


def record_cluster(desc: Mapping[str, Any], members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a restore of this Aurora cluster and its instances must ask for (JSON-safe);
    the writer first (the first instance created in a cluster becomes its writer)."""
    writers = {
        str(m["DBInstanceIdentifier"]) for m in desc.get("DBClusterMembers") or [] if m.get("IsClusterWriter")
    }
    instances = []
    for member in members:
        recorded = record_instance(member)
        instances.append(
            {
                "identifier": recorded["identifier"],
                "instance_class": recorded["instance_class"],
                "parameter_group": recorded["parameter_group"],
                "promotion_tier": int(member.get("PromotionTier") or 1),
                "writer": recorded["identifier"] in writers,
            }
        )
    instances.sort(key=lambda i: (not i["writer"], i["identifier"]))
    return {
        "identifier": str(desc["DBClusterIdentifier"]),
        "arn": str(desc.get("DBClusterArn") or ""),
        "engine": str(desc.get("Engine") or ""),
        "engine_version": str(desc.get("EngineVersion") or ""),
        "engine_mode": str(desc.get("EngineMode") or "provisioned"),
        "parameter_group": _custom(desc.get("DBClusterParameterGroup")),
        "subnet_group": str(desc.get("DBSubnetGroup") or "") or None,
        "security_groups": security_groups(desc),
        "port": int(desc.get("Port") or 0) or None,
        "deletion_protection": bool(desc.get("DeletionProtection", False)),
        "backup_retention_days": int(desc.get("BackupRetentionPeriod") or 0),
        "endpoint": str(desc.get("Endpoint") or ""),
        "reader_endpoint": str(desc.get("ReaderEndpoint") or ""),
        "instances": instances,
    }
