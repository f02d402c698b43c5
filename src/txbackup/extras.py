"""Parts of txbackup whose library is an optional extra (``pip install 'txbackup[s3]'``).

A target kind or a storage backend is imported only when a cluster file or a URL
names it; when its library is missing, that is one line naming what needs it and
the extra to install, never a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from txbackup.errors import UsageError


def import_extra(module: str, extra: str | None, what: str) -> ModuleType:
    """``module`` imported; UsageError ``<what>: its library is not installed (<lib>):
    pip install 'txbackup[<extra>]'`` when a library it imports is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f": pip install 'txbackup[{extra}]'" if extra else ""
        raise UsageError(f"{what}: its library is not installed ({exc.name}){hint}") from None
