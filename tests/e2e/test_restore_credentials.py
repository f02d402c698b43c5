"""A destination with its own credentials, on a real PostgreSQL server: the password comes
from --to-password-env or a [restore.NAME] section's password_file, never from the DSN,
and is nowhere in the catalog nor in `restore --jobs --json`."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.e2e.support import backup_set_id, write_cluster
from tests.servers.postgres import PostgresServer
from tests.servers.processes import sample_server_process, txbackup

pytestmark = pytest.mark.postgres

RESTORER_PASSWORD = "restorer-Pw-" + uuid.uuid4().hex[:8]


@pytest.fixture
def cluster(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> Iterator[tuple[Path, str]]:
    postgres_server.execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text);"
        "INSERT INTO items SELECT g, 'x' FROM generate_series(1, 50) g",
        postgres_db,
    )
    restorer = f"restorer_{uuid.uuid4().hex[:8]}"
    postgres_server.execute(f"CREATE ROLE {restorer} LOGIN CREATEDB PASSWORD '{RESTORER_PASSWORD}'")
    with sample_server_process("--lease", "4s") as (_, endpoint):
        target = f"""
[[targets]]
name = "pg"
kind = "postgres"
port = {postgres_server.port}
user = "{postgres_server.user}"
password_env = "TXB_PG_PW"
databases = ["{postgres_db}"]
"""
        config = write_cluster(tmp_path / "cluster.toml", endpoint, 'path = "store"', target)
        backup_set_id(config, os.environ | {"TXB_PG_PW": postgres_server.password})
        yield config, restorer


def _env(**extra: str) -> dict[str, str]:
    return os.environ | {"TXB_PG_PW": "not-needed-for-another-user"} | extra


def _rows(server: PostgresServer, db: str) -> int:
    with psycopg.connect(server.dsn(db)) as conn:
        row = conn.execute("SELECT count(*) FROM items").fetchone()
    assert row is not None
    return int(row[0])


def _catalog(config: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (config.parent / "store").glob("catalog.db*"))


def _restore_case(cluster: tuple[Path, str]) -> tuple[Path, str, str, str]:
    """The cluster file, the restoring role, the backed-up set and a fresh destination database."""
    config, restorer = cluster
    listing = json.loads(txbackup("list", "-c", str(config), "--json").stdout)
    return config, restorer, str(listing[0]["set_id"]), f"dst_{uuid.uuid4().hex[:8]}"


def test_to_password_env_for_a_destination_of_another_user(
    cluster: tuple[Path, str], postgres_server: PostgresServer
) -> None:
    config, restorer, set_id, dest = _restore_case(cluster)
    dsn = f"postgresql://{restorer}@127.0.0.1:{postgres_server.port}/{dest}"
    # without a password, the other user cannot log in: one line, exit 1
    refused = txbackup("restore", "-c", str(config), set_id, "--to", f"pg={dsn}", env=_env())
    errors = [line for line in refused.stderr.splitlines() if line.startswith("txbackup:")]
    assert refused.returncode == 1 and len(errors) == 1, refused.stderr
    assert "no password supplied" in errors[0]
    # with it in the DSN: refused before anything, and nothing recorded
    with_secret = f"postgresql://{restorer}:{RESTORER_PASSWORD}@127.0.0.1:{postgres_server.port}/{dest}"
    leaked = txbackup("restore", "-c", str(config), set_id, "--to", f"pg={with_secret}", env=_env())
    assert leaked.returncode == 2 and RESTORER_PASSWORD not in leaked.stderr
    # from an environment variable: restored
    ok = txbackup(
        "restore", "-c", str(config), set_id, "--to", f"pg={dsn}", "--to-password-env", "pg=TXB_RESTORE_PW",
        env=_env(TXB_RESTORE_PW=RESTORER_PASSWORD),
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert _rows(postgres_server, dest) == 50
    jobs = txbackup("restore", "-c", str(config), "--jobs", "--json", env=_env())
    recorded = [j for j in json.loads(jobs.stdout) if j["status"] == "complete"]
    assert recorded[-1]["params"]["credentials"] == {"pg": {"password_env": "TXB_RESTORE_PW"}}
    assert RESTORER_PASSWORD not in jobs.stdout
    assert RESTORER_PASSWORD.encode() not in _catalog(config)


def test_restore_section_with_a_private_password_file(
    cluster: tuple[Path, str], postgres_server: PostgresServer
) -> None:
    config, restorer, set_id, dest = _restore_case(cluster)
    secret = config.parent / "secrets" / "restorer"
    secret.parent.mkdir()
    secret.write_text(RESTORER_PASSWORD + "\n")
    os.chmod(secret, 0o644)
    config.write_text(
        config.read_text()
        + f"""
[restore.pg]
host = "127.0.0.1"
port = {postgres_server.port}
user = "{restorer}"
database = "{dest}"
password_file = "secrets/restorer"
"""
    )
    loose = txbackup("restore", "-c", str(config), set_id, env=_env())
    assert loose.returncode == 2 and f"chmod 600 {secret}" in loose.stderr, loose.stderr
    os.chmod(secret, 0o600)
    ok = txbackup("restore", "-c", str(config), set_id, env=_env())
    assert ok.returncode == 0, ok.stderr
    assert _rows(postgres_server, dest) == 50
    assert RESTORER_PASSWORD.encode() not in _catalog(config)
