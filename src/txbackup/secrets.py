"""Credentials, and the typed reading of a target's settings.

Credentials never live in the cluster file: a target names an environment
variable (``password_env = "LEDGER_PG_PASSWORD"``) or a file
(``password_file = "/run/secrets/ledger-pg"``, read and stripped) instead. A
literal ``password = "..."`` in the file is refused.

The ``setting_*`` helpers read one key of a target's table with a
``UsageError`` naming the target and the key when the value has the wrong type.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from txbackup.errors import UsageError

# keys every [[targets]] table has, read by the cluster-file parser itself
COMMON_KEYS = frozenset({"name", "kind"})


def _where(culprit: str | None) -> str:
    return f"{culprit}: " if culprit else ""


def check_secret(
    conf: Mapping[str, Any], key: str = "password", *, culprit: str | None = None
) -> None:
    """Validate how secret ``key`` is configured, without reading it (for config
    loading: the variable or file only has to exist when the secret is used)."""
    where = _where(culprit)
    if key in conf:
        raise UsageError(
            f'{where}do not write the {key} in the cluster file: use {key}_env = "VARIABLE" '
            f'or {key}_file = "/path/to/file"'
        )
    env_key, file_key = f"{key}_env", f"{key}_file"
    var, path = conf.get(env_key), conf.get(file_key)
    if var is not None and path is not None:
        raise UsageError(f"{where}give either {env_key} or {file_key}, not both")
    if var is not None and (not isinstance(var, str) or not var):
        raise UsageError(f"{where}{env_key} must be the name of an environment variable")
    if path is not None and (not isinstance(path, str) or not path):
        raise UsageError(f"{where}{file_key} must be a file path")


def resolve_secret(
    conf: Mapping[str, Any], key: str = "password", *, culprit: str | None = None
) -> str | None:
    """The secret ``key`` of a config table, from ``<key>_env`` or ``<key>_file``.

    Returns ``None`` when neither is given (the tool's own defaults apply, e.g.
    ``~/.pgpass``). ``culprit`` (e.g. ``target "ledger"``) prefixes messages.
    """
    check_secret(conf, key, culprit=culprit)
    where = _where(culprit)
    env_key, file_key = f"{key}_env", f"{key}_file"
    var, path = conf.get(env_key), conf.get(file_key)
    if var is not None:
        value = os.environ.get(var)
        if value is None:
            raise UsageError(f"{where}environment variable {var} (from {env_key}) is not set")
        return value
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except FileNotFoundError:
            raise UsageError(f"{where}{file_key} {path}: no such file") from None
        except OSError as exc:
            raise UsageError(f"{where}{file_key} {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{where}{file_key} {path}: not UTF-8 text") from None
    return None


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


def setting_str_list(
    conf: Mapping[str, Any],
    key: str,
    *,
    culprit: str,
    required: bool = False,
) -> list[str]:
    """A list of non-empty strings (a single string counts as a list of one)."""
    value = conf.get(key)
    if value is None:
        if required:
            raise UsageError(f"{culprit}: {key} is required")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{culprit}: {key} must be a list of non-empty strings")
    if required and not value:
        raise UsageError(f"{culprit}: {key} must not be empty")
    if len(set(value)) != len(value):
        raise UsageError(f"{culprit}: {key} lists a name twice")
    return list(value)
