"""What the object-store backends share: their URL (``<scheme>://<bucket>/<prefix>``),
their options, causes made fit for a one-line message (no query strings), the
checks around listings and folder removal, and a raw stream over downloaded chunks."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from txbackup.errors import (
    NotFoundError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
    UsageError,
)
from txbackup.storage.base import ObjectInfo, check_name, check_ok, check_prefix, storage_error
from txbackup.storage.registry import shown_url

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("txbackup.storage")

_QUERY = re.compile(r"\?[^\s'\"<>]*")
_SECRET = re.compile(r"(?i)(AccountKey|SharedAccessSignature|sig|access_token|key)=[^;&\s'\"]*")


def split_url(url: str, scheme: str, what: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``<scheme>://<bucket>/<prefix>``: the prefix is a valid
    storage prefix ending in ``/`` (or empty). No user, password, port, query or
    fragment (where credentials would hide): UsageError, the URL shown without them."""
    where = f"storage {shown_url(url)}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UsageError(f"{where}: malformed URL (expected {scheme}://{what}/prefix)") from None
    if parts.scheme.lower() != scheme or not parts.hostname:
        raise UsageError(f"{where}: expected {scheme}://{what}/prefix")
    if parts.username is not None or parts.password is not None or port is not None:
        raise UsageError(
            f"{where}: no user, password or port in the URL (credentials come from the environment)"
        )
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise UsageError(f"{where}: no query or fragment in the URL")
    bucket = parts.netloc
    prefix = unquote(parts.path).strip("/")
    try:
        check_prefix(prefix)
    except StorageError as exc:
        raise UsageError(f"{where}: bad prefix ({exc})") from None
    return bucket, f"{prefix}/" if prefix else ""


def check_options(url: str, options: Mapping[str, Any], known: Iterable[str]) -> dict[str, str]:
    """The options, each a non-empty printable string of the ``known`` keys; anything
    else is one UsageError naming the key (never its value)."""
    allowed = sorted(known)
    out: dict[str, str] = {}
    for key, value in options.items():
        if key not in allowed:
            raise UsageError(
                f"storage {shown_url(url)}: option {key!r} does not apply here (known: {', '.join(allowed)})"
            )
        if not isinstance(value, str) or not value or not value.isprintable():
            raise UsageError(f"storage {shown_url(url)}: option {key} must be a non-empty string")
        out[key] = value
    return out


def check_endpoint(url: str, endpoint: str) -> str:
    """An ``endpoint`` option: an http(s) URL without user, password, query or
    fragment (a SAS token or key never goes in the cluster file)."""
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
        or "?" in endpoint
    ):
        raise UsageError(
            f"storage {shown_url(url)}: option endpoint must be an http(s):// URL without "
            "credentials or query (credentials come from the environment)"
        )
    return endpoint.rstrip("/")


def clean_cause(text: str) -> str:
    """A library's error text without query strings (SAS signatures, tokens) or
    ``key=value`` secrets, on one line (``storage_error`` then cuts it short)."""
    text = _QUERY.sub("?...", text)
    return _SECRET.sub(lambda m: f"{m.group(1)}=...", text)


def error_class(status: int | None) -> type[StorageError]:
    """The error class of an HTTP answer's ``status``: transient when there was no
    answer, for 408, 429 and 5xx (worth retrying), NotFound for 404, else permanent."""
    if status is None or status in (408, 429) or status >= 500:
        return TransientStorageError
    if status == 404:
        return NotFoundError
    return PermanentStorageError


def listed_name(where: str, prefix: str, key: str) -> str | None:
    """The storage name of ``key`` listed under the storage's ``prefix``, or None
    (logged) when it is not a name we would write: an untrusted listing never
    hands on a path that escapes, a folder marker or a control character."""
    name = key[len(prefix) :]
    if not check_ok(name) or name.endswith("/"):
        log.warning("storage %s: %s is not a valid name: ignored", where, repr(name)[:120])
        return None
    return name


def check_folder(where: str, prefix: str) -> str:
    """``remove_prefix``'s argument: a valid prefix that is a folder (ends in ``/``)."""
    if not prefix.endswith("/"):
        raise StorageError(f"storage {where}: remove {prefix!r}: not a folder (must end in '/')")
    return check_prefix(prefix)


def changed_while_read(where: str, name: str) -> StorageError:
    """The error of a read whose object was replaced or deleted under it."""
    return storage_error(StorageError, where, "read", name, "the object changed while being read")


class NoTemporaries:
    """For stores whose unfinished uploads cannot be listed cheaply or deleted
    (the service drops them itself): nothing is ever listed, nothing removed."""

    def temporaries(self, older_than_s: float) -> Iterator[ObjectInfo]:
        return iter(())

    def remove_temporary(self, name: str) -> None:
        check_name(name.partition("#")[0])  # nothing is ever listed: nothing to remove


class ChunkReader(io.RawIOBase):
    """A raw stream over downloaded chunks; ``_next_chunk`` gives the next one
    (None at the end) and turns the library's errors into StorageErrors."""

    def __init__(self) -> None:
        self._left = memoryview(b"")

    def _next_chunk(self) -> bytes | None:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while not self._left:
            chunk = self._next_chunk()
            if chunk is None:
                return 0
            self._left = memoryview(chunk)
        n = min(len(view), len(self._left))
        view[:n] = self._left[:n]
        self._left = self._left[n:]
        return n
