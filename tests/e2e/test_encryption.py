"""An encrypted repository through the command line, as a user runs it: init --encrypt,
backup (public key only), verify/show/list --rebuild/restore with the key, a wrong or
missing key, a tampered or cut artifact refused before anything is restored, keys added
and removed, restore by hand with the real age and zstd commands, and the same on a
bucket (moto's S3) and on a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.e2e.support import backup_set_id, sqlite_targets, write_cluster
from tests.integration.test_engine import count, make_db
from tests.servers.postgres import PostgresServer
from tests.servers.processes import sample_server_process, txbackup
from tests.servers.s3 import S3Bucket
from txbackup.repository.crypto import read_blob_key

MAGIC = b"age-encryption.org/v1\n"


def keypair(folder: Path, name: str) -> tuple[Path, str]:
    """A user's age identity file (0600, from age-keygen) and its public key."""
    path = folder / f"{name}.key"
    subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, check=True)
    public = subprocess.run(["age-keygen", "-y", str(path)], capture_output=True, text=True, check=True)
    path.chmod(0o600)
    return path, public.stdout.strip()


def run_ok(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = txbackup(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result


def one_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("txbackup:")]
    return line


@pytest.fixture
def encrypted(tmp_path: Path) -> tuple[Path, Path, Path, str]:
    """(cluster file, repository folder, user key, set id): one set of SQLite target a
    (1000 rows) in an encrypted local repository."""
    make_db(tmp_path / "a.db", 1000)
    key, public = keypair(tmp_path, "me")
    with sample_server_process("--lease", "4s") as (_, endpoint):
        rest = f'[catalog]\npath = "{tmp_path / "catalog.db"}"\n' + sqlite_targets(tmp_path, "a")
        config = write_cluster(tmp_path / "cluster.toml", endpoint, f'path = "{tmp_path / "repo"}"', rest)
        made = json.loads(
            run_ok("init", "-c", str(config), "--encrypt", "--recipient", public, "--json").stdout
        )
        assert made["format_version"] == 2 and made["encryption"]["recipient"].startswith("age1")
        set_id = backup_set_id(config, os.environ | {"TXBACKUP_IDENTITY_FILE": ""})  # backups need no key
    return config, tmp_path / "repo", key, set_id


def test_everything_stored_is_an_age_file(encrypted: tuple[Path, Path, Path, str]) -> None:
    _, repo, _, set_id = encrypted
    stored = [
        p for p in repo.rglob("*") if p.is_file() and p.name not in ("config",) and "locks" not in p.parts
    ]
    assert any(p.name == "manifest.json" for p in stored) and any(p.suffix == ".zst" for p in stored)
    for path in stored:
        data = path.read_bytes()
        assert data.startswith(MAGIC), path
        assert b"SQLite format 3" not in data and b"accounts" not in data and set_id.encode() not in data


def test_verify_show_list_and_restore_need_the_key(
    encrypted: tuple[Path, Path, Path, str], tmp_path: Path
) -> None:
    config, _, key, set_id = encrypted
    env = os.environ | {"TXBACKUP_IDENTITY_FILE": ""}
    for command in (["verify", set_id], ["list", "--rebuild"]):
        line = one_error(txbackup(command[0], "-c", str(config), *command[1:], env=env), 2)
        assert "is encrypted: give --identity-file FILE" in line, line
    other, _ = keypair(tmp_path, "other")
    line = one_error(txbackup("verify", "-c", str(config), set_id, "--identity-file", str(other)), 1)
    assert line.startswith(f"txbackup: identity file {other} does not open repository key of "), line
    run_ok("verify", "-c", str(config), set_id, "--identity-file", str(key))
    shown = json.loads(
        run_ok("show", "-c", str(config), set_id, "--identity-file", str(key), "--json").stdout
    )
    assert shown["set_id"] == set_id
    (tmp_path / "catalog.db").unlink()
    listed = run_ok(
        "list", "-c", str(config), "--rebuild", "--json", env=env | {"TXBACKUP_IDENTITY_FILE": str(key)}
    )
    assert [row["set_id"] for row in json.loads(listed.stdout)] == [set_id]
    out = tmp_path / "out.db"
    run_ok("restore", "-c", str(config), set_id, "--to", f"a={out}", "--identity-file", str(key))
    assert count(out) == 1000


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_a_tampered_or_cut_artifact_is_refused_before_anything_is_restored(
    encrypted: tuple[Path, Path, Path, str], tmp_path: Path, damage: str
) -> None:
    config, repo, key, set_id = encrypted
    (artifact,) = (repo / "sets" / set_id / "a").glob("*.zst")
    data = bytearray(artifact.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x20
    else:
        del data[-100:]
    artifact.write_bytes(bytes(data))
    out = tmp_path / "out.db"
    result = txbackup("restore", "-c", str(config), set_id, "--to", f"a={out}", "--identity-file", str(key))
    line = one_error(result, 1)
    name = f"sets/{set_id}/a/{artifact.name}"
    assert f"refusing to restore set {set_id}: artifact {name}: " in line, line
    assert not out.exists() and not list(tmp_path.glob("out.db*"))
    if damage == "flip":  # read whole before anything is written: the same refusal, no job
        again = ["restore", "-c", str(config), set_id, "--to", f"a={out}", "--identity-file", str(key)]
        line = one_error(txbackup(*again, "--verify-first"), 1)
        assert f"refusing to restore set {set_id}: artifact {name}: " in line and "--resume" not in line


def test_keys_are_added_removed_and_a_passphrase_opens(
    encrypted: tuple[Path, Path, Path, str], tmp_path: Path
) -> None:
    config, _, key, set_id = encrypted
    env = os.environ | {"TXB_PW": "a long passphrase"}
    unlock = ["--identity-file", str(key)]
    new = ["--new-passphrase-env", "TXB_PW"]
    added = run_ok("key", "add", "-c", str(config), *unlock, *new, "--json", env=env)
    new_id = json.loads(added.stdout)["added"]
    keys = json.loads(run_ok("key", "list", "-c", str(config), "--json").stdout)
    assert sorted(k["kind"] for k in keys) == ["X25519", "scrypt"]
    (old_id,) = [k["key_id"] for k in keys if k["key_id"] != new_id]
    with_passphrase = ["-c", str(config), "--passphrase-env", "TXB_PW"]
    line = one_error(txbackup("key", "remove", *with_passphrase, "--id", new_id, env=env), 2)
    assert "unlock with another key" in line
    run_ok("key", "remove", *with_passphrase, "--id", old_id, env=env)
    line = one_error(txbackup("verify", "-c", str(config), set_id, "--identity-file", str(key)), 1)
    assert "does not open" in line
    run_ok("verify", "-c", str(config), set_id, "--passphrase-env", "TXB_PW", env=env)
    line = one_error(txbackup("key", "remove", *with_passphrase, "--id", new_id, env=env), 2)
    assert "is the last key" in line


def test_restore_by_hand_with_age_and_zstd(encrypted: tuple[Path, Path, Path, str], tmp_path: Path) -> None:
    """What the README's "Restoring by hand" says, with the real commands."""
    _, repo, key, set_id = encrypted
    (key_object,) = (repo / "keys").iterdir()
    repo_key = tmp_path / "repo.key"
    subprocess.run(["age", "-d", "-i", str(key), "-o", str(repo_key), str(key_object)], check=True)
    (artifact,) = (repo / "sets" / set_id / "a").glob("*.zst")
    out = tmp_path / "by-hand.db"
    subprocess.run(
        f"age -d -i {repo_key} {artifact} | zstd -dc > {out}", shell=True, check=True, capture_output=True
    )
    assert count(out) == 1000
    sealed = repo / "sets" / set_id / "manifest.json"
    manifest = subprocess.run(["age", "-d", "-i", str(repo_key), str(sealed)], capture_output=True)
    assert manifest.returncode == 0, manifest.stderr
    assert json.loads(manifest.stdout)["set_id"] == set_id



def test_the_blob_key_for_agents(encrypted: tuple[Path, Path, Path, str], tmp_path: Path) -> None:
    config, _, key, _ = encrypted
    out = tmp_path / "blob.key"
    run_ok("key", "blob-key", "-c", str(config), "--identity-file", str(key), "--output", str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert read_blob_key(str(out)).repository_id == json.loads((tmp_path / "repo" / "config").read_text())[
        "repository_id"
    ]
    again = txbackup("key", "blob-key", "-c", str(config), "--identity-file", str(key), "--output", str(out))
    assert "exists already" in one_error(again, 2)


def test_an_encrypted_repository_in_a_bucket(moto_s3_bucket: S3Bucket, tmp_path: Path) -> None:
    bucket = moto_s3_bucket
    env = bucket.process_env()
    make_db(tmp_path / "a.db", 300)
    key, public = keypair(tmp_path, "me")
    pub_file = tmp_path / "me.pub"
    pub_file.write_text(public + "\n")
    with sample_server_process("--lease", "4s") as (_, endpoint):
        storage = f'path = "{bucket.url("enc")}"\npath_style = true'
        rest = f'[catalog]\npath = "{tmp_path / "catalog.db"}"\n' + sqlite_targets(tmp_path, "a")
        config = write_cluster(tmp_path / "cluster.toml", endpoint, storage, rest)
        run_ok("init", "-c", str(config), "--encrypt", "--recipient-file", str(pub_file), env=env)
        set_id = backup_set_id(config, env)
    client = bucket.client()
    for obj in client.list_objects_v2(Bucket=bucket.bucket, Prefix="enc/")["Contents"]:
        if obj["Key"] != "enc/config" and "/locks/" not in obj["Key"]:
            body = client.get_object(Bucket=bucket.bucket, Key=obj["Key"])["Body"].read()
            assert body.startswith(MAGIC), obj["Key"]
    run_ok("verify", "-c", str(config), set_id, "--identity-file", str(key), env=env)
    out = tmp_path / "out.db"
    run_ok("restore", "-c", str(config), set_id, "--to", f"a={out}", "--identity-file", str(key), env=env)
    assert count(out) == 300


@pytest.mark.postgres
def test_postgres_round_trip_in_an_encrypted_repository(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    postgres_server.execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text);"
        "INSERT INTO items SELECT g, 'secret-' || g FROM generate_series(1, 500) g",
        postgres_db,
    )
    key, public = keypair(tmp_path, "me")
    env = os.environ | {"TXB_PG_PW": postgres_server.password}
    with sample_server_process("--lease", "4s") as (_, endpoint):
        target = f"""
[catalog]
path = "{tmp_path / "catalog.db"}"

[[targets]]
name = "pg"
kind = "postgres"
port = {postgres_server.port}
user = "{postgres_server.user}"
password_env = "TXB_PG_PW"
databases = ["{postgres_db}"]
"""
        config = write_cluster(tmp_path / "cluster.toml", endpoint, f'path = "{tmp_path / "repo"}"', target)
        run_ok("init", "-c", str(config), "--encrypt", "--recipient", public)
        set_id = backup_set_id(config, env)
    for path in (tmp_path / "repo" / "sets").rglob("*"):
        if path.is_file():
            assert path.read_bytes().startswith(MAGIC) and b"secret-" not in path.read_bytes()
    dest = f"{postgres_db}_back"
    dsn = f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/{dest}"
    run_ok("restore", "-c", str(config), set_id, "--to", f"pg={dsn}", "--identity-file", str(key), env=env)
    with psycopg.connect(postgres_server.dsn(dest)) as conn:
        row = conn.execute("SELECT count(*), min(v) FROM items").fetchone()
    assert row == (500, "secret-1")
