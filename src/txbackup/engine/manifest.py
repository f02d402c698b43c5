"""The backup-set manifest: what a set holds, where, with which checksums.

It is written last, to ``sets/<set_id>/manifest.json``, and only for a
complete set: a set without a manifest does not exist. JSON, format 1::

    {"format_version": 1, "set_id": ..., "status": "complete",
     "created_at": ..., "finished_at": ..., "pause": {...},
     "applications": [...], "timings": {...}, "targets": [...],
     "repository_id": ...}

``repository_id`` (optional: absent in sets of a storage that had no
repository config yet) is the id of the repository the set was made in
(``repository.config``). The object names come from ``repository.layout``.

Times are UTC ISO-8601 strings with milliseconds (``txbackup.clock.iso_ms``).

A manifest read back is untrusted input: whoever can write to the storage can
rewrite it, checksums included. ``read_manifest`` refuses, before anything is
read or written on its behalf, a manifest larger than ``MAX_MANIFEST_BYTES`` or
nested deeper than ``MAX_DEPTH``, duplicate JSON keys, unknown fields, wrong
types (sizes are non-negative integers, never booleans; checksums 64 lowercase
hex digits), unknown target kinds, duplicate targets or artifacts, and any
artifact whose name does not fit its kind's layout (``txbackup.targets.layouts``)
or whose storage path is not the one derived from its name, and a restore point
(``targets.sql.restore_points``) with artifacts or a field of the wrong syntax. The engine checks
the same again on the ``Manifest`` it is given (``check_manifest``).

In an encrypted repository (``repository.crypto``) the same JSON is stored as
an age file: ``write_manifest`` needs only the repository's public recipient,
``read_manifest`` and ``list_manifests`` its unlocked ``Keyring`` (keyword
``keyring``); without one they raise ``KeyRequired`` naming the flags, and a
plaintext manifest found there is refused as planted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from txbackup import strictjson
from txbackup.clock import epoch_ms
from txbackup.errors import IntegrityError, UsageError
from txbackup.repository import layout
from txbackup.repository.config import is_repository_id, read_config
from txbackup.repository.crypto import KEY_FLAGS, KeyRequired, Keyring, is_sealed, seal, unseal
from txbackup.repository.layout import artifact_path as artifact_path  # the names live in layout
from txbackup.repository.layout import check_set_id as check_set_id
from txbackup.repository.layout import is_set_id
from txbackup.repository.layout import manifest_path as manifest_path
from txbackup.repository.layout import new_set_id as new_set_id
from txbackup.repository.layout import set_prefix as set_prefix
from txbackup.safepaths import name_problem, shown
from txbackup.storage.base import Storage, load_bytes, save_bytes
from txbackup.strictjson import MAX_DEPTH  # a manifest needs about 8 levels
from txbackup.targets.layouts import LAYOUTS
from txbackup.targets.sql.restore_points import KINDS as POINT_KINDS
from txbackup.targets.sql.restore_points import check_position, is_point

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
STATUS = "complete"
"""The only status a manifest has: it is written once the set is complete."""

MAX_MANIFEST_BYTES = 64 << 20
"""A larger manifest is refused before it is parsed (a big Cassandra ring is a few MB)."""
SEAL_OVERHEAD = 64 << 10
"""What age adds to an encrypted manifest, at most (a header and 16 bytes per 64 KiB)."""
MAX_SIZE = (1 << 63) - 1
"""The largest byte count a manifest may record."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
T = TypeVar("T")


@dataclass(frozen=True)
class ArtifactRecord:
    """One stored artifact: sizes and SHA-256 of the data and of the stored file."""

    name: str
    path: str
    size: int
    sha256: str
    stored_size: int
    stored_sha256: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtifactRecord:
        _only(data, _keys(cls), "artifact")
        return cls(
            name=_get(data, "name", str),
            path=_get(data, "path", str),
            size=_size(data, "size"),
            sha256=_sha256(data, "sha256"),
            stored_size=_size(data, "stored_size"),
            stored_sha256=_sha256(data, "stored_sha256"),
        )


@dataclass(frozen=True)
class PauseWindow:
    """When the applications were paused; the midpoint is the restore point.

    Each time is kept twice: UTC ISO-8601 (``started_at``) and epoch milliseconds
    (``started_at_ms``, what point-in-time-restore services take). Sets written
    before the ``*_ms`` fields existed are read as before: the fields are derived
    from the ISO times; when present they must agree with them.
    """

    started_at: str | None = None
    ended_at: str | None = None
    midpoint: str | None = None
    # endpoints whose pause could not be checked before the unpause (older servers
    # without CheckPaused): the window is assumed there, not verified
    unverified: list[str] = field(default_factory=list)
    started_at_ms: int | None = None
    ended_at_ms: int | None = None
    midpoint_ms: int | None = None

    def __post_init__(self) -> None:
        for name in _WINDOW_TIMES:
            iso = getattr(self, name)
            if iso is not None and getattr(self, f"{name}_ms") is None:
                object.__setattr__(self, f"{name}_ms", _iso_ms(iso))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PauseWindow:
        _only(data, _keys(cls), "pause")
        unverified = data.get("unverified", [])
        if not isinstance(unverified, list) or not all(
            isinstance(a, str) and len(a) <= 1024 for a in unverified
        ):
            raise ValueError("field 'unverified' must be a list of strings")
        times = {name: _optional_time(data, name) for name in _WINDOW_TIMES}
        millis: dict[str, int | None] = {}
        for name, iso in times.items():
            key = f"{name}_ms"
            if data.get(key) is None:
                millis[key] = None
                continue
            value = _get(data, key, int)
            if iso is None or value != _iso_ms(iso):
                raise ValueError(f"field {key!r} ({shown(value)}) does not match {name!r} ({shown(iso)})")
            millis[key] = value
        return cls(
            started_at=times["started_at"],
            ended_at=times["ended_at"],
            midpoint=times["midpoint"],
            unverified=list(unverified),
            started_at_ms=millis["started_at_ms"],
            ended_at_ms=millis["ended_at_ms"],
            midpoint_ms=millis["midpoint_ms"],
        )


_WINDOW_TIMES = ("started_at", "ended_at", "midpoint")


def _iso_ms(iso: str) -> int:
    """Epoch ms of a manifest time (checked by ``_time``; naive is UTC)."""
    return epoch_ms(datetime.fromisoformat(iso))


@dataclass(frozen=True)
class Timings:
    """How long each phase took; ``drain_ms`` is pausing (in-flight work finishing)."""

    drain_ms: int = 0
    capture_ms: int = 0
    export_ms: int = 0
    pause_ms: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timings:
        _only(data, _keys(cls), "timings")
        return cls(*(_size(data, key) for key in _keys(cls)))


@dataclass(frozen=True)
class TargetRecord:
    """One target of the set: what it is, the captured position, its artifacts."""

    name: str
    kind: str
    description: dict[str, Any] = field(default_factory=dict)
    position: dict[str, Any] = field(default_factory=dict)
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetRecord:
        _only(data, _keys(cls), "target")
        return cls(
            name=_get(data, "name", str),
            kind=_get(data, "kind", str),
            description=_get(data, "description", dict),
            position=_get(data, "position", dict),
            artifacts=[ArtifactRecord.from_dict(_mapping(a)) for a in _get(data, "artifacts", list)],
            extra=_get(data, "extra", dict),
        )


@dataclass(frozen=True)
class Manifest:
    """A complete backup set."""

    set_id: str
    created_at: str
    finished_at: str
    pause: PauseWindow
    applications: list[str]
    timings: Timings
    targets: list[TargetRecord]
    repository_id: str | None = None
    """The repository the set belongs to (``repository.config``); None in sets written
    before repositories had ids."""

    @property
    def restore_point(self) -> str | None:
        return self.pause.midpoint

    def target(self, name: str) -> TargetRecord:
        for target in self.targets:
            if target.name == name:
                return target
        raise UsageError(f"set {self.set_id}: no target named {name!r}")

    def artifacts(self) -> Iterator[ArtifactRecord]:
        for target in self.targets:
            yield from target.artifacts

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.repository_id is None:
            del data["repository_id"]  # a set of a repository without config, as before
        return {"format_version": FORMAT_VERSION, "set_id": self.set_id, "status": STATUS} | data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], set_id: str | None = None) -> Manifest:
        """Parse and check a manifest (of the set ``set_id`` if given); ValueError names
        the first bad field."""
        version = data.get("format_version")
        if type(version) is not int or version not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported format_version {shown(version)} (expected {FORMAT_VERSION})")
        if data.get("status") != STATUS:
            raise ValueError(f"status {shown(data.get('status'))} is not {STATUS!r}")
        if set_id is not None and data.get("set_id") != set_id:
            raise ValueError(f"records set id {shown(data.get('set_id'))}")
        _only(data, ["format_version", "status", *_keys(cls)], "manifest")
        set_id = _get(data, "set_id", str)
        if not is_set_id(set_id):
            raise ValueError(f"set id {shown(set_id)} is not a backup set id")
        applications = _get(data, "applications", list)
        if not all(isinstance(a, str) and len(a) <= 1024 for a in applications):
            raise ValueError("field 'applications' must be a list of strings")
        manifest = cls(
            set_id=set_id,
            created_at=_time(data, "created_at"),
            finished_at=_time(data, "finished_at"),
            pause=PauseWindow.from_dict(_get(data, "pause", dict)),
            applications=applications,
            timings=Timings.from_dict(_get(data, "timings", dict)),
            targets=[TargetRecord.from_dict(_mapping(t)) for t in _targets(data)],
            repository_id=_repository_id(data),
        )
        _check_contents(manifest)
        return manifest


def check_manifest(manifest: Manifest) -> None:
    """Refuse (IntegrityError naming the set, target and artifact) a manifest whose
    targets or artifacts could make a restore read or write elsewhere than its own
    place: see the module doc. The engine calls it before verify and restore."""
    try:
        _check_contents(manifest)
    except ValueError as exc:
        label = manifest.set_id if is_set_id(manifest.set_id) else shown(manifest.set_id)
        raise IntegrityError(f"set {label}: {exc}") from None


def _check_contents(manifest: Manifest) -> None:
    if not is_set_id(manifest.set_id):
        raise ValueError(f"set id {shown(manifest.set_id)} is not a backup set id")
    seen: set[str] = set()
    for target in manifest.targets:
        problem = name_problem(target.name)
        if problem is None and "/" in target.name:
            problem = "holds a '/'"
        if problem is not None:
            raise ValueError(f"target name {shown(target.name)} {problem}")
        if target.name in seen:
            raise ValueError(f"target {shown(target.name)} appears twice")
        seen.add(target.name)
        layout = LAYOUTS.get(target.kind)
        if layout is None:
            known = ", ".join(sorted(LAYOUTS))
            kind = shown(target.kind)
            raise ValueError(f"target {shown(target.name)}: unknown kind {kind} (known: {known})")
        if target.kind in POINT_KINDS and is_point(target.position):
            # a restore point: no artifact, and fields that end up in commands users paste
            try:
                check_position(target.kind, target.position, len(target.artifacts))
            except ValueError as exc:
                raise ValueError(f"target {shown(target.name)} ({target.kind}): {exc}") from None
        names: set[str] = set()
        for artifact in target.artifacts:
            culprit = f"target {shown(target.name)} ({target.kind}): artifact {shown(artifact.name)}"
            problem = name_problem(artifact.name)
            if problem is not None:
                raise ValueError(f"{culprit} {problem}")
            if not layout.fits(artifact.name):
                raise ValueError(f"{culprit} is not a {target.kind} artifact (expected {layout.expected})")
            if artifact.name in names:
                raise ValueError(f"{culprit} appears twice")
            names.add(artifact.name)
            expected = artifact_path(manifest.set_id, target.name, artifact.name)
            if artifact.path != expected:
                raise ValueError(f"{culprit} is stored as {shown(artifact.path)}, not {expected!r}")
            for key in ("size", "stored_size"):
                value = getattr(artifact, key)
                if type(value) is not int or not 0 <= value <= MAX_SIZE:
                    raise ValueError(f"{culprit}: {key} {shown(value)} is not a byte count")
            for key in ("sha256", "stored_sha256"):
                if not isinstance(getattr(artifact, key), str) or not _SHA256.match(getattr(artifact, key)):
                    raise ValueError(f"{culprit}: {key} is not 64 lowercase hex digits")


def write_manifest(storage: Storage, manifest: Manifest, *, keyring: Keyring | None = None) -> str:
    """Save the manifest (atomically, last of the set); return its storage name.
    What could not be read back is not written: the set then fails. With the
    ``keyring`` of an encrypted repository it is stored as an age file (its
    public recipient is enough: a backup host writes what it cannot read back).

    A conditional create (``if_absent``) is the set's atomic commit: a manifest
    is never overwritten, so of two runs committing the same set exactly one
    wins (the other gets ``AlreadyExistsError``)."""
    path = manifest_path(manifest.set_id)
    data = json.dumps(manifest.to_dict(), indent=2).encode() + b"\n"
    parse_manifest(data, path, manifest.set_id)
    if keyring is not None:
        data = seal(keyring, data)
    save_bytes(storage, path, data, if_absent=True)
    return path


def read_manifest(storage: Storage, set_id: str, *, keyring: Keyring | None = None) -> Manifest:
    """Load and validate the manifest of ``set_id`` (IntegrityError if malformed).

    In an encrypted repository, pass its unlocked ``keyring`` (``repository.crypto``):
    without one, an encrypted manifest raises ``KeyRequired`` (naming the flags that
    give a key), and a plaintext manifest is refused whatever the keyring (planted:
    txbackup never writes one there; checked against the config when no keyring)."""
    return _read_manifest(storage, set_id, keyring, check_config=keyring is None)


def _read_manifest(storage: Storage, set_id: str, keyring: Keyring | None, check_config: bool) -> Manifest:
    path = manifest_path(set_id)
    limit = MAX_MANIFEST_BYTES + (0 if keyring is None else SEAL_OVERHEAD)
    info = storage.stat(path)
    if info is not None and info.size > limit:
        raise IntegrityError(f"manifest {path}: {info.size} bytes, more than {limit} (refused)")
    data = load_bytes(storage, path, limit)
    if is_sealed(data):
        if keyring is None:
            raise KeyRequired(
                f"manifest {path} is encrypted: reading it needs the repository key: {KEY_FLAGS}"
            )
        data = unseal(keyring, data, f"manifest {path}", MAX_MANIFEST_BYTES)
    elif keyring is not None or (check_config and _encrypted(storage)):
        raise IntegrityError(f"manifest {path}: not encrypted in an encrypted repository (planted? refused)")
    return parse_manifest(data, path, set_id)


def _encrypted(storage: Storage) -> bool:
    config = read_config(storage)
    return config is not None and config.encryption is not None


def parse_manifest(text: bytes, path: str, set_id: str | None = None) -> Manifest:
    """The manifest in ``text`` (read from ``path``), checked, of the set ``set_id`` if
    given; IntegrityError naming ``path``."""
    try:
        data = strictjson.loads(text, max_depth=MAX_DEPTH)
        return Manifest.from_dict(_mapping(data), set_id)
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError included
        problem = " ".join(str(exc).split())[:300]
    raise IntegrityError(f"manifest {path}: {problem}")


def list_set_ids(storage: Storage) -> list[str]:
    """The ids of the sets that have a manifest, oldest first."""
    found = (layout.parse_manifest_path(info.name) for info in storage.iterate(layout.SETS))
    return sorted(set_id for set_id in found if set_id is not None)


def list_manifests(storage: Storage, *, keyring: Keyring | None = None) -> list[Manifest]:
    """Every manifest in storage, oldest first (raises on the first bad one). An
    encrypted repository needs its unlocked ``keyring`` (see ``read_manifest``)."""
    if keyring is None and _encrypted(storage):
        where = storage.describe()
        raise KeyRequired(f"repository {where} is encrypted: reading its sets needs its key: {KEY_FLAGS}")
    return [_read_manifest(storage, set_id, keyring, False) for set_id in list_set_ids(storage)]


def _keys(cls: type[Any]) -> list[str]:
    return list(cls.__dataclass_fields__)


def _targets(data: Mapping[str, Any]) -> list[Any]:
    """The manifest's target records: a set is of at least one target."""
    targets = _get(data, "targets", list)
    if not targets:
        raise ValueError("field 'targets' is empty (a set holds at least one target)")
    return targets


def _only(data: Mapping[str, Any], known: list[str], what: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{what}: unknown field {shown(unknown[0])}")


def _mapping(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, found {type(value).__name__}")
    return value


def _size(data: Mapping[str, Any], key: str) -> int:
    value = _get(data, key, int)
    if not 0 <= value <= MAX_SIZE:
        raise ValueError(f"field {key!r} must be a byte count, found {shown(value)}")
    return value


def _sha256(data: Mapping[str, Any], key: str) -> str:
    value = _get(data, key, str)
    if not _SHA256.match(value):
        raise ValueError(f"field {key!r} must be 64 lowercase hex digits, found {shown(value)}")
    return value


def _time(data: Mapping[str, Any], key: str) -> str:
    value = _get(data, key, str)
    try:
        if len(value) > 40:
            raise ValueError
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"field {key!r} must be an ISO-8601 time, found {shown(value)}") from None
    return value


def _repository_id(data: Mapping[str, Any]) -> str | None:
    if "repository_id" not in data:
        return None
    value = data["repository_id"]
    if not is_repository_id(value):
        raise ValueError(f"field 'repository_id' must be 32 lowercase hex digits, found {shown(value)}")
    return str(value)


def _optional_time(data: Mapping[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _time(data, key)


def _get(data: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"field {key!r} must be {kind.__name__}, found {type(value).__name__}")
    return value
