"""What the SQL server targets (``postgres``, ``mysql``) share, SQL aside.

:class:`Prepared` holds what a ``preflight()`` opened for the next
``capture()`` (connections, a session): a new ``keep()`` closes what an
earlier one kept, ``take()`` hands it over, and a timer closes it if no
capture takes it in time. :func:`server_settings` reads where the server is,
and the ``check_*`` helpers read a restore destination.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

from txbackup.errors import UsageError
from txbackup.safepaths import shown
from txbackup.secrets import check_dsn, check_secret, resolve_secret
from txbackup.settings import setting_int, setting_str
from txbackup.targets.base import RENAME, refuse_unknown_destination

T = TypeVar("T")

DEST_KEYS = frozenset({"dsn", "host", "port", "user", "password", "database"})
"""The settings of a restore destination (``--to``)."""

_NEW_NAME = re.compile(r"[A-Za-z0-9_$-]+")

_LOOPBACK = frozenset({"", "localhost", "127.0.0.1", "::1", "localhost.localdomain"})


def host_key(host: str) -> str:
    """A server's host as compared when a drill place must differ from production: the names
    of this machine count as one (other aliases of one host are not detected: no DNS lookup)."""
    host = host.strip().lower().strip("[]")
    return "localhost" if host in _LOOPBACK else host


class Prepared(Generic[T]):
    """What a preflight opened, waiting for the next capture; ``empty()`` stands for nothing
    held and ``close(value)`` closes a held value (quietly: it runs from a timer too)."""

    def __init__(self, empty: Callable[[], T], close: Callable[[T], None]) -> None:
        self._empty = empty
        self._close = close
        self._value = empty()
        self._lock = threading.Lock()
        self._expiry: threading.Timer | None = None

    def keep(self, value: T, ttl_s: float) -> None:
        """Keep ``value`` for the next capture; a timer closes it after ``ttl_s`` if it never comes."""
        timer = threading.Timer(ttl_s, self._expire, (value,))
        timer.daemon = True
        with self._lock:
            stale, self._value = self._value, value
            if self._expiry is not None:
                self._expiry.cancel()
            self._expiry = timer
        timer.start()
        self._close(stale)

    def take(self) -> T:
        """What is held, now the caller's (``empty()`` when nothing is)."""
        with self._lock:
            value, self._value = self._value, self._empty()
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None
        return value

    def _expire(self, value: T) -> None:
        with self._lock:
            if self._value is not value:
                return  # taken by a capture, or replaced
            self._value, self._expiry = self._empty(), None
        self._close(value)

    def close(self) -> None:
        """Close what is held and no capture took. Idempotent."""
        self._close(self.take())


def server_settings(
    conf: Mapping[str, Any], *, port: int, user: str, culprit: str
) -> tuple[str, int, str, dict[str, Any]]:
    """(host, port, user, password settings) of a target's table, ``port`` and ``user``
    being the defaults; the password is only checked here and read when first needed."""
    host = setting_str(conf, "host", "127.0.0.1", culprit=culprit)
    port = setting_int(conf, "port", port, culprit=culprit, minimum=1, maximum=65535)
    user = setting_str(conf, "user", user, culprit=culprit)
    check_secret(conf, culprit=culprit)
    secret = {k: conf[k] for k in ("password_env", "password_file") if k in conf}
    return host, port, user, secret


def check_destination_keys(dest: Mapping[str, str], *, label: str) -> None:
    """Refuse restore destination settings the SQL targets do not know, and a DSN holding
    a secret (the ``password`` comes on its own, from password_env/password_file)."""
    refuse_unknown_destination(dest, DEST_KEYS, label, renames=True)
    if dest.get("dsn"):
        check_dsn(dest["dsn"], culprit=label)


def check_destination_database(database: str | None, databases: Sequence[str], *, label: str) -> None:
    """A destination database name only renames the one database of a single-database target."""
    if database and len(databases) != 1:
        raise UsageError(
            f"{label}: a destination database name needs a single-database target; "
            "several databases are restored into same-named ones"
        )


def destination_names(
    dest: Mapping[str, str],
    databases: Sequence[str],
    *,
    configured: Sequence[str],
    label: str,
    limit: int,
    reserved: Collection[str],
    recorded: Collection[str] | None = None,
) -> dict[str, str]:
    """Database -> destination database, for every database of ``databases`` (the ones a
    restore may write), from the destination's ``database`` (renames the single database of
    a target ``configured`` with one) and ``rename.OLD`` keys, checked without contacting anything:

    - OLD is one of ``databases`` (and of ``recorded``, the databases the set holds, when
      known);
    - NEW is a plain name (letters, digits, ``_``, ``$``, ``-``; at most ``limit``), not
      one of the server's own databases (``reserved``): a rename value is typed by a user
      or read from a file, and it names what gets created and written;
    - no two databases land in the same one (a renamed one onto another of the set that
      keeps its name, or two renamed onto one).
    """
    names = {db: db for db in databases}
    database = dest.get("database")
    check_destination_database(database, configured, label=label)
    if database:
        names[configured[0]] = database
    renamed: dict[str, str] = {}
    for key, new in dest.items():
        if not key.startswith(RENAME):
            continue
        old = key[len(RENAME) :]
        if old not in names:
            raise UsageError(
                f"{label}: cannot rename database {shown(old, 80)}: not one of the target's "
                f"({', '.join(databases)})"
            )
        if recorded is not None and old not in recorded:
            held = ", ".join(sorted(recorded)) or "none"
            raise UsageError(
                f"{label}: cannot rename database {shown(old, 80)}: "
                f"the set does not hold it (it holds {held})"
            )
        if not _NEW_NAME.fullmatch(new) or len(new) > limit:
            raise UsageError(
                f"{label}: cannot rename database {shown(old, 80)} to {shown(new, 80)}: a new name "
                f"takes letters, digits, '_', '$' and '-', at most {limit}"
            )
        if new.lower() in reserved:
            raise UsageError(
                f"{label}: cannot rename database {shown(old, 80)} to {new!r}: a system database"
            )
        if database and old == configured[0] and new != database:
            raise UsageError(
                f"{label}: database {shown(old, 80)} is given two destination names ({database}, {new})"
            )
        renamed[old] = new
    names.update(renamed)
    kept = names if recorded is None else {k: v for k, v in names.items() if k in recorded}
    seen: dict[str, str] = {}
    for old, new in kept.items():
        if new in seen:
            raise UsageError(
                f"{label}: databases {shown(seen[new], 80)} and {shown(old, 80)} would both be restored "
                f"into {new!r}"
            )
        seen[new] = old
    return names


@dataclass(kw_only=True)
class ServerPassword:
    """A server's password: given (a restore destination), or read from the
    target's password_env / password_file when first needed, so loading the
    cluster file needs no secret."""

    given_password: str | None = None
    secret_conf: Mapping[str, Any] = field(default_factory=dict)
    culprit: str = ""

    @cached_property
    def password(self) -> str | None:
        if self.given_password is not None:
            return self.given_password
        return resolve_secret(self.secret_conf, culprit=self.culprit)
