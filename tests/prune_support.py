"""Sets made by hand for the forget/prune tests: a Cassandra target whose node file
list references blobs of the content-addressed store, and DynamoDB on-demand backups."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from txbackup.agent.blobs import blob_name, put_file, store_prefix
from txbackup.clock import iso_ms
from txbackup.engine.artifacts import SetWriter
from txbackup.engine.manifest import Manifest, PauseWindow, TargetRecord, Timings, write_manifest
from txbackup.storage.base import Storage

STORE = store_prefix("Test Cluster")
NODE = "10.0.0.1"


def upload(storage: Storage, scratch: Path, contents: Iterable[bytes]) -> list[dict[str, Any]]:
    """Put each content in the blob store, as an agent does; their file-list entries."""
    files = []
    for i, data in enumerate(contents):
        path = scratch / f"blob-{os.getpid()}-{i}"
        path.write_bytes(data)
        stored = put_file(storage, STORE, str(path))
        files.append({"keyspace": "bank", "table": "accounts", "name": f"nb-{i}-big-Data.db",
                      "sha256": stored.sha256, "size": stored.size})  # fmt: skip
        path.unlink()
    return files


def cassandra_target(storage: Storage, set_id: str, files: list[dict[str, Any]]) -> TargetRecord:
    """The node file list written into the set (what an export writes before the manifest)."""
    writer = SetWriter(storage, set_id, "cass")
    artifact = f"nodes/{NODE}.json"
    with writer.open(artifact) as stream:
        stream.write(json.dumps({"node": {"address": NODE}, "files": files}).encode())
    position = {"tag": f"txb-{set_id}", "store": STORE, "keyspaces": ["bank"],
                "nodes": [{"address": NODE, "tokens": ["1"], "files_artifact": artifact}]}  # fmt: skip
    return TargetRecord("cass", "cassandra", {"kind": "cassandra"}, position, writer.records)


def commit(storage: Storage, set_id: str, when: datetime, targets: list[TargetRecord]) -> Manifest:
    moment = iso_ms(when)
    manifest = Manifest(set_id, moment, moment, PauseWindow(moment, moment, moment), ["127.0.0.1:1"],
                        Timings(), targets)  # fmt: skip
    write_manifest(storage, manifest)
    return manifest


def cassandra_set(
    storage: Storage, scratch: Path, set_id: str, when: datetime, contents: list[bytes]
) -> Manifest:
    files = upload(storage, scratch, contents)
    return commit(storage, set_id, when, [cassandra_target(storage, set_id, files)])


def blob_of(data: bytes) -> str:
    return blob_name(STORE, hashlib.sha256(data).hexdigest())
