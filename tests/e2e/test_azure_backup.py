"""backup / verify / list --rebuild / restore of SQLite targets into Azure Blob (Azurite),
as a user runs them: `[storage] path = "az://..."` with the endpoint option, the key in
the environment, a local catalog."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.e2e.support import backup_set_id, restore_sqlite, sqlite_targets, verify_intact, write_cluster
from tests.integration.test_engine import count, make_db
from tests.servers.azurite import AzureContainer
from tests.servers.processes import sample_server_process, txbackup


def test_backup_verify_restore_through_azurite(azure_container: AzureContainer, tmp_path: Path) -> None:
    make_db(tmp_path / "a.db", 10)
    make_db(tmp_path / "b.db", 5_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env |= {"AZURE_STORAGE_KEY": azure_container.key}  # the only secret: in the environment
    with sample_server_process() as (_, endpoint):
        storage = (
            f'path = "{azure_container.url("prod/txbackup")}"\n'
            f'account = "{azure_container.account}"\n'
            f'endpoint = "{azure_container.blob_endpoint}"\n'
        )
        rest = '\n[catalog]\npath = "catalog.db"\n' + sqlite_targets(tmp_path, "a", "b")
        config = write_cluster(tmp_path / "cluster.toml", endpoint, storage, rest)
        set_id = backup_set_id(config, env)

    names = [b.name for b in azure_container.client().list_blobs()]
    assert f"prod/txbackup/sets/{set_id}/manifest.json" in names
    assert all(n.startswith("prod/txbackup/") for n in names)
    assert not (tmp_path / "store").exists() and (tmp_path / "catalog.db").exists()  # only the catalog

    verify_intact(config, set_id, env)
    (tmp_path / "catalog.db").unlink()
    rebuilt = json.loads(txbackup("list", "-c", str(config), "--rebuild", "--json", env=env).stdout)
    assert [(r["set_id"], r["status"]) for r in rebuilt] == [(set_id, "complete")]

    out = tmp_path / "out"
    restore_sqlite(config, set_id, out, ["a", "b"], env)
    assert count(out / "a.db") == 10 and count(out / "b.db") == 5_000

    # a wrong key: one line, nothing shown of either key
    wrong = txbackup("verify", "-c", str(config), set_id, env=env | {"AZURE_STORAGE_KEY": "A" * 86 + "=="})
    errors = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert wrong.returncode == 1 and len(errors) == 1 and "HTTP 403" in errors[0], wrong.stderr
    assert azure_container.key not in wrong.stderr + wrong.stdout
