"""Encryption at rest: the age v1 format (both ways against pyrage and the age command),
the codec's cipher stage (every byte region tampered, every cut), encrypted manifests,
and the repository key wrapped per user key (wrong key, add, remove, passphrase)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pyrage
import pytest

from tests.unit.test_cleanup import run_of
from tests.unit.test_locks import dead_pid
from txbackup.agent import blobs, server
from txbackup.agent.node import AgentKeys, Node, NodeConfig
from txbackup.catalog import Catalog
from txbackup.clock import utc_now
from txbackup.engine.artifacts import SetReader, SetWriter, verify_set
from txbackup.engine.cleanup import clean
from txbackup.engine.manifest import (
    Manifest,
    PauseWindow,
    TargetRecord,
    Timings,
    list_manifests,
    read_manifest,
    write_manifest,
)
from txbackup.errors import IntegrityError, TxbackupError, UsageError
from txbackup.locks import StorageLock
from txbackup.owner import Owner
from txbackup.repository import age
from txbackup.repository.codec import Encoder, Expected, decoded
from txbackup.repository.config import RepositoryConfig, read_config
from txbackup.repository.crypto import (
    BlobKey,
    KeyRequired,
    Keyring,
    NewKey,
    WrongKey,
    add_key,
    derive_blob_key,
    identity_file_key,
    init_encrypted,
    key_text,
    list_keys,
    parse_recipients,
    passphrase_key,
    read_blob_key,
    remove_key,
    unlock,
)
from txbackup.repository.layout import key_path, manifest_path
from txbackup.storage import LocalStorage
from txbackup.storage.base import save_bytes

SET = "20261128T100000Z-abcd"
SIZES = [0, 1, age.CHUNK - 1, age.CHUNK, age.CHUNK + 1, 3 * age.CHUNK + 17]


def encrypt(recipient: str, data: bytes, step: int = 7001) -> bytes:
    out = bytearray()
    cipher = age.Encryptor(age.parse_recipient(recipient), out.extend)
    for i in range(0, len(data), step):
        cipher.write(data[i : i + step])
    cipher.finish()
    return bytes(out)


def decrypt(identity: age.Identity, data: bytes) -> bytes:
    plain = age.Decryptor(io.BytesIO(data).read, identity)
    out = bytearray()
    while chunk := plain.read(5000):
        out += chunk
    return bytes(out)


# -- the age format, against the reference implementations --------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_age_files_open_in_pyrage_and_pyrage_files_open_here(size: int) -> None:
    data = os.urandom(size)
    ours = age.Identity.generate()
    theirs = pyrage.x25519.Identity.from_str(str(ours))
    assert str(theirs.to_public()) == ours.recipient  # same keys, same bech32
    assert pyrage.decrypt(encrypt(ours.recipient, data), [theirs]) == data
    assert decrypt(ours, pyrage.encrypt(data, [theirs.to_public()])) == data


@pytest.mark.parametrize("step", [4099, age.CHUNK, age.CHUNK + 1, 3 * age.CHUNK + 17])
@pytest.mark.parametrize("size", [age.CHUNK, 2 * age.CHUNK, 3 * age.CHUNK + 17])
def test_any_write_sizes_make_the_same_age_file(size: int, step: int) -> None:
    """Writes of any size (whole chunks sealed where they lie, or bytes gathered): a
    chunk is flagged last only when nothing follows it, and pyrage reads it back."""
    data = os.urandom(size)
    ours = age.Identity.generate()
    theirs = pyrage.x25519.Identity.from_str(str(ours))
    sealed = encrypt(ours.recipient, data, step)
    assert pyrage.decrypt(sealed, [theirs]) == data
    assert len(sealed) == len(encrypt(ours.recipient, data, size))  # same framing


@pytest.mark.parametrize("size", [0, age.CHUNK, 2 * age.CHUNK + 5])
def test_age_command_decrypts_ours_and_we_decrypt_its(size: int, tmp_path: Path) -> None:
    data = os.urandom(size)
    identity = age.Identity.generate()
    key = tmp_path / "k.txt"
    key.write_text(f"# a comment\n{identity}\n")
    theirs = subprocess.run(["age", "-d", "-i", str(key)], input=encrypt(identity.recipient, data),
                            capture_output=True, check=True)  # fmt: skip
    assert theirs.stdout == data
    made = subprocess.run(["age", "-r", identity.recipient], input=data, capture_output=True, check=True)
    assert decrypt(identity, made.stdout) == data
    keygen = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
    parsed = age.Identity.parse(next(line for line in keygen.splitlines() if line.startswith("AGE-SECRET")))
    assert f"# public key: {parsed.recipient}" in keygen  # our bech32 reads age-keygen's keys


def test_bech32_refuses_bad_keys() -> None:
    identity = age.Identity.generate()
    text = identity.recipient
    for bad in [
        text[:-1] + ("q" if text[-1] != "q" else "p"),
        text.upper()[:10] + text[10:],
        "age1",
        "x" + text,
    ]:
        with pytest.raises(age.AgeError):
            age.parse_recipient(bad)
    assert "SECRET" not in repr(identity)  # a repr never shows the secret


# -- the codec's cipher stage --------------------------------------------------------------------------
def encode(data: bytes, recipient: str) -> tuple[bytes, Expected]:
    stored = bytearray()
    encoder = Encoder(stored.extend, age.parse_recipient(recipient))
    encoder.write(data)
    done = encoder.finish()
    assert (done.stored_size, len(stored)) == (len(stored), done.stored_size)
    return bytes(stored), Expected(done.size, done.sha256, done.stored_size, done.stored_sha256)


def decode(stored: bytes, expected: Expected, identity: age.Identity | None) -> bytes:
    with decoded(io.BytesIO(stored), expected, "artifact X", identity=identity) as data:
        return data.read()


@pytest.fixture(scope="module")
def sample() -> tuple[age.Identity, bytes, bytes, Expected]:
    identity = age.Identity.generate()
    data = os.urandom(150_000) + b"compressible " * 20_000  # several age chunks once compressed
    stored, expected = encode(data, identity.recipient)
    return identity, data, stored, expected


def test_codec_round_trip_stores_ciphertext(sample: tuple[age.Identity, bytes, bytes, Expected]) -> None:
    identity, data, stored, expected = sample
    assert stored.startswith(age.MAGIC) and b"compressible" not in stored
    assert decode(stored, expected, identity) == data
    with pytest.raises(IntegrityError, match=r"artifact X: .*corrupt"):  # no key: zstd sees ciphertext
        decode(stored, expected, None)


def test_every_byte_region_tampered_is_refused(sample: tuple[age.Identity, bytes, bytes, Expected]) -> None:
    identity, _, stored, expected = sample
    header_end = stored.index(b"\n---") + 4
    mac_end = stored.index(b"\n", header_end) + 1
    regions = {
        "magic": 3, "stanza type": stored.index(b"X25519"), "share": stored.index(b"X25519") + 12,
        "wrapped key": stored.index(b"\n", stored.index(b"X25519")) + 5, "mac": header_end + 5,
        "nonce": mac_end + 3, "first chunk": mac_end + 16 + 100,
        "first tag": mac_end + 16 + age.CHUNK + 3, "last chunk": len(stored) - 40,
        "last tag": len(stored) - 1,
    }  # fmt: skip
    for region, offset in regions.items():
        damaged = bytearray(stored)
        damaged[offset] ^= 0x01
        # the recorded digest would catch it too: check the cipher alone (digest unrecorded)
        loose = Expected(expected.size, expected.sha256, expected.stored_size)
        with pytest.raises(IntegrityError, match=r"^artifact X: ") as caught:
            decode(bytes(damaged), loose, identity)
        assert "corrupt" in str(caught.value), region


def test_every_cut_is_refused(sample: tuple[age.Identity, bytes, bytes, Expected]) -> None:
    identity, _, stored, expected = sample
    header_end = stored.index(b"\n", stored.index(b"\n---") + 1) + 1
    for cut in [0, 10, header_end - 1, header_end + 8, header_end + 16, header_end + 16 + age.CHUNK + age.TAG,
                len(stored) - 1]:  # fmt: skip
        short = stored[:cut]
        loose = Expected(expected.size, expected.sha256, len(short))  # as if the record said so
        with pytest.raises(IntegrityError, match=r"^artifact X: "):
            decode(short, loose, identity)


def test_a_chunk_boundary_cut_is_refused_by_the_cipher_itself() -> None:
    """Two whole chunks, cut after the first: the plaintext so far is authentic, but the
    first chunk is not flagged last, so the cut shows (age's STREAM construction)."""
    identity = age.Identity.generate()
    data = os.urandom(2 * age.CHUNK)
    sealed = encrypt(identity.recipient, data)
    cut = len(sealed) - (age.CHUNK + age.TAG)
    with pytest.raises(age.AgeError, match="authentication"):
        decrypt(identity, sealed[:cut])


def test_another_key_names_the_object(sample: tuple[age.Identity, bytes, bytes, Expected]) -> None:
    _, _, stored, expected = sample
    with pytest.raises(
        IntegrityError,
        match="artifact X: not encrypted to this key of this repository, or its header was altered",
    ):
        decode(stored, expected, age.Identity.generate())


# -- the repository: keys, manifests, artifacts --------------------------------------------------------
@pytest.fixture
def user(tmp_path: Path) -> tuple[Path, str]:
    """A user's identity file (0600) and its recipient."""
    identity = age.Identity.generate()
    path = tmp_path / "me.key"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return path, identity.recipient


def new_key(recipient: str) -> NewKey:
    return NewKey("test", recipients=parse_recipients(recipient, "test"))


def encrypted_repository(tmp_path: Path, recipient: str) -> tuple[LocalStorage, RepositoryConfig]:
    storage = LocalStorage(str(tmp_path / "repo"))
    config, _ = init_encrypted(storage, new_key(recipient))
    return storage, config


def unlocked(storage: LocalStorage, config: RepositoryConfig, key_file: Path) -> Keyring:
    assert config.encryption is not None
    return unlock(
        storage, config.encryption.recipient, config.repository_id, identity_file_key(str(key_file))
    )


def test_init_records_only_the_public_key(tmp_path: Path, user: tuple[Path, str]) -> None:
    storage, config = encrypted_repository(tmp_path, user[1])
    stored = json.loads((tmp_path / "repo" / "config").read_text())
    assert stored["format_version"] == 2 and set(stored["encryption"]) == {"scheme", "recipient"}
    assert read_config(storage) == config
    (key,) = list_keys(storage)
    assert key.kind == "X25519"
    wrapped = (tmp_path / "repo" / key_path(key.key_id)).read_bytes()
    assert wrapped.startswith(age.MAGIC) and b"AGE-SECRET-KEY" not in wrapped
    keyring = unlocked(storage, config, user[0])
    assert keyring.identity is not None and keyring.identity.recipient == stored["encryption"]["recipient"]


def test_encryption_is_for_a_new_repository(tmp_path: Path, user: tuple[Path, str]) -> None:
    storage = LocalStorage(str(tmp_path / "repo"))
    save_bytes(storage, manifest_path(SET), b"{}")  # a set from before repositories had configs
    with pytest.raises(UsageError, match="holds backup sets already"):
        init_encrypted(storage, new_key(user[1]))
    assert read_config(storage) is None and list_keys(storage) == []


def test_a_wrong_key_names_itself(tmp_path: Path, user: tuple[Path, str]) -> None:
    storage, config = encrypted_repository(tmp_path, user[1])
    other = tmp_path / "other.key"
    other.write_text(f"{age.Identity.generate()}\n")
    other.chmod(0o600)
    with pytest.raises(WrongKey, match=f"^identity file {other} does not open repository key of "):
        unlocked(storage, config, other)
    other.chmod(0o644)
    with pytest.raises(UsageError, match="too open"):
        identity_file_key(str(other))


def test_a_key_holding_another_identity_is_refused(tmp_path: Path, user: tuple[Path, str]) -> None:
    storage, config = encrypted_repository(tmp_path, user[1])
    (key,) = list_keys(storage)
    forged = new_key(user[1]).wrap(key_text(age.Identity.generate(), config.repository_id))
    storage.remove(key_path(key.key_id))
    save_bytes(storage, key_path(key.key_id), forged)
    with pytest.raises(IntegrityError, match=r"holds the identity of .* not of this repository"):
        unlocked(storage, config, user[0])


def test_keys_are_added_and_removed_without_touching_data(tmp_path: Path, user: tuple[Path, str]) -> None:
    storage, config = encrypted_repository(tmp_path, user[1])
    first = unlocked(storage, config, user[0])
    other = age.Identity.generate()
    other_file = tmp_path / "other.key"
    other_file.write_text(f"{other}\n")
    other_file.chmod(0o600)
    second_id = add_key(storage, first, config.repository_id, new_key(other.recipient))
    second = unlocked(storage, config, other_file)
    assert second.key_id == second_id and second.identity is not None and first.identity is not None
    assert second.identity.recipient == first.identity.recipient  # the same repository key
    with pytest.raises(UsageError, match="the one given"):
        remove_key(storage, second, second_id)
    remove_key(storage, second, str(first.key_id))
    with pytest.raises(WrongKey):
        unlocked(storage, config, user[0])
    with pytest.raises(UsageError, match="is the last key"):
        remove_key(storage, Keyring(second.recipient), second_id)
    with pytest.raises(UsageError, match="no such key"):
        remove_key(storage, second, "0123456789abcdef")


def test_a_passphrase_key(tmp_path: Path, user: tuple[Path, str]) -> None:
    storage, config = encrypted_repository(tmp_path, user[1])
    first = unlocked(storage, config, user[0])
    add_key(storage, first, config.repository_id, NewKey("pw", passphrase="correct horse"))
    assert sorted(k.kind for k in list_keys(storage)) == ["X25519", "scrypt"]
    assert config.encryption is not None
    opened = unlock(storage, config.encryption.recipient, config.repository_id,
                    passphrase_key("correct horse", "passphrase of $PW"))  # fmt: skip
    assert opened.identity is not None and first.identity is not None
    assert opened.identity.recipient == first.identity.recipient
    with pytest.raises(WrongKey, match=r"^passphrase of \$PW does not open"):
        unlock(
            storage,
            config.encryption.recipient,
            config.repository_id,
            passphrase_key("wrong", "passphrase of $PW"),
        )


def manifest_with(records: list) -> Manifest:  # type: ignore[type-arg]
    target = TargetRecord(name="pg", kind="postgres", artifacts=records)
    return Manifest(SET, "2026-11-28T10:00:00.000Z", "2026-11-28T10:00:01.000Z", PauseWindow(), [], Timings(),
                    [target])  # fmt: skip


def test_manifests_and_artifacts_of_an_encrypted_repository(tmp_path: Path, user: tuple[Path, str]) -> None:
    storage, config = encrypted_repository(tmp_path, user[1])
    public = Keyring(config.encryption.recipient) if config.encryption else None
    assert public is not None
    writer = SetWriter(storage, SET, "pg", public)  # the public key alone writes
    with writer.open("db.dump") as out:
        out.write(b"secret rows " * 10_000)
    write_manifest(storage, manifest_with(writer.records), keyring=public)
    stored = (tmp_path / "repo" / manifest_path(SET)).read_bytes()
    assert stored.startswith(age.MAGIC) and b"db.dump" not in stored
    artifact = (tmp_path / "repo" / writer.records[0].path).read_bytes()
    assert b"secret rows" not in artifact
    with pytest.raises(KeyRequired, match="--identity-file"):
        read_manifest(storage, SET)
    with pytest.raises(KeyRequired):
        read_manifest(storage, SET, keyring=public)  # a backup host cannot read it back
    with pytest.raises(KeyRequired):
        list_manifests(storage)
    keyring = unlocked(storage, config, user[0])
    manifest = read_manifest(storage, SET, keyring=keyring)
    assert list_manifests(storage, keyring=keyring) == [manifest]
    with pytest.raises(KeyRequired):
        verify_set(storage, manifest, keyring=public)
    assert verify_set(storage, manifest, keyring=keyring) == []
    with SetReader(storage, SET, "pg", manifest.targets[0].artifacts, keyring=keyring).open(
        "db.dump"
    ) as data:
        assert data.read() == b"secret rows " * 10_000
    # a tampered artifact: verify names it
    path = tmp_path / "repo" / writer.records[0].path
    damaged = bytearray(artifact)
    damaged[len(damaged) // 2] ^= 1
    path.write_bytes(bytes(damaged))
    (problem,) = verify_set(storage, manifest, keyring=keyring)
    assert problem.startswith(f"artifact {writer.records[0].path}: ") and "corrupt" in problem


def test_a_plaintext_manifest_planted_in_an_encrypted_repository_is_refused(
    tmp_path: Path, user: tuple[Path, str]
) -> None:
    storage, config = encrypted_repository(tmp_path, user[1])
    write_manifest(storage, _one_artifact_manifest(storage))
    keyring = unlocked(storage, config, user[0])
    for key in (None, keyring):
        with pytest.raises(IntegrityError, match="not encrypted in an encrypted repository"):
            read_manifest(storage, SET, keyring=key)


def _one_artifact_manifest(storage: LocalStorage) -> Manifest:
    writer = SetWriter(storage, SET, "pg")
    with writer.open("db.dump") as out:
        out.write(b"x")
    return manifest_with(writer.records)


# -- Cassandra blobs: encrypted, keyed names (the agent's node, without Cassandra) ---------------------
STORE = "cassandra/c/sstables"
TAG = "20261128T100000Z-abcd"


def snapshot(data_dir: Path, files: dict[str, bytes]) -> None:
    """A snapshot ``TAG`` of table ks.t as nodetool leaves it."""
    folder = data_dir / "ks" / f"t-{'0' * 32}" / "snapshots" / TAG
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def agent_node(tmp_path: Path, storage: LocalStorage, keys: AgentKeys) -> Node:
    config = NodeConfig(nodetool=["false"], data_dirs=[tmp_path / "data"], staging_dir=tmp_path / "staging")
    return Node(config, storage, keys)


def test_blobs_of_an_encrypted_repository(tmp_path: Path, user: tuple[Path, str]) -> None:
    storage, config = encrypted_repository(tmp_path, user[1])
    keyring = unlocked(storage, config, user[0])
    blob_key_file = tmp_path / "blob.key"
    blob_key_file.write_bytes(derive_blob_key(keyring, config.repository_id).text())
    blob_key_file.chmod(0o600)
    data = {"nb-1-big-Data.db": b"sstable rows " * 5000, "nb-1-big-Index.db": os.urandom(3000)}
    snapshot(tmp_path / "data", data)
    # no blob key: refused before anything is stored
    with pytest.raises(TxbackupError, match="is encrypted: start the agent with --blob-key-file FILE"):
        agent_node(tmp_path, storage, AgentKeys()).upload(TAG, ["ks"], STORE, lambda _: None)
    backup_node = agent_node(tmp_path, storage, AgentKeys(read_blob_key(str(blob_key_file))))
    listing = backup_node.upload(TAG, ["ks"], STORE, lambda _: None)
    files = listing["files"]
    for f in files:
        assert f["blob"] != f["sha256"]  # keyed names: the plain digest is nowhere in the store
        stored = (tmp_path / "repo" / STORE / f["blob"]).read_bytes()
        assert stored.startswith(age.MAGIC) and b"sstable rows" not in stored
    assert not any(f["sha256"] in str(p) for f in files for p in (tmp_path / "repo").rglob("*"))
    assert backup_node.upload(TAG, ["ks"], STORE, lambda _: None)["uploaded_files"] == 0  # dedup still works
    entries = [f | {"node": "10.0.0.1"} for f in files]
    assert blobs.referenced(files) == {p.name for p in (tmp_path / "repo" / STORE).iterdir()}  # what GC keeps
    # a restore needs a user key on the agent: the blob key opens nothing
    with pytest.raises(TxbackupError, match="restoring needs the agent started with --identity-file"):
        backup_node.prepare(TAG, STORE, entries, lambda _: None)
    restorer = agent_node(tmp_path, storage, AgentKeys(None, identity_file_key(str(user[0]))))
    staged = Path(restorer.prepare(TAG, STORE, entries, lambda _: None)["staging"])
    for name, content in data.items():
        assert (staged / "10.0.0.1" / "ks" / "t" / name).read_bytes() == content
    # a tampered blob is refused, naming it, and nothing stays staged
    target = tmp_path / "repo" / STORE / files[0]["blob"]
    damaged = bytearray(target.read_bytes())
    damaged[-5] ^= 1
    target.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match=f"blob {STORE}/{files[0]['blob']}: .*corrupt"):
        restorer.prepare(TAG, STORE, entries, lambda _: None)
    assert not staged.exists()


def test_an_agent_with_the_blob_key_of_another_repository_is_refused(
    tmp_path: Path, user: tuple[Path, str]
) -> None:
    storage, config = encrypted_repository(tmp_path, user[1])
    snapshot(tmp_path / "data", {"nb-1-big-Data.db": b"x"})
    preflight = {"repository_id": config.repository_id, "keyspaces": ["ks"], "method": "snapshot"}
    with pytest.raises(TxbackupError, match="--blob-key-file FILE"):  # at preflight: before any pause
        server._preflight(agent_node(tmp_path, storage, AgentKeys()), preflight, lambda _: None)
    other = BlobKey("f" * 32, bytes(32))
    problem = f"blob key of repository {'f' * 32}, not of {config.repository_id}"
    with pytest.raises(TxbackupError, match=problem):
        agent_node(tmp_path, storage, AgentKeys(other)).upload(TAG, ["ks"], STORE, lambda _: None)
    assert not (tmp_path / "repo" / "cassandra").exists()


def test_a_low_order_share_is_refused_as_corrupt() -> None:
    zero = age._b64(bytes(32))
    header = age.MAGIC + b"-> X25519 " + zero + b"\n" + zero + b"\n--- " + zero + b"\n"
    with pytest.raises(age.AgeError, match="low-order point"):
        decrypt(age.Identity.generate(), header + bytes(16 + 16))


def test_a_planted_passphrase_key_with_a_huge_work_factor_is_not_tried(
    tmp_path: Path, user: tuple[Path, str]
) -> None:
    storage, config = encrypted_repository(tmp_path, user[1])
    planted = age.MAGIC + b"-> scrypt " + age._b64(bytes(16)) + b" 40\n" + age._b64(bytes(32)) + b"\n--- x\n"
    save_bytes(storage, key_path("0123456789abcdef"), planted)
    assert config.encryption is not None
    with pytest.raises(WrongKey, match=r"0123456789abcdef \(scrypt work factor 40: not tried\)"):
        unlock(storage, config.encryption.recipient, config.repository_id, passphrase_key("pw", "passphrase"))


def test_cleanup_never_removes_an_encrypted_set_it_cannot_read(
    tmp_path: Path, user: tuple[Path, str]
) -> None:
    """A backup killed between its manifest and the catalog: the backup host (no key) that
    cleans up cannot read the manifest, and must keep the set (a key holder's list --rebuild
    indexes it)."""
    storage, config = encrypted_repository(tmp_path, user[1])
    public = Keyring(config.encryption.recipient) if config.encryption else None
    writer = SetWriter(storage, SET, "pg", public)
    with writer.open("db.dump") as out:
        out.write(b"rows")
    write_manifest(storage, manifest_with(writer.records), keyring=public)
    catalog = Catalog(str(tmp_path / "catalog.db"))
    me = Owner.current()
    dead = Owner(me.user, me.host, dead_pid(), None, me.machine)
    catalog.begin(SET, utc_now(), ["pg"], run_of(dead, storage.describe()))
    lock = StorageLock(storage, "cleanup")
    assert lock.attempt() is True
    try:
        clean(storage, catalog, lock)
    finally:
        lock.release()
    assert storage.stat(manifest_path(SET)) is not None and storage.stat(writer.records[0].path) is not None
    keyring = unlocked(storage, config, user[0])
    assert catalog.rebuild(storage, keyring) == []
    (row,) = catalog.list()
    assert row.status == "complete"


def test_an_ssh_key_opens_the_repository(tmp_path: Path) -> None:
    """age's ssh-ed25519 recipients: the key people already have."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = (tmp_path / "id_ed25519.pub").read_text()
    storage = LocalStorage(str(tmp_path / "repo"))
    config, _ = init_encrypted(storage, new_key(public))
    assert [k.kind for k in list_keys(storage)] == ["ssh-ed25519"]
    keyring = unlocked(storage, config, key)
    assert keyring.identity is not None and config.encryption is not None
    assert keyring.identity.recipient == config.encryption.recipient


def test_a_forgotten_sets_tombstone_is_encrypted_like_its_manifest(
    tmp_path: Path, user: tuple[Path, str]
) -> None:
    # a tombstone names tables and their DynamoDB backups: it outlives the manifest, sealed the same way
    from txbackup.engine.prune import Owned, _save_tombstone, read_tombstone
    from txbackup.repository.layout import tombstone_path

    storage, config = encrypted_repository(tmp_path, user[1])
    keyring = unlocked(storage, config, user[0])
    owned = [Owned("ddb", "dynamodb", {"region": "r"}, {"backups": {"bank.accounts": "arn:x"}})]
    _save_tombstone(storage, "20261128T101500Z-abcd", owned, keyring=keyring)
    stored = (tmp_path / "repo" / tombstone_path("20261128T101500Z-abcd")).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1\n") and b"arn:x" not in stored
    assert read_tombstone(storage, "20261128T101500Z-abcd", keyring) == owned
    with pytest.raises(ValueError, match="encrypted"):
        read_tombstone(storage, "20261128T101500Z-abcd")
    _save_tombstone(storage, "20261128T101500Z-abcd", owned)  # plaintext, as planted by someone
    with pytest.raises(ValueError, match="planted"):
        read_tombstone(storage, "20261128T101500Z-abcd", keyring)
