"""backup / verify / restore with the repository in a bucket (moto's S3), as a user runs
them: ``[storage] path = "s3://bucket/prefix"``, credentials from the environment only,
the catalog on local disk."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.support import restore_sqlite, verify_intact
from tests.integration.test_engine import count, make_db
from tests.servers.processes import sample_server_process, txbackup
from tests.servers.s3 import S3Bucket


def cluster_file(tmp_path: Path, endpoint: str, storage: str, extra: str = "") -> Path:
    config = tmp_path / "cluster.toml"
    config.write_text(
        f"""
[applications]
endpoints = ["{endpoint}"]

[storage]
path = "{storage}"
path_style = true
{extra}

[catalog]
path = "{tmp_path / "catalog.db"}"

[[targets]]
name = "a"
kind = "sqlite"
path = "{tmp_path / "a.db"}"
"""
    )
    return config


def test_backup_verify_restore_from_a_bucket(moto_s3_bucket: S3Bucket, tmp_path: Path) -> None:
    bucket = moto_s3_bucket
    env = bucket.process_env()  # the server's AWS_* variables and nothing of this machine
    make_db(tmp_path / "a.db", 1000)
    with sample_server_process("--lease", "4s") as (_, endpoint):
        config = cluster_file(tmp_path, endpoint, bucket.url("team/backups"), 'storage_class = "STANDARD_IA"')
        result = txbackup("backup", "-c", str(config), "--json", env=env)
        assert result.returncode == 0, result.stderr
        final = json.loads(result.stdout.splitlines()[-1])
        set_id = final["set_id"]

        keys = [o["Key"] for o in bucket.client().list_objects_v2(Bucket=bucket.bucket)["Contents"]]
        assert keys and all(k.startswith("team/backups/") for k in keys), keys
        assert any(set_id in k and k.endswith("manifest.json") for k in keys), keys
        head = bucket.client().head_object(Bucket=bucket.bucket, Key=keys[0])
        assert head["StorageClass"] == "STANDARD_IA"  # the [storage] options reached the backend
        assert not list(tmp_path.glob("team")) and (tmp_path / "catalog.db").is_file()

        verify_intact(config, set_id, env)
        restore_sqlite(config, set_id, tmp_path / "out", ["a"], env)
        assert count(tmp_path / "out" / "a.db") == 1000


def test_a_missing_bucket_stops_the_backup_before_the_pause(moto_s3_bucket: S3Bucket, tmp_path: Path) -> None:
    bucket = moto_s3_bucket
    make_db(tmp_path / "a.db", 10)
    with sample_server_process("--lease", "4s") as (_, endpoint):
        config = cluster_file(tmp_path, endpoint, "s3://no-such-bucket-txb/p")
        result = txbackup("backup", "-c", str(config), "--json", env=bucket.process_env())
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert "bucket no-such-bucket-txb does not exist" in line, line
        assert '"pause"' not in result.stdout  # refused at preflight: nothing was paused


def test_a_store_that_ignores_if_none_match_is_refused(s3proxy_bucket: S3Bucket, tmp_path: Path) -> None:
    """s3proxy overwrites on PutObject whatever If-None-Match says: two backups could both
    commit a set there, so the preflight refuses it, before the pause."""
    bucket = s3proxy_bucket
    make_db(tmp_path / "a.db", 10)
    with sample_server_process("--lease", "4s") as (_, endpoint):
        config = cluster_file(tmp_path, endpoint, bucket.url("p"))
        result = txbackup("backup", "-c", str(config), "--json", env=bucket.process_env())
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert "ignores If-None-Match" in line, line
        assert '"pause"' not in result.stdout
    assert "Contents" not in bucket.client().list_objects_v2(Bucket=bucket.bucket, Prefix="p/")
