"""forget and prune on a local folder and on moto S3: what goes, what stays, and why.

The race of Medusa #363 (a purge deleting blobs a running backup had uploaded
but not yet committed) is played out with a real backup lock, a real prune
waiting on it, and a broken lock where only the grace period protects.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.prune_support import STORE, blob_of, cassandra_set, cassandra_target, commit, upload
from tests.servers import moto as moto_servers
from tests.servers.moto import REGION, MotoServer, fresh_aws
from tests.servers.s3 import S3Bucket
from txbackup.agent.blobs import fetch_file
from txbackup.catalog import Catalog
from txbackup.config import build_target
from txbackup.engine.manifest import TargetRecord, list_set_ids
from txbackup.engine.prune import Report, forget_set, prune, read_tombstone
from txbackup.errors import RetainedError
from txbackup.locks import BACKUP, EXCLUSIVE, LockBusy, StorageLock, acquire
from txbackup.repository import layout
from txbackup.storage import LocalStorage, open_storage
from txbackup.storage.base import Storage, list_names, save_bytes
from txbackup.targets.dynamodb import DynamoTarget

DAY1 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    if request.param == "local":
        return LocalStorage(str(tmp_path / "repo"))
    bucket: S3Bucket = request.getfixturevalue("moto_s3_bucket")
    for key, value in bucket.env().items():
        monkeypatch.setenv(key, value)
    return open_storage(bucket.url("repo/"), {"path_style": True})


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(str(tmp_path / "catalog.db"))


def locked(storage: Storage, mode: str = EXCLUSIVE, **options: Any) -> StorageLock:
    return asyncio.run(acquire(storage, "prune" if mode == EXCLUSIVE else "backup", mode=mode, **options))


def run_prune(storage: Storage, grace_s: float = 0.0, wait_s: float = 0.0, **options: Any) -> Report:
    lock = locked(storage, wait_s=wait_s, poll_s=0.05)
    try:
        return prune(storage, lock, {}, grace_s=grace_s, **options)
    finally:
        lock.release()


def blobs(storage: Storage) -> set[str]:
    return {n for n in list_names(storage, layout.CASSANDRA) if layout.parse_blob_name(n)}


def test_forget_then_prune_collects_only_what_no_set_references(
    storage: Storage, catalog: Catalog, tmp_path: Path
) -> None:
    first = cassandra_set(storage, tmp_path, "20261120T030000Z-aaaa", DAY1, [b"x" * 100, b"shared"])
    catalog.complete(first)
    cassandra_set(storage, tmp_path, "20261121T030000Z-bbbb", DAY1 + timedelta(days=1), [b"shared", b"z"])
    assert len(blobs(storage)) == 3
    report = Report()
    forget_set(storage, catalog, first, {}, report)
    assert report.forgotten == [first.set_id] and catalog.get(first.set_id) is None
    assert list_set_ids(storage) == ["20261121T030000Z-bbbb"]
    assert list_names(storage, layout.set_prefix(first.set_id)) == []  # its own files go at once
    assert len(blobs(storage)) == 3  # shared blobs are prune's

    dry = run_prune(storage, dry_run=True)
    assert (dry.blobs_removed, dry.blobs_referenced, len(blobs(storage))) == (1, 2, 3)
    done = run_prune(storage)
    assert blobs(storage) == {blob_of(b"shared"), blob_of(b"z")}
    assert (done.blobs_removed, done.objects_removed, done.blobs_referenced) == (1, 1, 2)
    assert done.bytes_removed > 0 and not done.problems
    assert "removed 1 objects" in done.lines()[-1]


def test_the_grace_period_keeps_young_garbage(storage: Storage, tmp_path: Path) -> None:
    upload(storage, tmp_path, [b"orphan"])  # a blob no set references, just uploaded
    save_bytes(storage, "sets/20261127T000000Z-dead/cass/x.zst", b"partial")  # a set without manifest
    young = run_prune(storage, grace_s=3600)
    assert (young.blobs_kept_young, young.objects_removed) == (1, 0)
    assert blobs(storage) == {blob_of(b"orphan")}
    old = run_prune(storage, grace_s=0)
    assert old.sets_removed == ["20261127T000000Z-dead"] and old.blobs_removed == 1
    assert list_names(storage, "sets/") == [] and blobs(storage) == set()


def test_prune_never_runs_beside_a_backup_and_the_grace_covers_a_broken_lock(
    storage: Storage, tmp_path: Path
) -> None:
    """Medusa #363: a backup has uploaded its blobs and file list, not its manifest."""
    base = cassandra_set(storage, tmp_path, "20261120T030000Z-base", DAY1, [b"old"])
    set_id = "20261127T030000Z-busy"
    backup = locked(storage, BACKUP)
    files = upload(storage, tmp_path, [b"old", b"new"])  # reuses "old", uploads "new"
    target = cassandra_target(storage, set_id, files)
    storage.remove(layout.manifest_path(base.set_id))  # "old" is now referenced by nothing committed

    with pytest.raises(LockBusy, match="txbackup backup"):
        locked(storage, wait_s=0)

    # a prune that waits: it runs only once the backup has committed and let go
    results: list[Report] = []
    waiter = threading.Thread(target=lambda: results.append(run_prune(storage, wait_s=30)))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and not results  # still waiting on the backup's lock
    commit(storage, set_id, DAY1 + timedelta(days=7), [target])
    backup.release()
    waiter.join(30)
    [report] = results
    assert blob_of(b"old") in blobs(storage) and blob_of(b"new") in blobs(storage)
    assert report.blobs_referenced == 2 and report.blobs_removed == 0
    for entry in files:  # the committed set restores: every blob it references is there
        fetch_file(storage, STORE, entry["sha256"], entry["size"], str(tmp_path / "out"), "x")
        (tmp_path / "out").unlink()

    # a backup whose lock someone broke by hand: prune gets the lock, the grace protects
    second = locked(storage, BACKUP)
    fresh = upload(storage, tmp_path, [b"fresh"])
    cassandra_target(storage, "20261128T030000Z-next", fresh)
    storage.remove(second.info.name if second.info else "")
    broken = run_prune(storage, grace_s=3600)
    assert blob_of(b"fresh") in blobs(storage) and broken.blobs_kept_young == 1
    assert list_names(storage, layout.set_prefix("20261128T030000Z-next"))  # its partial set too
    second.release()


def test_no_blob_goes_when_a_file_list_cannot_be_read(storage: Storage, tmp_path: Path) -> None:
    manifest = cassandra_set(storage, tmp_path, "20261120T030000Z-aaaa", DAY1, [b"kept"])
    upload(storage, tmp_path, [b"orphan"])
    [record] = manifest.targets[0].artifacts
    save_bytes(storage, record.path, b"tampered")
    report = run_prune(storage)
    assert report.blobs_removed == 0 and len(blobs(storage)) == 2
    assert "no blob removed" in report.problems[0] and record.path in report.problems[0]


def test_a_malformed_tombstone_is_reported_and_left(storage: Storage) -> None:
    save_bytes(storage, layout.tombstone_path("20261120T030000Z-aaaa"), b'{"format_version": 1, "set_id": 5}')
    report = run_prune(storage)
    assert any("tombstone trash/20261120T030000Z-aaaa.json" in p for p in report.problems)
    assert layout.tombstone_path("20261120T030000Z-aaaa") in list_names(storage, "trash/")


class Retaining(LocalStorage):
    """A folder whose removals of some names fail as S3 Object Lock refuses them
    (the storage-side refusal is the S3 helper's; here only its answer is played)."""

    retained: set[str] = set()

    def remove(self, name: str) -> None:
        if name in self.retained:
            raise RetainedError(f"storage {self.describe()}: remove {name}: retained until 2027-01-01")
        super().remove(name)


def test_retained_objects_are_kept_and_reported(tmp_path: Path, catalog: Catalog) -> None:
    storage = Retaining(str(tmp_path / "repo"))
    manifest = cassandra_set(storage, tmp_path, "20261120T030000Z-aaaa", DAY1, [b"a"])
    other = cassandra_set(storage, tmp_path, "20261121T030000Z-bbbb", DAY1, [b"b"])
    storage.retained = {layout.manifest_path(manifest.set_id), blob_of(b"b")}
    report = Report()
    forget_set(storage, catalog, manifest, {}, report)
    forget_set(storage, catalog, other, {}, report)
    assert report.forgotten == [other.set_id]
    assert report.retained[0][0] == f"set {manifest.set_id}" and "2027-01-01" in report.retained[0][1]
    assert list_set_ids(storage) == [manifest.set_id]
    pruned = run_prune(storage)
    assert [n for n, _ in pruned.retained] == [blob_of(b"b")] and pruned.blobs_removed == 0
    assert "kept cassandra/" in pruned.lines()[0] and "retained until" in pruned.lines()[0]


# -- DynamoDB on-demand backups: the target hook ---------------------------------------------------
TABLE = "bank.accounts"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    require(moto_servers.missing_reason())
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    return fresh_aws(moto_server, monkeypatch)


def dynamo(moto: MotoServer, endpoint: str | None = None) -> DynamoTarget:
    made = build_target({"name": "dynamo", "kind": "dynamodb", "region": REGION, "tables": [TABLE],
                         "mode": "on-demand", "endpoint_url": endpoint or moto.url, "poll_interval": "5ms",
                         "wait_timeout": "2s", "backup_settle": "0s"}, 0)  # fmt: skip
    assert isinstance(made, DynamoTarget)
    return made


def dynamo_set(
    moto: MotoServer, storage: Storage, set_id: str, table: str = TABLE, when: datetime = DAY1
) -> tuple[Any, str]:
    ddb = moto.client("dynamodb")
    if table not in ddb.list_tables()["TableNames"]:
        ddb.create_table(TableName=table, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")  # fmt: skip
    arn = ddb.create_backup(TableName=table, BackupName=f"{table}-txb-{set_id}")["BackupDetails"]["BackupArn"]
    position = {"mode": "on-demand", "region": REGION, "backups": {table: arn}, "tables": {table: {}}}
    description = {"kind": "dynamodb", "region": REGION, "mode": "on-demand", "tables": [table]}
    manifest = commit(storage, set_id, when, [TargetRecord("dynamo", "dynamodb", description, position, [])])
    return manifest, arn


def backups(moto: MotoServer) -> list[str]:
    return [b["BackupArn"] for b in moto.client("dynamodb").list_backups()["BackupSummaries"]]


def test_forget_deletes_the_sets_on_demand_backups(
    moto: MotoServer, tmp_path: Path, catalog: Catalog
) -> None:
    storage = LocalStorage(str(tmp_path / "repo"))
    manifest, arn = dynamo_set(moto, storage, "20261120T030000Z-dddd")
    report = Report()
    forget_set(storage, catalog, manifest, {"dynamo": dynamo(moto)}, report)
    assert report.discarded == [(manifest.set_id, "dynamo (dynamodb)", [arn])] and not report.pending
    assert backups(moto) == [] and list_names(storage, "trash/") == [] and list_set_ids(storage) == []


def test_a_failed_delete_outside_is_remembered_and_retried_by_prune(
    moto: MotoServer, tmp_path: Path, catalog: Catalog
) -> None:
    storage = LocalStorage(str(tmp_path / "repo"))
    manifest, arn = dynamo_set(moto, storage, "20261120T030000Z-dddd")
    unreachable = dynamo(moto, "http://127.0.0.1:9")  # nothing listens there
    report = Report()
    forget_set(storage, catalog, manifest, {"dynamo": unreachable}, report)
    assert report.forgotten == [manifest.set_id] and list_set_ids(storage) == []
    [(set_id, _, why)] = report.pending
    assert set_id == manifest.set_id and "cannot reach DynamoDB" in why
    assert backups(moto) == [arn]
    [kept] = read_tombstone(storage, manifest.set_id)  # the ARN survives the manifest
    assert kept.position["backups"] == {TABLE: arn}
    with storage.open_read(layout.tombstone_path(manifest.set_id)) as stream:
        assert "cannot reach DynamoDB" in json.load(stream)["last_error"]

    without_config = run_prune(storage)
    assert "no dynamodb target named" in without_config.pending[0][2]
    assert backups(moto) == [arn]
    lock = locked(storage)
    try:
        retried = prune(storage, lock, {"dynamo": dynamo(moto)}, grace_s=0)
    finally:
        lock.release()
    assert retried.discarded == [(manifest.set_id, "dynamo (dynamodb)", [arn])] and not retried.pending
    assert backups(moto) == [] and list_names(storage, "trash/") == []


def test_a_planted_tombstone_cannot_delete_other_backups(moto: MotoServer, tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "repo"))
    _, foreign = dynamo_set(moto, storage, "20261120T030000Z-ffff", table="payroll")
    storage.remove(layout.manifest_path("20261120T030000Z-ffff"))
    doc = {"format_version": 1, "set_id": "20261120T030000Z-ffff", "forgotten_at": "2026-11-20T00:00:00.000Z",
           "last_error": None,
           "targets": [{"name": "dynamo", "kind": "dynamodb", "description": {},
                        "position": {"region": REGION, "backups": {"payroll": foreign}}}]}  # fmt: skip
    save_bytes(storage, layout.tombstone_path("20261120T030000Z-ffff"), json.dumps(doc).encode())
    lock = locked(storage)
    try:
        report = prune(storage, lock, {"dynamo": dynamo(moto)}, grace_s=0)
    finally:
        lock.release()
    assert backups(moto) == [foreign]
    assert "payroll" in report.pending[0][2] and not report.discarded


def test_forget_with_the_cluster_file_deletes_the_forgotten_sets_backups(
    moto: MotoServer, tmp_path: Path
) -> None:
    storage = LocalStorage(str(tmp_path / "repo"))
    old, old_arn = dynamo_set(moto, storage, "20261120T030000Z-0001")
    new, new_arn = dynamo_set(moto, storage, "20261121T030000Z-0002", when=DAY1 + timedelta(days=1))
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(
        f'[applications]\nendpoints = ["127.0.0.1:1"]\n[storage]\npath = "{tmp_path / "repo"}"\n'
        f'[[targets]]\nname = "dynamo"\nkind = "dynamodb"\nregion = "{REGION}"\ntables = ["{TABLE}"]\n'
        f'mode = "on-demand"\nendpoint_url = "{moto.url}"\nbackup_settle = "0s"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    command = [sys.executable, "-m", "txbackup", "forget", "-c", str(cluster), "--keep-last", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"set {old.set_id}: deleted outside the repository (dynamo (dynamodb)): {old_arn}" in done.stdout
    assert backups(moto) == [new_arn] and list_set_ids(storage) == [new.set_id]
