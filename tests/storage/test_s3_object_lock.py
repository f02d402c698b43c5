"""S3 Object Lock against moto's server: settings, the preflight, retention of a committed
set (blobs extended, never shortened), removes refused before anything goes, and
``txbackup backup`` / ``delete`` as a user runs them.

What moto enforces (measured, moto 5.2): a DeleteObject of a version under retention is
refused (AccessDenied), a plain DeleteObject adds a delete marker. It does NOT refuse
shortening a COMPLIANCE retention (real S3 does): txbackup never asks for a shorter one,
which ``test_retention_is_extended_never_shortened`` checks on what txbackup sends."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import botocore.exceptions  # type: ignore[import-untyped]
import pytest

from tests.e2e.support import write_cluster
from tests.integration.test_engine import make_db
from tests.integration.test_verify_levels import STORE, make_set
from tests.servers.processes import sample_server_process, txbackup
from tests.servers.s3 import S3Bucket, S3Server
from txbackup.engine.immutable import DAY, refuse_retained, retain_set
from txbackup.errors import PermanentStorageError, RetainedError, UsageError
from txbackup.repository.layout import set_prefix
from txbackup.storage import open_storage
from txbackup.storage.base import Storage, list_names, retaining
from txbackup.storage.s3 import S3Storage, _sha256_of, from_url


@pytest.fixture
def locked_bucket(moto_s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    bucket = moto_s3_server.new_bucket(object_lock=True)
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    for key, value in bucket.env().items():
        monkeypatch.setenv(key, value)
    return bucket


def locked(bucket: S3Bucket, days: int = 2, mode: str | None = None) -> Storage:
    options: dict[str, Any] = {"path_style": True, "object_lock_days": days}
    if mode is not None:
        options["object_lock_mode"] = mode
    return open_storage(bucket.url("repo"), options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"object_lock_mode": "compliance"}, "object_lock_mode needs object_lock_days"),
        ({"object_lock_days": 0}, "object_lock_days must be a whole number of days"),
        ({"object_lock_days": True}, "object_lock_days must be a whole number of days"),
        ({"object_lock_days": 1, "object_lock_mode": "legal"}, "compliance or governance"),
    ],
)
def test_bad_object_lock_options_are_usage_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        from_url("s3://bucket/p", options)


def test_object_lock_on_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="object_lock_days"):
        open_storage(str(tmp_path), {"object_lock_days": 3})


def test_check_refuses_a_bucket_without_object_lock(
    moto_s3_server: S3Server, locked_bucket: S3Bucket
) -> None:
    plain = moto_s3_server.new_bucket()
    store = from_url(plain.url("repo"), {"path_style": True, "object_lock_days": 1})
    with pytest.raises(PermanentStorageError) as caught:
        store.check()
    assert str(caught.value).count("\n") == 0
    assert f"bucket {plain.bucket} does not have Object Lock enabled" in str(caught.value)
    from_url(locked_bucket.url("repo"), {"path_style": True, "object_lock_days": 1}).check()
    defaulted = moto_s3_server.new_bucket(object_lock=True)  # moto: only an empty bucket takes a rule
    rule = {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
    defaulted.client().put_object_lock_configuration(
        Bucket=defaulted.bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": rule}
    )
    with pytest.raises(PermanentStorageError, match="has a default retention"):
        from_url(defaulted.url("repo"), {"path_style": True, "object_lock_days": 1}).check()


def test_a_committed_set_is_retained_whole(locked_bucket: S3Bucket, tmp_path: Path) -> None:
    storage = locked(locked_bucket, days=2, mode="governance")
    manifest = make_set(storage, tmp_path / "files")
    before = time.time()
    count, until = retain_set(storage, manifest) or (0, 0.0)
    names = list_names(storage, set_prefix(manifest.set_id)) + list_names(storage, STORE)
    assert count == len(names) == 6  # manifest, 3 artifacts, 2 blobs
    assert before + 2 * DAY <= until <= time.time() + 2 * DAY
    for name in names:
        info = storage.stat(name)
        assert info is not None and info.retain_until is not None and abs(info.retain_until - until) < 1, name
        head = locked_bucket.client().head_object(Bucket=locked_bucket.bucket, Key=f"repo/{name}")
        assert head["ObjectLockMode"] == "GOVERNANCE"


def test_retention_is_extended_never_shortened(locked_bucket: S3Bucket, tmp_path: Path) -> None:
    """A blob shared by two sets is kept as long as the newer one; a set committed with
    an earlier clock (or a shorter setting) never shortens a date already there."""
    storage = locked(locked_bucket, days=1)
    first = make_set(storage, tmp_path / "files", "20261128T120000Z-0001", {"shared.db": 5000})
    now = time.time()
    retain_set(storage, first, now=now)
    second = make_set(storage, tmp_path / "files", "20261128T130000Z-0002", {"shared.db": 5000})
    retain_set(storage, second, now=now + 3600)
    (blob,) = list_names(storage, STORE)
    first_manifest = f"{set_prefix(first.set_id)}manifest.json"

    def until(name: str) -> float:
        info = storage.stat(name)
        assert info is not None and info.retain_until is not None
        return info.retain_until

    assert abs(until(blob) - (now + 3600 + DAY)) < 1  # the newer set's date
    assert abs(until(first_manifest) - (now + DAY)) < 1
    store = retaining(storage)
    assert isinstance(store, S3Storage)
    assert store.retain(blob, now) == until(blob)  # earlier: kept as it is
    assert abs(until(blob) - (now + 3600 + DAY)) < 1


def test_removing_a_retained_object_is_refused_before_anything_goes(
    locked_bucket: S3Bucket, tmp_path: Path
) -> None:
    storage = locked(locked_bucket)
    manifest = make_set(storage, tmp_path / "files")
    artifact = manifest.target("a").artifacts[0].path
    retain_set(storage, manifest)
    # one more object of the set, written after the retention: removable by itself
    late = f"{set_prefix(manifest.set_id)}a/late.sqlite.zst"
    with storage.open_write(late) as writer:
        writer.write(b"x")
        writer.commit()
    everything = list_names(storage, "")
    with pytest.raises(RetainedError) as caught:
        storage.remove(artifact)
    text = str(caught.value)
    assert "\n" not in text and artifact in text and "retained until 20" in text and "compliance mode" in text
    with pytest.raises(RetainedError):
        storage.remove_prefix(set_prefix(manifest.set_id))
    assert list_names(storage, "") == everything  # not even the removable one went
    with pytest.raises(RetainedError, match="nothing was removed"):
        refuse_retained(storage, manifest.set_id)
    storage.remove(late)  # no retention: removed (a delete marker on a versioned bucket)
    assert storage.stat(late) is None


def test_moto_refuses_deleting_a_retained_version(locked_bucket: S3Bucket, tmp_path: Path) -> None:
    """Why ``remove`` looks first: a plain DeleteObject succeeds on a retained object (a
    delete marker hides it; the version stays), only a DeleteObject of the version fails."""
    storage = locked(locked_bucket)
    manifest = make_set(storage, tmp_path / "files")
    retain_set(storage, manifest)
    client, key = locked_bucket.client(), f"repo/{manifest.target('a').artifacts[0].path}"
    version = client.head_object(Bucket=locked_bucket.bucket, Key=key)["VersionId"]
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(Bucket=locked_bucket.bucket, Key=key, VersionId=version)
    assert client.delete_object(Bucket=locked_bucket.bucket, Key=key)["DeleteMarker"] is True
    assert storage.stat(manifest.target("a").artifacts[0].path) is None  # hidden, not gone
    versions = client.list_object_versions(Bucket=locked_bucket.bucket, Prefix=key)["Versions"]
    assert [v["VersionId"] for v in versions] == [version]


def test_backup_retains_its_set_and_delete_refuses_it(locked_bucket: S3Bucket, tmp_path: Path) -> None:
    env = locked_bucket.process_env()
    make_db(tmp_path / "a.db", 100)
    with sample_server_process("--lease", "4s") as (_, endpoint):
        storage_lines = (
            f'path = "{locked_bucket.url("repo")}"\npath_style = true\nobject_lock_days = 3\n'
        )
        rest = (
            f'[catalog]\npath = "{tmp_path / "catalog.db"}"\n'
            f'[[targets]]\nname = "a"\nkind = "sqlite"\npath = "{tmp_path / "a.db"}"\n'
        )
        config = write_cluster(tmp_path / "cluster.toml", endpoint, storage_lines, rest)
        result = txbackup("backup", "-c", str(config), "--json", env=env)
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        (retained,) = [e for e in events if e["event"] == "retained"]
        set_id = events[-1]["set_id"]
        assert retained["objects"] == 2  # the manifest and a.sqlite
        deleted = txbackup("delete", "-c", str(config), set_id, env=env)
        assert deleted.returncode == 1
        (line,) = deleted.stderr.strip().splitlines()
        assert line.startswith(f"txbackup: set {set_id}: sets/{set_id}/") and "retained until" in line
        assert "nothing was removed" in line
        verified = txbackup("verify", "-c", str(config), set_id, env=env)
        assert verified.returncode == 0 and "intact" in verified.stdout


def test_backup_with_object_lock_on_a_plain_bucket_stops_before_the_pause(
    moto_s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = moto_s3_server.new_bucket()
    make_db(tmp_path / "a.db", 10)
    with sample_server_process("--lease", "4s") as (_, endpoint):
        storage_lines = f'path = "{bucket.url("repo")}"\npath_style = true\nobject_lock_days = 3\n'
        rest = f'[[targets]]\nname = "a"\nkind = "sqlite"\npath = "{tmp_path / "a.db"}"\n'
        rest = f'[catalog]\npath = "{tmp_path / "catalog.db"}"\n' + rest
        config = write_cluster(tmp_path / "cluster.toml", endpoint, storage_lines, rest)
        result = txbackup("backup", "-c", str(config), "--json", env=bucket.process_env())
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert "does not have Object Lock enabled" in line and '"pause"' not in result.stdout


def test_only_a_whole_object_sha256_is_taken_from_a_head() -> None:
    digest = hashlib.sha256(b"x").digest()
    whole = base64.b64encode(digest).decode()
    assert _sha256_of({"ChecksumSHA256": whole}) == digest.hex()
    assert _sha256_of({"ChecksumSHA256": whole, "ChecksumType": "FULL_OBJECT"}) == digest.hex()
    assert _sha256_of({"ChecksumSHA256": whole, "ChecksumType": "COMPOSITE"}) is None
    assert _sha256_of({"ChecksumSHA256": f"{whole}-3"}) is None  # a digest of the parts' digests
    assert _sha256_of({"ChecksumSHA256": "not base64!"}) is None
    assert _sha256_of({"ChecksumSHA256": base64.b64encode(b"short").decode()}) is None
    assert _sha256_of({"ChecksumCRC32": "VARHDQ=="}) is None
