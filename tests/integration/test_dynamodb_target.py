"""The DynamoDB target against moto in server mode (127.0.0.1; nothing reaches AWS).

moto ignores the time asked of RestoreTableToPointInTime (it copies the current
items) and its PITR window does not move, so: the PITR tests check the time we
*send* (on the wire), and set the window in moto's in-process state where a
test needs one. PITR timing itself is verified only against AWS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.servers import moto as moto_servers
from tests.servers.moto import REGION, MotoServer, fresh_aws
from tests.targets_support import DirReader, DirWriter
from txbackup.clock import iso_ms
from txbackup.config import build_target
from txbackup.errors import TargetError, UsageError
from txbackup.jobs import JobStore, MemoryJournal, StepJournal
from txbackup.targets.dynamodb import DynamoTarget, from_config
from txbackup.targets.pitr import check_min_pause

ACCOUNTS, TRANSFERS, COORDINATOR = "bank.accounts", "bank.transfers", "coordinator.state"
TABLES = [ACCOUNTS, TRANSFERS, COORDINATOR]
SET_ID = "20261127T101500Z-d1a0"
PITR_STEPS = [
    "plan",
    "alias-restored",
    "alias-backed-up",
    "original-deleted",
    "original-restored",
    "settings-applied",
    "alias-deleted",
]
ON_DEMAND_STEPS = ["plan", "original-deleted", "original-restored", "settings-applied"]


class Crash(Exception):
    """Stands for the process dying between two steps."""


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    require(moto_servers.missing_reason())
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    return fresh_aws(moto_server, monkeypatch)


def make_tables(moto: MotoServer, pitr: bool = True) -> None:
    """Three ScalarDB-like tables with items and every setting a restore drops."""
    ddb, scaling = moto.client("dynamodb"), moto.client("application-autoscaling")
    ddb.create_table(
        TableName=ACCOUNTS,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "owner", "AttributeType": "S"},
        ],
        BillingMode="PROVISIONED",
        ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_owner",
                "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
                "ProvisionedThroughput": {"ReadCapacityUnits": 3, "WriteCapacityUnits": 3},
            }
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        Tags=[{"Key": "team", "Value": "payments"}, {"Key": "env", "Value": "test"}],
        DeletionProtectionEnabled=True,
    )
    ddb.update_time_to_live(
        TableName=ACCOUNTS, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"}
    )
    dimension = "dynamodb:table:ReadCapacityUnits"
    scaling.register_scalable_target(
        ServiceNamespace="dynamodb",
        ResourceId=f"table/{ACCOUNTS}",
        ScalableDimension=dimension,
        MinCapacity=5,
        MaxCapacity=50,
    )
    scaling.put_scaling_policy(
        PolicyName="accounts-read",
        ServiceNamespace="dynamodb",
        ResourceId=f"table/{ACCOUNTS}",
        ScalableDimension=dimension,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 70.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "DynamoDBReadCapacityUtilization"},
        },
    )
    for table, key in ((TRANSFERS, "id"), (COORDINATOR, "tx_id")):
        ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    if pitr:
        for table in TABLES:
            spec = {"PointInTimeRecoveryEnabled": True}
            ddb.update_continuous_backups(TableName=table, PointInTimeRecoverySpecification=spec)
    for i in range(25):
        ddb.put_item(
            TableName=ACCOUNTS,
            Item={"id": {"S": f"a{i:02}"}, "owner": {"S": f"o{i % 5}"}, "balance": {"N": str(100 + i)}},
        )
    for i in range(15):
        ddb.put_item(TableName=TRANSFERS, Item={"id": {"S": f"t{i:02}"}, "amount": {"N": str(i)}})
        ddb.put_item(TableName=COORDINATOR, Item={"tx_id": {"S": f"tx{i:02}"}, "tx_state": {"N": "3"}})


def change_everything(moto: MotoServer) -> None:
    """Writes after the capture: a restore to the captured point must undo them."""
    ddb = moto.client("dynamodb")
    ddb.put_item(TableName=ACCOUNTS, Item={"id": {"S": "late"}, "owner": {"S": "o1"}, "balance": {"N": "1"}})
    ddb.delete_item(TableName=ACCOUNTS, Key={"id": {"S": "a00"}})
    ddb.put_item(TableName=TRANSFERS, Item={"id": {"S": "t01"}, "amount": {"N": "999"}})
    ddb.delete_item(TableName=COORDINATOR, Key={"tx_id": {"S": "tx03"}})


def items(moto: MotoServer, table: str) -> list[str]:
    ddb = moto.client("dynamodb")
    found: list[str] = []
    params: dict[str, Any] = {"TableName": table}
    while True:
        page = ddb.scan(**params)
        found += [json.dumps(item, sort_keys=True) for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return sorted(found)
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def snapshot(moto: MotoServer) -> dict[str, list[str]]:
    return {t: items(moto, t) for t in TABLES}


def tables_now(moto: MotoServer) -> list[str]:
    return sorted(moto.client("dynamodb").list_tables()["TableNames"])


def set_pitr_window(earliest: datetime, latest: datetime) -> None:
    """Give every table of the in-process moto a PITR window (moto's never moves)."""
    from moto.dynamodb.models import dynamodb_backends  # type: ignore[import-untyped]

    backend = dynamodb_backends["123456789012"][REGION]
    for table in backend.tables.values():
        described = table.continuous_backups["PointInTimeRecoveryDescription"]
        if described.get("PointInTimeRecoveryStatus") == "ENABLED":
            described["EarliestRestorableDateTime"] = earliest.timestamp()
            described["LatestRestorableDateTime"] = latest.timestamp()


def target(moto: MotoServer, mode: str = "on-demand", **extra: Any) -> DynamoTarget:
    conf: dict[str, Any] = {
        "name": "dynamo",
        "kind": "dynamodb",
        "region": REGION,
        "endpoint_url": moto.url,
        "tables": [ACCOUNTS, TRANSFERS],
        "mode": mode,
        "poll_interval": "5ms",
        "wait_timeout": "5s",
        "restore_window_wait": "0s",
        "backup_settle": "0s",  # moto's backups are exact
        **extra,
    }
    made = build_target(conf, 0)
    assert isinstance(made, DynamoTarget)
    return made


def source(
    root: Path, position: dict[str, Any], restore_point: str | None, journal: StepJournal
) -> DirReader:
    """What the engine hands a target at restore: position, restore point, journal."""
    return DirReader(root, position=position, restore_point=restore_point, journal=journal)


def back_up(t: DynamoTarget, root: Path, after_capture: Any = None) -> dict[str, Any]:
    """preflight -> capture -> (writes) -> export -> release, as the engine does."""
    t.preflight()
    capture = t.capture(SET_ID)
    try:
        if after_capture is not None:
            after_capture()
        capture.export(DirWriter(root))
        position: dict[str, Any] = json.loads(json.dumps(capture.position()))  # as the manifest keeps it
        return position
    finally:
        capture.release()


class WireLog:
    """Every RestoreTableToPointInTime and DeleteTable our client sends, as sent."""

    def __init__(self, t: DynamoTarget, moto: MotoServer) -> None:
        self.restore_times: list[float] = []
        self.deleted: list[str] = []
        self.unsafe_deletes: list[str] = []
        self.moto = moto
        events = t.aws().dynamodb.meta.events
        events.register("before-send.dynamodb.RestoreTableToPointInTime", self._restore)
        events.register("provide-client-params.dynamodb.DeleteTable", self._delete)
        self.backups: dict[str, str] = {}

    def _restore(self, request: Any, **_: Any) -> None:
        self.restore_times.append(json.loads(request.body)["RestoreDateTime"])

    def _delete(self, params: dict[str, Any], **_: Any) -> None:
        """The rule: an original table goes only once a backup of its data is AVAILABLE."""
        table = params["TableName"]
        self.deleted.append(table)
        if table not in TABLES:
            return
        ddb = self.moto.client("dynamodb")
        arn = self.backups.get(table)
        if arn is None:  # pitr mode: the backup of the alias table
            aliases = [n for n in ddb.list_tables()["TableNames"] if n.startswith(f"{table}-txb-")]
            summaries = [s for a in aliases for s in ddb.list_backups(TableName=a)["BackupSummaries"]]
            ok = any(s["BackupStatus"] == "AVAILABLE" for s in summaries)
        else:
            ok = (
                ddb.describe_backup(BackupArn=arn)["BackupDescription"]["BackupDetails"]["BackupStatus"]
                == "AVAILABLE"
            )
        if not ok:
            self.unsafe_deletes.append(table)


def assert_settings(moto: MotoServer, table: str = ACCOUNTS, source: str = ACCOUNTS) -> None:
    """``table`` carries every setting ``source`` had at backup time."""
    ddb, scaling = moto.client("dynamodb"), moto.client("application-autoscaling")
    desc = ddb.describe_table(TableName=table)["Table"]
    assert desc["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert desc["DeletionProtectionEnabled"] is True
    assert desc["ProvisionedThroughput"]["ReadCapacityUnits"] == 5
    assert [i["IndexName"] for i in desc["GlobalSecondaryIndexes"]] == ["by_owner"]
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    tags = {t["Key"]: t["Value"] for t in ddb.list_tags_of_resource(ResourceArn=desc["TableArn"])["Tags"]}
    assert tags == {"team": "payments", "env": "test"}
    pitr = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    found = scaling.describe_scalable_targets(ServiceNamespace="dynamodb", ResourceIds=[f"table/{table}"])
    assert [(s["MinCapacity"], s["MaxCapacity"]) for s in found["ScalableTargets"]] == [(5, 50)]
    policies = scaling.describe_scaling_policies(ServiceNamespace="dynamodb", ResourceId=f"table/{table}")
    mine = [p["PolicyName"] for p in policies["ScalingPolicies"] if p["ResourceId"] == f"table/{table}"]
    assert mine == ["accounts-read"]  # (moto's ResourceId filter matches substrings)
    other = ddb.describe_table(TableName=table.replace(source, TRANSFERS))["Table"]
    assert other["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


# -- configuration -------------------------------------------------------------


def test_config_defaults_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    made = from_config("d", {"region": "eu-west-1", "tables": ["app.t1"]})
    assert made.tables == ["app.t1", COORDINATOR] and made.mode == "pitr"
    assert made.min_pause_s == 10.0 and made.warnings == [] and not made.enable_pitr
    assert made.describe() == {
        "kind": "dynamodb",
        "region": "eu-west-1",
        "mode": "pitr",
        "tables": made.tables,
    }
    short = from_config("d", {"region": "r", "tables": ["app.t1"], "min_pause": "2s"})
    assert short.min_pause_s == 2.0 and "below the 10s" in short.warnings[0]
    assert check_min_pause("cosmos", 10) == []
    demand = from_config("d", {"region": "r", "tables": ["app.t1"], "mode": "on-demand"})
    assert demand.settle_s == 60 and demand.capture_delay_s == 60 and demand.min_pause_s == 125
    assert demand.warnings == []
    quick = from_config(
        "d", {"region": "r", "tables": ["app.t1"], "mode": "on-demand", "backup_settle": "1s"}
    )
    assert quick.min_pause_s == 10 and "below the 60s AWS documents" in quick.warnings[0]
    bad: list[dict[str, Any]] = [
        {"tables": ["a.t"]},  # no region
        {"region": "r"},  # no tables
        {"region": "r", "tables": ["a.t"], "mode": "snapshot"},
        {"region": "r", "tables": ["a.t"], "secret_access_key": "hunter2"},
        {"region": "r", "tables": ["a.t"], "access_key_id_env": "TXB_KEY"},  # unset variable
        {"region": "r", "tables": ["x"]},  # too short for DynamoDB
        {"region": "r", "tables": ["a.t"], "enable_pitr": "yes"},
        {"region": "r", "tables": ["a.t"], "tabels": ["a.t"]},
    ]
    for conf in bad:
        with pytest.raises(UsageError):
            from_config("d", conf)
    monkeypatch.setenv("TXB_KEY", "id")
    with pytest.raises(UsageError, match="both"):
        from_config("d", {"region": "r", "tables": ["a.t"], "access_key_id_env": "TXB_KEY"})


# -- preflight: every problem is found before anything is paused --------------------


def test_preflight_missing_table(moto: MotoServer) -> None:
    make_tables(moto)
    with pytest.raises(TargetError, match=r"table\(s\) bank.nope not found in region us-east-1"):
        target(moto, tables=[ACCOUNTS, "bank.nope"]).preflight()


def test_preflight_wrong_region(moto: MotoServer) -> None:
    make_tables(moto)
    t = target(moto, region="eu-west-1")
    with pytest.raises(TargetError, match="not found in region eu-west-1"):
        t.preflight()


def test_preflight_pitr_disabled_then_enable_pitr(moto: MotoServer) -> None:
    make_tables(moto, pitr=False)
    with pytest.raises(TargetError, match=r"point-in-time recovery is disabled on table\(s\) bank.accounts"):
        target(moto, mode="pitr").preflight()
    target(moto, mode="on-demand").preflight()  # on-demand backups do not need it
    target(moto, mode="pitr", enable_pitr=True).preflight()
    ddb = moto.client("dynamodb")
    for table in TABLES:
        described = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
        assert described["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    target(moto, mode="pitr").preflight()


def test_preflight_credentials(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tables(moto)
    from moto import settings as moto_settings  # type: ignore[import-untyped]

    monkeypatch.setenv("TXB_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("TXB_SECRET", "wrong")
    t = target(moto, access_key_id_env="TXB_KEY_ID", secret_access_key_env="TXB_SECRET")
    with monkeypatch.context() as patch:
        patch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys now
        with pytest.raises(TargetError, match="credentials rejected in region us-east-1"):
            t.preflight()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    with pytest.raises(TargetError, match="no AWS credentials found"):
        target(moto).preflight()


# -- on-demand: capture, restore in place, settings back ------------------------------


def test_on_demand_round_trip(moto: MotoServer, tmp_path: Path) -> None:
    make_tables(moto)
    t = target(moto)
    before = snapshot(moto)
    position = back_up(t, tmp_path, after_capture=lambda: change_everything(moto))
    assert snapshot(moto) != before
    assert position["mode"] == "on-demand" and sorted(position["backups"]) == sorted(TABLES)
    assert all(f"table/{name}/backup/" in arn for name, arn in position["backups"].items())
    settings = position["tables"][ACCOUNTS]
    assert settings["ttl"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    assert settings["stream"]["StreamViewType"] == "NEW_AND_OLD_IMAGES" and settings["deletion_protection"]
    assert settings["autoscaling"]["policies"][0]["PolicyName"] == "accounts-read"
    assert position["tables"][TRANSFERS]["billing_mode"] == "PAY_PER_REQUEST"
    assert json.loads((tmp_path / "tables.json").read_text())["tables"] == position["tables"]
    reader = source(tmp_path, position, "2026-11-27T10:15:05.000Z", MemoryJournal())
    with pytest.raises(TargetError, match=r"replaces the existing table\(s\).*--force"):
        t.restore(reader, None, force=False)
    assert snapshot(moto) != before  # refused: nothing touched
    wire = WireLog(t, moto)
    wire.backups = dict(position["backups"])
    t.restore(reader, None, force=True)
    assert snapshot(moto) == before
    assert wire.unsafe_deletes == [] and sorted(wire.deleted) == sorted(TABLES)
    assert_settings(moto)
    assert tables_now(moto) == sorted(TABLES)
    change_everything(moto)  # the same set again, over tables that are its own earlier restore
    t.restore(source(tmp_path, position, None, MemoryJournal()), None, force=True)
    assert snapshot(moto) == before


def test_failed_export_deletes_its_backups(moto: MotoServer, tmp_path: Path) -> None:
    make_tables(moto)
    t = target(moto, backup_settle="0.3s")
    started = time.monotonic()
    capture = t.capture(SET_ID)
    assert time.monotonic() - started >= 0.3  # the settle time passed before the requests
    assert len(moto.client("dynamodb").list_backups()["BackupSummaries"]) == 3
    capture.release()  # never exported: the set will not exist, nor will its backups
    assert moto.client("dynamodb").list_backups()["BackupSummaries"] == []


# -- PITR: the time we send, the window, the restore -----------------------------------


def test_pitr_restore_sends_the_restore_point(moto: MotoServer, tmp_path: Path) -> None:
    make_tables(moto)
    t = target(moto, mode="pitr")
    position = back_up(t, tmp_path)
    assert position["mode"] == "pitr" and "backups" not in position
    assert sorted(position["pitr_windows"]) == sorted(TABLES)
    point = datetime.now(UTC) - timedelta(minutes=7)
    point = point.replace(microsecond=point.microsecond // 1000 * 1000)
    set_pitr_window(point - timedelta(days=1), point + timedelta(seconds=1))
    before = snapshot(moto)  # moto restores the current items, whatever the time
    wire = WireLog(t, moto)
    t.restore(source(tmp_path, position, iso_ms(point), MemoryJournal()), None, force=True)
    assert wire.restore_times == [point.timestamp()] * 3  # the set's restore point, to the ms
    assert wire.unsafe_deletes == []
    assert snapshot(moto) == before
    assert_settings(moto)
    assert tables_now(moto) == sorted(TABLES)  # the alias tables are gone
    kept = moto.client("dynamodb").list_backups()["BackupSummaries"]
    assert sorted(b["TableName"].split("-txb-")[0] for b in kept) == sorted(TABLES)


def test_pitr_restore_point_outside_the_window_is_refused(moto: MotoServer, tmp_path: Path) -> None:
    make_tables(moto)
    t = target(moto, mode="pitr")
    position = back_up(t, tmp_path)
    now = datetime.now(UTC)
    earliest, latest = now - timedelta(days=1), now - timedelta(minutes=5)
    set_pitr_window(earliest, latest)
    before = snapshot(moto)
    too_old = iso_ms(now - timedelta(days=2))
    with pytest.raises(
        TargetError, match=f"before the restorable window {iso_ms(earliest)} .. {iso_ms(latest)}"
    ):
        t.restore(source(tmp_path, position, too_old, MemoryJournal()), None, force=True)
    too_new = iso_ms(now - timedelta(minutes=1))  # a pause a minute ago: PITR has not caught up yet
    with pytest.raises(TargetError, match=r"after the restorable window .* retry later"):
        t.restore(source(tmp_path, position, too_new, MemoryJournal()), None, force=True)
    assert snapshot(moto) == before and tables_now(moto) == sorted(TABLES)
    moto.client("dynamodb").delete_table(TableName=TRANSFERS)
    inside = iso_ms(now - timedelta(minutes=10))
    with pytest.raises(TargetError, match=r"bank\.transfers does not exist: a point-in-time restore"):
        t.restore(source(tmp_path, position, inside, MemoryJournal()), None, force=True)


def test_original_is_never_deleted_before_the_alias_backup_is_available(
    moto: MotoServer, tmp_path: Path
) -> None:
    make_tables(moto)
    t = target(moto, mode="pitr", wait_timeout="0.3s")
    position = back_up(t, tmp_path)
    now = datetime.now(UTC)
    set_pitr_window(now - timedelta(days=1), now + timedelta(minutes=1))
    before = snapshot(moto)

    def still_creating(parsed: dict[str, Any], **_: Any) -> None:
        parsed["BackupDescription"]["BackupDetails"]["BackupStatus"] = "CREATING"

    t.aws().dynamodb.meta.events.register("after-call.dynamodb.DescribeBackup", still_creating)
    wire = WireLog(t, moto)
    with pytest.raises(TargetError, match="AVAILABLE"):
        t.restore(source(tmp_path, position, iso_ms(now), MemoryJournal()), None, force=True)
    assert not any(name in TABLES for name in wire.deleted)
    assert {name: items(moto, name) for name in TABLES} == before


# -- crash after every step, then --resume ----------------------------------------------


@pytest.mark.parametrize(
    ("mode", "step", "phase"),
    [("pitr", s, p) for s in PITR_STEPS for p in ("acted", "done")]
    + [("on-demand", s, p) for s in ON_DEMAND_STEPS for p in ("acted", "done")],
)
def test_crash_after_each_step_then_resume(
    moto: MotoServer, tmp_path: Path, mode: str, step: str, phase: str
) -> None:
    make_tables(moto)
    t = target(moto, mode=mode)
    before = snapshot(moto)
    position = back_up(t, tmp_path / "set", after_capture=lambda: change_everything(moto))
    if mode == "pitr":
        before = snapshot(moto)  # moto's PITR restore copies the items of now
        now = datetime.now(UTC)
        set_pitr_window(now - timedelta(days=1), now + timedelta(minutes=1))
    store = JobStore(str(tmp_path / "catalog.db"))
    job = store.create(SET_ID, {})
    crash_at = step if step == "plan" else f"{ACCOUNTS}/{step}"

    def crash(name: str, when: str) -> None:
        if name == crash_at and when == phase:
            raise Crash(f"killed after {name} ({when})")

    t.fault_hook = crash
    wire = WireLog(t, moto)
    wire.backups = dict(position.get("backups", {}))
    restore_point = iso_ms(datetime.now(UTC))
    with pytest.raises(Crash):
        t.restore(source(tmp_path / "set", position, restore_point, store.journal(job, "dynamo")), None, True)
    # nothing is lost while the job is stopped: each table's data is in the table or in a backup
    ddb = moto.client("dynamodb")
    present = set(ddb.list_tables()["TableNames"])
    for table in TABLES:
        if table not in present:
            names = [s["TableName"] for s in ddb.list_backups()["BackupSummaries"]]
            assert any(n == table or n.startswith(f"{table}-txb-") for n in names), (table, names)

    resumed = target(moto, mode=mode)  # a new process: only the catalog remembers
    wire2 = WireLog(resumed, moto)
    wire2.backups = wire.backups
    resumed.restore(
        source(tmp_path / "set", position, restore_point, store.journal(job, "dynamo")), None, True
    )
    assert snapshot(moto) == before
    assert wire.unsafe_deletes == [] and wire2.unsafe_deletes == []
    assert_settings(moto)
    assert tables_now(moto) == sorted(TABLES)
    # every original was deleted exactly once over both runs
    assert sorted(n for n in wire.deleted + wire2.deleted if n in TABLES) == sorted(TABLES)


# -- non-destructive: restore next to the originals ---------------------------------------


def test_restore_into_new_tables(moto: MotoServer, tmp_path: Path) -> None:
    make_tables(moto)
    t = target(moto)
    before = snapshot(moto)
    position = back_up(t, tmp_path, after_capture=lambda: change_everything(moto))
    after = snapshot(moto)
    reader = source(tmp_path, position, None, MemoryJournal())
    t.restore(reader, {"dsn": "suffix:-restored"}, force=False)
    assert snapshot(moto) == after  # the originals are untouched
    assert {t: items(moto, f"{t}-restored") for t in TABLES} == before
    assert_settings(moto, f"{ACCOUNTS}-restored")
    with pytest.raises(TargetError, match="exist already"):
        t.restore(source(tmp_path, position, None, MemoryJournal()), {"dsn": "suffix:-restored"}, False)
    with pytest.raises(UsageError, match="suffix:TEXT or prefix:TEXT"):
        t.restore(reader, {"dsn": "postgresql://x"}, False)


def test_pitr_restore_into_new_tables_with_a_prefix(moto: MotoServer, tmp_path: Path) -> None:
    make_tables(moto)
    t = target(moto, mode="pitr")
    position = back_up(t, tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    set_pitr_window(now - timedelta(days=1), now)
    before = snapshot(moto)
    wire = WireLog(t, moto)
    t.restore(source(tmp_path, position, iso_ms(now), MemoryJournal()), {"dsn": "prefix:restored_"}, False)
    assert wire.restore_times == [now.timestamp()] * 3 and wire.deleted == []
    assert {t: items(moto, f"restored_{t}") for t in TABLES} == before
    assert snapshot(moto) == before
    assert_settings(moto, f"restored_{ACCOUNTS}")


# -- through the engine: pause, manifest, restore job, --resume ------------------------------


async def test_engine_pitr_backup_then_interrupted_restore_resumed(moto: MotoServer, tmp_path: Path) -> None:
    from txbackup.admin.client import Endpoint
    from txbackup.admin.fleet import Fleet
    from txbackup.catalog import Catalog
    from txbackup.demo.sample_service import start_sample_server
    from txbackup.engine.backup import BackupPlan, run_backup
    from txbackup.engine.restore import RestorePlan, restore_set
    from txbackup.storage import LocalStorage

    make_tables(moto)
    t = target(moto, mode="pitr", min_pause="1s")
    app = await start_sample_server()
    pauses = 0
    real_pause = app.gate.pause

    async def counted(*args: Any, **kwargs: Any) -> None:
        nonlocal pauses
        pauses += 1
        await real_pause(*args, **kwargs)

    app.gate.pause = counted  # type: ignore[method-assign]
    try:

        def plan_for(targets: list[Any]) -> BackupPlan:
            return BackupPlan(
                fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
                targets=targets,
                storage=LocalStorage(str(tmp_path / "store")),
                catalog=Catalog(str(tmp_path / "catalog.db")),
                capture_deadline_s=5,
            )

        broken = target(moto, mode="pitr", min_pause="1s", tables=[ACCOUNTS, "bank.gone"])
        with pytest.raises(TargetError, match=r"bank\.gone not found"):
            await run_backup(plan_for([broken]))
        assert pauses == 0  # refused before any pause
        plan = plan_for([t])
        manifest = await run_backup(plan)
    finally:
        await app.stop()
    assert pauses == 1 and manifest.timings.pause_ms >= 1000  # the target's min_pause was held
    point = manifest.restore_point
    assert point is not None
    record = manifest.target("dynamo")
    assert record.position["mode"] == "pitr" and [a.name for a in record.artifacts] == ["tables.json"]

    moment = datetime.fromisoformat(point)
    set_pitr_window(moment - timedelta(days=1), moment + timedelta(seconds=1))
    before = snapshot(moto)
    jobs = JobStore(str(tmp_path / "catalog.db"))
    restore = RestorePlan(storage=plan.storage, manifest=manifest, targets=[t], jobs=jobs, force=True)

    def crash(step: str, when: str) -> None:
        if step == f"{TRANSFERS}/original-deleted" and when == "done":
            raise Crash("killed")

    t.fault_hook = crash
    wire = WireLog(t, moto)
    with pytest.raises(Crash):
        restore_set(restore)
    [job] = jobs.list()
    assert job.status == "failed"
    t.fault_hook = None
    restore.job_id = job.job_id
    job_id, names = restore_set(restore)
    assert job_id == job.job_id and names == ["dynamo"] and jobs.get(job_id).status == "complete"
    assert snapshot(moto) == before and wire.unsafe_deletes == []
    assert set(wire.restore_times) == {moment.timestamp()}  # the pause midpoint, as sent
    assert_settings(moto)
    assert tables_now(moto) == sorted(TABLES)
