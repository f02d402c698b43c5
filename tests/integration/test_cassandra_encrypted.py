"""A Cassandra backup and restore in an encrypted repository, against one real Cassandra
5.0 node and real ``txbackup agent`` processes: blobs are age files named by a keyed
hash, the agents hold only the blob key to back up and a user key to restore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.servers.cassandra import CassandraCluster
from tests.servers.cassandra_agents import (
    TOKEN,
    TOKEN_ENV,
    account_ids,
    agents_for,
    insert_accounts,
    make_target,
    plan_for,
    recreate_schema,
)
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.artifacts import SetReader
from txbackup.engine.backup import run_backup
from txbackup.engine.restore import RestorePlan, restore_set
from txbackup.jobs import JobStore
from txbackup.repository import age
from txbackup.repository.crypto import (
    NewKey,
    derive_blob_key,
    identity_file_key,
    init_encrypted,
    parse_recipients,
    unlock,
)
from txbackup.storage import LocalStorage

pytestmark = pytest.mark.cassandra


@pytest.fixture
def session(cassandra_cluster: CassandraCluster) -> Any:
    return recreate_schema(cassandra_cluster.session())


async def test_backup_and_restore_with_encrypted_blobs(
    app: SampleServer,
    session: Any,
    cassandra_cluster: CassandraCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    identity = age.Identity.generate()
    user_key = tmp_path / "me.key"
    user_key.write_text(f"{identity}\n")
    user_key.chmod(0o600)
    storage_dir = tmp_path / "store"
    storage = LocalStorage(str(storage_dir))
    config, _ = init_encrypted(storage, NewKey("me", recipients=parse_recipients(identity.recipient, "me")))
    assert config.encryption is not None
    opener = identity_file_key(str(user_key))
    keyring = unlock(storage, config.encryption.recipient, config.repository_id, opener)
    blob_key = tmp_path / "blob.key"
    blob_key.write_bytes(derive_blob_key(keyring, config.repository_id).text())
    blob_key.chmod(0o600)
    insert_accounts(session, range(30))
    extra = ("--blob-key-file", str(blob_key), "--identity-file", str(user_key))
    with agents_for(cassandra_cluster.nodes, storage_dir, tmp_path, *extra) as agents:
        target = make_target(agents)
        manifest = await run_backup(plan_for(app, target, tmp_path, storage_dir))
        record = manifest.target("cass")
        reader = SetReader(storage, manifest.set_id, "cass", record.artifacts, keyring=keyring)
        with reader.open(_files_artifact(record)) as f:
            files = json.loads(f.read())["files"]
        blobs = [p for p in storage_dir.glob("cassandra/*/sstables/*") if not p.name.startswith(".")]
        assert blobs and {p.name for p in blobs} == {f["blob"] for f in files}
        assert not {f["sha256"] for f in files} & {p.name for p in blobs}  # keyed names only
        assert all(p.read_bytes().startswith(age.MAGIC) for p in blobs)
        # a second backup takes the keyed names of unchanged SSTables from the agent's hash cache
        manifest = await run_backup(plan_for(app, target, tmp_path, storage_dir))
        [node] = manifest.target("cass").position["nodes"]
        assert node["hashed_bytes"] < node["bytes"]
        record = manifest.target("cass")
        reader = SetReader(storage, manifest.set_id, "cass", record.artifacts, keyring=keyring)
        with reader.open(_files_artifact(record)) as f:
            again = json.loads(f.read())["files"]
        first = {(f["table_dir"], f["name"]): f["blob"] for f in files if f["name"].endswith("-Data.db")}
        kept = [f for f in again if (f["table_dir"], f["name"]) in first]
        assert kept and all(first[(f["table_dir"], f["name"])] == f["blob"] for f in kept)
        session.execute("DROP KEYSPACE bank")
        session.execute("DROP KEYSPACE coordinator")
        restore_set(
            RestorePlan(
                storage=storage,
                manifest=manifest,
                targets=[target],
                jobs=JobStore(str(tmp_path / "catalog.db")),
                keyring=keyring,
            )
        )
        assert account_ids(session) == list(range(30))


def _files_artifact(record: Any) -> str:
    (name,) = [a.name for a in record.artifacts if a.name.startswith("nodes/")]
    return str(name)
