"""The AWS side of the DynamoDB target: clients, errors, waiters, table settings.

boto3 has no type information of its own; everything boto3 returns goes
through ``Aws.call`` and comes back as ``dict[str, Any]``, so the rest of the
target is typed. Every error becomes a ``TargetError`` naming the target, the
operation and the table, with a hint for the usual causes (credentials,
region, missing table).

Table settings (``read_settings`` / ``apply_settings``) are everything a
DynamoDB restore does not carry over: billing mode and capacity, table class,
stream, TTL, tags, PITR, auto scaling targets and policies, deletion
protection. Key schema, attribute definitions and indexes are recorded too
(the restore itself brings them back). Each ``apply_*`` checks the table first
and changes only what differs, so re-applying is always safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from txbackup.errors import TargetError, UsageError
from txbackup.targets.pitr.polling import Poller, Probe, Stopped

__all__ = [
    "Aws",
    "AwsError",
    "Credentials",
    "Stopped",
    "apply_settings",
    "read_settings",
    "restore_overrides",
]

try:
    from txbackup.targets import awsapi
    from txbackup.targets.awsapi import AwsError, Credentials
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise UsageError(f"the dynamodb target needs boto3 (pip install 'txbackup[dynamodb]'): {exc}") from None

NOT_FOUND = frozenset({"ResourceNotFoundException", "TableNotFoundException", "BackupNotFoundException"})
# worth waiting out: too many control-plane operations at once, table busy, backups being enabled
RETRYABLE = frozenset(
    {
        "LimitExceededException",
        "ResourceInUseException",
        "ContinuousBackupsUnavailableException",
        "BackupInUseException",
    }
)


class Aws:
    """DynamoDB and Application Auto Scaling clients of one target (thread-safe)."""

    def __init__(
        self,
        label: str,
        region: str,
        endpoint_url: str | None,
        autoscaling_endpoint_url: str | None,
        credentials: Credentials,
        poll_s: float,
        wait_timeout_s: float,
        max_attempts: int = 5,
    ) -> None:
        self.label = label
        self.region = region
        self.endpoint_url = endpoint_url
        self.poll_s = poll_s
        self.wait_timeout_s = wait_timeout_s
        self.poller = Poller(label, poll_s, wait_timeout_s)
        self.stop = self.poller.stop  # set when one table of a job fails: the others stop
        self.dynamodb: Any = awsapi.client("dynamodb", region, credentials, endpoint_url, max_attempts)
        self.autoscaling: Any = awsapi.client(
            "application-autoscaling", region, credentials, autoscaling_endpoint_url, max_attempts
        )

    # -- calls and errors -------------------------------------------------

    def where(self) -> str:
        return awsapi.where(self.region, self.endpoint_url)

    def call(
        self, operation: str, subject: str = "", *, service: str = "dynamodb", **params: Any
    ) -> dict[str, Any]:
        """``client.<operation>(**params)``; any failure is an ``AwsError`` about ``subject``."""
        client = self.dynamodb if service == "dynamodb" else self.autoscaling
        name = "DynamoDB" if service == "dynamodb" else "Application Auto Scaling"
        return awsapi.call(
            self.label,
            getattr(client, operation),
            operation,
            subject,
            service=name,
            place=self.where(),
            not_found=NOT_FOUND,
            **params,
        )

    def call_retrying(self, operation: str, subject: str = "", **params: Any) -> dict[str, Any]:
        """``call``, waiting out busy tables and AWS's limits on concurrent operations."""
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            try:
                return self.call(operation, subject, **params)
            except AwsError as exc:
                if exc.code not in RETRYABLE or time.monotonic() > deadline:
                    raise
            self.sleep()

    def sleep(self) -> None:
        self.poller.sleep()

    def wait(self, what: str, probe: Probe, timeout_s: float | None = None) -> None:
        """Poll ``probe`` (returns (done, state)) until done; TargetError after the timeout."""
        self.poller.wait(what, probe, timeout_s)

    # -- tables -------------------------------------------------------------

    def describe_table(self, table: str) -> dict[str, Any] | None:
        """The table's description, or None when it does not exist."""
        try:
            return cast(dict[str, Any], self.call("describe_table", table, TableName=table)["Table"])
        except AwsError as exc:
            if exc.code in NOT_FOUND:
                return None
            raise

    def wait_active(self, table: str) -> dict[str, Any]:
        """Wait until the table and all its global indexes are ACTIVE; returns its description."""
        found: dict[str, Any] = {}

        def probe() -> tuple[bool, str]:
            desc = self.describe_table(table)
            if desc is None:
                return False, "missing"
            found.update(desc)
            busy = [
                i["IndexName"]
                for i in desc.get("GlobalSecondaryIndexes", [])
                if i.get("IndexStatus") != "ACTIVE"
            ]
            status = str(desc.get("TableStatus"))
            if status == "ACTIVE" and not busy:
                return True, status
            if status in ("DELETING", "INACCESSIBLE_ENCRYPTION_CREDENTIALS", "ARCHIVED"):
                raise TargetError(f"{self.label}: table {table} is {status}, it will not become ACTIVE")
            return False, status + (f" (indexes {', '.join(busy)} not active)" if busy else "")

        self.wait(f"table {table} to be ACTIVE", probe)
        return found

    def wait_gone(self, table: str) -> None:
        def probe() -> tuple[bool, str]:
            desc = self.describe_table(table)
            return desc is None, "missing" if desc is None else str(desc.get("TableStatus"))

        self.wait(f"table {table} to be deleted", probe)

    def backup_status(self, arn: str) -> str | None:
        """BackupStatus of a backup (CREATING, AVAILABLE, DELETED), None if unknown."""
        try:
            description = self.call("describe_backup", arn, BackupArn=arn)["BackupDescription"]
        except AwsError as exc:
            if exc.code in NOT_FOUND:
                return None
            raise
        return str(description["BackupDetails"]["BackupStatus"])

    def wait_backup(self, arn: str) -> None:
        def probe() -> tuple[bool, str]:
            status = self.backup_status(arn)
            if status in (None, "DELETED"):
                raise TargetError(f"{self.label}: backup {arn} is {status or 'gone'}")
            return status == "AVAILABLE", status

        self.wait(f"backup {arn} to be AVAILABLE", probe)

    def find_backup(self, table: str, name: str) -> str | None:
        """The ARN of the user backup ``name`` of ``table`` (not deleted), if any."""
        params: dict[str, Any] = {"TableName": table, "BackupType": "USER"}
        while True:
            page = self.call("list_backups", table, **params)
            for summary in page.get("BackupSummaries", []):
                if summary.get("BackupName") == name and summary.get("BackupStatus") != "DELETED":
                    return str(summary["BackupArn"])
            last = page.get("LastEvaluatedBackupArn")
            if not last:
                return None
            params["ExclusiveStartBackupArn"] = last

    def pitr(self, table: str) -> dict[str, Any]:
        """The PointInTimeRecoveryDescription of the table."""
        found = self.call("describe_continuous_backups", table, TableName=table)
        return cast(
            dict[str, Any], found["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription", {})
        )

    def pitr_window(self, table: str) -> tuple[datetime, datetime] | None:
        """(earliest, latest) restorable times, or None when PITR is not enabled."""
        described = self.pitr(table)
        if described.get("PointInTimeRecoveryStatus") != "ENABLED":
            return None
        return _utc(described["EarliestRestorableDateTime"]), _utc(described["LatestRestorableDateTime"])

    def has_items(self, table: str) -> bool:
        found = self.call("scan", table, TableName=table, Limit=1, Select="COUNT", ConsistentRead=True)
        return bool(found.get("Count")) or bool(found.get("LastEvaluatedKey"))


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _pick(source: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: source[k] for k in keys if k in source}


def _throughput(value: Mapping[str, Any] | None) -> dict[str, int] | None:
    if not value:
        return None
    return {
        "ReadCapacityUnits": int(value["ReadCapacityUnits"]),
        "WriteCapacityUnits": int(value["WriteCapacityUnits"]),
    }


# -- settings: read at backup, re-applied at restore ----------------------


def scaling_resources(table: str, indexes: Iterable[str]) -> list[str]:
    return [f"table/{table}", *(f"table/{table}/index/{i}" for i in indexes)]


def _pages(aws: Aws, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        page = aws.call(operation, service="application-autoscaling", **params)
        found += page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return found
        params["NextToken"] = token


def read_settings(aws: Aws, table: str) -> dict[str, Any]:
    """Everything about ``table`` that a restore must bring back, JSON-safe."""
    desc = aws.describe_table(table)
    if desc is None:
        raise TargetError(f"{aws.label}: table {table} not found in {aws.where()}")
    gsis = [
        {
            **_pick(i, ("IndexName", "KeySchema", "Projection")),
            "ProvisionedThroughput": _throughput(i.get("ProvisionedThroughput")),
        }
        for i in desc.get("GlobalSecondaryIndexes", [])
    ]
    lsis = [_pick(i, ("IndexName", "KeySchema", "Projection")) for i in desc.get("LocalSecondaryIndexes", [])]
    stream = desc.get("StreamSpecification") or {"StreamEnabled": False}
    ttl = aws.call("describe_time_to_live", table, TableName=table)["TimeToLiveDescription"]
    tags: list[dict[str, str]] = []
    params: dict[str, Any] = {"ResourceArn": desc["TableArn"]}
    while True:
        page = aws.call("list_tags_of_resource", table, **params)
        tags += [{"Key": t["Key"], "Value": t["Value"]} for t in page.get("Tags", [])]
        if not page.get("NextToken"):
            break
        params["NextToken"] = page["NextToken"]
    pitr = aws.pitr(table)
    resources = scaling_resources(table, [g["IndexName"] for g in gsis])
    targets = _pages(
        aws,
        "describe_scalable_targets",
        "ScalableTargets",
        ServiceNamespace="dynamodb",
        ResourceIds=resources,
    )
    targets = [t for t in targets if t.get("ResourceId") in resources]
    policies: list[dict[str, Any]] = []
    for resource in resources:
        found = _pages(
            aws,
            "describe_scaling_policies",
            "ScalingPolicies",
            ServiceNamespace="dynamodb",
            ResourceId=resource,
        )
        policies += [p for p in found if p.get("ResourceId") == resource]  # exactly (moto: substring)
    sse = desc.get("SSEDescription") or {}
    return {
        "table": table,
        "arn": desc["TableArn"],
        "key_schema": desc["KeySchema"],
        "attribute_definitions": desc["AttributeDefinitions"],
        "global_secondary_indexes": gsis,
        "local_secondary_indexes": lsis,
        "billing_mode": (desc.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED"),
        "provisioned_throughput": _throughput(desc.get("ProvisionedThroughput")),
        "table_class": (desc.get("TableClassSummary") or {}).get("TableClass"),
        "stream": _pick(stream, ("StreamEnabled", "StreamViewType")),
        "ttl": _pick(ttl, ("TimeToLiveStatus", "AttributeName")),
        "tags": tags,
        "pitr": {
            "enabled": pitr.get("PointInTimeRecoveryStatus") == "ENABLED",
            "recovery_period_days": pitr.get("RecoveryPeriodInDays"),
        },
        "sse": _pick(sse, ("SSEType", "KMSMasterKeyArn")) if sse.get("SSEType") == "KMS" else None,
        "deletion_protection": bool(desc.get("DeletionProtectionEnabled", False)),
        "autoscaling": {
            "targets": [
                _pick(
                    t,
                    (
                        "ResourceId",
                        "ScalableDimension",
                        "MinCapacity",
                        "MaxCapacity",
                        "RoleARN",
                        "SuspendedState",
                    ),
                )
                for t in targets
            ],
            "policies": [
                _pick(
                    p,
                    (
                        "PolicyName",
                        "ResourceId",
                        "ScalableDimension",
                        "PolicyType",
                        "TargetTrackingScalingPolicyConfiguration",
                        "StepScalingPolicyConfiguration",
                    ),
                )
                for p in policies
            ],
        },
        "item_count": int(desc.get("ItemCount", 0)),
    }


def restore_overrides(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for RestoreTable* that a restore would otherwise get wrong (KMS encryption)."""
    sse = settings.get("sse")
    if sse:
        return {
            "SSESpecificationOverride": {
                "Enabled": True,
                "SSEType": "KMS",
                "KMSMasterKeyId": sse["KMSMasterKeyArn"],
            }
        }
    return {}


def apply_settings(aws: Aws, table: str, settings: Mapping[str, Any]) -> list[str]:
    """Make ``table`` carry the recorded ``settings`` (of the table it was restored from).

    Only what differs is changed; returns what was changed, for the log."""
    changed: list[str] = []
    desc = aws.wait_active(table)
    source = str(settings["table"])

    def update(what: str, **params: Any) -> None:
        aws.call_retrying("update_table", table, TableName=table, **params)
        aws.wait_active(table)
        changed.append(what)

    # billing mode and capacity (auto scaling, below, needs PROVISIONED first)
    mode = str(settings.get("billing_mode") or "PROVISIONED")
    current_mode = (desc.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED")
    if mode == "PAY_PER_REQUEST":
        if current_mode != mode:
            update("billing mode", BillingMode=mode)
    else:
        params: dict[str, Any] = {}
        wanted = settings.get("provisioned_throughput")
        if wanted and (current_mode != mode or _throughput(desc.get("ProvisionedThroughput")) != wanted):
            params["ProvisionedThroughput"] = wanted
        current = {
            i["IndexName"]: _throughput(i.get("ProvisionedThroughput"))
            for i in desc.get("GlobalSecondaryIndexes", [])
        }
        gsi_updates = [
            {"Update": {"IndexName": g["IndexName"], "ProvisionedThroughput": g["ProvisionedThroughput"]}}
            for g in settings.get("global_secondary_indexes", [])
            if g.get("ProvisionedThroughput")
            and g["IndexName"] in current
            and (current_mode != mode or current[g["IndexName"]] != g["ProvisionedThroughput"])
        ]
        if gsi_updates:
            params["GlobalSecondaryIndexUpdates"] = gsi_updates
        if params or current_mode != mode:
            update("billing mode and capacity", BillingMode=mode, **params)

    table_class = settings.get("table_class")
    if table_class and (desc.get("TableClassSummary") or {}).get("TableClass", "STANDARD") != table_class:
        update("table class", TableClass=table_class)

    _apply_stream(aws, table, settings.get("stream") or {}, update)
    _apply_ttl(aws, table, settings.get("ttl") or {}, changed)

    tags = settings.get("tags") or []
    if tags:
        arn = aws.wait_active(table)["TableArn"]
        have: dict[str, str] = {}
        params = {"ResourceArn": arn}
        while True:
            page = aws.call("list_tags_of_resource", table, **params)
            have.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
            if not page.get("NextToken"):
                break
            params["NextToken"] = page["NextToken"]
        missing = [t for t in tags if have.get(t["Key"]) != t["Value"]]
        for start in range(0, len(missing), 50):
            aws.call_retrying("tag_resource", table, ResourceArn=arn, Tags=missing[start : start + 50])
        if missing:
            changed.append("tags")

    pitr = settings.get("pitr") or {}
    if pitr.get("enabled") and aws.pitr(table).get("PointInTimeRecoveryStatus") != "ENABLED":
        spec: dict[str, Any] = {"PointInTimeRecoveryEnabled": True}
        if pitr.get("recovery_period_days"):
            spec["RecoveryPeriodInDays"] = int(pitr["recovery_period_days"])
        aws.call_retrying(
            "update_continuous_backups", table, TableName=table, PointInTimeRecoverySpecification=spec
        )
        changed.append("point-in-time recovery")

    scaling = settings.get("autoscaling") or {}
    for target in scaling.get("targets", []):
        params = {
            **target,
            "ResourceId": _renamed(target["ResourceId"], source, table),
            "ServiceNamespace": "dynamodb",
        }
        aws.call("register_scalable_target", table, service="application-autoscaling", **params)
    for policy in scaling.get("policies", []):
        params = {
            **policy,
            "ResourceId": _renamed(policy["ResourceId"], source, table),
            "ServiceNamespace": "dynamodb",
        }
        aws.call("put_scaling_policy", table, service="application-autoscaling", **params)
    if scaling.get("targets") or scaling.get("policies"):
        changed.append("auto scaling")

    if settings.get("deletion_protection") and not aws.wait_active(table).get("DeletionProtectionEnabled"):
        update("deletion protection", DeletionProtectionEnabled=True)
    return changed


def _apply_stream(aws: Aws, table: str, wanted: Mapping[str, Any], update: Callable[..., None]) -> None:
    desc = aws.wait_active(table)
    current = desc.get("StreamSpecification") or {}
    on, view = bool(current.get("StreamEnabled")), current.get("StreamViewType")
    if wanted.get("StreamEnabled"):
        if on and view == wanted.get("StreamViewType"):
            return
        if on:  # another view type: a stream must be disabled before it is re-enabled
            update("stream (disabled)", StreamSpecification={"StreamEnabled": False})
        update(
            "stream", StreamSpecification={"StreamEnabled": True, "StreamViewType": wanted["StreamViewType"]}
        )
    elif on:
        update("stream (disabled)", StreamSpecification={"StreamEnabled": False})


def _apply_ttl(aws: Aws, table: str, wanted: Mapping[str, Any], changed: list[str]) -> None:
    if wanted.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        return
    current = aws.call("describe_time_to_live", table, TableName=table)["TimeToLiveDescription"]
    if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        return
    spec = {"Enabled": True, "AttributeName": wanted["AttributeName"]}
    aws.call_retrying("update_time_to_live", table, TableName=table, TimeToLiveSpecification=spec)
    changed.append("time to live")


def _renamed(resource_id: str, source: str, table: str) -> str:
    """``table/<source>[/index/<i>]`` -> ``table/<table>[/index/<i>]``."""
    prefix = f"table/{source}"
    if resource_id == prefix or resource_id.startswith(prefix + "/"):
        return f"table/{table}" + resource_id[len(prefix) :]
    return resource_id
