"""The content-addressed store of SSTable files: each file stored once, by its SHA-256.

SSTables are immutable: a file that one backup set stored is the same bytes in
every later set that still has it. So a Cassandra file is stored, zstd
compressed, as ``<store>/<sha256 of its data>`` (the store of a cluster is
``cassandra/<cluster name>/sstables``) and a backup set only *references* it:
a later set uploads just the files that are new since (differential, like
Medusa). Uploads are atomic (the storage writer's ``commit``), so an upload
cut in the middle leaves either nothing or a complete blob; blobs stored before the cut
are reused by the next backup, which is how an interrupted upload resumes.

A blob is written and checked by ``repository.codec`` (the pipeline set
artifacts use): when it is fetched, the zstd frame, then the SHA-256 and size
of the data against the name and the record, bounded by the recorded size.
A restore's fetch (``fetch_file``) and ``txbackup verify`` (``stat_blob``,
``verify_blob``) check a blob through the same ``open_blob``.


In an encrypted repository (``repository.crypto``) a blob is an age file
encrypted to the repository's recipient, and named by HMAC-SHA256(blob key,
data) instead of the plain SHA-256, so the names in a stolen repository say
nothing of which SSTables (files public or guessable: a known dataset) it
holds. The file list records both: ``blob`` (the name) and ``sha256`` (what the
data must hash to, checked at restore; the list is an artifact, encrypted too).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from txbackup.errors import IntegrityError, StorageError
from txbackup.repository.age import Identity
from txbackup.repository.codec import Encoder, Expected, Progress, decoded
from txbackup.repository.layout import blob_name as blob_name  # names live in the layout
from txbackup.repository.layout import store_prefix as store_prefix
from txbackup.safepaths import create_private
from txbackup.storage.base import CHUNK, ObjectInfo, Storage


@dataclass(frozen=True)
class Stored:
    """One file put in the store: its data's digest and size, the blob's size,
    whether this call uploaded it (False: it was there already), and the blob's id
    (its name in the store: ``sha256``, or the keyed id when sealed)."""

    sha256: str
    size: int
    stored_size: int
    uploaded: bool
    blob: str = ""
    hashed: bool = True
    """Whether the file was read to hash it (False: its digests came from the agent's cache)."""


@dataclass(frozen=True)
class Sealing:
    """How an encrypted repository stores blobs: encrypted to ``recipient`` (a raw
    X25519 public key), named by HMAC-SHA256(``blob_key``, data)."""

    recipient: bytes
    blob_key: bytes


def file_sha256(path: str) -> tuple[str, int]:
    sha, size, _ = file_digests(path, None)
    return sha, size


def file_digests(path: str, blob_key: bytes | None) -> tuple[str, int, str]:
    """(SHA-256, size, blob id) of the file, read once: the id is the SHA-256, or the
    HMAC-SHA256 under ``blob_key`` (an encrypted repository's names)."""
    digest = hashlib.sha256()
    keyed = None if blob_key is None else hmac.new(blob_key, digestmod="sha256")
    size = 0
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            if keyed is not None:
                keyed.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, digest.hexdigest() if keyed is None else keyed.hexdigest()


class StaleDigest(StorageError):
    """The file's data does not hash to the digest it was given (a stale cache entry)."""


def put_file(
    storage: Storage,
    store: str,
    path: str,
    sealing: Sealing | None = None,
    known: tuple[str, int, str] | None = None,
) -> Stored:
    """Store the local file ``path`` unless a blob with its content exists already.

    The file is hashed first, unless ``known`` gives its (SHA-256, size, blob id)
    (the agent's hash cache). If it changes while it is compressed (it must
    not: snapshot files are hard links to immutable SSTables) the upload is
    aborted before it is published and ``StorageError`` raised; ``StaleDigest``
    when the data does not match ``known``.
    """
    if known is not None:
        sha, size, blob = known
    elif sealing is None:
        sha, size = file_sha256(path)
        blob = sha
    else:
        sha, size, blob = file_digests(path, sealing.blob_key)
    name = blob_name(store, blob)
    existing = storage.stat(name)
    if existing is not None:
        return Stored(sha, size, existing.size, False, blob, hashed=known is None)
    with open(path, "rb") as src, storage.open_write(name) as writer:
        # a blob is recorded by its data's digest and its stored size (BlobRef): hashing
        # the stored bytes too would cost a third pass over them for nothing
        encoder = Encoder(writer.write, None if sealing is None else sealing.recipient, stored_sha=False)
        while chunk := src.read(CHUNK):
            encoder.write(chunk)
        done = encoder.finish()
        if (done.sha256, done.size) != (sha, size):
            if known is not None:
                raise StaleDigest(f"{path}: its cached digest is stale")  # aborts the upload
            raise StorageError(f"{path} changed while it was being stored")  # aborts the upload
        stored = writer.commit().size
    if stored != done.stored_size:
        raise StorageError(f"blob {name}: storage saved {stored} of {done.stored_size} bytes")
    return Stored(sha, size, stored, True, blob, hashed=known is None)


@dataclass(frozen=True)
class BlobRef:
    """A blob a set references: its store, its data's SHA-256 and size, its stored size
    when the set recorded it (None in older file lists), and ``what`` names the file
    for messages (``bank.accounts nb-1-big-Data.db (node 10.0.0.5)``)."""

    store: str
    sha256: str
    size: int
    stored_size: int | None
    what: str
    blob: str | None = None
    """Its id in the store when that is not ``sha256``: the keyed id (HMAC) of an
    encrypted repository's blob."""

    @property
    def name(self) -> str:
        return blob_name(self.store, self.sha256 if self.blob is None else self.blob)


def stat_blob(storage: Storage, ref: BlobRef) -> ObjectInfo:
    """The blob's info: ``IntegrityError`` naming it when it is missing or its stored
    size differs from the recorded one (what a restore and ``verify`` check first)."""
    name = ref.name
    info = storage.stat(name)
    if info is None:
        raise IntegrityError(f"{ref.what}: blob {name} missing from storage {storage.describe()}")
    if ref.stored_size is not None and info.size != ref.stored_size:
        raise IntegrityError(
            f"{ref.what}: blob {name}: {info.size} bytes stored, the set recorded {ref.stored_size} "
            "(truncated or corrupt)"
        )
    return info


@contextlib.contextmanager
def open_blob(
    storage: Storage, ref: BlobRef, progress: Progress = None, identity: Identity | None = None
) -> Iterator[IO[bytes]]:
    """The blob's data, verified as it streams (``repository.codec``): decrypted with
    ``identity`` in an encrypted repository, the zstd frame, then the SHA-256 and size of
    the data against the record, bounded by the recorded sizes. ``progress`` gets the
    stored bytes read."""
    info = stat_blob(storage, ref)
    # the stored size is the recorded one, else what stat says (older lists have none);
    # the data is bounded by the recorded size and checked against its name
    expected = Expected(ref.size, ref.sha256, info.size)
    label = f"{ref.what}: blob {ref.name}"
    with storage.open_read(ref.name) as src, decoded(src, expected, label, progress, identity) as data:
        yield data


def verify_blob(
    storage: Storage, ref: BlobRef, progress: Progress = None, identity: Identity | None = None
) -> None:
    """Read the blob through and check it (``IntegrityError`` naming it if it is bad)."""
    with open_blob(storage, ref, progress, identity) as data:
        while data.read(CHUNK):
            pass


def fetch_file(
    storage: Storage,
    store: str,
    sha256: str,
    size: int,
    dest: str,
    what: str,
    progress: Callable[[int], None] | None = None,
    *,
    blob: str | None = None,
    identity: Identity | None = None,
) -> None:
    """Write the data of blob ``sha256`` (stored as ``blob``, the keyed id of an
    encrypted repository, decrypted with its ``identity``) to the new file ``dest``,
    verified against ``sha256`` and ``size``.

    ``what`` names the file for messages (e.g. ``bank/accounts nb-1-big-Data.db``).
    Raises ``IntegrityError`` naming it when the blob is missing, truncated or
    corrupt; ``dest`` then does not exist. ``dest`` is created 0600 and never
    written through a symbolic link.
    """
    partial = dest + ".txbackup-partial"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)  # left by an interrupted run (a link goes, not its target)
        with (
            open_blob(storage, BlobRef(store, sha256, size, None, what, blob), None, identity) as data,
            os.fdopen(create_private(partial), "wb") as out,
        ):
            while chunk := data.read(CHUNK):
                out.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        os.replace(partial, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def referenced(files: list[dict[str, Any]]) -> set[str]:
    """The blob ids a node's file list references (for garbage collection): the keyed
    ``blob`` name in an encrypted repository, else the ``sha256``."""
    found = set()
    for f in files:
        if isinstance(f, dict):
            blob = f.get("blob", f.get("sha256"))
            if isinstance(blob, str):
                found.add(blob)
    return found
