"""The Cosmos DB target against a local fake of Azure Resource Manager (nothing reaches Azure).

The real azure-mgmt-cosmosdb client talks HTTPS to ``tests/servers/fake_arm.py``
on 127.0.0.1 (self-signed certificate given as ``management_ca_file``, a static
bearer token). The fake serves exactly the calls the target makes and records
them, so these tests check what we *send*, field by field, and how we react to
what Azure answers (failures, slowness, a consistency that does not stick).
They are contract tests: the target is not verified against Azure itself.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.servers import fake_arm as fake_arm_servers
from tests.servers.fake_arm import EXPIRED_TOKEN, GOOD_TOKEN, SUBSCRIPTION, FakeArm, Outcome, StaticToken
from txbackup.config import build_target
from txbackup.engine.manifest import Manifest
from txbackup.errors import TargetError, UsageError
from txbackup.jobs import JobStore
from txbackup.targets.cosmos import CosmosTarget, from_config

GROUP, ACCOUNT = "bank-rg", "bank"
DATABASES = {
    "bank": ["accounts", "transfers"],
    "coordinator": ["state"],
    "scalardb": ["metadata"],
    "reports": ["daily"],  # not configured: must not be restored
}
ACCOUNT_PATH = rf"/resourceGroups/{GROUP}/providers/Microsoft\.DocumentDB/databaseAccounts/"


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeArm]:
    require(fake_arm_servers.missing_reason())
    with FakeArm() as server:
        yield server


@pytest.fixture
def arm(fake_server: FakeArm) -> FakeArm:
    fake_server.reset()
    return fake_server


def settings(arm: FakeArm, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "name": "cosmos",
        "kind": "cosmos",
        "subscription_id": SUBSCRIPTION,
        "resource_group": GROUP,
        "account": ACCOUNT,
        "databases": {"bank": ["accounts", "transfers"]},
        "management_endpoint": arm.url,
        "management_ca_file": arm.ca_file,
        "min_pause": "0.2s",
        "poll_interval": "0.02s",
        "wait_timeout": "20s",
        "restore_window_wait": "0.2s",
    }
    conf.update(overrides)
    return {k: v for k, v in conf.items() if v is not None}


def target(arm: FakeArm, credential: Any = None, **overrides: Any) -> CosmosTarget:
    """The target as the cluster file makes it, with a test credential (a token, or an object)."""
    t = from_config("cosmos", settings(arm, **overrides))
    given = StaticToken(credential) if isinstance(credential, str) else credential or StaticToken()
    t.credential = lambda: given
    return t


def source(arm: FakeArm, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("databases", DATABASES)
    return arm.add_account(GROUP, ACCOUNT, **kwargs)


def restore_puts(arm: FakeArm) -> list[Any]:
    return [r for r in arm.calls("PUT", ACCOUNT_PATH) if not r.path.endswith(f"/{ACCOUNT}")]


async def engine_backup(t: CosmosTarget, tmp_path: Path, pauses: list[int] | None = None) -> Manifest:
    """One backup set through the engine, with the sample pausable service."""
    from txbackup.admin.client import Endpoint
    from txbackup.admin.fleet import Fleet
    from txbackup.catalog import Catalog
    from txbackup.demo.sample_service import start_sample_server
    from txbackup.engine.backup import BackupPlan, run_backup
    from txbackup.storage import LocalStorage

    app = await start_sample_server()
    real_pause = app.gate.pause

    async def counted(*args: Any, **kwargs: Any) -> None:
        if pauses is not None:
            pauses.append(1)
        await real_pause(*args, **kwargs)

    app.gate.pause = counted  # type: ignore[method-assign]
    try:
        plan = BackupPlan(
            fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
            targets=[t],
            storage=LocalStorage(str(tmp_path / "store")),
            catalog=Catalog(str(tmp_path / "catalog.db")),
            capture_deadline_s=5,
        )
        return await run_backup(plan)
    finally:
        await app.stop()


def restore_plan(t: CosmosTarget, manifest: Manifest, tmp_path: Path, **kwargs: Any) -> Any:
    from txbackup.engine.restore import RestorePlan
    from txbackup.storage import LocalStorage

    return RestorePlan(
        storage=LocalStorage(str(tmp_path / "store")),
        manifest=manifest,
        targets=[t],
        jobs=JobStore(str(tmp_path / "catalog.db")),
        **kwargs,
    )


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- configuration -----------------------------------------------------------------


def test_config_defaults_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"subscription_id": SUBSCRIPTION, "resource_group": GROUP, "account": ACCOUNT}
    t = build_target({"name": "c", "kind": "cosmos", **base}, 0)
    assert isinstance(t, CosmosTarget)
    assert t.databases is None  # the whole account
    assert t.min_pause_s == 10.0 and t.warnings == [] and t.location is None
    assert t.restored_account_name == "{account}-restored-{set}"

    t = from_config("c", {**base, "databases": ["bank"], "location": "West Europe"})
    assert t.databases == {"bank": [], "coordinator": [], "scalardb": []}
    assert t.location == "westeurope"
    t = from_config("c", {**base, "databases": {"bank": "accounts"}, "system_database": ""})
    assert t.databases == {"bank": ["accounts"], "coordinator": []}

    t = from_config("c", {**base, "min_pause": "2s"})
    assert t.min_pause_s == 2.0 and "below the 10s" in t.warnings[0]

    monkeypatch.setenv("SP_SECRET", "s3cret")
    sp = {"tenant_id": "t", "client_id": "c", "client_secret_env": "SP_SECRET"}
    assert from_config("c", {**base, **sp}).credential is not None

    bad: list[tuple[dict[str, Any], str]] = [
        ({"account": "Bank_1"}, "not a valid Cosmos DB account name"),
        ({"account": "-bank"}, "not a valid Cosmos DB account name"),
        ({"restored_account_name": "{account}-a-much-too-long-restored-name-{set}"}, "choose a shorter"),
        ({"restored_account_name": "{acount}-{set}"}, "only {account} and {set}"),
        ({"databases": []}, "must not be empty"),
        ({"databases": {"bank": ["a", "a"]}}, "lists a name twice"),
        ({"databases": "bank"}, "must be a table"),
        ({"client_secret": "x"}, "do not write the client_secret"),
        ({"tenant_id": "t"}, "needs tenant_id, client_id and client_secret_env"),
        ({"client_secret_env": "NOT_SET_ANYWHERE"}, "NOT_SET_ANYWHERE"),
        ({"after_restore": []}, "after_restore must be a command"),
        ({"min_pause": "soon"}, "min_pause"),
        ({"sql": True}, "unknown setting"),
        ({"resource_group": None}, "resource_group is required"),
    ]
    for extra, message in bad:
        conf = {k: v for k, v in {**base, **extra}.items() if v is not None}
        with pytest.raises(UsageError, match=re.escape(message)):
            from_config("c", conf)


# -- preflight: every bad input is refused before any pause ---------------------------


def test_preflight_records_the_account(arm: FakeArm) -> None:
    account = source(arm, consistency="Strong")
    t = target(arm)
    t.preflight()
    capture = t.capture("20261127T101500Z-3f9a")
    position = capture.position()
    instance = account["properties"]["instanceId"]
    assert position["account_id"] == arm.account_id(GROUP, ACCOUNT)
    assert position["instance_id"] == instance
    assert position["restore_source"] == arm.restorable_id("westeurope", instance)
    assert position["location"] == "westeurope" and position["location_display"] == "West Europe"
    assert position["consistency"] == "Strong" and position["kind"] == "GlobalDocumentDB"
    assert position["backup_policy"] == "Continuous" and position["backup_tier"] == "Continuous7Days"
    assert position["databases"] == {
        "bank": ["accounts", "transfers"],
        "coordinator": ["state"],
        "scalardb": ["metadata"],
    }
    assert position["whole_account"] is False and position["set_id"] == "20261127T101500Z-3f9a"
    json.dumps(position)  # JSON-safe (no SDK enums)


def test_preflight_periodic_backup_policy(arm: FakeArm) -> None:
    source(arm, backup="Periodic")
    with pytest.raises(TargetError, match="Periodic backup policy") as err:
        target(arm).preflight()
    assert "--backup-policy-type Continuous" in str(err.value) and 'target "cosmos"' in str(err.value)


def test_preflight_missing_account(arm: FakeArm) -> None:
    with pytest.raises(TargetError, match=f"account {ACCOUNT} not found in resource group {GROUP}"):
        target(arm).preflight()


def test_preflight_missing_container_and_database(arm: FakeArm) -> None:
    source(arm)
    with pytest.raises(TargetError, match=r"bank/ledger not found in account bank"):
        target(arm, databases={"bank": ["accounts", "ledger"]}).preflight()
    with pytest.raises(TargetError, match=r"container\(s\) audit not found"):
        target(arm, databases={"audit": []}).preflight()
    with pytest.raises(TargetError, match=r"tx not found"):  # ScalarDB's coordinator, renamed
        target(arm, coordinator_database="tx").preflight()


def test_preflight_expired_credentials(arm: FakeArm) -> None:
    source(arm)
    with pytest.raises(TargetError, match="Azure refused the credentials") as err:
        target(arm, EXPIRED_TOKEN).preflight()
    assert "ExpiredAuthenticationToken" in str(err.value) and "az login" in str(err.value)

    from azure.core.exceptions import ClientAuthenticationError

    class ExpiredSecret:  # what azure-identity raises for an expired client secret
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise ClientAuthenticationError(
                "ClientSecretCredential.get_token failed: AADSTS7000222: "
                "The provided client secret keys for app 'x' are expired."
            )

    with pytest.raises(TargetError, match="AADSTS7000222"):
        target(arm, ExpiredSecret()).preflight()


@pytest.mark.parametrize(
    "fault, message",
    [
        ("periodic", "Periodic backup policy"),
        ("no-account", "not found"),
        ("no-container", "bank/ledger not found"),
        ("expired", "ExpiredAuthenticationToken"),
    ],
)
async def test_bad_input_fails_before_any_pause(
    arm: FakeArm, tmp_path: Path, fault: str, message: str
) -> None:
    if fault != "no-account":
        source(arm, backup="Periodic" if fault == "periodic" else "Continuous")
    databases = {"bank": ["accounts", "ledger"]} if fault == "no-container" else None
    t = target(arm, EXPIRED_TOKEN if fault == "expired" else None, databases=databases)
    pauses: list[int] = []
    with pytest.raises(TargetError, match=message):
        await engine_backup(t, tmp_path, pauses)
    assert pauses == []


# -- backup through the engine, then restore -----------------------------------------------


async def test_backup_then_restore_sends_the_documented_requests(
    arm: FakeArm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    account = source(arm, consistency="Strong")
    t = target(arm)
    caplog.set_level(logging.WARNING)
    manifest = await engine_backup(t, tmp_path)
    assert any("min_pause = 0.2s is below the 10s" in r.getMessage() for r in caplog.records)
    assert manifest.timings.pause_ms >= 200  # the target's min_pause was held
    point = manifest.restore_point
    assert point is not None
    record = manifest.target("cosmos")
    assert [a.name for a in record.artifacts] == ["account.json"]
    instance = account["properties"]["instanceId"]
    assert record.position["instance_id"] == instance and record.position["consistency"] == "Strong"
    artifact = tmp_path / "store" / "sets" / manifest.set_id
    assert any(artifact.rglob("account.json*"))
    assert not arm.calls("PUT", ".") and not arm.calls("PATCH", ".")  # a backup changes nothing

    caplog.clear()
    plan = restore_plan(t, manifest, tmp_path)
    from txbackup.engine.restore import restore_set

    job_id, names = restore_set(plan)
    assert names == ["cosmos"] and plan.jobs.get(job_id).status == "complete"

    new = f"{ACCOUNT}-restored-{manifest.set_id.lower()}"
    [put] = restore_puts(arm)
    assert put.path.endswith(f"/databaseAccounts/{new}") and put.query["api-version"]
    assert put.headers["authorization"] == "Bearer fake-arm-token"
    body = put.body
    assert body["location"] == "westeurope" and body["kind"] == "GlobalDocumentDB"
    assert body["tags"] == {"txbackup-set": manifest.set_id, "txbackup-restore-point": point}
    props = body["properties"]
    assert props["createMode"] == "Restore"
    assert props["locations"] == [
        {"locationName": "westeurope", "failoverPriority": 0, "isZoneRedundant": False}
    ]
    assert props["databaseAccountOfferType"] == "Standard"
    assert props["backupPolicy"] == {
        "type": "Continuous",
        "continuousModeProperties": {"tier": "Continuous7Days"},
    }
    restore = props["restoreParameters"]
    assert restore["restoreMode"] == "PointInTime"
    assert restore["restoreSource"] == arm.restorable_id("westeurope", instance)
    assert when(restore["restoreTimestampInUtc"]) == when(point)  # the pause midpoint
    assert restore["databasesToRestore"] == [
        {"databaseName": "bank", "collectionNames": ["accounts", "transfers"]},
        {"databaseName": "coordinator", "collectionNames": ["state"]},
        {"databaseName": "scalardb", "collectionNames": ["metadata"]},
    ]
    assert "consistencyPolicy" not in props  # set afterwards, and read back
    [patch] = arm.calls("PATCH", ACCOUNT_PATH)
    assert patch.path.endswith(f"/databaseAccounts/{new}")
    assert patch.body == {"properties": {"consistencyPolicy": {"defaultConsistencyLevel": "Strong"}}}
    assert arm.calls("GET", "/operationsStatus/")  # the long-running operations were polled

    restored = arm.accounts[(GROUP, new)]["properties"]
    assert restored["provisioningState"] == "Succeeded"
    assert restored["consistencyPolicy"]["defaultConsistencyLevel"] == "Strong"
    assert sorted(arm.databases[(GROUP, new)]) == ["bank", "coordinator", "scalardb"]
    assert (
        arm.accounts[(GROUP, ACCOUNT)]["properties"]["consistencyPolicy"]["defaultConsistencyLevel"]
        == "Strong"
    )
    left = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "--repair-all" in left and f"point the applications at account {new}" in left


async def test_restore_failing_in_azure_then_resumed(arm: FakeArm, tmp_path: Path) -> None:
    from txbackup.engine.restore import restore_set

    source(arm)
    t = target(arm)
    manifest = await engine_backup(t, tmp_path)
    why = "Restore failed: the restore point is not within the restorable window of container accounts."
    arm.restore_outcomes.append(Outcome("fail", "BadRequest", why))
    plan = restore_plan(t, manifest, tmp_path)
    with pytest.raises(TargetError, match="failed in Azure: BadRequest: Restore failed") as err:
        restore_set(plan)
    assert "--resume" in str(err.value)
    [job] = plan.jobs.list()
    assert job.status == "failed" and why in (job.error or "")
    new = f"{ACCOUNT}-restored-{manifest.set_id.lower()}"
    assert arm.accounts[(GROUP, new)]["properties"]["provisioningState"] == "Failed"

    plan.job_id = job.job_id  # txbackup restore --resume JOB
    job_id, _ = restore_set(plan)
    assert job_id == job.job_id and plan.jobs.get(job_id).status == "complete"
    [delete] = arm.calls("DELETE", ACCOUNT_PATH)
    assert delete.path.endswith(f"/{new}")  # this job's failed account, and nothing else
    first, second = restore_puts(arm)
    assert first.body == second.body
    assert (
        arm.accounts[(GROUP, new)]["properties"]["consistencyPolicy"]["defaultConsistencyLevel"] == "Strong"
    )


async def test_restore_timing_out_then_resumed_waits_for_the_same_operation(
    arm: FakeArm, tmp_path: Path
) -> None:
    from txbackup.engine.restore import restore_set

    source(arm)
    t = target(arm, wait_timeout="0.5s")
    manifest = await engine_backup(t, tmp_path)
    arm.restore_outcomes.append(Outcome("hang"))
    plan = restore_plan(t, manifest, tmp_path)
    with pytest.raises(TargetError, match=r"not online after 0\.5s; Azure goes on restoring it"):
        restore_set(plan)
    [job] = plan.jobs.list()
    assert job.status == "failed" and "not online" in (job.error or "")
    token = (plan.jobs.journal(job.job_id, "cosmos").data("requested/1") or {})["token"]
    assert "operationsStatus" in base64.b64decode(token).decode()  # how the wait resumes...
    assert GOOD_TOKEN not in base64.b64decode(token).decode()  # ...and no credential in the catalog

    arm.complete_hanging()
    plan.job_id = job.job_id
    restore_set(plan)
    assert plan.jobs.get(job.job_id).status == "complete"
    assert len(restore_puts(arm)) == 1 and not arm.calls("DELETE", ".")  # the same restore, waited for


async def test_consistency_not_reading_back_strong_fails_loudly(arm: FakeArm, tmp_path: Path) -> None:
    from txbackup.engine.restore import restore_set

    source(arm)
    t = target(arm)
    manifest = await engine_backup(t, tmp_path)
    arm.consistency_sticks = False
    plan = restore_plan(t, manifest, tmp_path)
    with pytest.raises(
        TargetError, match="reads back default consistency Session after it was set to Strong"
    ):
        restore_set(plan)
    [job] = plan.jobs.list()
    assert job.status == "failed" and "ScalarDB's guarantees need Strong" in (job.error or "")
    journal = plan.jobs.journal(job.job_id, "cosmos")
    assert journal.is_done("online") and not journal.is_done("consistency-strong")

    arm.consistency_sticks = True
    plan.job_id = job.job_id
    restore_set(plan)
    assert len(arm.calls("PATCH", ".")) == 2 and len(restore_puts(arm)) == 1


# -- the restorable window -----------------------------------------------------------------------


def captured(arm: FakeArm, t: CosmosTarget) -> dict[str, Any]:
    t.preflight()
    return dict(t.capture("20261127T101500Z-3f9a").position())


def test_restore_point_before_the_window_is_refused(arm: FakeArm, tmp_path: Path) -> None:
    from tests.targets_support import DirReader

    account = source(arm)
    t = target(arm)
    position = captured(arm, t)
    point = datetime.now(UTC) - timedelta(hours=2)
    oldest = datetime.now(UTC) - timedelta(hours=1)
    arm.set_oldest(account["properties"]["instanceId"], oldest)
    reader = DirReader(tmp_path, restore_point=point.isoformat(timespec="milliseconds"), position=position)
    with pytest.raises(TargetError, match="is before the restorable window") as err:
        t.restore(reader, None, False)
    assert oldest.isoformat(timespec="milliseconds").replace("+00:00", "Z") in str(err.value)
    assert "refusing to restore" in str(err.value) and not restore_puts(arm)


def test_restore_point_after_the_window_is_refused(arm: FakeArm, tmp_path: Path) -> None:
    from tests.targets_support import DirReader

    source(arm)
    t = target(arm)
    position = captured(arm, t)
    arm.latest_lag_s = 3600  # the containers' latest restorable time trails by an hour
    point = datetime.now(UTC) - timedelta(seconds=1)
    reader = DirReader(tmp_path, restore_point=point.isoformat(timespec="milliseconds"), position=position)
    with pytest.raises(TargetError, match=r"is after the restorable window .* \.\. ") as err:
        t.restore(reader, None, False)
    assert not restore_puts(arm) and "refusing to restore" in str(err.value)


def test_restore_point_after_the_source_was_deleted_is_refused(arm: FakeArm, tmp_path: Path) -> None:
    from tests.targets_support import DirReader

    account = source(arm)
    t = target(arm)
    position = captured(arm, t)
    arm.delete_source(account["properties"]["instanceId"], datetime.now(UTC) - timedelta(minutes=5))
    point = datetime.now(UTC) - timedelta(seconds=1)
    reader = DirReader(tmp_path, restore_point=point.isoformat(timespec="milliseconds"), position=position)
    with pytest.raises(TargetError, match="is after the restorable window"):
        t.restore(reader, None, False)


# -- destinations, whole account, after_restore ------------------------------------------------------


def test_restore_to_a_named_account_and_never_over_an_existing_one(arm: FakeArm, tmp_path: Path) -> None:
    from tests.targets_support import DirReader

    source(arm)
    t = target(arm)
    position = captured(arm, t)
    point = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="milliseconds")
    with pytest.raises(UsageError, match="not a valid Cosmos DB account name"):
        t.restore(DirReader(tmp_path, restore_point=point, position=position), {"dsn": "Bank_Copy"}, False)
    arm.add_account(GROUP, "taken", databases={})
    with pytest.raises(TargetError, match="account taken exists already; a restore never replaces"):
        t.restore(DirReader(tmp_path, restore_point=point, position=position), {"dsn": "taken"}, True)
    assert not restore_puts(arm)
    t.restore(DirReader(tmp_path, restore_point=point, position=position), {"dsn": "bank-copy"}, False)
    [put] = restore_puts(arm)
    assert put.path.endswith("/databaseAccounts/bank-copy")


def test_whole_account_and_after_restore_command(arm: FakeArm, tmp_path: Path) -> None:
    from tests.targets_support import DirReader

    source(arm)
    out = tmp_path / "hook.json"
    hook = (
        "import json, os; "
        f"json.dump({{k: v for k, v in os.environ.items() if 'TXBACKUP' in k}}, open({str(out)!r}, 'w'))"
    )
    t = target(arm, databases=None, location="North Europe", after_restore=[sys.executable, "-c", hook])
    position = captured(arm, t)
    assert position["whole_account"] is True and "reports" in position["databases"]
    point = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="milliseconds")
    t.restore(DirReader(tmp_path, restore_point=point, position=position), {"dsn": "bank-whole"}, False)
    [put] = restore_puts(arm)
    assert "databasesToRestore" not in put.body["properties"]["restoreParameters"]  # the whole account
    assert put.body["location"] == "northeurope"
    env = json.loads(out.read_text())
    assert env["TXBACKUP_COSMOS_ACCOUNT"] == "bank-whole"
    assert env["TXBACKUP_COSMOS_ENDPOINT"] == "https://bank-whole.documents.azure.com:443/"
    assert env["TXBACKUP_RESTORE_POINT"] == point.replace("+00:00", "Z")
    assert env["TXBACKUP_COSMOS_RESOURCE_GROUP"] == GROUP


def test_crash_between_the_restore_request_and_its_record(arm: FakeArm, tmp_path: Path) -> None:
    """The account was asked for but the job died before journaling it: the resumed
    job recognises the account as its own (same source and point) and waits for it."""
    from tests.targets_support import DirReader
    from txbackup.jobs import MemoryJournal

    class Killed(Exception):
        pass

    class DiesOnce(MemoryJournal):
        died = False

        def mark_done(self, step: str, data: Any = None) -> None:
            if step == "requested/1" and not self.died:
                self.died = True
                raise Killed(step)
            super().mark_done(step, data)

    source(arm)
    t = target(arm)
    position = captured(arm, t)
    point = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="milliseconds")
    journal = DiesOnce()
    with pytest.raises(Killed):
        t.restore(DirReader(tmp_path, restore_point=point, position=position, journal=journal), None, False)
    t.restore(DirReader(tmp_path, restore_point=point, position=position, journal=journal), None, False)
    assert len(restore_puts(arm)) == 1 and journal.is_done("after-restore")
    new = "bank-restored-20261127t101500z-3f9a"
    assert (
        arm.accounts[(GROUP, new)]["properties"]["consistencyPolicy"]["defaultConsistencyLevel"] == "Strong"
    )

    other = target(arm)  # a stranger's account of the name this job wants is never adopted
    arm.add_account(GROUP, "bank-stranger", databases={})
    journal2 = MemoryJournal()
    journal2.mark_done("plan", {"account": "bank-stranger", "location": "westeurope"})
    with pytest.raises(TargetError, match="appeared meanwhile and is not this job's restore"):
        other.restore(
            DirReader(tmp_path, restore_point=point, position=position, journal=journal2), None, False
        )
