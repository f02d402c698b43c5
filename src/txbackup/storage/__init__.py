"""Where backup sets live, behind the small ``Storage`` interface."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from txbackup.errors import UsageError
from txbackup.storage.base import Storage, StreamSaver, check_name
from txbackup.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StreamSaver", "check_name", "open_storage"]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_storage(url_or_path: str) -> Storage:
    """The storage at a folder path or a ``file:///path`` URL."""
    if not url_or_path:
        raise UsageError("storage: empty location (give a folder path or file:///path)")
    url = _URL.match(url_or_path)
    if url is None:
        return LocalStorage(url_or_path)
    scheme = url.group(1).lower()
    if scheme != "file":
        raise UsageError(
            f"storage {url_or_path}: unsupported scheme '{scheme}' "
            "(use a folder path or file:///path)"
        )
    parts = urlsplit(url_or_path)
    if parts.netloc not in ("", "localhost") or not parts.path:
        raise UsageError(f"storage {url_or_path}: expected file:///absolute/path")
    return LocalStorage(unquote(parts.path))
