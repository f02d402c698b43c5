"""Credentials.

Credentials never live in the cluster file, in a DSN, in argv, in the catalog
or in a manifest: a target names an environment variable (``password_env =
"LEDGER_PG_PASSWORD"``) or a file (``password_file = "/run/secrets/ledger-pg"``,
read and stripped) instead. A literal ``password = "..."`` in the file is
refused, and so is a secret inside a connection string (:func:`check_dsn`),
whatever its syntax. A secret file that others than its owner may read is
refused, as ssh refuses such a private key.

The typed reading of the other settings is in :mod:`txbackup.settings`.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_plus

from txbackup.errors import UsageError

MAX_SECRET_BYTES = 64 * 1024
"""A secret file larger than this is not a secret (a wrong path, a device)."""

# A parameter naming a credential, in any DSN syntax: libpq keyword/value
# (``password = 'x y'``) and URI query (``?password=``, ``sslpassword=``,
# ``passfile=``), the MySQL clients and connectors (``passwd``, ``pwd``,
# ``password1``...), and anything holding "secret" or "token". Matched on the
# text and on its percent-decoded forms, so ``?pass%77ord=`` is found too.
_SECRET_PARAM = re.compile(
    r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]*(?:pass|pwd|secret|token)[A-Za-z0-9_.-]*\s*=", re.IGNORECASE
)
# ``user:password@host`` without a scheme (Go-style MySQL DSNs and the like)
_BARE_USERINFO = re.compile(r"^[^\s/@:=]*:[^@]+@")


def _where(culprit: str | None) -> str:
    return f"{culprit}: " if culprit else ""


def _decodings(text: str) -> list[str]:
    """``text`` and its percent-decoded forms (decoded until nothing changes, 3 times at most)."""
    forms = [text]
    for _ in range(3):
        decoded = unquote_plus(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


def dsn_secret(dsn: str) -> str | None:
    """What in ``dsn`` looks like a credential (``"a password parameter"``,
    ``"a password in user:password@"``), or None. Never the secret itself."""
    for form in _decodings(dsn):
        if _SECRET_PARAM.search(form):
            return "a password parameter"
        for match in re.finditer(r"://([^/?#]*)", form):
            userinfo, at, _host = match[1].rpartition("@")
            if at and ":" in userinfo and userinfo.partition(":")[2]:
                return "a password in user:password@"
        if "://" not in form and _BARE_USERINFO.match(form.strip()):
            return "a password in user:password@"
    return None


def check_dsn(dsn: str, *, culprit: str) -> str:
    """Refuse a connection string holding a credential, in any syntax libpq or the MySQL
    clients accept; the message names what was found, never the value. Returns ``dsn``."""
    found = dsn_secret(dsn)
    if found is not None:
        raise UsageError(
            f"{culprit}: the destination holds {found}; secrets never go in a DSN (it is recorded "
            "in the catalog): give the password with password_env/password_file in a [restore.NAME] "
            "section of the cluster file, or --to-password-env NAME=VARIABLE"
        )
    return dsn


REDACTED = "*** (redacted: it held a secret)"


def redact(text: str) -> str:
    """``text``, or :data:`REDACTED` when :func:`dsn_secret` finds a credential in it
    (rows recorded before secrets were refused are shown this way)."""
    return text if dsn_secret(text) is None else REDACTED


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
    if var is not None and (not isinstance(var, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var)):
        raise UsageError(f"{where}{env_key} must be the name of an environment variable")
    if path is not None and (not isinstance(path, str) or not path or re.search(r"[\x00-\x1f\x7f]", path)):
        raise UsageError(f"{where}{file_key} must be a file path")


def _check_private(info: os.stat_result, path: str, what: str) -> None:
    """Refuse what ssh refuses for a private key: not a regular file, another user's,
    or usable by group or others."""
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{what} {path}: not a regular file")
    if info.st_uid not in (os.getuid(), 0):
        raise UsageError(
            f"{what} {path}: owned by another user (uid {info.st_uid}); a secret file must "
            "belong to the user running txbackup (or root)"
        )
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise UsageError(
            f"{what} {path}: permissions {mode:04o} are too open (group or others may use it); "
            f"run chmod 600 {path}"
        )


def check_private_file(path: str, *, what: str) -> None:
    """Refuse a secret file others may read (a TLS private key...) before a library reads it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None
    _check_private(info, path, what)


def read_small_file(
    path: str, *, what: str, limit: int, check: Callable[[os.stat_result], None] | None = None
) -> bytes:
    """The bytes of the small file ``path`` (at most ``limit``), opened without blocking
    so that a FIFO or a device named by mistake is refused instead of hanging; ``check``
    vets what was opened (not the path: no swap between the check and the read).
    Every refusal is one ``UsageError`` naming ``what`` and ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if check is not None:
            check(info)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{what} {path}: not a regular file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UsageError(f"{what} {path}: too large (more than {limit} bytes)")
    return data


def read_secret_file(path: str, *, what: str) -> str:
    """The stripped text of a secret file, refused (as ssh refuses a private key) when
    it is not a regular file of ours, others than its owner may use it, or it is not a
    short UTF-8 text. ``what`` names the file in messages (e.g. ``password_file``)."""
    data = read_small_file(
        path, what=what, limit=MAX_SECRET_BYTES, check=lambda info: _check_private(info, path, what)
    )
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path}: not UTF-8 text") from None
    if not value:
        raise UsageError(f"{what} {path}: empty")
    return value


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
        return read_secret_file(path, what=f"{where}{file_key}")
    return None
