"""Verification levels on a local folder, moto's S3 and fake-gcs-server: plain ``verify``
(stat: presence, stored sizes, a SHA-256 the store keeps) against ``--read-data`` (every
byte read back), on a set with an SQLite-like artifact and a Cassandra target whose
SSTables are blobs of the content-addressed store (written by ``agent.blobs.put_file``,
as the agents do; no Cassandra node needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.servers.gcs import GcsBucket
from tests.servers.processes import txbackup
from tests.servers.s3 import S3Bucket
from txbackup.agent.blobs import BlobRef, put_file
from txbackup.engine.artifacts import SetWriter, open_artifact
from txbackup.engine.manifest import Manifest, PauseWindow, TargetRecord, Timings, write_manifest
from txbackup.engine.verify import verify
from txbackup.repository.layout import blob_name, store_prefix
from txbackup.storage import open_storage
from txbackup.storage.base import Storage, load_bytes, save_bytes

SET = "20261128T120000Z-ab12"
STORE = store_prefix("Test Cluster")
NODE_LIST = "nodes/127.0.0.1.json"
WHEN = "2026-11-28T12:00:00.000Z"


@pytest.fixture(params=["local", "s3", "gcs"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Storage:
    if backend == "local":
        return open_storage(str(tmp_path / "repo"))
    if backend == "s3":
        bucket: S3Bucket = request.getfixturevalue("moto_s3_bucket")
        for key in list(os.environ):
            if key.startswith("AWS_"):
                monkeypatch.delenv(key)
        for key, value in bucket.env().items():
            monkeypatch.setenv(key, value)
        return open_storage(bucket.url("repo"), {"path_style": True})
    gcs: GcsBucket = request.getfixturevalue("gcs_bucket")
    for key in list(os.environ):
        if key.startswith(("GOOGLE_", "STORAGE_EMULATOR_HOST", "CLOUDSDK_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent")
    return open_storage(gcs.url("repo/"), {"endpoint": gcs.base_url})


def sstable(folder: Path, name: str, size: int) -> Path:
    """A random file ``folder/name`` (kept if it exists: sets made from one folder share it)."""
    path = folder / name
    if not path.exists():
        path.write_bytes(os.urandom(size))
    return path


def make_set(
    storage: Storage, folder: Path, set_id: str = SET, files: dict[str, int] | None = None
) -> Manifest:
    """A committed set: target ``a`` (one artifact ``a.sqlite``) and target ``c``
    (cassandra: a node list naming SSTable blobs put in the store, a schema)."""
    folder.mkdir(exist_ok=True)
    writer = SetWriter(storage, set_id, "a")
    with writer.open("a.sqlite") as out:
        out.write(os.urandom(50_000))
    entries = []
    for name, size in (files or {"nb-1-big-Data.db": 30_000, "nb-1-big-Index.db": 2_000}).items():
        stored = put_file(storage, STORE, str(sstable(folder, name, size)))
        entries.append(
            {
                "keyspace": "bank", "table": "accounts", "table_dir": "accounts-1", "name": name,
                "sha256": stored.sha256, "size": stored.size, "stored_size": stored.stored_size,
            }
        )  # fmt: skip
    cassandra = SetWriter(storage, set_id, "c")
    with cassandra.open(NODE_LIST) as out:
        out.write(json.dumps({"node": {"address": "127.0.0.1"}, "files": entries}).encode())
    with cassandra.open("schema.json") as out:
        out.write(b"[]")
    position = {
        "tag": set_id, "store": STORE, "keyspaces": ["bank"],
        "nodes": [{"address": "127.0.0.1", "tokens": ["0"], "files_artifact": NODE_LIST}],
    }  # fmt: skip
    manifest = Manifest(
        set_id, WHEN, WHEN, PauseWindow(), [], Timings(),
        [
            TargetRecord("a", "sqlite", {}, {}, writer.records),
            TargetRecord("c", "cassandra", {}, position, cassandra.records),
        ],
    )  # fmt: skip
    write_manifest(storage, manifest)
    return manifest


def blob_of(manifest: Manifest, storage: Storage, index: int = 0) -> str:
    """The storage name of the ``index``-th blob the set's node list names."""
    record = next(a for a in manifest.target("c").artifacts if a.name == NODE_LIST)
    with open_artifact(storage, record) as stream:
        files = json.loads(stream.read())["files"]
    return blob_name(STORE, files[index]["sha256"])


def flip(storage: Storage, name: str, at: int = 200) -> None:
    """Change one byte of ``name`` in place (same size), through the storage's own writer."""
    data = bytearray(load_bytes(storage, name, 1 << 24))
    data[at] ^= 0x5A
    save_bytes(storage, name, bytes(data))


def test_an_intact_set_passes_both_levels(storage: Storage, backend: str, tmp_path: Path) -> None:
    manifest = make_set(storage, tmp_path / "files")
    plain = verify(storage, manifest)
    assert plain.problems == []
    assert (plain.artifacts, plain.blobs, plain.read, plain.bytes_read) == (3, 2, 0, 0)
    # S3 keeps the SHA-256 of objects written in one PutObject: plain verify compares it
    assert plain.checksums == (3 if backend == "s3" else 0)
    seen: list[tuple[int, int]] = []
    full = verify(storage, manifest, read_data=True, progress=lambda d, t: seen.append((d, t)))
    assert full.problems == [] and full.read == 5 and full.level == "read-data"
    assert seen and seen[-1][0] == seen[-1][1] == full.bytes_read > 30_000


def test_a_missing_blob_is_named_by_plain_verify(storage: Storage, tmp_path: Path) -> None:
    manifest = make_set(storage, tmp_path / "files")
    victim = blob_of(manifest, storage, 1)
    storage.remove(victim)
    for result in (verify(storage, manifest), verify(storage, manifest, read_data=True)):
        (problem,) = result.problems
        assert victim in problem and "missing" in problem and "bank.accounts nb-1-big-Index.db" in problem


def test_a_truncated_artifact_and_blob_are_caught_without_reading(storage: Storage, tmp_path: Path) -> None:
    manifest = make_set(storage, tmp_path / "files")
    artifact = manifest.target("a").artifacts[0].path
    blob = blob_of(manifest, storage, 0)
    for name in (artifact, blob):
        save_bytes(storage, name, load_bytes(storage, name, 1 << 24)[:-10])
    result = verify(storage, manifest)
    assert len(result.problems) == 2 and result.bytes_read == 0
    assert artifact in result.problems[0] and "truncated" in result.problems[0]
    assert blob in result.problems[1] and "truncated" in result.problems[1]


def test_a_flipped_byte(storage: Storage, backend: str, tmp_path: Path) -> None:
    """Same size, other bytes: on S3 the store's SHA-256 of the rewritten artifact differs
    from the manifest's, so plain verify catches it; elsewhere only --read-data does. A
    blob's stored digest is recorded nowhere (its name is its data's): --read-data only."""
    manifest = make_set(storage, tmp_path / "files")
    artifact = manifest.target("a").artifacts[0].path
    blob = blob_of(manifest, storage, 0)
    flip(storage, artifact)
    flip(storage, blob)
    plain = verify(storage, manifest)
    if backend == "s3":
        (problem,) = plain.problems
        assert artifact in problem and "SHA-256" in problem
    else:
        assert plain.problems == []
    full = verify(storage, manifest, read_data=True)
    assert len(full.problems) == 2, full.problems
    assert artifact in full.problems[0] and blob in full.problems[1]
    assert "nb-1-big-Data.db" in full.problems[1]


def test_s3_object_rewritten_without_a_checksum_needs_read_data(
    moto_s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone rewrites an artifact with the SDK's defaults (CRC32, no SHA-256): the
    store has no SHA-256 to compare, so only the size is checked; --read-data catches it."""
    for key, value in moto_s3_bucket.env().items():
        monkeypatch.setenv(key, value)
    storage = open_storage(moto_s3_bucket.url("repo"), {"path_style": True})
    manifest = make_set(storage, tmp_path / "files")
    artifact = manifest.target("a").artifacts[0].path
    data = bytearray(load_bytes(storage, artifact, 1 << 24))
    data[100] ^= 1
    moto_s3_bucket.client().put_object(Bucket=moto_s3_bucket.bucket, Key=f"repo/{artifact}", Body=bytes(data))
    plain = verify(storage, manifest)
    assert plain.problems == [] and plain.checksums == 2
    (problem,) = verify(storage, manifest, read_data=True).problems
    assert problem.startswith(f"artifact {artifact}: ") and "corrupt" in problem


def test_read_data_subset_reads_the_chosen_ones(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "repo"))
    manifest = make_set(storage, tmp_path / "files")
    flip(storage, blob_of(manifest, storage, 0))
    none = verify(storage, manifest, subset=0.5, chooser=lambda: 0.9)
    assert none.problems == [] and none.read == 0 and none.level == "read-data-subset"
    every = verify(storage, manifest, subset=0.5, chooser=lambda: 0.1)
    assert every.read == 4 and len(every.problems) == 1  # the flipped blob is the one not counted


def test_a_malformed_node_list_is_one_line_naming_the_target(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "repo"))
    folder = tmp_path / "files"
    folder.mkdir()
    writer = SetWriter(storage, SET, "c")
    with writer.open(NODE_LIST) as out:
        files = [{"sha256": "../../etc", "size": 1}, {"sha256": "x", "size": -1}]
        out.write(json.dumps({"files": files}).encode())
    position = {"store": STORE, "nodes": [{"address": "n1", "files_artifact": NODE_LIST}]}
    target = TargetRecord("c", "cassandra", {}, position, writer.records)
    manifest = Manifest(SET, WHEN, WHEN, PauseWindow(), [], Timings(), [target])
    (problem,) = verify(storage, manifest).problems
    assert problem.startswith(f"set {SET}: target c: ") and "file #2: size -1" in problem
    position["store"] = "../../sets"
    (problem,) = verify(storage, manifest).problems
    assert "is not cassandra/<cluster>/sstables" in problem


def test_a_blob_ref_with_a_bad_digest_is_refused_by_name() -> None:
    with pytest.raises(Exception, match="is not a SHA-256"):
        _ = BlobRef(STORE, "../x", 1, None, "f").name


def test_cli_levels_exit_codes_and_json(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    storage = open_storage(str(repo))
    manifest = make_set(storage, tmp_path / "files")
    result = txbackup("verify", "--storage", str(repo), SET)
    assert result.returncode == 0, result.stderr
    assert "3 artifacts and 2 blobs intact (present with their recorded sizes" in result.stdout
    flip(storage, blob_of(manifest, storage, 0))
    assert txbackup("verify", "--storage", str(repo), SET).returncode == 0  # plain cannot see it
    result = txbackup("verify", "--storage", str(repo), SET, "--read-data", "--json")
    assert result.returncode == 1
    answer = json.loads(result.stdout)
    assert answer["level"] == "read-data" and answer["read"] == 4 and not answer["ok"]
    (problem,) = answer["problems"]
    assert problem.startswith("bank.accounts nb-1-big-Data.db (node 127.0.0.1): blob ")
    assert "corrupt" in problem
    result = txbackup("verify", "--storage", str(repo), SET, "--read-data")
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert result.returncode == 1 and line.startswith("txbackup: bank.accounts nb-1-big-Data.db")
    assert "read " in result.stderr  # progress
    result = txbackup("verify", "--storage", str(repo), SET, "--read-data-subset", "100%", "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["read"] == 4
    bad = txbackup("verify", "--storage", str(repo), SET, "--read-data-subset", "0%")
    assert bad.returncode == 2 and "not a percentage" in bad.stderr
    both = txbackup("verify", "--storage", str(repo), SET, "--read-data", "--read-data-subset", "5%")
    assert both.returncode == 2
