"""Where backup sets live, behind the small ``Storage`` interface (``base``)."""

from __future__ import annotations

from txbackup.storage.base import (
    ObjectInfo,
    Storage,
    Writer,
    check_name,
    copy_stream,
    list_names,
    load_bytes,
    save_bytes,
)
from txbackup.storage.local import LocalStorage
from txbackup.storage.registry import open_storage, register, schemes

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "Storage",
    "Writer",
    "check_name",
    "copy_stream",
    "list_names",
    "load_bytes",
    "open_storage",
    "register",
    "save_bytes",
    "schemes",
]
