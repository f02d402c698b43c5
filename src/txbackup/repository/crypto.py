"""Encryption at rest: the repository key, the user keys that wrap it, the keyring.

The design is restic's (a master key wrapped by each password), with age keys:

- ``txbackup init --encrypt`` makes a random X25519 identity, *the repository
  identity*. The repository config records only its public recipient
  (``age1...``, ``repository.config``), so a backup host encrypts with the config
  alone and holds no secret.
- The repository identity is stored wrapped (age-encrypted) to each *user key*
  in ``keys/<key id>``: an age recipient (``age1...`` or an ssh public key) or a
  passphrase (age's scrypt). Its plaintext is an age identity file, so
  ``age -d -i my.key keys/<id> > repo.key`` gives a file ``age -d -i repo.key``
  decrypts any object with. Adding or removing a user key rewrites one small
  object; no data is re-encrypted.
- Whatever reads data (restore, verify, show, list --rebuild, forget) unwraps
  the repository identity with a user key first (``unlock``): the unwrapped
  identity must be the one whose recipient the config records, or it is refused.

The key ids are the names under ``keys/`` (listed, not recorded in the config:
the config is written once, by a conditional create, and never rewritten).

A ``Keyring`` is what a command holds of an encrypted repository: always the
recipient, and the identity once unlocked. Unencrypted repositories have none
(None is passed where a keyring goes).

What this does not protect against: whoever can write to the storage can read
the public recipient in the config and encrypt a forged object to it. Integrity
of a set rests on its manifest (which records every artifact's stored SHA-256),
and the manifest is encrypted with the same public recipient: age authenticates
that an object was not altered, not who wrote it (see the README).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyrage

from txbackup.errors import IntegrityError, TxbackupError, UsageError
from txbackup.repository import age
from txbackup.repository.config import (
    AlreadyInitialized,
    Encryption,
    RepositoryConfig,
    init_repository,
    new_config,
    read_config,
)
from txbackup.repository.layout import KEYS, SETS, key_path, parse_key_path
from txbackup.secrets import read_secret_file, read_small_file
from txbackup.storage.base import Storage, load_bytes, save_bytes

SCHEME = "age-x25519"
"""How a repository's objects are encrypted (recorded in its config)."""
MAX_KEY_BYTES = 64 * 1024
MAX_IDENTITY_FILE = 1 << 20
KEY_FLAGS = "--identity-file FILE (or TXBACKUP_IDENTITY_FILE), --passphrase-file FILE or --passphrase-env VAR"


class KeyRequired(UsageError):
    """An encrypted repository, and no key (or only its public half) to read it with."""


class WrongKey(TxbackupError):
    """The user key given opens none of the repository's keys."""


@dataclass
class Keyring:
    """The keys of an encrypted repository: its public recipient (always), and its
    identity once unlocked by a user key (``key_id`` says which)."""

    recipient: str
    identity: age.Identity | None = None
    key_id: str | None = None
    source: str = ""

    @property
    def recipient_key(self) -> bytes:
        return age.parse_recipient(self.recipient)

    def require_identity(self, what: str) -> age.Identity:
        if self.identity is None:
            raise KeyRequired(f"{what} is encrypted: reading it needs the repository key: {KEY_FLAGS}")
        return self.identity


def backup_keyring(config: RepositoryConfig | None) -> Keyring | None:
    """What a backup encrypts with: the config's public recipient (None: not encrypted)."""
    if config is None or config.encryption is None:
        return None
    return Keyring(config.encryption.recipient)


def is_sealed(data: bytes) -> bool:
    """``data`` is an age file (an encrypted small object such as a manifest)."""
    return data.startswith(age.MAGIC)


def seal(keyring: Keyring, data: bytes) -> bytes:
    """``data`` encrypted to the repository (a whole small object: a manifest)."""
    out = bytearray()
    cipher = age.Encryptor(keyring.recipient_key, out.extend)
    cipher.write(data)
    cipher.finish()
    return bytes(out)


def unseal(keyring: Keyring, data: bytes, where: str, limit: int) -> bytes:
    """The plaintext of the sealed object ``data`` read from ``where`` (at most
    ``limit`` bytes); IntegrityError naming it if it was altered, cut or foreign."""
    identity = keyring.require_identity(where)
    source = io.BytesIO(data)
    try:
        plain = age.Decryptor(source.read, identity)
        out = bytearray()
        while chunk := plain.read(age.CHUNK):
            out += chunk
            if len(out) > limit:
                raise IntegrityError(f"{where}: decrypts to more than {limit} bytes (refused)")
    except age.NoIdentityMatch as exc:
        problem = f"{exc} of this repository, or its header was altered (foreign or corrupt)"
        raise IntegrityError(f"{where}: {problem}") from None
    except age.AgeError as exc:
        raise IntegrityError(f"{where}: {exc} (corrupt)") from None
    return bytes(out)


# -- the blob key: names Cassandra blobs, decrypts nothing ----------------------------------------------
BLOB_KEY_LABEL = b"txbackup blob names v1"
_BLOB_KEY_LINE = re.compile(r"TXBACKUP-BLOB-KEY-1 ([0-9a-f]{32}) ([0-9a-f]{64})")


@dataclass(frozen=True)
class BlobKey:
    """The key of HMAC-SHA256(blob key, data), the name of a blob in an encrypted
    repository (so a stolen repository does not say which SSTables it holds).
    Derived from the repository identity: a key holder exports it for the agents
    (``txbackup key blob-key``), who name blobs with it but can decrypt nothing."""

    repository_id: str
    key: bytes = field(repr=False)

    def text(self) -> bytes:
        return (
            f"# txbackup: the blob key of repository {self.repository_id} (names Cassandra\n"
            "# blobs; decrypts nothing). Give it to the agents: txbackup agent --blob-key-file\n"
            f"TXBACKUP-BLOB-KEY-1 {self.repository_id} {self.key.hex()}\n"
        ).encode()


def derive_blob_key(keyring: Keyring, repository_id: str) -> BlobKey:
    identity = keyring.require_identity(f"repository {repository_id}")
    return BlobKey(repository_id, identity.derive(BLOB_KEY_LABEL))


def read_blob_key(path: str, what: str = "--blob-key-file") -> BlobKey:
    """The blob key in ``path`` (an owner-only file written by ``txbackup key blob-key``)."""
    text = read_secret_file(path, what=what)
    found = [m for line in text.splitlines() if (m := _BLOB_KEY_LINE.fullmatch(line.strip()))]
    if len(found) != 1:
        raise UsageError(f"{what} {path}: not a txbackup blob key file (txbackup key blob-key writes one)")
    return BlobKey(found[0][1], bytes.fromhex(found[0][2]))


# -- user keys ----------------------------------------------------------------------------------------
@dataclass
class UserKey:
    """A key a person holds: identities read from a file, or a passphrase. ``source``
    names it in messages (never its secret)."""

    source: str
    identities: list[Any] = field(default_factory=list)
    passphrase: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return "scrypt" if self.passphrase is not None else "identity"

    def unwrap(self, data: bytes) -> bytes | None:
        """The plaintext of a key object, or None if it is not wrapped to this key."""
        try:
            if self.passphrase is not None:
                return bytes(pyrage.passphrase.decrypt(data, self.passphrase))
            return bytes(pyrage.decrypt(data, self.identities))
        except pyrage.DecryptError:
            return None


def identity_file_key(path: str) -> UserKey:
    """The age identities (``AGE-SECRET-KEY-1...`` lines) or the ssh private key in
    ``path``, a file only its owner may read (UsageError otherwise)."""
    what = "identity file"
    text = read_secret_file(path, what=what)
    if text.startswith("-----BEGIN"):
        try:
            return UserKey(f"{what} {path}", [pyrage.ssh.Identity.from_buffer(text.encode())])
        except pyrage.IdentityError as exc:
            raise UsageError(f"{what} {path}: not an ssh private key txbackup can use ({exc})") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            problem = f"line {number} is not an age identity (AGE-SECRET-KEY-1...)"
            raise UsageError(f"{what} {path}: {problem}") from None
    if not found:
        raise UsageError(f"{what} {path}: holds no age identity (AGE-SECRET-KEY-1...)")
    return UserKey(f"{what} {path}", found)


def passphrase_key(passphrase: str, source: str) -> UserKey:
    if not passphrase:
        raise UsageError(f"{source}: empty passphrase")
    return UserKey(source, passphrase=passphrase)


def passphrase_from(file: str | None, env: str | None, flag: str = "--passphrase") -> UserKey | None:
    """A passphrase from a file (0600, first line) or an environment variable, never argv."""
    if file is not None and env is not None:
        raise UsageError(f"give either {flag}-file or {flag}-env, not both")
    if file is not None:
        return passphrase_key(read_secret_file(file, what=f"{flag}-file"), f"passphrase file {file}")
    if env is not None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise UsageError(f"{flag}-env: {env[:60]!r} is not the name of an environment variable")
        value = os.environ.get(env)
        if value is None:
            raise UsageError(f"{flag}-env: environment variable {env} is not set")
        return passphrase_key(value, f"passphrase of ${env}")
    return None


# -- new keys (what init and key add wrap the repository identity to) ---------------------------------
@dataclass
class NewKey:
    """Where a repository identity gets wrapped: recipients, or a passphrase."""

    source: str
    recipients: list[Any] = field(default_factory=list)
    passphrase: str | None = field(default=None, repr=False)

    def wrap(self, plaintext: bytes) -> bytes:
        if self.passphrase is not None:
            return bytes(pyrage.passphrase.encrypt(plaintext, self.passphrase))
        return bytes(pyrage.encrypt(plaintext, self.recipients))


def parse_recipients(text: str, source: str) -> list[Any]:
    """age (``age1...``) or ssh (``ssh-ed25519 ...``, ``ssh-rsa ...``) public keys, one a line."""
    found: list[Any] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith("ssh-"):
                found.append(pyrage.ssh.Recipient.from_str(line))
            else:
                found.append(pyrage.x25519.Recipient.from_str(line))
        except pyrage.RecipientError:
            where = f"{source} line {number}" if "\n" in text.strip() else source
            problem = f"{line[:80]!r} is not an age recipient (age1...) or ssh public key"
            raise UsageError(f"{where}: {problem}") from None
    if not found:
        raise UsageError(f"{source}: no recipient")
    return found


def new_key_from(
    recipients: list[str], recipient_files: list[str], passphrase: UserKey | None
) -> NewKey | None:
    """The key given by --recipient/--recipient-file or a passphrase flag (not both kinds)."""
    found: list[Any] = []
    sources = []
    for text in recipients:
        found += parse_recipients(text, "recipient")
        sources.append(f"recipient {text[:20]}...")
    for path in recipient_files:
        data = read_small_file(path, what="recipient file", limit=MAX_IDENTITY_FILE)
        found += parse_recipients(data.decode("utf-8", "replace"), f"recipient file {path}")
        sources.append(f"recipient file {path}")
    if found and passphrase is not None:
        raise UsageError("a key is either recipients or a passphrase: give one kind")
    if passphrase is not None:
        return NewKey(passphrase.source, passphrase=passphrase.passphrase)
    if found:
        return NewKey(", ".join(sources), recipients=found)
    return None


# -- key objects --------------------------------------------------------------------------------------
def new_key_id() -> str:
    return secrets.token_hex(8)


def key_text(identity: age.Identity, repository_id: str) -> bytes:
    """The plaintext of a key object: an age identity file (comments are allowed)."""
    return (
        f"# txbackup repository {repository_id}: the key of every encrypted object in it\n"
        f"# (age -d -i THIS_FILE OBJECT); recipient {identity.recipient}\n"
        f"{identity}\n"
    ).encode()


def _identity_in(text: bytes, where: str) -> age.Identity:
    lines = [line.strip() for line in text.decode("utf-8", "replace").splitlines()]
    keys = [line for line in lines if line.startswith("AGE-SECRET-KEY-1")]
    if len(keys) != 1:
        raise IntegrityError(f"{where}: does not hold one repository identity")
    try:
        return age.Identity.parse(keys[0])
    except age.AgeError as exc:
        raise IntegrityError(f"{where}: {exc}") from None


MAX_SCRYPT_LOG_N = 22
"""The costliest passphrase key unlock tries (age writes 18..20; 2^22 is seconds and 4 GiB):
a planted key object with a huge work factor must not stall or exhaust the machine."""


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    kind: str
    """``scrypt`` (a passphrase), ``X25519`` (an age recipient), ``ssh-ed25519``, ``ssh-rsa``."""
    size: int
    created: str
    work: int = 0
    """scrypt's log2 work factor (passphrase keys), from the header."""


def _stanza(data: bytes) -> tuple[str, int]:
    """The first stanza's type (how the key object is wrapped, visible in age's header)
    and, for scrypt, its work factor (0 if it is not one or unreadable)."""
    lines = data[:4096].split(b"\n")
    if len(lines) < 2 or lines[0] + b"\n" != age.MAGIC or not lines[1].startswith(b"-> "):
        return "unknown", 0
    args = lines[1][3:].split(b" ")
    kind = args[0].decode("ascii", "replace")[:20]
    readable = kind == "scrypt" and len(args) == 3 and args[2].isdigit() and len(args[2]) < 4
    return kind, int(args[2]) if readable else 0


def list_keys(storage: Storage) -> list[KeyInfo]:
    found = []
    for info in storage.iterate(KEYS):
        key_id = parse_key_path(info.name)
        if key_id is None:
            continue
        head = storage.open_read(info.name, 0, min(info.size, 4096))
        with head:
            kind, work = _stanza(head.read(4096))
        created = datetime.fromtimestamp(info.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        found.append(KeyInfo(key_id, kind, info.size, created, work))
    return sorted(found, key=lambda k: (k.created, k.key_id))


def write_key(storage: Storage, identity: age.Identity, repository_id: str, new: NewKey) -> str:
    """Wrap ``identity`` to ``new`` into a fresh ``keys/<id>``; returns the id."""
    key_id = new_key_id()
    save_bytes(storage, key_path(key_id), new.wrap(key_text(identity, repository_id)), if_absent=True)
    return key_id


def unlock(storage: Storage, recipient: str, repository_id: str, key: UserKey) -> Keyring:
    """The keyring of the repository, its identity unwrapped with ``key``: WrongKey
    (naming the key) if no key object opens, IntegrityError if the one that opens
    holds another identity than the config's recipient."""
    keys = list_keys(storage)
    if not keys:
        where = storage.describe()
        raise IntegrityError(f"repository {repository_id} at {where} is encrypted but has no keys/ (lost)")
    # a passphrase only opens scrypt objects and an identity only the others: trying the
    # rest would cost a second of scrypt each, or fail anyway
    tried = [k for k in keys if (k.kind == "scrypt") == (key.kind == "scrypt")]
    skipped = []
    for info in tried:
        if info.kind == "scrypt" and not 0 < info.work <= MAX_SCRYPT_LOG_N:
            skipped.append(f"{info.key_id} (scrypt work factor {info.work or '?'}: not tried)")
            continue
        data = load_bytes(storage, key_path(info.key_id), MAX_KEY_BYTES)
        text = key.unwrap(data)
        if text is None:
            continue
        identity = _identity_in(text, f"key {key_path(info.key_id)}")
        if identity.recipient != recipient:
            raise IntegrityError(
                f"key {key_path(info.key_id)} holds the identity of {identity.recipient}, not of this "
                f"repository's recipient {recipient} (planted or copied from another repository)"
            )
        return Keyring(recipient, identity, info.key_id, key.source)
    kinds = "passphrase" if key.kind == "scrypt" else "identity"
    opened = [k.key_id for k in tried if k.kind != "scrypt" or 0 < k.work <= MAX_SCRYPT_LOG_N]
    ids = ", ".join(opened + skipped) or f"none is a {kinds} key"
    raise WrongKey(f"{key.source} does not open repository key of {repository_id} (keys: {ids}): wrong key?")


def init_encrypted(storage: Storage, new: NewKey) -> tuple[RepositoryConfig, str]:
    """Make ``storage`` an encrypted repository: a fresh repository identity, wrapped to
    ``new`` in ``keys/<id>`` first, then the config recording its recipient (a failed
    or lost race removes the key again). Returns (config, key id)."""
    existing = read_config(storage)
    if existing is not None:
        where, label = storage.describe(), existing.repository_id
        raise AlreadyInitialized(f"storage {where}: already a repository (id {label}); nothing written")
    if next(iter(storage.iterate(SETS)), None) is not None:
        # a storage from before configs existed: its plaintext sets would be refused as planted
        raise UsageError(
            f"storage {storage.describe()} holds backup sets already: encryption is for a new "
            "repository (an empty storage)"
        )
    identity = age.Identity.generate()
    config = new_config(encryption=Encryption(SCHEME, identity.recipient))
    key_id = write_key(storage, identity, config.repository_id, new)
    try:
        init_repository(storage, config, undo=lambda: storage.remove(key_path(key_id)))
    except BaseException:
        with contextlib.suppress(Exception):
            storage.remove(key_path(key_id))
        raise
    return config, key_id


def add_key(storage: Storage, keyring: Keyring, repository_id: str, new: NewKey) -> str:
    identity = keyring.require_identity(f"repository {repository_id}")
    return write_key(storage, identity, repository_id, new)


def remove_key(storage: Storage, keyring: Keyring, key_id: str) -> None:
    """Remove ``keys/<key_id>``; refused for the last key and for the key in use
    (unlock with another one first: that proves the other still opens)."""
    keys = [k.key_id for k in list_keys(storage)]
    if key_id not in keys:
        raise UsageError(f"key {key_id}: no such key (keys: {', '.join(keys)})")
    if len(keys) == 1:
        raise UsageError(f"key {key_id} is the last key: removing it would lose the repository")
    if key_id == keyring.key_id:
        raise UsageError(
            f"key {key_id} is the one given ({keyring.source}): unlock with another key to remove it"
        )
    storage.remove(key_path(key_id))
