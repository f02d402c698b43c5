"""Backends by URL scheme: a new backend is one module plus one ``register`` line.

A backend module is imported only when its scheme is used, so a backend whose
library is an optional extra (``pip install 'txbackup[s3]'``) costs nothing to
those who store on a local folder, and its absence is one clear line.

Adding a backend: a module with a factory ``from_url(url, options)`` returning
an object that follows ``base.Storage`` (its writer may subclass
``base.WriterBase``), errors raised with ``base.storage_error`` and mapped to
the typed ``StorageError`` subclasses (a missing object: ``NotFoundError``; a
lost conditional create: ``AlreadyExistsError``; throttling, 5xx, timeouts:
``TransientStorageError``; denied, bad credentials, missing bucket:
``PermanentStorageError``), ``describe()`` built with ``shown_url``; one
``register`` line below; a test module joining ``tests/storage/conformance.py``.
``open_storage`` wraps every backend in ``retry.RetryStorage``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from txbackup.errors import UsageError
from txbackup.extras import import_extra
from txbackup.safepaths import shown
from txbackup.storage.base import Storage
from txbackup.storage.retry import retrying

Factory = Callable[[str, Mapping[str, Any]], Storage]
"""``factory(url, options)``: the storage at ``url`` (whole, scheme included;
for ``file`` it may also be a bare folder path) with the ``[storage]`` options
of the cluster file; raises UsageError for a malformed URL or option, never a
secret in its message."""

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class _Entry:
    factory: Factory | str  # "module:attribute", imported on first use
    extra: str | None  # the pip extra that brings its library


_REGISTRY: dict[str, _Entry] = {}


def register(scheme: str, factory: Factory | str, *, extra: str | None = None) -> None:
    """Make ``scheme://`` URLs open with ``factory``, a callable or a lazily
    imported ``"package.module:function"``; ``extra`` names the pip extra to
    suggest when that module's imports fail."""
    _REGISTRY[scheme.lower()] = _Entry(factory, extra)


def shown_url(url: str) -> str:
    """``url`` fit for a message: without user, password, query or fragment (where
    credentials and signatures hide), cut short. Backends build ``describe()`` with it."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host += f":{parts.port}"
        text = urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        text = url.split("?")[0].split("#")[0].rpartition("@")[2]
    return text if len(text) <= 200 and text.isprintable() else shown(text, 200)


def schemes() -> list[str]:
    """The registered URL schemes, sorted."""
    return sorted(_REGISTRY)


def open_storage(url_or_path: str, options: Mapping[str, Any] | None = None) -> Storage:
    """The storage at ``url_or_path``: a folder path (local), or ``<scheme>://...``
    of a registered backend, wrapped in the retries of ``storage.retry``.
    UsageError for an unknown scheme (listing the known ones) or a backend
    whose optional library is not installed."""
    if not url_or_path:
        raise UsageError("storage: empty location (give a folder path or a URL such as file:///path)")
    match = _URL.match(url_or_path)
    scheme = match.group(1).lower() if match else "file"
    entry = _REGISTRY.get(scheme)
    if entry is None:
        known = ", ".join(f"{s}://" for s in schemes())
        raise UsageError(
            f"storage {shown_url(url_or_path)}: unknown scheme '{scheme}' "
            f"(use a folder path or one of {known})"
        )
    factory = entry.factory
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(import_extra(module, entry.extra, f"storage {scheme}://"), attribute)
    assert callable(factory)
    # a bare path goes to file's factory as it is; every backend gets the retries
    return retrying(factory(url_or_path, options or {}))


# One line per backend. Object stores (s3, az, gs) register here too.
register("file", "txbackup.storage.local:from_url")
register("s3", "txbackup.storage.s3:from_url", extra="s3")
register("az", "txbackup.storage.azure:from_url", extra="azure")
register("gs", "txbackup.storage.gcs:from_url", extra="gcs")
