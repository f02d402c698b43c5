"""The repository layout: every object name txbackup builds, in one place.

``storage/`` says where bytes live; this module says what their names are.
Each kind of object has a builder and a parser here, and nothing else in the
tool joins name parts by hand, so "what is a valid name" has one answer::

    config                                      the repository config (repository id, format)
    sets/<set id>/manifest.json                 a set's manifest (its commit, written last)
    sets/<set id>/<target>/<artifact>.zst       an artifact of a set (codec: zstd + SHA-256)
    locks/<lock id>.json                        a lock (see ``txbackup.locks``)
    trash/<set id>.json                         a forgotten set's tombstone: what it owns outside
                                                the repository, until released (``engine.prune``)
    keys/<key id>                               the repository identity wrapped to one user key
                                                (encrypted repositories, ``repository.crypto``)
    cassandra/<cluster>/sstables/<sha256>       the content-addressed SSTable blob store
    cassandra/.probe/<random>                   an agent's write probe at preflight

Names read back from storage (a listing, a manifest, a Cassandra position) are
untrusted: the parsers return None for anything that is not exactly one of
these shapes, and the builders refuse parts that could leave their place
(``..``, ``/`` inside a part, control characters: ``storage.base.check_name``).
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from txbackup.clock import as_utc
from txbackup.errors import IntegrityError, StorageError, TxbackupError, UsageError
from txbackup.safepaths import name_problem, shown
from txbackup.storage.base import check_name

CONFIG = "config"
"""The repository config object (``repository.config``)."""

SETS = "sets/"
MANIFEST = "manifest.json"
ARTIFACT_SUFFIX = ".zst"
LOCKS = "locks/"
TRASH = "trash/"
KEYS = "keys/"
CASSANDRA = "cassandra/"
PROBES = "cassandra/.probe/"

_SET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # always fullmatch
_LOCK_ID = re.compile(r"\d{8}T\d{9}Z-[0-9a-f]{8}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CLUSTER = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_CLUSTER_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


# -- sets ---------------------------------------------------------------------------------------------
def new_set_id(now: datetime) -> str:
    """A sortable, unique set id such as ``20261127T101500Z-3f9a`` (naive = UTC)."""
    return f"{as_utc(now):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def is_set_id(text: object) -> bool:
    return isinstance(text, str) and _SET_ID.fullmatch(text) is not None


def check_set_id(set_id: str) -> str:
    """Return ``set_id`` if it can name a set folder, else raise UsageError."""
    if not is_set_id(set_id):
        raise UsageError(f"set id {str(set_id)[:140]!r}: not a backup set id (like 20261127T101500Z-3f9a)")
    return set_id


def set_prefix(set_id: str) -> str:
    """The storage folder of a set: ``sets/<set_id>/``."""
    return f"{SETS}{check_set_id(set_id)}/"


def manifest_path(set_id: str) -> str:
    """``sets/<set_id>/manifest.json``."""
    return set_prefix(set_id) + MANIFEST


def artifact_path(set_id: str, target: str, name: str) -> str:
    """The storage name of an artifact: ``sets/<set_id>/<target>/<name>.zst``."""
    return f"{set_prefix(set_id)}{_part(target)}/{check_name(name)}{ARTIFACT_SUFFIX}"


def _part(segment: str) -> str:
    """One name segment (a target name): no ``/``, nothing ``check_name`` refuses."""
    if isinstance(segment, str) and "/" in segment:
        raise StorageError(f"storage name part {shown(segment)}: holds a '/'")
    return check_name(segment)


def set_of(name: str) -> str | None:
    """The set id of any name under ``sets/<set id>/`` (a listing), else None."""
    if not name.startswith(SETS):
        return None
    set_id, slash, rest = name[len(SETS) :].partition("/")
    return set_id if slash and rest and is_set_id(set_id) else None


def parse_manifest_path(name: str) -> str | None:
    """The set id if ``name`` is exactly ``sets/<set id>/manifest.json``, else None."""
    set_id = set_of(name)
    return set_id if set_id is not None and name == manifest_path(set_id) else None


@dataclass(frozen=True)
class ArtifactName:
    set_id: str
    target: str
    name: str


def parse_artifact_path(name: str) -> ArtifactName | None:
    """The parts of ``sets/<set id>/<target>/<artifact>.zst`` (the artifact may hold
    ``/``: a Cassandra node's files), or None if ``name`` is not exactly one."""
    set_id = set_of(name)
    if set_id is None or not name.endswith(ARTIFACT_SUFFIX):
        return None
    target, _, artifact = name[len(set_prefix(set_id)) : -len(ARTIFACT_SUFFIX)].partition("/")
    try:
        if artifact and artifact_path(set_id, target, artifact) == name:
            return ArtifactName(set_id, target, artifact)
    except TxbackupError:
        pass
    return None


# -- tombstones of forgotten sets ---------------------------------------------------------------------
def tombstone_path(set_id: str) -> str:
    """``trash/<set_id>.json``."""
    return f"{TRASH}{check_set_id(set_id)}.json"


def parse_tombstone_path(name: str) -> str | None:
    """The set id if ``name`` is exactly ``trash/<set id>.json``, else None."""
    if not (name.startswith(TRASH) and name.endswith(".json")):
        return None
    set_id = name[len(TRASH) : -len(".json")]
    return set_id if is_set_id(set_id) else None


# -- locks --------------------------------------------------------------------------------------------
def new_lock_id(now: datetime) -> str:
    """``20261127T101500123Z-3f9a0c1d``: time to the millisecond, then random."""
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def lock_path(lock_id: str) -> str:
    """``locks/<lock id>.json``."""
    if not isinstance(lock_id, str) or not _LOCK_ID.fullmatch(lock_id):
        raise UsageError(f"lock id {shown(lock_id)}: not a lock id")
    return f"{LOCKS}{lock_id}.json"


def parse_lock_path(name: str) -> str | None:
    """The lock id if ``name`` is exactly ``locks/<lock id>.json``, else None."""
    if not (name.startswith(LOCKS) and name.endswith(".json")):
        return None
    lock_id = name[len(LOCKS) : -len(".json")]
    return lock_id if _LOCK_ID.fullmatch(lock_id) else None


# -- keys (encrypted repositories) -------------------------------------------------------------------
def key_path(key_id: str) -> str:
    """``keys/<key id>`` (16 hex digits)."""
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise UsageError(f"key id {shown(key_id)}: not a key id (16 hex digits, see txbackup key list)")
    return f"{KEYS}{key_id}"


def parse_key_path(name: str) -> str | None:
    """The key id if ``name`` is exactly ``keys/<key id>``, else None."""
    key_id = name[len(KEYS) :] if name.startswith(KEYS) else ""
    return key_id if _KEY_ID.fullmatch(key_id) else None


# -- the Cassandra blob store -------------------------------------------------------------------------
def store_prefix(cluster_name: str) -> str:
    """The store of one Cassandra cluster: ``cassandra/<cluster>/sstables`` (a cluster
    name is reduced to a safe segment: it comes from the database)."""
    safe = _CLUSTER_UNSAFE.sub("_", cluster_name).strip("._") or "cluster"
    return f"{CASSANDRA}{safe[:200]}/sstables"


def is_store(store: object) -> bool:
    if not isinstance(store, str) or not store.startswith(CASSANDRA) or not store.endswith("/sstables"):
        return False
    cluster = store[len(CASSANDRA) : -len("/sstables")]
    return _CLUSTER.fullmatch(cluster) is not None and cluster.strip("._") == cluster


def blob_name(store: str, sha256: str) -> str:
    """``<store>/<sha256>``; both come from a set's position and file lists (untrusted),
    so the store must have the shape ``store_prefix`` gives and the digest be one."""
    if not is_store(store):
        raise IntegrityError(f"{shown(store)} is not a blob store (cassandra/<cluster>/sstables)")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise IntegrityError(f"{shown(sha256)} is not a SHA-256")
    return check_name(f"{store}/{sha256}")


def parse_blob_name(name: str) -> tuple[str, str] | None:
    """``(store, sha256)`` if ``name`` is exactly a blob's name, else None."""
    store, _, sha = name.rpartition("/")
    return (store, sha) if is_store(store) and _SHA256.fullmatch(sha) else None


def probe_name() -> str:
    """A fresh name under ``cassandra/.probe/`` for an agent's write test."""
    return f"{PROBES}{uuid.uuid4().hex}"


def name_ok(name: str) -> bool:
    """``name`` is one of the names above (the repository's whole vocabulary)."""
    return name_problem(name) is None and (
        name == CONFIG
        or parse_manifest_path(name) is not None
        or parse_artifact_path(name) is not None
        or parse_lock_path(name) is not None
        or parse_tombstone_path(name) is not None
        or parse_key_path(name) is not None
        or parse_blob_name(name) is not None
    )
