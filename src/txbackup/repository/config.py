"""The repository config: the object ``config`` that makes a storage a repository.

Written once by ``txbackup init`` (or by the first backup into a storage that
has none, see below) with a conditional create, never rewritten::

    {"repository_id": "<32 hex digits, random>", "format_version": 1,
     "created_at": "2026-11-28T10:00:00.000Z", "created_by": "txbackup 0.1.0"}

Every command that opens a repository reads it first (``open_config``): an
unknown ``format_version`` (a newer txbackup's repository) is refused in one
line before anything else is read or written. The ``repository_id`` goes into
every manifest and catalog row, and the engine sends it to every Cassandra
agent at preflight: an agent whose storage holds another repository (or none)
is refused before anything is paused (restic checks its repository id the same
way).

An encrypted repository (``txbackup init --encrypt``, ``repository.crypto``) has
format version 2 and one more field, the public half of its key::

    "encryption": {"scheme": "age-x25519", "recipient": "age1..."}

A txbackup that only knows version 1 refuses it in one line instead of writing
plaintext into it. The key ids are the objects under ``keys/`` (listed, not
recorded here: this object is never rewritten, keys come and go).

Backwards compatibility: a storage written before this config existed has no
``config``. Every command keeps working on it (there is no id to check yet);
the first backup set committed into it then writes the config (an automatic
``init``, after the commit, so a failed run still leaves the storage as it
found it), so existing installations need no new step. restic refuses such a
storage instead; we chose the friendlier path because every txbackup storage
made before this version lacks the object. Run ``txbackup init`` first to have
the id (and the agents' check) from the very first set.

The object is untrusted input like any other: bounded size, strict JSON (no
duplicate or unknown keys, exact types), one-line ``IntegrityError`` otherwise.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from txbackup import __version__, strictjson
from txbackup.clock import iso_ms, utc_now
from txbackup.errors import AlreadyExistsError, IntegrityError, TxbackupError
from txbackup.repository.layout import CONFIG
from txbackup.safepaths import shown
from txbackup.storage.base import Storage, load_bytes, save_bytes

FORMAT_VERSION = 1
ENCRYPTED_FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
MAX_CONFIG_BYTES = 64 * 1024
_ID = re.compile(r"[0-9a-f]{32}")
_FIELDS = ("repository_id", "format_version", "created_at", "created_by", "encryption")
_SCHEMES = ("age-x25519",)


def is_repository_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Encryption:
    """How the repository's objects are encrypted: the scheme and the public recipient."""

    scheme: str
    recipient: str

    @classmethod
    def parse(cls, value: object) -> Encryption:
        if not isinstance(value, dict) or set(value) != {"scheme", "recipient"}:
            raise ValueError("field 'encryption' must be an object with exactly scheme and recipient")
        scheme, recipient = value["scheme"], value["recipient"]
        if scheme not in _SCHEMES:
            raise ValueError(f"encryption scheme {shown(scheme)} is not known (known: {', '.join(_SCHEMES)})")
        if not isinstance(recipient, str) or not re.fullmatch(r"age1[02-9ac-hj-np-z]{58}", recipient):
            raise ValueError(f"encryption recipient {shown(recipient)} is not an age X25519 recipient")
        return cls(scheme, recipient)


@dataclass(frozen=True)
class RepositoryConfig:
    repository_id: str
    format_version: int
    created_at: str
    created_by: str
    encryption: Encryption | None = None

    def to_json(self) -> bytes:
        data = asdict(self)
        if self.encryption is None:
            del data["encryption"]  # version 1, as before encryption existed
        return json.dumps(data, indent=2).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes, where: str) -> RepositoryConfig:
        """The config in ``data`` (read from ``where``); IntegrityError (one line) if it
        is not exactly one, or of a format version this txbackup does not know."""
        try:
            value = strictjson.loads(data)
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, found {type(value).__name__}")
            version = value.get("format_version")
            if type(version) is not int:
                raise ValueError(f"format_version {shown(version)} is not an integer")
            if version not in SUPPORTED_VERSIONS:
                raise IntegrityError(
                    f"{where}: format version {version} is not supported by txbackup {__version__} "
                    f"(it reads {', '.join(map(str, SUPPORTED_VERSIONS))}): use a newer txbackup"
                )
            unknown = sorted(set(value) - set(_FIELDS))
            if unknown:
                raise ValueError(f"unknown field {shown(unknown[0])}")
            encryption = None
            if version == ENCRYPTED_FORMAT_VERSION:
                encryption = Encryption.parse(value.get("encryption"))
            elif "encryption" in value:
                raise ValueError(f"field 'encryption' in a format version {version} config")
            for key in _FIELDS:
                if key not in ("format_version", "encryption") and not isinstance(value.get(key), str):
                    raise ValueError(f"field {key!r} must be a string")
            if not is_repository_id(value["repository_id"]):
                raise ValueError(f"repository_id {shown(value['repository_id'])} is not 32 hex digits")
            if len(value["created_at"]) > 40 or len(value["created_by"]) > 200:
                raise ValueError("created_at or created_by too long")
            datetime.fromisoformat(value["created_at"])
            return cls(**(value | {"encryption": encryption}))
        except (ValueError, RecursionError) as exc:  # JSON, UTF-8 and time errors included
            problem = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise IntegrityError(f"{where}: {problem}") from None


def _where(storage: Storage) -> str:
    return f"repository config {storage.describe()}/{CONFIG}"


def new_config(now: datetime | None = None, encryption: Encryption | None = None) -> RepositoryConfig:
    return RepositoryConfig(
        repository_id=secrets.token_hex(16),
        format_version=FORMAT_VERSION if encryption is None else ENCRYPTED_FORMAT_VERSION,
        created_at=iso_ms(now or utc_now()),
        created_by=f"txbackup {__version__}",
        encryption=encryption,
    )


def read_config(storage: Storage) -> RepositoryConfig | None:
    """The repository config of ``storage``, or None if it has none (a storage from
    before configs existed, or not a repository yet)."""
    info = storage.stat(CONFIG)
    if info is None:
        return None
    if info.size > MAX_CONFIG_BYTES:
        raise IntegrityError(f"{_where(storage)}: {info.size} bytes, not a repository config")
    return RepositoryConfig.parse(load_bytes(storage, CONFIG, MAX_CONFIG_BYTES), _where(storage))


class AlreadyInitialized(TxbackupError):
    """``init`` of a storage that is a repository already."""


def init_repository(
    storage: Storage, config: RepositoryConfig | None = None, *, undo: Callable[[], object] | None = None
) -> RepositoryConfig:
    """Write a new config (``config``, or a fresh one) to ``storage`` with a conditional
    create: of two inits, one wins; the other (and any later one) gets
    ``AlreadyInitialized`` naming the id, after running ``undo`` (an encrypted init
    removes the key it wrote before the config)."""
    config = config or new_config()
    try:
        save_bytes(storage, CONFIG, config.to_json(), if_absent=True)
    except AlreadyExistsError:
        if undo is not None:
            undo()
        existing = read_config(storage)
        label = existing.repository_id if existing is not None else "unknown"
        raise AlreadyInitialized(
            f"storage {storage.describe()}: already a repository (id {label}); nothing written"
        ) from None
    return config


def open_config(storage: Storage, *, create: bool = False) -> RepositoryConfig | None:
    """The config checked (see module doc); with ``create`` (a backup), a storage
    without one gets one now, and a racing creator's config is the one used."""
    config = read_config(storage)
    if config is None and create:
        try:
            return init_repository(storage)
        except AlreadyInitialized:
            return read_config(storage)
    return config


def check_repository_id(expected: str, storage: Storage, who: str) -> RepositoryConfig:
    """Refuse (one line naming both ids) when ``storage`` is not the repository
    ``expected``: how an agent proves it writes where the engine does."""
    config = read_config(storage)
    if config is None:
        raise TxbackupError(
            f"{who}: storage {storage.describe()} is not repository {expected} "
            "(it has no repository config): point it at the repository of the cluster file"
        )
    if config.repository_id != expected:
        raise TxbackupError(
            f"{who}: storage {storage.describe()} is repository {config.repository_id}, "
            f"not {expected}: point it at the repository of the cluster file"
        )
    return config


@runtime_checkable
class RepositoryAware(Protocol):
    """A target whose own processes (agents) write to the repository: the engine tells
    it, before its preflight, which repository id they must find there."""

    def expect_repository(self, repository_id: str | None) -> None: ...
