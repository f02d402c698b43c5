"""``txbackup verify``: check a set at one of two levels, its artifacts and the blobs it references.

**Plain** (the default, cheap): every artifact of the manifest and every blob the
set references (``targets.references``: a Cassandra set's SSTables) is present
with the recorded stored size, and where the backend keeps a SHA-256 of the
stored bytes that we recorded too (``ObjectInfo.sha256``: S3 objects written in
one PutObject) the two must match. One ``stat`` per object, no data downloaded;
only a Cassandra set's small file lists (``nodes/<address>.json``) are read,
since they are what names its blobs. This catches a missing, truncated or
replaced object, not a flipped byte in an object whose digest the backend
does not keep: that takes the next level.

**Read data** (``read_data``): every object is read back through the codec
(``repository.codec``: decompressed, and decrypted once encryption lands) and
checked against its recorded sizes and SHA-256s, the blobs against their names.
``subset`` (a fraction, restic's ``--read-data-subset``) reads a random part of
the objects and stats the others: a few runs cover the whole repository.

Nothing raises for a bad object: each problem is one line naming it, and every
object is checked. A manifest that names artifacts outside its layout, or a set
of another repository, is refused whole first (``IntegrityError``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from txbackup.agent.blobs import BlobRef, stat_blob, verify_blob
from txbackup.engine.artifacts import SetReader, check_belongs, stat_artifact, verify_artifact
from txbackup.engine.manifest import ArtifactRecord, Manifest, check_manifest
from txbackup.errors import TxbackupError
from txbackup.repository.crypto import Keyring
from txbackup.storage.base import Storage
from txbackup.targets.references import blob_references

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: stored bytes read so far, of those to read."""


@dataclass
class Verified:
    """What a verify checked and found."""

    set_id: str
    level: str
    """``plain``, ``read-data`` or ``read-data-subset``."""
    artifacts: int = 0
    blobs: int = 0
    read: int = 0
    """Objects read back and checked in full."""
    checksums: int = 0
    """Objects (not read) whose stored SHA-256, kept by the backend, matched the record."""
    bytes_read: int = 0
    problems: list[str] = field(default_factory=list)


def set_blobs(
    storage: Storage, manifest: Manifest, problems: list[str], keyring: Keyring | None = None
) -> list[BlobRef]:
    """The blobs the set references, each once (the first file naming it names it in
    messages); a target whose references cannot be read adds a problem line."""
    found: dict[str, BlobRef] = {}
    for record in manifest.targets:
        reader = SetReader(
            storage, manifest.set_id, record.name, record.artifacts, position=record.position, keyring=keyring
        )
        label = f"set {manifest.set_id}: target {record.name}"
        try:
            refs = blob_references(record.kind, reader, label)
        except TxbackupError as exc:
            problems.append(str(exc))
            continue
        for ref in refs:
            try:
                name = ref.name
            except TxbackupError as exc:  # a digest or store that is not one: untrusted list
                problems.append(f"{label}: {ref.what}: {exc}")
                continue
            found.setdefault(name, ref)
    return list(found.values())


def verify(
    storage: Storage,
    manifest: Manifest,
    *,
    read_data: bool = False,
    subset: float | None = None,
    progress: ProgressFn | None = None,
    chooser: Callable[[], float] = random.random,
    keyring: Keyring | None = None,
) -> Verified:
    """Verify the set at the level asked (see the module doc); ``subset`` in (0, 1]
    reads about that fraction of the objects (each chosen when ``chooser() < subset``).
    An encrypted repository's ``keyring`` must hold its identity: the Cassandra file
    lists naming the blobs are artifacts, read (decrypted) even by a plain verify."""
    identity = None if keyring is None else keyring.require_identity(f"set {manifest.set_id}")
    check_manifest(manifest)
    check_belongs(storage, manifest)
    level = "read-data" if read_data else "read-data-subset" if subset is not None else "plain"
    result = Verified(manifest.set_id, level)
    artifacts = list(manifest.artifacts())
    blobs = set_blobs(storage, manifest, result.problems, keyring)
    result.artifacts, result.blobs = len(artifacts), len(blobs)

    def chosen() -> bool:
        return read_data or (subset is not None and chooser() < subset)

    everything: list[ArtifactRecord | BlobRef] = [*artifacts, *blobs]
    objects = [(o, chosen()) for o in everything]
    total = sum(_stored_size(o) for o, read in objects if read)

    def step(n: int) -> None:
        result.bytes_read += n
        if progress is not None:
            progress(result.bytes_read, total)

    for obj, read in objects:
        try:
            if isinstance(obj, ArtifactRecord):
                if read:
                    verify_artifact(storage, obj, step, keyring)
                elif stat_artifact(storage, obj).sha256 is not None:
                    result.checksums += 1
            elif read:
                verify_blob(storage, obj, step, identity)
            else:
                stat_blob(storage, obj)
            result.read += read
        except TxbackupError as exc:
            result.problems.append(str(exc))
    if progress is not None and total:
        progress(result.bytes_read, total)
    return result


def _stored_size(obj: ArtifactRecord | BlobRef) -> int:
    """The bytes reading ``obj`` takes (a blob of an older list: its data size, near enough)."""
    if isinstance(obj, ArtifactRecord):
        return obj.stored_size
    return obj.stored_size if obj.stored_size is not None else obj.size
