"""The Azure Database flexible-server targets (azure-postgres, azure-mysql) against the
local FAKE of Azure's management API (tests/servers/fake_arm.py), over HTTPS on 127.0.0.1.

This is a contract test of the requests we send (above all the restore time field,
which the two services name differently), not a test against Azure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.servers import fake_arm as fake_arm_servers
from tests.servers.fake_arm import (
    EXPIRED_TOKEN,
    MYSQL_API,
    POSTGRES_API,
    SUBSCRIPTION,
    FakeArm,
    Outcome,
    StaticToken,
)
from tests.targets_support import DirReader, DirWriter
from txbackup.clock import iso_ms, utc_now
from txbackup.config import build_target
from txbackup.errors import IntegrityError, TargetError, UsageError
from txbackup.jobs import JobStore, MemoryJournal
from txbackup.targets.azuredb.target import FlexTarget
from txbackup.targets.base import Recorded

GROUP, SERVER = "bank-rg", "bank-db"
SET_ID = "20261127T101500Z-d1a0"
NEW = f"{SERVER}-{SET_ID.lower()}"
KINDS = {"azure-postgres": (POSTGRES_API, "pointInTimeUTC"), "azure-mysql": (MYSQL_API, "restorePointInTime")}


class Crash(Exception):
    """Stands for the process dying between two steps."""


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeArm]:
    require(fake_arm_servers.missing_reason())
    with FakeArm() as server:
        yield server


@pytest.fixture
def arm(fake_server: FakeArm) -> FakeArm:
    fake_server.reset()
    fake_server.polls = 1
    return fake_server


def target(arm: FakeArm, kind: str, token: str | None = None, **overrides: Any) -> FlexTarget:
    conf: dict[str, Any] = {
        "name": "bank-db",
        "kind": kind,
        "subscription_id": SUBSCRIPTION,
        "resource_group": GROUP,
        "server": SERVER,
        "management_endpoint": arm.url,
        "management_ca_file": arm.ca_file,
        "poll_interval": "0.01s",
        "wait_timeout": "10s",
        **overrides,
    }
    made = build_target(conf, 0)
    assert isinstance(made, FlexTarget)
    given = StaticToken(token) if token else StaticToken()
    made.credential = lambda: given
    return made


def back_up(t: FlexTarget, root: Path) -> dict[str, Any]:
    t.preflight()
    capture = t.capture(SET_ID)
    capture.export(DirWriter(root))
    position: dict[str, Any] = json.loads(json.dumps(capture.position()))
    return position


def reader(root: Path, position: dict[str, Any], point: str, journal: Any) -> DirReader:
    return DirReader(root, position=position, restore_point=point, journal=journal)


def restore_puts(arm: FakeArm) -> list[Any]:
    return [r for r in arm.calls("PUT", r"/flexibleServers/") if not r.path.endswith(f"/{SERVER}")]


def test_config_refusals() -> None:
    base = {"name": "db", "kind": "azure-postgres", "subscription_id": "s", "resource_group": "g"}
    with pytest.raises(UsageError, match="server"):
        build_target(base, 0)
    with pytest.raises(UsageError, match="not a valid flexible server name"):
        build_target({**base, "server": "Bank_DB"}, 0)
    with pytest.raises(UsageError, match=r"only \{server\} and \{set\}"):
        build_target({**base, "server": "bank", "restored_name": "{id}-x"}, 0)
    with pytest.raises(UsageError, match="service principal needs tenant_id"):
        build_target({**base, "server": "bank", "tenant_id": "t"}, 0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_restore_sends_the_services_own_time_field(
    arm: FakeArm, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider, field = KINDS[kind]
    arm.add_server(provider, GROUP, SERVER, network={"publicNetworkAccess": "Disabled"})
    t = target(arm, kind)
    position = back_up(t, tmp_path)
    assert position["server"] == SERVER and position["backup_retention_days"] == 7
    assert (tmp_path / "server.json").exists()
    point = iso_ms(utc_now() - timedelta(minutes=1))
    with caplog.at_level(logging.WARNING):
        t.restore(reader(tmp_path, position, point, MemoryJournal()), None, force=False)
    (put,) = restore_puts(arm)
    assert put.path.endswith(f"/providers/{provider}/flexibleServers/{NEW}")
    props = put.body["properties"]
    assert props["createMode"] == "PointInTimeRestore" and props[field] == point
    other = "restorePointInTime" if field == "pointInTimeUTC" else "pointInTimeUTC"
    assert other not in props
    assert props["sourceServerResourceId"] == arm.server_id(provider, GROUP, SERVER)
    assert props["network"] == {"publicNetworkAccess": "Disabled"} and props["availabilityZone"] == "1"
    assert put.body["location"] == "westeurope" and put.body["sku"]["name"] == "Standard_D2ds_v4"
    assert put.body["tags"] == {"txbackup-set": SET_ID, "txbackup-restore-point": point}
    made = arm.servers[(provider, GROUP, NEW)]
    assert made["properties"]["state"] == "Ready"
    assert f"endpoint {made['properties']['fullyQualifiedDomainName']}" in caplog.text


def test_preflight_faults(arm: FakeArm) -> None:
    with pytest.raises(TargetError, match=f"server {SERVER} not found in resource group {GROUP}"):
        target(arm, "azure-mysql").preflight()
    arm.add_server(MYSQL_API, GROUP, SERVER, state="Stopped")
    with pytest.raises(TargetError, match="is Stopped, not Ready"):
        target(arm, "azure-mysql").preflight()
    arm.add_server(MYSQL_API, GROUP, SERVER, retention_days=None)
    with pytest.raises(TargetError, match="reports no backup retention"):
        target(arm, "azure-mysql").preflight()
    arm.add_server(MYSQL_API, GROUP, SERVER)
    with pytest.raises(TargetError) as caught:
        target(arm, "azure-mysql", EXPIRED_TOKEN).preflight()
    assert "Azure refused the credentials" in str(caught.value)
    assert "ExpiredAuthenticationToken" in str(caught.value) and "\n" not in str(caught.value)


def test_point_before_the_earliest_restore_date_is_refused(arm: FakeArm, tmp_path: Path) -> None:
    arm.add_server(POSTGRES_API, GROUP, SERVER, earliest=utc_now() - timedelta(hours=1))
    t = target(arm, "azure-postgres")
    position = back_up(t, tmp_path)
    early = iso_ms(utc_now() - timedelta(hours=2))
    with pytest.raises(TargetError, match=f"restore point {early} is before the restorable window"):
        t.restore(reader(tmp_path, position, early, MemoryJournal()), None, force=False)
    late = iso_ms(utc_now() + timedelta(hours=2))
    with pytest.raises(TargetError, match="is after the restorable window"):
        t.restore(reader(tmp_path, position, late, MemoryJournal()), None, force=False)
    assert restore_puts(arm) == []


def test_check_record_refuses_another_server(arm: FakeArm, tmp_path: Path) -> None:
    arm.add_server(POSTGRES_API, GROUP, SERVER)
    t = target(arm, "azure-postgres")
    position = back_up(t, tmp_path)
    t.check_record(Recorded(("server.json",), position, dict(t.describe())))
    moved = {**position, "id": position["id"].replace(GROUP, "other-rg")}
    with pytest.raises(IntegrityError, match="is not server"):
        t.check_record(Recorded(("server.json",), moved))
    # a set of the MySQL server of the same name is not this PostgreSQL target's
    mysql = {**position, "id": position["id"].replace(POSTGRES_API, MYSQL_API)}
    with pytest.raises(IntegrityError, match="is not server"):
        t.check_record(Recorded(("server.json",), mysql))
    with pytest.raises(UsageError, match="not a valid flexible server name"):
        t.check_destination({"dsn": "Bad_Name"})


@pytest.mark.parametrize(
    ("step", "phase"), [(s, p) for s in ("plan", "requested", "ready") for p in ("acted", "done")]
)
def test_crash_after_each_step_then_resume(arm: FakeArm, tmp_path: Path, step: str, phase: str) -> None:
    arm.add_server(POSTGRES_API, GROUP, SERVER)
    t = target(arm, "azure-postgres")
    position = back_up(t, tmp_path / "set")
    store = JobStore(str(tmp_path / "catalog.db"))
    job = store.create(SET_ID, {})

    def crash(name: str, when: str) -> None:
        if name == step and when == phase:
            raise Crash(f"killed after {name} ({when})")

    t.fault_hook = crash
    point = iso_ms(utc_now() - timedelta(minutes=1))
    with pytest.raises(Crash):
        t.restore(reader(tmp_path / "set", position, point, store.journal(job, "bank-db")), None, False)
    t.fault_hook = None
    t.restore(reader(tmp_path / "set", position, point, store.journal(job, "bank-db")), None, False)
    assert len(restore_puts(arm)) == 1  # asked for once, whatever step the crash hit
    assert arm.servers[(POSTGRES_API, GROUP, NEW)]["properties"]["state"] == "Ready"


def test_failed_restore_is_one_line_and_someone_elses_server_is_left_alone(
    arm: FakeArm, tmp_path: Path
) -> None:
    arm.add_server(MYSQL_API, GROUP, SERVER)
    t = target(arm, "azure-mysql")
    position = back_up(t, tmp_path)
    arm.server_outcomes.append(
        Outcome("fail", "InternalServerError", "Restore failed: no capacity in zone 1.")
    )
    point = iso_ms(utc_now() - timedelta(minutes=1))
    with pytest.raises(TargetError) as caught:
        t.restore(reader(tmp_path, position, point, MemoryJournal()), None, False)
    assert "failed in Azure: InternalServerError: Restore failed: no capacity in zone 1." in str(caught.value)
    # someone else's server of the planned name, made while the job was stopped
    journal = MemoryJournal()
    t.fault_hook = lambda name, when: (
        (_ for _ in ()).throw(Crash()) if (name, when) == ("plan", "done") else None
    )
    with pytest.raises(Crash):
        t.restore(reader(tmp_path, position, point, journal), None, False)
    t.fault_hook = None
    arm.add_server(MYSQL_API, GROUP, NEW)
    with pytest.raises(TargetError, match="appeared meanwhile and is not this job's restore"):
        t.restore(reader(tmp_path, position, point, journal), None, False)
