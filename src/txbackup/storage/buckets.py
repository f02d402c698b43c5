"""What the object-store backends share: their URL (``<scheme>://<bucket>/<prefix>``),
their options, and causes made fit for a one-line message (no query strings)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from txbackup.errors import StorageError, UsageError
from txbackup.storage.base import check_prefix
from txbackup.storage.registry import shown_url

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
