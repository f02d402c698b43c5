"""The typed reading of the cluster file: every table, one reader.

A table is declared once (:class:`Table`: each :class:`Setting` with its type,
default, bounds and help) and read by :meth:`Table.read`, which refuses keys
the table does not know (naming the nearest known one), values of the wrong
type (a boolean is ``true`` or ``false``, never ``"no"``; an integer is never a
boolean), empty strings, durations out of bounds, and makes relative paths
relative to the cluster file.

Targets read their own ``[[targets]]`` table with the same per-key helpers
(``setting_str``, ``setting_int``...) and :func:`check_keys`: each helper raises a
one-line ``UsageError`` naming the table (``culprit``, e.g. ``target "ledger"``)
and the key. Credentials are read by :mod:`txbackup.secrets`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txbackup.durations import MAX_DURATION_S, format_duration, parse_duration
from txbackup.errors import UsageError
from txbackup.secrets import check_secret

# keys every [[targets]] table has, read by the cluster-file parser itself
COMMON_KEYS = frozenset({"name", "kind"})

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # newlines and tabs allowed
_PATH_KEY = re.compile(r"(?:^|_)(?:path|paths|file|dir)$")


def nearest(key: str, known: Iterable[str]) -> str | None:
    """The known key closest to a mistyped ``key``, if any is close."""
    found = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return found[0] if found else None


def _unknown(keys: list[str], known: Iterable[str], what: str, helps: Mapping[str, str]) -> str:
    """``unknown setting "hots" (did you mean "host"?)``, for each of ``keys`` (with what
    the nearest key is for, when ``helps`` says)."""
    parts = []
    for key in keys:
        near = nearest(key, known)
        about = f" {helps[near]}" if near and helps.get(near) else ""
        shown = json.dumps(key[:80], ensure_ascii=False)  # quoted, control characters escaped
        parts.append(shown + (f' (did you mean "{near}"?{about})' if near else ""))
    plural = "s" if len(keys) > 1 else ""
    listed = ", ".join(sorted(known))
    hint = "" if any(nearest(k, known) for k in keys) else f" (known: {listed})"
    return f"unknown {what}{plural} {', '.join(parts)}{hint}"


def check_keys(
    conf: Mapping[str, Any],
    allowed: Iterable[str],
    *,
    culprit: str,
    common: Iterable[str] = COMMON_KEYS,
    helps: Mapping[str, str] | None = None,
) -> None:
    """Refuse keys a table does not know (a typo must not be silently ignored); the
    error names each unknown key and the nearest known one (and what that one is for,
    from ``helps``)."""
    known = set(allowed) | set(common)
    unknown = sorted(str(k) for k in conf if k not in known)
    if unknown:
        raise UsageError(f"{culprit}: {_unknown(unknown, known, 'setting', helps or {})}")


def check_name(value: object, *, what: str, culprit: str) -> str:
    """A name that becomes a folder or file name (targets, restore sections):
    ``[A-Za-z0-9_.-]``, 1 to 128 characters, and not ``.`` or ``..``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (".", ".."):
        shown = repr(value)[:60]
        raise UsageError(
            f"{culprit}: {what} {shown} is not a valid name "
            "(letters, digits, '_', '.' and '-', at most 128, not '.' or '..')"
        )
    return value


def setting_str(
    conf: Mapping[str, Any],
    key: str,
    default: str | None = None,
    *,
    culprit: str,
    text: bool = False,
) -> str:
    """A required (when ``default`` is None) non-empty string setting, without control
    characters (``text`` allows newlines and tabs, e.g. for a PEM certificate)."""
    value = conf.get(key, default)
    if value is None:
        raise UsageError(f"{culprit}: {key} is required")
    if not isinstance(value, str) or not value:
        raise UsageError(f"{culprit}: {key} must be a non-empty string")
    if (_TEXT_CONTROL if text else _CONTROL).search(value):
        raise UsageError(f"{culprit}: {key} must not hold control characters")
    return value


def setting_optional_name(conf: Mapping[str, Any], key: str, default: str, *, culprit: str) -> str:
    """A name that may be switched off with ``""`` (ScalarDB's coordinator or system
    namespace in a storage that does not hold it); no control characters."""
    value = conf.get(key, default)
    if not isinstance(value, str):
        raise UsageError(f'{culprit}: {key} must be a name, or "" for none')
    if _CONTROL.search(value):
        raise UsageError(f"{culprit}: {key} must not hold control characters")
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
        if minimum is not None and maximum is not None:
            bounds = f"between {minimum} and {maximum}"
        else:
            bounds = f">= {minimum}" if minimum is not None else f"<= {maximum}"
        raise UsageError(f"{culprit}: {key} must be {bounds}")
    return value


def setting_bool(conf: Mapping[str, Any], key: str, default: bool, *, culprit: str) -> bool:
    """A boolean setting (``true`` or ``false``, nothing else)."""
    value = conf.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(f"{culprit}: {key} must be true or false")
    return value


def setting_duration(
    conf: Mapping[str, Any],
    key: str,
    default: str,
    *,
    culprit: str,
    minimum: float = 0.0,
    maximum: float = MAX_DURATION_S,
) -> float:
    """Seconds in a duration setting: ``"500ms"``, ``"10s"``, ``"2m"``, ``"1h"`` or a bare
    number, within [minimum, maximum]."""
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UsageError(f'{culprit}: {key} must be a duration such as "10s"')
    try:
        seconds = parse_duration(str(value), maximum=maximum)
    except UsageError as exc:
        raise UsageError(f"{culprit}: {key}: {exc}") from None
    if seconds < minimum:
        raise UsageError(f"{culprit}: {key} must be at least {format_duration(minimum)}")
    return seconds


def name_list(value: object, what: str, *, culprit: str, items: str = "non-empty strings") -> list[str]:
    """``value`` as a list of distinct non-empty strings; ``what`` names it in messages,
    ``items`` says what the list must hold."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{culprit}: {what} must be a list of {items}")
    if any(_CONTROL.search(v) for v in value):
        raise UsageError(f"{culprit}: {what} must not hold control characters")
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


# -- paths -----------------------------------------------------------------------------------------
def is_path_key(key: str) -> bool:
    """Whether a setting holds a path, by its name: ``path``, ``paths``, ``*_path``,
    ``*_file``, ``*_dir`` (so every path setting of every table is found the same way)."""
    return bool(_PATH_KEY.search(key))


def resolve_path(value: str, base: Path | None) -> str:
    """``value`` made absolute: ``~`` expanded, a relative path joined to ``base`` (the
    cluster file's folder; the working directory when None); URLs as they are."""
    if "://" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    return os.path.normpath(os.path.abspath(path))


def _plain_path(value: object) -> bool:
    return isinstance(value, str) and bool(value) and not _CONTROL.search(value)


def resolve_paths(conf: Mapping[str, Any], base: Path | None) -> dict[str, Any]:
    """A copy of a table with every path setting (:func:`is_path_key`) made absolute;
    values of the wrong type are left for the type checks to name."""
    out = dict(conf)
    for key, value in conf.items():
        if not isinstance(key, str) or not is_path_key(key):
            continue
        if _plain_path(value):
            out[key] = resolve_path(value, base)
        elif isinstance(value, list) and all(_plain_path(v) for v in value):
            out[key] = [resolve_path(v, base) for v in value]
    return out


# -- declared tables -------------------------------------------------------------------------------
Reader = Callable[[Mapping[str, Any], str, str, Path | None], Any]
"""A custom setting's reader: (table, key, culprit, base folder) -> value."""


@dataclass(frozen=True)
class Setting:
    """One key of a table: its type, default, bounds and help, declared once.

    ``type`` is ``str``, ``text`` (a string that may hold newlines), ``int``,
    ``bool``, ``duration`` (seconds), ``path`` (made absolute, relative to the
    cluster file), ``names`` (a list of strings), ``secret`` (``KEY_env`` or
    ``KEY_file``, never ``KEY`` itself; read as the mapping
    :func:`txbackup.secrets.resolve_secret` takes) or ``custom`` (``read``).
    A ``None`` default makes the setting optional (absent: ``None``).
    """

    key: str
    type: str
    default: Any = None
    help: str = ""
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    read: Reader | None = None

    def names(self) -> tuple[str, ...]:
        """The keys this setting owns (a secret owns KEY, KEY_env and KEY_file)."""
        if self.type == "secret":
            return (self.key, f"{self.key}_env", f"{self.key}_file")
        return (self.key,)

    def value(self, conf: Mapping[str, Any], culprit: str, base: Path | None) -> Any:
        key = self.key
        if self.type == "secret":
            check_secret(conf, key, culprit=culprit)
            found = {k: conf[k] for k in (f"{key}_env", f"{key}_file") if k in conf}
            if f"{key}_file" in found:
                found[f"{key}_file"] = resolve_path(found[f"{key}_file"], base)
            return found
        if self.type == "custom":
            assert self.read is not None, key
            return self.read(conf, key, culprit, base)
        if self.type == "names":
            return setting_str_list(conf, key, culprit=culprit, required=self.required)
        if key not in conf and self.default is None:
            if self.required:
                raise UsageError(f"{culprit}: {key} is required")
            return None
        if self.type in ("str", "text", "path"):
            value = setting_str(conf, key, self.default, culprit=culprit, text=self.type == "text")
            return resolve_path(value, base) if self.type == "path" else value
        if self.type == "int":
            low = None if self.minimum is None else int(self.minimum)
            high = None if self.maximum is None else int(self.maximum)
            return setting_int(conf, key, self.default, culprit=culprit, minimum=low, maximum=high)
        if self.type == "bool":
            return setting_bool(conf, key, self.default, culprit=culprit)
        if self.type == "duration":
            return setting_duration(
                conf,
                key,
                self.default,
                culprit=culprit,
                minimum=self.minimum or 0.0,
                maximum=MAX_DURATION_S if self.maximum is None else self.maximum,
            )
        raise AssertionError(f"setting {key}: unknown type {self.type}")


@dataclass(frozen=True)
class Table:
    """A table of the cluster file, declared once: ``title`` names it in messages
    (``[applications]``), ``settings`` are its keys."""

    title: str
    settings: tuple[Setting, ...]

    def known(self) -> list[str]:
        return [k for s in self.settings for k in s.names()]

    def read(
        self,
        conf: object,
        *,
        where: str,
        base: Path | None = None,
        title: str | None = None,
        common: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Every setting of the table (``where`` names the file, ``title`` this table
        when it is one of several, e.g. ``[restore.ledger]``), checked and typed;
        ``common`` keys are known but read by the caller (a target's name and kind)."""
        culprit = f"{where} {title or self.title}".strip()
        if not isinstance(conf, Mapping):
            raise UsageError(f"{culprit} must be a table")
        helps = {k: s.help for s in self.settings for k in s.names() if s.help}
        check_keys(conf, self.known(), culprit=culprit, common=common, helps=helps)
        return {s.key: s.value(conf, culprit, base) for s in self.settings}
