"""Credentials.

Credentials never live in the cluster file: a target names an environment
variable (``password_env = "LEDGER_PG_PASSWORD"``) or a file
(``password_file = "/run/secrets/ledger-pg"``, read and stripped) instead. A
literal ``password = "..."`` in the file is refused.

The typed reading of a target's other settings is in :mod:`txbackup.settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from txbackup.errors import UsageError


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
