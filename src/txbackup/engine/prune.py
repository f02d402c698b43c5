"""Forgetting sets and collecting garbage: what ``forget``, ``delete`` and ``prune`` do.

**Forget** (one set; ``txbackup forget`` applies a retention policy, ``txbackup
delete`` names the set), under a ``shared`` lock (it only takes references
away, which never harms a running backup):

1. if the set owns something outside the repository (``targets.base.OUTSIDE``:
   DynamoDB on-demand backups), its tombstone ``trash/<set>.json`` is written
   first, recording those targets' positions: once the manifest is gone, the
   tombstone is the only place that remembers them;
2. the manifest is removed: the set stops existing (a crash from here on leaves
   no set that looks complete);
3. its own folder ``sets/<set>/`` (its artifacts, which no other set uses) is
   removed at once: nothing is gained by leaving it to prune. Shared Cassandra
   blobs are prune's job: only prune knows no set references them;
4. its catalog row is deleted;
5. what it owns outside is discarded through the target's ``discard``; on
   success the tombstone goes. On failure (AWS unreachable, the target not in
   the cluster file) it stays, is reported, and every later prune retries.

A set whose manifest is under retention (S3 Object Lock) is **kept**, and
reported "retained until ..." (never a failure that stops the others).

**Prune**, under an ``exclusive`` lock (no backup, forget or cleanup runs):

- tombstones are retried (a tombstone whose set still has its manifest is from
  a forget that died before step 2: the set exists, and the tombstone goes);
- set folders without a manifest whose newest object is older than the grace
  period are removed (a forget cut after step 2, a backup killed that cleanup
  has not seen, or a backup of another host whose lock was broken);
- content-addressed Cassandra blobs no manifest references are removed once
  older than the grace period. Every manifest and every Cassandra file list is
  read first; if any cannot be read, no blob is removed (its references are
  unknown).

Why a grace period although prune holds the exclusive lock: the lock protects
against every backup that takes it; the grace (default 24 h, as kopia's
minimum content age) protects what the lock cannot: a backup whose lock was
broken by hand, or a host whose clock or network made its lock look stale.
It must exceed the longest upload of one backup. It does not protect a blob a
broken-lock backup *reused* (found already stored, so not re-uploaded): only
the lock does (Medusa #363).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from txbackup import strictjson
from txbackup.catalog import Catalog
from txbackup.clock import as_utc, iso_ms, utc_now
from txbackup.engine.artifacts import SetReader
from txbackup.engine.manifest import SEAL_OVERHEAD, Manifest, list_set_ids, read_manifest
from txbackup.engine.retention import Item
from txbackup.errors import RetainedError, StorageError, TxbackupError
from txbackup.locks import StorageLock
from txbackup.repository import layout
from txbackup.repository.crypto import Keyring, is_sealed, seal, unseal
from txbackup.safepaths import shown
from txbackup.storage.base import Storage, load_bytes, save_bytes
from txbackup.targets.base import Recorded, Target, owned_outside
from txbackup.targets.references import blob_references

GRACE_S = 24 * 3600.0
"""Unreferenced blobs and manifest-less set folders younger than this are left alone."""
MAX_TOMBSTONE_BYTES = 4 << 20
TOMBSTONE_FORMAT = 1
CHECK_EVERY = 200
"""Deletions between two checks that our lock still holds."""

Say = Callable[[str], None]


def set_time(manifest: Manifest) -> datetime:
    """The time a retention policy judges a set by: its restore point, else its start."""
    text = manifest.restore_point or manifest.created_at
    return as_utc(datetime.fromisoformat(text))


def policy_items(manifests: Iterable[Manifest]) -> list[Item]:
    return [Item(m.set_id, set_time(m)) for m in manifests]


def _until(storage: Storage, name: str, exc: BaseException | None = None) -> str:
    """When the retention of ``name`` ends, as the storage says (for "kept: retained until")."""
    try:
        info = storage.stat(name)
    except TxbackupError:
        info = None
    if info is not None and info.retain_until is not None:
        return iso_ms(datetime.fromtimestamp(info.retain_until, UTC))
    return "a date the storage did not say" if exc is None else str(exc)


@dataclass
class Report:
    """What forget and prune did, kept, could not do (one entry each)."""

    dry_run: bool = False
    forgotten: list[str] = field(default_factory=list)
    retained: list[tuple[str, str]] = field(default_factory=list)
    """(object or set, until when)"""
    discarded: list[tuple[str, str, list[str]]] = field(default_factory=list)
    """(set, target, what was deleted outside)"""
    pending: list[tuple[str, str, str]] = field(default_factory=list)
    """(set, target, why): kept in the tombstone for the next prune"""
    sets_removed: list[str] = field(default_factory=list)
    blobs_removed: int = 0
    blobs_kept_young: int = 0
    blobs_referenced: int = 0
    objects_removed: int = 0
    bytes_removed: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "forgotten": self.forgotten,
            "retained": [{"name": n, "until": u} for n, u in self.retained],
            "discarded": [{"set_id": s, "target": t, "deleted": d} for s, t, d in self.discarded],
            "pending": [{"set_id": s, "target": t, "reason": r} for s, t, r in self.pending],
            "sets_removed": self.sets_removed,
            "blobs_removed": self.blobs_removed,
            "blobs_kept_young": self.blobs_kept_young,
            "blobs_referenced": self.blobs_referenced,
            "objects_removed": self.objects_removed,
            "bytes_removed": self.bytes_removed,
            "problems": self.problems,
        }

    def lines(self) -> list[str]:
        would = "would remove" if self.dry_run else "removed"
        return [
            *(f"kept {n}: retained until {u}" for n, u in self.retained),
            *(f"set {s}: {'would delete' if self.dry_run else 'deleted'} outside the repository"
              f" ({t}): {', '.join(d) or 'nothing'}" for s, t, d in self.discarded),
            *(f"set {s}: target {t} still owns something outside the repository: {r}"
              " (kept in its tombstone; the next prune retries)" for s, t, r in self.pending),
            f"{would} {self.objects_removed} objects ({self.bytes_removed} bytes): "
            f"{len(self.sets_removed)} set folders without a manifest, {self.blobs_removed} unreferenced"
            f" blobs; kept {self.blobs_referenced} referenced and {self.blobs_kept_young} younger than"
            " the grace period",
        ]  # fmt: skip


# -- tombstones -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Owned:
    """A target of a forgotten set that owns something outside the repository."""

    name: str
    kind: str
    description: Mapping[str, Any]
    position: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": dict(self.description),
                "position": dict(self.position)}  # fmt: skip


def owned_of(manifest: Manifest) -> list[Owned]:
    return [
        Owned(t.name, t.kind, t.description, t.position)
        for t in manifest.targets
        if owned_outside(t.kind, t.position)
    ]


def _save_tombstone(
    storage: Storage,
    set_id: str,
    owned: list[Owned],
    error: str | None = None,
    keyring: Keyring | None = None,
) -> None:
    """Write the tombstone (encrypted to the repository's key in an encrypted repository:
    it names tables and their backups, like the manifest it outlives)."""
    doc = {
        "format_version": TOMBSTONE_FORMAT,
        "set_id": set_id,
        "forgotten_at": iso_ms(utc_now()),
        "targets": [o.to_dict() for o in owned],
        "last_error": error,
    }
    data = json.dumps(doc, indent=1).encode()
    save_bytes(storage, layout.tombstone_path(set_id), data if keyring is None else seal(keyring, data))


def read_tombstone(storage: Storage, set_id: str, keyring: Keyring | None = None) -> list[Owned]:
    """The targets a tombstone lists (untrusted: validated; ValueError names the problem)."""
    path = layout.tombstone_path(set_id)
    data = load_bytes(storage, path, MAX_TOMBSTONE_BYTES + SEAL_OVERHEAD)
    if is_sealed(data):
        if keyring is None:
            raise ValueError("encrypted: give the repository's key")
        data = unseal(keyring, data, f"tombstone {path}", MAX_TOMBSTONE_BYTES)
    elif keyring is not None:
        raise ValueError("not encrypted in an encrypted repository (planted?)")
    doc = strictjson.loads(data)
    if not isinstance(doc, dict) or doc.get("format_version") != TOMBSTONE_FORMAT:
        raise ValueError(f"not a tombstone of format {TOMBSTONE_FORMAT}")
    if doc.get("set_id") != set_id:
        raise ValueError("its set_id does not match its name")
    targets = doc.get("targets")
    if not isinstance(targets, list):
        raise ValueError("targets is not a list")
    found = []
    for i, entry in enumerate(targets):
        if not isinstance(entry, dict):
            raise ValueError(f"targets[{i}] is not an object")
        name, kind = entry.get("name"), entry.get("kind")
        description, position = entry.get("description"), entry.get("position")
        if not isinstance(name, str) or not isinstance(kind, str) or len(name) > 200 or len(kind) > 40:
            raise ValueError(f"targets[{i}]: bad name or kind")
        if not isinstance(description, dict) or not isinstance(position, dict):
            raise ValueError(f"targets[{i}]: description and position must be objects")
        found.append(Owned(name, kind, description, position))
    return found


def _label(text: str) -> str:
    """A name read from a tombstone, for a one-line message (quoted only when odd)."""
    return text if text.isprintable() and len(text) <= 80 else shown(text, 80)


def _discard(
    storage: Storage,
    set_id: str,
    owned: list[Owned],
    targets: Mapping[str, Target],
    report: Report,
    keyring: Keyring | None = None,
) -> None:
    """Discard what the set owns outside; the tombstone keeps what could not be."""
    left: list[Owned] = []
    errors = []
    for entry in owned:
        target = targets.get(entry.name)
        discard = getattr(target, "discard", None)
        what = f"{_label(entry.name)} ({_label(entry.kind)})"
        if target is None or target.kind != entry.kind or discard is None:
            why = (
                f"no {entry.kind} target named {shown(entry.name, 80)} in the cluster file"
                " (give --config FILE with it)"
            )
            report.pending.append((set_id, what, why))
            left.append(entry)
            continue
        if report.dry_run:
            report.discarded.append((set_id, what, owned_outside(entry.kind, entry.position)))
            continue
        try:
            done = discard(Recorded((), entry.position, entry.description))
            report.discarded.append((set_id, what, [str(d) for d in done]))
        except TxbackupError as exc:
            report.pending.append((set_id, what, str(exc)))
            errors.append(str(exc))
            left.append(entry)
    if report.dry_run:
        return
    if left:
        _save_tombstone(storage, set_id, left, "; ".join(errors) or None, keyring)
    else:
        storage.remove(layout.tombstone_path(set_id))


def retry_tombstones(
    storage: Storage,
    targets: Mapping[str, Target],
    report: Report,
    say: Say = lambda _: None,
    keyring: Keyring | None = None,
) -> None:
    """Discard what forgotten sets still own outside (see the module doc)."""
    for info in list(storage.iterate(layout.TRASH)):
        set_id = layout.parse_tombstone_path(info.name)
        if set_id is None:
            report.problems.append(f"{shown(info.name)}: not a tombstone name (left alone)")
            continue
        if storage.stat(layout.manifest_path(set_id)) is not None:
            say(f"set {set_id} exists again: its tombstone is from a forget that died before it; removed")
            if not report.dry_run:
                storage.remove(info.name)
            continue
        try:
            owned = read_tombstone(storage, set_id, keyring)
        except (ValueError, TxbackupError) as exc:
            report.problems.append(f"tombstone {info.name}: {exc} (left alone: remove it by hand)")
            continue
        say(f"set {set_id}: retrying what it owns outside the repository")
        try:
            _discard(storage, set_id, owned, targets, report, keyring)
        except TxbackupError as exc:  # the tombstone could not be rewritten or removed
            report.problems.append(f"tombstone {info.name}: {exc}")


# -- forget ---------------------------------------------------------------------------------------------
def forget_set(
    storage: Storage,
    catalog: Catalog,
    manifest: Manifest,
    targets: Mapping[str, Target],
    report: Report,
    keyring: Keyring | None = None,
) -> None:
    """Forget one set (see the module doc); what was done goes into ``report``; ``keyring``:
    an encrypted repository's (its tombstone is encrypted like its manifest)."""
    set_id = manifest.set_id
    path = layout.manifest_path(set_id)
    info = storage.stat(path)
    if info is not None and info.retain_until is not None and info.retain_until > time.time():
        report.retained.append((f"set {set_id}", _until(storage, path)))
        return
    owned = owned_of(manifest)
    if report.dry_run:
        report.forgotten.append(set_id)
        _discard(storage, set_id, owned, targets, report, keyring)
        return
    if owned:
        _save_tombstone(storage, set_id, owned, keyring=keyring)
    try:
        storage.remove(path)
    except RetainedError as exc:
        if owned:
            storage.remove(layout.tombstone_path(set_id))
        report.retained.append((f"set {set_id}", _until(storage, path, exc)))
        return
    report.forgotten.append(set_id)
    try:
        storage.remove_prefix(layout.set_prefix(set_id))
    except RetainedError as exc:
        # the set is gone (no manifest); prune removes its folder once the retention ends
        report.retained.append((f"artifacts of set {set_id}", str(exc)))
    except TxbackupError as exc:
        report.problems.append(f"set {set_id}: forgotten, but its files stay until a prune: {exc}")
    catalog.delete(set_id)  # the set no longer exists, whatever is left of its files
    if owned:
        _discard(storage, set_id, owned, targets, report, keyring)


# -- prune ----------------------------------------------------------------------------------------------
def referenced_blobs(
    storage: Storage, manifests: Iterable[Manifest], keyring: Keyring | None = None
) -> set[str]:
    """The names of every blob a set references, asked of each target kind through
    ``targets.references`` (the one answer ``verify`` uses too: Cassandra's node file
    lists). Raises (naming the set and target) when a reference cannot be read or is
    malformed: prune must then remove no blob."""
    names: set[str] = set()
    for manifest in manifests:
        for target in manifest.targets:
            if not target.position:
                continue  # references live in the position (a store and its nodes' lists)
            reader = SetReader(
                storage, manifest.set_id, target.name, target.artifacts, position=target.position,
                keyring=keyring,
            )
            label = f"set {manifest.set_id}: target {shown(target.name, 80)}"
            for ref in blob_references(target.kind, reader, label):
                try:
                    names.add(ref.name)
                except TxbackupError as exc:  # a digest or store that is not one
                    raise TxbackupError(f"{label}: {ref.what}: {exc}") from None
    return names


def prune(
    storage: Storage,
    lock: StorageLock,
    targets: Mapping[str, Target],
    *,
    grace_s: float = GRACE_S,
    dry_run: bool = False,
    say: Say = lambda _: None,
    report: Report | None = None,
    gone: Collection[str] = (),
    keyring: Keyring | None = None,
) -> Report:
    """Collect the garbage of ``storage`` (see the module doc); ``lock`` must be an
    exclusive lock we hold. Every step goes on when another fails (``problems``).
    ``gone``: sets a dry-run forget would have forgotten (counted as forgotten).
    ``keyring``: an encrypted repository's (its manifests and file lists are read)."""
    report = report or Report(dry_run=dry_run)
    lock.check()
    cutoff = time.time() - grace_s
    counter = [0]

    def remove(name: str, size: int) -> bool:
        """Remove one object (or count it, dry run); False when retention keeps it."""
        if not dry_run:
            counter[0] += 1
            if counter[0] % CHECK_EVERY == 0:
                lock.check()  # never delete on after another process may have taken over
            try:
                storage.remove(name)
            except RetainedError as exc:
                report.retained.append((name, _until(storage, name, exc)))
                return False
        report.objects_removed += 1
        report.bytes_removed += size
        return True

    try:
        retry_tombstones(storage, targets, report, say, keyring)
    except TxbackupError as exc:
        report.problems.append(f"tombstones: {exc}")

    say("listing sets")
    folders: dict[str, list[tuple[str, int, float]]] = {}
    for info in storage.iterate(layout.SETS):
        set_id = layout.set_of(info.name)
        if set_id is not None:
            folders.setdefault(set_id, []).append((info.name, info.size, info.mtime))
    complete = set(list_set_ids(storage)) - set(gone)
    for set_id, objects in sorted(folders.items()):
        if set_id in complete or set_id in gone or max(m for _, _, m in objects) > cutoff:
            continue
        say(f"set folder sets/{set_id}/ has no manifest and is older than the grace period: removing")
        kept = [name for name, size, _ in objects if not remove(name, size)]
        if not kept:
            report.sets_removed.append(set_id)

    say(f"reading {len(complete)} manifests and their Cassandra file lists")
    try:
        manifests = [read_manifest(storage, set_id, keyring=keyring) for set_id in sorted(complete)]
        referenced = referenced_blobs(storage, manifests, keyring)
    except TxbackupError as exc:
        report.problems.append(f"no blob removed: the references of every set must be known first: {exc}")
        return report

    say("listing blobs")
    for info in storage.iterate(layout.CASSANDRA):
        if info.name.startswith(layout.PROBES):
            if info.mtime < cutoff:
                remove(info.name, info.size)
            continue
        if layout.parse_blob_name(info.name) is None:
            continue  # not ours to judge
        if info.name in referenced:
            report.blobs_referenced += 1
        elif info.mtime > cutoff:
            report.blobs_kept_young += 1
        elif remove(info.name, info.size):
            report.blobs_removed += 1
            if report.blobs_removed % 1000 == 0:
                say(f"{report.blobs_removed} unreferenced blobs removed")
    lock.check()
    return report


def forget_all(
    storage: Storage,
    catalog: Catalog,
    manifests: Iterable[Manifest],
    targets: Mapping[str, Target],
    report: Report,
    say: Say = lambda _: None,
    keyring: Keyring | None = None,
) -> None:
    """Forget each set; one failing is a problem, the others go on."""
    for manifest in manifests:
        say(f"{'would forget' if report.dry_run else 'forgetting'} set {manifest.set_id}")
        try:
            forget_set(storage, catalog, manifest, targets, report, keyring)
        except (TxbackupError, StorageError) as exc:
            report.problems.append(f"set {manifest.set_id}: {exc}")
