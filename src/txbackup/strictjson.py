"""JSON read from untrusted places (storage objects, agent requests), strictly.

``loads`` refuses what ``json.loads`` lets through and a reader then trips on:
a key given twice (which value wins is parser-specific), ``NaN``/``Infinity``
(not JSON), and nesting deeper than ``max_depth`` (checked without recursion;
the parser's own recursion limit becomes the same ``ValueError``). Every
refusal is a ``ValueError`` (``json.JSONDecodeError`` and ``UnicodeDecodeError``
are ones too), for the caller to turn into its one-line error.
"""

from __future__ import annotations

import json
from typing import Any

from txbackup.safepaths import shown

MAX_DEPTH = 32
"""The deepest nesting accepted by default (a manifest needs about 8)."""


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``text`` parsed as JSON, strictly (see the module docstring)."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:  # the parser's own limit, far deeper than max_depth
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    check_depth(data, max_depth)
    return data


def check_depth(data: Any, max_depth: int = MAX_DEPTH) -> None:
    """ValueError if ``data`` nests deeper than ``max_depth`` (iteratively: no recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            stack.extend((v, depth + 1) for v in value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"field {shown(key)} appears twice")
        data[key] = value
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
