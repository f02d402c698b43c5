"""The backup-set manifest: what a set holds, where, with which checksums.

It is written last, to ``sets/<set_id>/manifest.json``, and only for a
complete set: a set without a manifest does not exist. JSON, format 1::

    {"format_version": 1, "set_id": ..., "status": "complete",
     "created_at": ..., "finished_at": ..., "pause": {...},
     "applications": [...], "timings": {...}, "targets": [...]}

Times are UTC ISO-8601 strings with milliseconds (``txbackup.clock.iso_ms``).
"""

from __future__ import annotations

import io
import json
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from txbackup.clock import as_utc
from txbackup.errors import IntegrityError, UsageError
from txbackup.storage.base import Storage

FORMAT_VERSION = 1
STATUS = "complete"
"""The only status a manifest has: it is written once the set is complete."""

_SET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
T = TypeVar("T")


def new_set_id(now: datetime) -> str:
    """A sortable, unique set id such as ``20261127T101500Z-3f9a`` (naive = UTC)."""
    return f"{as_utc(now):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def check_set_id(set_id: str) -> str:
    """Return ``set_id`` if it can name a set folder, else raise UsageError."""
    if not isinstance(set_id, str) or not _SET_ID.fullmatch(set_id):
        raise UsageError(f"set id {set_id[:140]!r}: not a backup set id (like 20261127T101500Z-3f9a)")
    return set_id


def set_prefix(set_id: str) -> str:
    """The storage folder of a set: ``sets/<set_id>/``."""
    return f"sets/{check_set_id(set_id)}/"


def manifest_path(set_id: str) -> str:
    return set_prefix(set_id) + "manifest.json"


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
        return cls(
            name=_get(data, "name", str),
            path=_get(data, "path", str),
            size=_get(data, "size", int),
            sha256=_get(data, "sha256", str),
            stored_size=_get(data, "stored_size", int),
            stored_sha256=_get(data, "stored_sha256", str),
        )


@dataclass(frozen=True)
class PauseWindow:
    """When the applications were paused; the midpoint is the restore point."""

    started_at: str | None = None
    ended_at: str | None = None
    midpoint: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PauseWindow:
        return cls(*(_optional(data, key, str) for key in _keys(cls)))


@dataclass(frozen=True)
class Timings:
    """How long each phase took; ``drain_ms`` is pausing (in-flight work finishing)."""

    drain_ms: int = 0
    capture_ms: int = 0
    export_ms: int = 0
    pause_ms: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timings:
        return cls(*(_get(data, key, int) for key in _keys(cls)))


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
        return {"format_version": FORMAT_VERSION, "set_id": self.set_id, "status": STATUS} | data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Parse a manifest; ValueError names the first bad field."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {version!r} (expected {FORMAT_VERSION})")
        if data.get("status") != STATUS:
            raise ValueError(f"status {data.get('status')!r} is not {STATUS!r}")
        applications = _get(data, "applications", list)
        if not all(isinstance(a, str) for a in applications):
            raise ValueError("field 'applications' must be a list of strings")
        return cls(
            set_id=_get(data, "set_id", str),
            created_at=_get(data, "created_at", str),
            finished_at=_get(data, "finished_at", str),
            pause=PauseWindow.from_dict(_get(data, "pause", dict)),
            applications=applications,
            timings=Timings.from_dict(_get(data, "timings", dict)),
            targets=[TargetRecord.from_dict(_mapping(t)) for t in _get(data, "targets", list)],
        )


def write_manifest(storage: Storage, manifest: Manifest) -> str:
    """Save the manifest (atomically, last of the set); return its storage name."""
    path = manifest_path(manifest.set_id)
    data = json.dumps(manifest.to_dict(), indent=2).encode() + b"\n"
    storage.save(path, io.BytesIO(data))
    return path


def read_manifest(storage: Storage, set_id: str) -> Manifest:
    """Load and validate the manifest of ``set_id`` (IntegrityError if malformed)."""
    path = manifest_path(set_id)
    with storage.load(path) as stream:
        text = stream.read()
    try:
        manifest = Manifest.from_dict(_mapping(json.loads(text)))
    except ValueError as exc:
        raise IntegrityError(f"manifest {path}: {exc}") from exc
    if manifest.set_id != set_id:
        raise IntegrityError(f"manifest {path}: records set id {manifest.set_id!r}")
    return manifest


def list_set_ids(storage: Storage) -> list[str]:
    """The ids of the sets that have a manifest, oldest first."""
    ids = []
    for name in storage.list("sets/"):
        parts = name.split("/")
        if len(parts) == 3 and parts[2] == "manifest.json" and _SET_ID.match(parts[1]):
            ids.append(parts[1])
    return sorted(ids)


def list_manifests(storage: Storage) -> list[Manifest]:
    """Every manifest in storage, oldest first (raises on the first bad one)."""
    return [read_manifest(storage, set_id) for set_id in list_set_ids(storage)]


def _keys(cls: type[Any]) -> list[str]:
    return list(cls.__dataclass_fields__)


def _mapping(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, found {type(value).__name__}")
    return value


def _optional(data: Mapping[str, Any], key: str, kind: type[T]) -> T | None:
    return None if data.get(key) is None else _get(data, key, kind)


def _get(data: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"field {key!r} must be {kind.__name__}, found {type(value).__name__}")
    return value

