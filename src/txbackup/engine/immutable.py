"""Immutable sets: a retention date on every object of a committed set (S3 Object Lock).

With ``[storage] object_lock_days = N`` the backup, once its manifest is
committed, asks the storage to keep the manifest, every artifact and every blob
the set references immutable until N days from now (``storage.base.Retaining``).
A blob shared with older sets gets the later of its dates: it stays as long as
the newest set that references it. Until then nobody can remove these objects,
not even with the credentials that wrote them (compliance mode): a stolen key
cannot destroy the backups. Deleting a set (``txbackup delete``, forget, prune)
meets ``RetainedError``; ``refuse_retained`` says so before anything is removed.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor

from txbackup.engine.manifest import Manifest
from txbackup.engine.verify import set_blobs
from txbackup.errors import RetainedError, StorageError
from txbackup.repository.layout import manifest_path, set_prefix
from txbackup.storage.base import Storage, retaining

DAY = 86_400.0
PARALLEL = 16
"""Objects retained at once."""


def retain_set(storage: Storage, manifest: Manifest, now: float | None = None) -> tuple[int, float] | None:
    """Put the configured retention on every object of the committed set; the number of
    objects and the date (seconds since the epoch), or None when no retention is set.
    ``StorageError`` naming the first object that could not be retained."""
    store = retaining(storage)
    policy = None if store is None else store.retention
    if store is None or policy is None:
        return None
    until = (time.time() if now is None else now) + policy.days * DAY
    problems: list[str] = []
    names = [
        manifest_path(manifest.set_id),
        *(a.path for a in manifest.artifacts()),
        *(b.name for b in set_blobs(storage, manifest, problems)),
    ]
    if problems:  # a blob we cannot name is one we cannot protect
        raise StorageError(f"set {manifest.set_id}: cannot list the blobs to retain: {problems[0]}")
    # two requests per object (HeadObject, PutObjectRetention): a Cassandra set may
    # reference thousands of blobs, so several at a time (boto3 clients are thread-safe)
    with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="txbackup-retain") as pool:
        for _ in pool.map(lambda name: store.retain(name, until), names):
            pass  # the first failure is raised here
    return len(names), until


def refuse_retained(storage: Storage, set_id: str) -> None:
    """``RetainedError`` naming the first object of the set still under retention (and
    its date), before anything of the set is removed: no half-deleted set. Asks only
    a storage that can retain objects (one stat per object of the set)."""
    if retaining(storage) is None:
        return
    now = time.time()
    for listed in storage.iterate(set_prefix(set_id)):
        info = storage.stat(listed.name)
        if info is not None and info.retain_until is not None and info.retain_until > now:
            date = dt.datetime.fromtimestamp(info.retain_until, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise RetainedError(
                f"set {set_id}: {listed.name} is retained until {date} (S3 Object Lock): "
                "the set cannot be deleted before then; nothing was removed"
            )
