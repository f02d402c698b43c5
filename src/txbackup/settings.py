"""The typed reading of a target's settings (one ``[[targets]]`` table).

Each helper reads one key with a ``UsageError`` naming the target (``culprit``,
e.g. ``target "ledger"``) and the key when the value has the wrong type.
Credentials are read by :mod:`txbackup.secrets`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from txbackup.durations import parse_duration
from txbackup.errors import UsageError

# keys every [[targets]] table has, read by the cluster-file parser itself
COMMON_KEYS = frozenset({"name", "kind"})


def check_keys(conf: Mapping[str, Any], allowed: Iterable[str], *, culprit: str) -> None:
    """Refuse keys a target does not know (a typo must not be silently ignored)."""
    known = set(allowed) | COMMON_KEYS
    unknown = sorted(k for k in conf if k not in known)
    if unknown:
        names = ", ".join(unknown)
        raise UsageError(f"{culprit}: unknown setting(s) {names} (known: {', '.join(sorted(known))})")


def setting_str(
    conf: Mapping[str, Any], key: str, default: str | None = None, *, culprit: str
) -> str:
    """A required (when ``default`` is None) non-empty string setting."""
    value = conf.get(key, default)
    if value is None:
        raise UsageError(f"{culprit}: {key} is required")
    if not isinstance(value, str) or not value:
        raise UsageError(f"{culprit}: {key} must be a non-empty string")
    return value


def setting_opt_str(conf: Mapping[str, Any], key: str, *, culprit: str) -> str | None:
    """An optional non-empty string setting."""
    if conf.get(key) is None:
        return None
    return setting_str(conf, key, culprit=culprit)


def setting_int(
    conf: Mapping[str, Any],
    key: str,
    default: int,
    *,
    culprit: str,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """An integer setting within [minimum, maximum]."""
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{culprit}: {key} must be an integer")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise UsageError(f"{culprit}: {key} must be {bounds}")
    return value


def setting_bool(conf: Mapping[str, Any], key: str, default: bool, *, culprit: str) -> bool:
    """A boolean setting (``true`` or ``false``, nothing else)."""
    value = conf.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(f"{culprit}: {key} must be true or false")
    return value


def setting_duration(conf: Mapping[str, Any], key: str, default: str, *, culprit: str) -> float:
    """Seconds in a duration setting: ``"500ms"``, ``"10s"``, ``"2m"``, ``"1h"`` or a bare number."""
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UsageError(f'{culprit}: {key} must be a duration such as "10s"')
    try:
        return parse_duration(str(value))
    except UsageError as exc:
        raise UsageError(f"{culprit}: {key}: {exc}") from None


def name_list(value: object, what: str, *, culprit: str, items: str = "non-empty strings") -> list[str]:
    """``value`` as a list of distinct non-empty strings; ``what`` names it in messages,
    ``items`` says what the list must hold."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{culprit}: {what} must be a list of {items}")
    if len(set(value)) != len(value):
        raise UsageError(f"{culprit}: {what} lists a name twice")
    return list(value)


def setting_str_list(
    conf: Mapping[str, Any],
    key: str,
    *,
    culprit: str,
    required: bool = False,
) -> list[str]:
    """A list of distinct non-empty strings (a single string counts as a list of one)."""
    value = conf.get(key)
    if value is None:
        if required:
            raise UsageError(f"{culprit}: {key} is required")
        return []
    names = name_list([value] if isinstance(value, str) else value, key, culprit=culprit)
    if required and not names:
        raise UsageError(f"{culprit}: {key} must not be empty")
    return names
