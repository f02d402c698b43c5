"""What a set references outside its own folder, by target kind: one registration per kind.

Most kinds keep everything a set needs under ``sets/<set id>/``. A Cassandra set
only *references* SSTable blobs of its cluster's content-addressed store (they are
shared with the other sets of that cluster), so ``verify`` must check them and a
garbage collector must keep them: both ask ``blob_references`` here, whatever the
kind. The functions are imported on first use (like storage backends): reading a
set never needs a database driver.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from txbackup.agent.blobs import BlobRef
from txbackup.targets.base import ArtifactReader

Referencer = Callable[[ArtifactReader, str], list[BlobRef]]
"""``referencer(src, label)``: the blobs a target's record references (read through
``src``; ``label`` names the target in messages); ``IntegrityError`` if it is malformed."""

_REFERENCES: dict[str, str] = {
    "cassandra": "txbackup.targets.cassandra.target:blob_references",
}


def blob_references(kind: str, src: ArtifactReader, label: str) -> list[BlobRef]:
    """The blobs this record of a target of ``kind`` references (none for most kinds)."""
    where = _REFERENCES.get(kind)
    if where is None:
        return []
    module, _, attribute = where.partition(":")
    referencer: Referencer = getattr(importlib.import_module(module), attribute)
    return referencer(src, label)
