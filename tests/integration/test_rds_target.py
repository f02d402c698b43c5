"""The RDS target (instances and Aurora clusters) against moto in server mode (127.0.0.1).

moto's RDS ignores the time asked of a point-in-time restore (any time is
accepted, the copy is available at once) and its LatestRestorableTime is always
"now": so these tests check the call shapes, above all the RestoreTime /
RestoreToTime *sent*, and set moto's in-process state where a test needs a
window that lags. RDS restore timing itself is verified only against AWS.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.servers import moto as moto_servers
from tests.servers.moto import REGION, MotoServer, fresh_aws
from tests.targets_support import DirReader, DirWriter
from txbackup.clock import iso_ms, utc_now
from txbackup.config import build_target
from txbackup.errors import IntegrityError, TargetError, UsageError
from txbackup.jobs import JobStore, MemoryJournal, StepJournal
from txbackup.targets.base import Recorded
from txbackup.targets.rds import RdsTarget

SET_ID = "20261127T101500Z-d1a0"
INSTANCE, CLUSTER = "bank-db", "bank-aurora"
NEW_INSTANCE, NEW_CLUSTER = f"{INSTANCE}-{SET_ID.lower()}", f"{CLUSTER}-{SET_ID.lower()}"
INSTANCE_STEPS = ["plan", "requested", "available"]
CLUSTER_STEPS = [
    "plan",
    "cluster-requested",
    "cluster-available",
    *(f"instance/{NEW_CLUSTER}-{i}/{s}" for i in (1, 2) for s in ("requested", "available")),
]


class Crash(Exception):
    """Stands for the process dying between two steps."""


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    require(moto_servers.missing_reason())
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    return fresh_aws(moto_server, monkeypatch)


def network(moto: MotoServer) -> tuple[str, str]:
    """A VPC with two subnets, a security group and an RDS subnet group: (subnet group, sg id)."""
    ec2, rds = moto.client("ec2"), moto.client("rds")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{z}")["Subnet"][
            "SubnetId"
        ]
        for i, z in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName="bank-db", Description="bank", VpcId=vpc)["GroupId"]
    rds.create_db_subnet_group(
        DBSubnetGroupName="bank-subnets", DBSubnetGroupDescription="bank", SubnetIds=subnets
    )
    return "bank-subnets", sg


def make_instance(moto: MotoServer, retention: int = 7) -> str:
    subnets, sg = network(moto)
    rds = moto.client("rds")
    rds.create_db_parameter_group(
        DBParameterGroupName="bank-pg15", DBParameterGroupFamily="postgres15", Description="b"
    )
    rds.create_db_instance(
        DBInstanceIdentifier=INSTANCE,
        Engine="postgres",
        DBInstanceClass="db.m5.large",
        AllocatedStorage=20,
        MasterUsername="bank",
        MasterUserPassword="not-a-secret-1",
        DBSubnetGroupName=subnets,
        VpcSecurityGroupIds=[sg],
        DBParameterGroupName="bank-pg15",
        BackupRetentionPeriod=retention,
        Port=5433,
    )
    return sg


def make_cluster(moto: MotoServer) -> str:
    subnets, sg = network(moto)
    rds = moto.client("rds")
    rds.create_db_cluster_parameter_group(
        DBClusterParameterGroupName="bank-cluster-pg",
        DBParameterGroupFamily="aurora-postgresql15",
        Description="b",
    )
    rds.create_db_parameter_group(
        DBParameterGroupName="bank-aurora-pg", DBParameterGroupFamily="aurora-postgresql15", Description="b"
    )
    rds.create_db_cluster(
        DBClusterIdentifier=CLUSTER,
        Engine="aurora-postgresql",
        MasterUsername="bank",
        MasterUserPassword="not-a-secret-1",
        DBSubnetGroupName=subnets,
        VpcSecurityGroupIds=[sg],
        DBClusterParameterGroupName="bank-cluster-pg",
        BackupRetentionPeriod=7,
        Port=5432,
    )
    for name, klass in ((f"{CLUSTER}-a", "db.r6g.large"), (f"{CLUSTER}-b", "db.r6g.xlarge")):
        rds.create_db_instance(
            DBInstanceIdentifier=name,
            DBClusterIdentifier=CLUSTER,
            Engine="aurora-postgresql",
            DBInstanceClass=klass,
            DBParameterGroupName="bank-aurora-pg",
        )
    return sg


def target(moto: MotoServer, **extra: Any) -> RdsTarget:
    conf: dict[str, Any] = {
        "name": "bank-db",
        "kind": "rds",
        "region": REGION,
        "endpoint_url": moto.url,
        "poll_interval": "5ms",
        "wait_timeout": "5s",
        "restorable_wait": "2s",
        "restore_window_wait": "0s",
        **extra,
    }
    if "cluster" not in conf:
        conf.setdefault("instance", INSTANCE)
    made = build_target(conf, 0)
    assert isinstance(made, RdsTarget)
    return made


def back_up(t: RdsTarget, root: Path) -> dict[str, Any]:
    """preflight -> capture -> export -> release, as the engine does; the position as kept."""
    t.preflight()
    capture = t.capture(SET_ID)
    try:
        capture.export(DirWriter(root))
        position: dict[str, Any] = json.loads(json.dumps(capture.position()))
        return position
    finally:
        capture.release()


def source(root: Path, position: dict[str, Any], point: datetime, journal: StepJournal) -> DirReader:
    return DirReader(root, position=position, restore_point=iso_ms(point), journal=journal)


def a_point() -> datetime:
    """A restore point inside moto's window: after the source was made (its earliest
    restorable time) and not after now (moto's LatestRestorableTime)."""
    return utc_now()


class WireLog:
    """What our client sends for the restores and instance creations: the parameters and
    the RestoreTime / RestoreToTime as they go on the wire."""

    def __init__(self, t: RdsTarget) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.times: list[str] = []
        events = t.rds().client.meta.events
        for operation in (
            "RestoreDBInstanceToPointInTime",
            "RestoreDBClusterToPointInTime",
            "CreateDBInstance",
        ):
            events.register(f"provide-client-params.rds.{operation}", self._params)
            events.register(f"before-send.rds.{operation}", self._sent)

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    def _sent(self, request: Any, **_: Any) -> None:
        body = urllib.parse.parse_qs(
            request.body.decode() if isinstance(request.body, bytes) else request.body
        )
        for key in ("RestoreTime", "RestoreToTime"):
            self.times += body.get(key, [])

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]


def wire_time(point: datetime) -> str:
    """How botocore's query protocol writes a timestamp (ISO 8601, UTC)."""
    return point.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- settings --------------------------------------------------------------------------------


def test_config_refuses_what_it_cannot_use(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"name": "db", "kind": "rds", "region": REGION}
    with pytest.raises(UsageError, match="exactly one"):
        build_target(base, 0)
    with pytest.raises(UsageError, match="exactly one"):
        build_target({**base, "instance": "a", "cluster": "b"}, 0)
    with pytest.raises(UsageError, match="not a valid RDS instance identifier"):
        build_target({**base, "instance": "1-bad--name"}, 0)
    with pytest.raises(UsageError, match="instanse"):
        build_target({**base, "instanse": "a"}, 0)
    with pytest.raises(UsageError, match=r"restored_name .* only \{id\} and \{set\}"):
        build_target({**base, "instance": "a", "restored_name": "{name}-copy"}, 0)
    with pytest.raises(UsageError, match="choose a shorter pattern"):
        build_target({**base, "instance": "a" * 50, "restored_name": "{id}-{set}"}, 0)
    monkeypatch.setenv("TXB_KEY_ID", "AKIAEXAMPLE")
    with pytest.raises(UsageError, match="both access_key_id"):
        build_target({**base, "instance": "a", "access_key_id_env": "TXB_KEY_ID"}, 0)
    made = build_target({**base, "cluster": "bank-aurora"}, 0)
    assert isinstance(made, RdsTarget) and made.min_pause_s == 10.0
    assert made.describe() == {"kind": "rds", "region": REGION, "cluster": "bank-aurora"}


# -- preflight -----------------------------------------------------------------------------------


def test_preflight_backups_disabled(moto: MotoServer) -> None:
    make_instance(moto, retention=0)
    with pytest.raises(TargetError) as caught:
        target(moto).preflight()
    message = str(caught.value)
    assert "automated backups are off on instance bank-db (BackupRetentionPeriod 0)" in message
    assert "--backup-retention-period 7" in message and "\n" not in message


def test_preflight_missing_and_cluster_member(moto: MotoServer) -> None:
    with pytest.raises(TargetError, match="instance bank-db not found in region us-east-1"):
        target(moto).preflight()
    make_cluster(moto)
    with pytest.raises(
        TargetError, match='belongs to Aurora cluster bank-aurora: configure cluster = "bank-aurora"'
    ):
        target(moto, instance=f"{CLUSTER}-a").preflight()


def test_preflight_notes_the_window(moto: MotoServer, caplog: pytest.LogCaptureFixture) -> None:
    make_instance(moto)
    with caplog.at_level(logging.INFO, logger="txbackup.targets.rds"):
        target(moto).preflight()
    assert "automated backups kept 7 day(s); restorable window" in caplog.text


def test_credentials_refused_is_one_line(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    make_instance(moto)
    from moto import settings as moto_settings  # type: ignore[import-untyped]

    monkeypatch.setenv("TXB_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("TXB_SECRET", "wrong")
    t = target(moto, access_key_id_env="TXB_KEY_ID", secret_access_key_env="TXB_SECRET")
    with monkeypatch.context() as patch:
        patch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys now
        with pytest.raises(TargetError) as caught:
            t.preflight()
    assert "credentials rejected in region us-east-1" in str(caught.value)
    assert "\n" not in str(caught.value) and "wrong" not in str(caught.value)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    with pytest.raises(TargetError, match="no AWS credentials found"):
        target(moto).preflight()


def test_credentials_denied_by_policy_is_one_line(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real key of a user without RDS permissions: AccessDenied, said in one line."""
    make_instance(moto)
    iam = moto.client("iam")
    iam.create_user(UserName="no-rds")
    key = iam.create_access_key(UserName="no-rds")["AccessKey"]
    monkeypatch.setenv("TXB_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("TXB_SECRET", key["SecretAccessKey"])
    from moto import settings as moto_settings

    t = target(moto, access_key_id_env="TXB_KEY_ID", secret_access_key_env="TXB_SECRET")
    with monkeypatch.context() as patch:
        patch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
        with pytest.raises(TargetError) as caught:
            t.preflight()
    assert "AccessDenied" in str(caught.value) and "credentials rejected" in str(caught.value)
    assert "\n" not in str(caught.value) and key["SecretAccessKey"] not in str(caught.value)


# -- backup ---------------------------------------------------------------------------------------


def test_instance_set_records_what_a_restore_needs(moto: MotoServer, tmp_path: Path) -> None:
    sg = make_instance(moto)
    position = back_up(target(moto), tmp_path)
    recorded = position["instance"]
    assert position["kind"] == "instance" and position["region"] == REGION and position["set_id"] == SET_ID
    assert recorded["identifier"] == INSTANCE and recorded["instance_class"] == "db.m5.large"
    assert recorded["parameter_group"] == "bank-pg15" and recorded["subnet_group"] == "bank-subnets"
    assert recorded["security_groups"] == [sg] and recorded["port"] == 5433
    assert recorded["backup_retention_days"] == 7
    assert len(position["window"]) == 2
    assert (tmp_path / "rds.json").exists() and json.loads((tmp_path / "rds.json").read_text())["instance"]


def test_set_is_not_complete_until_restorable(
    moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's LatestRestorableTime must pass the pause end before the set exists."""
    from moto.rds.models import DBInstance  # type: ignore[import-untyped]

    make_instance(moto)
    behind = utc_now() - timedelta(minutes=5)
    monkeypatch.setattr(DBInstance, "latest_restorable_time", property(lambda self: behind))
    t = target(moto, restorable_wait="50ms")
    with pytest.raises(TargetError) as caught:
        back_up(t, tmp_path)
    message = str(caught.value)
    assert "timed out after 0.05s waiting for instance bank-db's latest restorable time" in message
    assert "the backup set is not complete" in message and "\n" not in message
    assert not (tmp_path / "rds.json").exists()


def test_set_waits_for_the_restorable_time_to_catch_up(
    moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.rds.models import DBInstance

    make_instance(moto)
    looks: list[datetime] = []

    def lagging(self: Any) -> datetime:  # behind for the first three looks, then caught up
        looks.append(utc_now())
        return utc_now() - timedelta(minutes=5) if len(looks) <= 3 else utc_now()

    monkeypatch.setattr(DBInstance, "latest_restorable_time", property(lagging))
    position = back_up(target(moto), tmp_path)
    assert len(looks) > 3 and position["window"]


# -- restore --------------------------------------------------------------------------------------


def test_instance_restore_sends_the_point_and_the_recorded_settings(
    moto: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sg = make_instance(moto)
    t = target(moto)
    position = back_up(t, tmp_path)
    wire = WireLog(t)
    point = a_point()
    with caplog.at_level(logging.WARNING):
        t.restore(source(tmp_path, position, point, MemoryJournal()), None, force=False)
    (sent,) = wire.named("RestoreDBInstanceToPointInTime")
    assert sent["RestoreTime"] == point and wire.times == [wire_time(point)]  # to the ms, as sent
    assert (
        sent["SourceDBInstanceIdentifier"] == INSTANCE and sent["TargetDBInstanceIdentifier"] == NEW_INSTANCE
    )
    assert sent["DBInstanceClass"] == "db.m5.large" and sent["DBParameterGroupName"] == "bank-pg15"
    assert sent["DBSubnetGroupName"] == "bank-subnets" and sent["VpcSecurityGroupIds"] == [sg]
    assert sent["Port"] == 5433
    made = moto.client("rds").describe_db_instances(DBInstanceIdentifier=NEW_INSTANCE)["DBInstances"][0]
    endpoint = f"{made['Endpoint']['Address']}:{made['Endpoint']['Port']}"
    assert f"as instance {NEW_INSTANCE}, endpoint {endpoint}" in caplog.text
    assert "scalar.db.contact_points" in caplog.text
    # the source is untouched
    assert moto.client("rds").describe_db_instances(DBInstanceIdentifier=INSTANCE)["DBInstances"]


def test_restore_to_a_named_identifier_and_refusals(moto: MotoServer, tmp_path: Path) -> None:
    make_instance(moto)
    t = target(moto)
    position = back_up(t, tmp_path)
    with pytest.raises(UsageError, match="not a valid RDS identifier"):
        t.check_destination({"dsn": "no_underscores"})
    t.restore(source(tmp_path, position, a_point(), MemoryJournal()), {"dsn": "bank-copy"}, force=False)
    assert moto.client("rds").describe_db_instances(DBInstanceIdentifier="bank-copy")["DBInstances"]
    # an identifier that exists is never replaced
    with pytest.raises(TargetError, match="instance bank-copy exists already; a restore never replaces one"):
        t.restore(source(tmp_path, position, a_point(), MemoryJournal()), {"dsn": "bank-copy"}, force=True)


def test_point_outside_the_window_is_refused(moto: MotoServer, tmp_path: Path) -> None:
    make_instance(moto)
    t = target(moto)
    position = back_up(t, tmp_path)
    wire = WireLog(t)
    early = utc_now() - timedelta(days=30)  # before the instance existed
    with pytest.raises(TargetError) as caught:
        t.restore(source(tmp_path, position, early, MemoryJournal()), None, force=False)
    assert f"restore point {iso_ms(early)} is before the restorable window" in str(caught.value)
    assert "refusing to restore" in str(caught.value)
    late = utc_now() + timedelta(hours=1)
    with pytest.raises(TargetError, match="is after the restorable window"):
        t.restore(source(tmp_path, position, late, MemoryJournal()), None, force=False)
    assert wire.calls == []


def test_check_record_refuses_another_source(moto: MotoServer, tmp_path: Path) -> None:
    make_instance(moto)
    t = target(moto)
    position = back_up(t, tmp_path)
    t.check_record(Recorded(("rds.json",), position, dict(t.describe())))
    other = {**position, "instance": {**position["instance"], "identifier": "payroll-db"}}
    with pytest.raises(IntegrityError, match="position's instance is instance 'payroll-db'"):
        t.check_record(Recorded(("rds.json",), other))
    with pytest.raises(IntegrityError, match="region"):
        t.check_record(Recorded(("rds.json",), {**position, "region": "eu-west-1"}))
    with pytest.raises(IntegrityError, match=re.escape("artifact 'x.sql' is not rds.json")):
        t.check_record(Recorded(("x.sql",), position))
    bad_group = {**position, "instance": {**position["instance"], "parameter_group": "../$(reboot)"}}
    with pytest.raises(TargetError, match=re.escape("parameter group '../$(reboot)', not a valid name")):
        t.restore(source(tmp_path, bad_group, a_point(), MemoryJournal()), None, force=False)


def test_cluster_restore_makes_the_cluster_then_its_instances(
    moto: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sg = make_cluster(moto)
    t = target(moto, cluster=CLUSTER)
    position = back_up(t, tmp_path)
    members = position["cluster"]["instances"]
    assert [m["instance_class"] for m in members] == ["db.r6g.large", "db.r6g.xlarge"]
    assert members[0]["writer"] and not members[1]["writer"]
    wire = WireLog(t)
    point = a_point()
    with caplog.at_level(logging.WARNING):
        t.restore(source(tmp_path, position, point, MemoryJournal()), None, force=False)
    (sent,) = wire.named("RestoreDBClusterToPointInTime")
    assert sent["RestoreToTime"] == point and wire.times == [wire_time(point)]
    assert sent["SourceDBClusterIdentifier"] == CLUSTER and sent["DBClusterIdentifier"] == NEW_CLUSTER
    assert (
        sent["DBClusterParameterGroupName"] == "bank-cluster-pg"
        and sent["DBSubnetGroupName"] == "bank-subnets"
    )
    assert sent["VpcSecurityGroupIds"] == [sg] and sent["Port"] == 5432
    created = wire.named("CreateDBInstance")
    assert [(c["DBInstanceIdentifier"], c["DBInstanceClass"]) for c in created] == [
        (f"{NEW_CLUSTER}-1", "db.r6g.large"),
        (f"{NEW_CLUSTER}-2", "db.r6g.xlarge"),
    ]
    assert all(
        c["DBClusterIdentifier"] == NEW_CLUSTER and c["DBParameterGroupName"] == "bank-aurora-pg"
        for c in created
    )
    cluster = moto.client("rds").describe_db_clusters(DBClusterIdentifier=NEW_CLUSTER)["DBClusters"][0]
    assert f"as cluster {NEW_CLUSTER}, endpoint {cluster['Endpoint']}:{cluster['Port']}" in caplog.text


@pytest.mark.parametrize("phase", ["acted", "done"])
@pytest.mark.parametrize(
    ("kind", "step"), [("instance", s) for s in INSTANCE_STEPS] + [("cluster", s) for s in CLUSTER_STEPS]
)
def test_crash_after_each_step_then_resume(
    moto: MotoServer, tmp_path: Path, kind: str, step: str, phase: str
) -> None:
    if kind == "instance":
        make_instance(moto)
        t = target(moto)
    else:
        make_cluster(moto)
        t = target(moto, cluster=CLUSTER)
    position = back_up(t, tmp_path / "set")
    store = JobStore(str(tmp_path / "catalog.db"))
    job = store.create(SET_ID, {})

    def crash(name: str, when: str) -> None:
        if name == step and when == phase:
            raise Crash(f"killed after {name} ({when})")

    t.fault_hook = crash
    wire = WireLog(t)
    point = a_point()
    with pytest.raises(Crash):
        t.restore(source(tmp_path / "set", position, point, store.journal(job, "bank-db")), None, False)
    t.fault_hook = None
    t.restore(source(tmp_path / "set", position, point, store.journal(job, "bank-db")), None, False)
    # every copy was asked for exactly once, whatever step the crash hit
    if kind == "instance":
        assert len(wire.named("RestoreDBInstanceToPointInTime")) == 1
        expected = INSTANCE_STEPS
    else:
        assert len(wire.named("RestoreDBClusterToPointInTime")) == 1
        assert sorted(c["DBInstanceIdentifier"] for c in wire.named("CreateDBInstance")) == [
            f"{NEW_CLUSTER}-1",
            f"{NEW_CLUSTER}-2",
        ]
        expected = CLUSTER_STEPS
    journal = store.journal(job, "bank-db")
    assert all(journal.is_done(s) for s in expected)


def test_resume_refuses_a_copy_it_did_not_make(moto: MotoServer, tmp_path: Path) -> None:
    """Someone else's instance of the planned name, made while the job was stopped: left alone."""
    make_instance(moto)
    t = target(moto)
    position = back_up(t, tmp_path)
    journal = MemoryJournal()

    def crash(name: str, when: str) -> None:
        if name == "plan" and when == "done":
            raise Crash("killed after plan")

    t.fault_hook = crash
    point = a_point()
    with pytest.raises(Crash):
        t.restore(source(tmp_path, position, point, journal), None, False)
    t.fault_hook = None
    moto.client("rds").create_db_instance(
        DBInstanceIdentifier=NEW_INSTANCE,
        Engine="postgres",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=5,
        MasterUsername="x",
        MasterUserPassword="not-a-secret-2",
    )
    with pytest.raises(TargetError, match="appeared meanwhile and is not this job's restore"):
        t.restore(source(tmp_path, position, point, journal), None, False)


# -- through the engine -----------------------------------------------------------------------------


async def test_engine_backup_then_restore_to_the_pause_midpoint(moto: MotoServer, tmp_path: Path) -> None:
    """A real backup run (the sample pausable service, the pause held for min_pause) and a
    restore job through the engine: the time sent is the set's restore point."""
    from txbackup.admin.client import Endpoint
    from txbackup.admin.fleet import Fleet
    from txbackup.catalog import Catalog
    from txbackup.demo.sample_service import start_sample_server
    from txbackup.engine.backup import BackupPlan, run_backup
    from txbackup.engine.restore import RestorePlan, restore_set
    from txbackup.storage import LocalStorage

    make_instance(moto)
    t = target(moto, min_pause="0.3s")
    app = await start_sample_server()
    try:
        plan = BackupPlan(
            fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
            targets=[t],
            storage=LocalStorage(str(tmp_path / "store")),
            catalog=Catalog(str(tmp_path / "catalog.db")),
            capture_deadline_s=5,
        )
        manifest = await run_backup(plan)
    finally:
        await app.stop()
    assert manifest.timings.pause_ms >= 300
    record = manifest.target("bank-db")
    assert [a.name for a in record.artifacts] == ["rds.json"]
    point = manifest.restore_point
    assert point is not None
    wire = WireLog(t)
    restore = RestorePlan(
        storage=LocalStorage(str(tmp_path / "store")),
        manifest=manifest,
        targets=[t],
        jobs=JobStore(str(tmp_path / "catalog.db")),
    )
    job_id, names = restore_set(restore)
    assert names == ["bank-db"] and restore.jobs.get(job_id).status == "complete"
    (sent,) = wire.named("RestoreDBInstanceToPointInTime")
    assert iso_ms(sent["RestoreTime"]) == point  # the pause midpoint, to the ms
    new = f"{INSTANCE}-{manifest.set_id.lower()}"
    assert sent["TargetDBInstanceIdentifier"] == new
    assert moto.client("rds").describe_db_instances(DBInstanceIdentifier=new)["DBInstances"]
