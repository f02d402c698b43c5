"""backup / verify / restore of a SQLite target into Google Cloud Storage (fake-gcs-server),
as a user runs them: `[storage] path = "gs://..."` with the endpoint option, a local catalog."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.support import backup_set_id, restore_sqlite, sqlite_targets, verify_intact, write_cluster
from tests.integration.test_engine import count, make_db
from tests.servers.gcs import GcsBucket
from tests.servers.processes import sample_server_process


def test_backup_verify_restore_through_fake_gcs(gcs_bucket: GcsBucket, tmp_path: Path) -> None:
    make_db(tmp_path / "a.db", 1_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "STORAGE_EMULATOR"))}
    env |= {"NO_GCE_CHECK": "True", "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}  # no credentials here
    with sample_server_process() as (_, endpoint):
        storage = f'path = "{gcs_bucket.url("prod")}"\nendpoint = "{gcs_bucket.base_url}"\n'
        rest = '\n[catalog]\npath = "catalog.db"\n' + sqlite_targets(tmp_path, "a")
        config = write_cluster(tmp_path / "cluster.toml", endpoint, storage, rest)
        set_id = backup_set_id(config, env)

    verify_intact(config, set_id, env)
    restore_sqlite(config, set_id, tmp_path / "out", ["a"], env)
    assert count(tmp_path / "out" / "a.db") == 1_000
