"""Artifacts in storage: zstd-compressed, SHA-256 checked, streamed in chunks
(the bytes go through ``repository.codec``, the pipeline blobs share).

``SetWriter`` and ``SetReader`` are the engine's ``ArtifactWriter`` and
``ArtifactReader`` (see ``targets/base.py``). An artifact ``name`` of target
``t`` in set ``s`` is stored as ``sets/<s>/<t>/<name>.zst``. Its record keeps
the size and SHA-256 of the data and of the stored (compressed) file.

Reading verifies as it streams: the stored size is checked before the first
byte, both checksums at EOF, where a mismatch raises ``IntegrityError`` from
``read()``, and the last bytes of an artifact are handed over only once it is
verified (``repository.codec``). So a restore reads each artifact once: it never
ends normally on corrupt data, but may have loaded part of it before the
mismatch shows (the engine fails the restore job, saying so). Reading
never goes past the recorded sizes: a stored file that grew, or data that
decompresses to more than recorded (a zstd bomb), fails as soon as it
overflows instead of filling memory or disk.

In an encrypted repository every artifact is an age file (``repository.crypto``):
writers take the repository's ``Keyring`` (its public recipient is enough),
readers need it unlocked; a tampered or truncated artifact fails authentication
as it is read (age authenticates each 64 KiB chunk before zstd sees it).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

from txbackup.engine.manifest import ArtifactRecord, Manifest, artifact_path, check_manifest
from txbackup.errors import IntegrityError, StorageError, TargetError, TxbackupError
from txbackup.jobs import MemoryJournal, StepJournal
from txbackup.repository.codec import Encoder, Expected, Progress, decoded
from txbackup.repository.config import read_config
from txbackup.repository.crypto import Keyring
from txbackup.safepaths import Writeback, create_private
from txbackup.storage.base import CHUNK, ObjectInfo, Storage
from txbackup.targets.base import iter_chunks

__all__ = [
    "SetReader",
    "SetWriter",
    "artifact_path",
    "open_artifact",
    "stat_artifact",
    "stat_set",
    "verify_artifact",
    "verify_set",
]


class SetWriter:
    """Writes one target's artifacts into a backup set (an ``ArtifactWriter``)."""

    def __init__(
        self, storage: Storage, set_id: str, target_name: str, keyring: Keyring | None = None
    ) -> None:
        self._storage = storage
        self._recipient = None if keyring is None else keyring.recipient_key
        self._set_id = set_id
        self._target = target_name
        self._records: list[ArtifactRecord] = []
        self._names: set[str] = set()
        self._lock = threading.Lock()

    @property
    def records(self) -> list[ArtifactRecord]:
        """The artifacts written so far, in order of completion."""
        with self._lock:
            return list(self._records)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        path = self._reserve(name)
        try:
            # written straight through: the target's thread encodes and the
            # storage writer sends; leaving the block early aborts the upload
            with self._storage.open_write(path) as writer:
                encoder = Encoder(writer.write, self._recipient)
                yield encoder.stream
                done = encoder.finish()
                saved = writer.commit().size
            if saved != done.stored_size:
                raise StorageError(f"artifact {path}: storage saved {saved} of {done.stored_size} bytes")
        except BaseException:
            with self._lock:
                self._names.discard(name)
            raise
        record = ArtifactRecord(name, path, done.size, done.sha256, saved, done.stored_sha256)
        with self._lock:
            self._records.append(record)

    def add_file(self, name: str, path: str) -> None:
        try:
            with open(path, "rb") as src, self.open(name) as out:
                for chunk in iter_chunks(src, CHUNK):
                    out.write(chunk)
        except OSError as exc:
            raise TargetError(f"target {self._target}: cannot read {path}: {exc.strerror}") from exc

    def _reserve(self, name: str) -> str:
        path = artifact_path(self._set_id, self._target, name)
        with self._lock:
            if name in self._names:
                raise TargetError(f"target {self._target}: artifact {name!r} written twice")
            self._names.add(name)
        return path


def stat_artifact(storage: Storage, record: ArtifactRecord) -> ObjectInfo:
    """The artifact's info, checked without reading it: ``IntegrityError`` naming it when
    it is missing, its stored size is not the recorded one, or the backend keeps a
    SHA-256 of the stored bytes (``ObjectInfo.sha256``) that is not the recorded one."""
    info = storage.stat(record.path)
    if info is None:
        raise IntegrityError(f"artifact {record.path}: missing from storage {storage.describe()}")
    size = info.size
    if size != record.stored_size:
        raise IntegrityError(
            f"artifact {record.path}: {size} bytes stored, manifest says {record.stored_size} "
            "(truncated or corrupt)"
        )
    if info.sha256 is not None and info.sha256 != record.stored_sha256:
        raise IntegrityError(
            f"artifact {record.path}: the storage's SHA-256 of it is {info.sha256[:16]}..., "
            f"the manifest says {record.stored_sha256[:16]}... (replaced or corrupt)"
        )
    return info


@contextlib.contextmanager
def open_artifact(
    storage: Storage,
    record: ArtifactRecord,
    progress: Progress = None,
    keyring: Keyring | None = None,
    *,
    cheapest: bool = False,
) -> Iterator[IO[bytes]]:
    """The decompressed data of ``record``, verified as it streams (see module doc).
    ``progress`` is called with the number of stored bytes read at each step;
    ``keyring`` (unlocked) is an encrypted repository's. Both SHA-256s are checked, or
    with ``cheapest`` only one of them (see ``repository.codec.Expected``)."""
    identity = None if keyring is None else keyring.require_identity(f"artifact {record.path}")
    stat_artifact(storage, record)
    with storage.open_read(record.path) as source:
        expected = Expected(record.size, record.sha256, record.stored_size, record.stored_sha256)
        if cheapest:
            expected = expected.cheapest()
        data = decoded(source, expected, f"artifact {record.path}", progress, identity)
        try:
            yield data
        except IntegrityError:
            raise
        except Exception:
            # The reader failed before the end (a restore tool choking on its input): a
            # corrupt artifact is then the likelier cause, and the one to name. Costs
            # reading the rest, on failure only.
            for _ in iter_chunks(data, CHUNK):
                pass
            raise
        finally:
            data.close()  # its decoding thread stops before the source closes


class RestoreContext:
    """What a restore hands a target besides its artifacts: the set's restore point, what
    the target's capture recorded (``position``) and the restore job's journal (the
    ``ArtifactReader`` properties; a reader adds ``names``, ``open`` and ``extract``)."""

    def __init__(
        self,
        restore_point: str | None = None,
        position: Mapping[str, Any] | None = None,
        journal: StepJournal | None = None,
    ) -> None:
        self._restore_point = restore_point
        self._position = dict(position or {})
        self._journal: StepJournal = journal or MemoryJournal()

    @property
    def restore_point(self) -> str | None:
        return self._restore_point

    @property
    def position(self) -> Mapping[str, Any]:
        return self._position

    @property
    def journal(self) -> StepJournal:
        return self._journal


class SetReader(RestoreContext):
    """Reads one target's artifacts from a backup set (an ``ArtifactReader``)."""

    def __init__(
        self,
        storage: Storage,
        set_id: str,
        target_name: str,
        records: Sequence[ArtifactRecord],
        restore_point: str | None = None,
        position: Mapping[str, Any] | None = None,
        journal: StepJournal | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        super().__init__(restore_point, position, journal)
        self._storage = storage
        self._keyring = keyring
        self._set_id = set_id
        self._target = target_name
        self._records = {record.name: record for record in records}

    def names(self) -> list[str]:
        return list(self._records)

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        record = self._records.get(name)
        if record is None:
            raise StorageError(
                f"set {self._set_id}: target {self._target} has no artifact {name!r}"
            )
        # what a restore reads: one SHA-256 (the one over fewer bytes) and both sizes are
        # checked; verify --read-data checks both digests
        return open_artifact(self._storage, record, keyring=self._keyring, cheapest=True)

    def extract(self, name: str, path: str, *, durable: bool = False) -> None:
        """Write the artifact to ``path``, which appears only once complete and verified.
        The file is created 0600 and never written through a symbolic link. ``durable``:
        its data is on disk before it appears (written back as it goes, fsynced at the
        end); a caller that renames it further fsyncs the folder it lands in."""
        partial = path + ".txbackup-partial"
        try:
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)  # left by an interrupted run (a link goes, not its target)
                with self.open(name) as src, os.fdopen(create_private(partial), "wb") as dst:
                    writeback = Writeback(dst.fileno()) if durable else None
                    for chunk in iter_chunks(src, CHUNK):
                        dst.write(chunk)
                        if writeback is not None:
                            dst.flush()  # a no-op for chunks bigger than its buffer
                            writeback.wrote(len(chunk))
                    if durable:
                        dst.flush()
                        os.fsync(dst.fileno())
                os.replace(partial, path)
            except OSError as exc:
                raise TxbackupError(f"extracting {name} to {path}: {exc.strerror}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise


def verify_artifact(
    storage: Storage, record: ArtifactRecord, progress: Progress = None, keyring: Keyring | None = None
) -> None:
    """Re-read (and decrypt) an artifact against its record; IntegrityError if it differs."""
    with open_artifact(storage, record, progress, keyring) as data:
        for _ in iter_chunks(data, CHUNK):
            pass


def check_belongs(storage: Storage, manifest: Manifest) -> None:
    """Refuse a set recorded in another repository than the one ``storage`` holds (a set
    copied in from elsewhere: its artifacts would be judged against the wrong place)."""
    config = read_config(storage)
    recorded = manifest.repository_id
    if config is not None and recorded is not None and recorded != config.repository_id:
        raise IntegrityError(
            f"set {manifest.set_id} was made in repository {recorded}, but {storage.describe()}"
            f" is repository {config.repository_id} (copied from another repository?)"
        )


def stat_set(storage: Storage, manifest: Manifest, *, keyring: Keyring | None = None) -> list[str]:
    """The cheap check a restore runs before writing anything (plain ``verify``'s level
    for artifacts): every artifact of the set is present with its recorded stored size
    (and SHA-256, where the backend keeps one); one line per problem, one ``stat`` per
    artifact, nothing read. Reading them is the restore's: every byte is verified as it
    streams (see the module doc). A manifest naming artifacts outside its layout or a
    set of another repository is refused whole (IntegrityError); an encrypted
    repository's ``keyring`` must hold its identity (``KeyRequired`` otherwise)."""
    if keyring is not None:
        keyring.require_identity(f"set {manifest.set_id}")
    check_manifest(manifest)
    check_belongs(storage, manifest)
    problems = []
    for record in manifest.artifacts():
        try:
            stat_artifact(storage, record)
        except TxbackupError as exc:
            problems.append(str(exc))
    return problems


def verify_set(
    storage: Storage,
    manifest: Manifest,
    progress: Callable[[int, int], None] | None = None,
    *,
    keyring: Keyring | None = None,
) -> list[str]:
    """Verify every artifact of the set; return one line per problem (empty if
    all is well). Never raises for a bad artifact: all of them are checked; a
    manifest that names artifacts outside its layout is refused whole first
    (IntegrityError). ``progress(done, total)`` counts stored bytes. An encrypted
    repository's artifacts are decrypted and authenticated with ``keyring``: without
    its identity, ``KeyRequired`` is raised before anything is read."""
    if keyring is not None:
        keyring.require_identity(f"set {manifest.set_id}")
    check_manifest(manifest)
    check_belongs(storage, manifest)
    records = list(manifest.artifacts())
    total = sum(record.stored_size for record in records)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    problems = []
    finished = 0
    for record in records:
        try:
            verify_artifact(storage, record, step, keyring)
        except TxbackupError as exc:
            problems.append(str(exc))
        finished += record.stored_size
        done = finished
    if progress is not None:
        progress(done, total)
    return problems
