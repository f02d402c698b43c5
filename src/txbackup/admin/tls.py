"""Certificates and private keys for rpc.Admin's TLS, read and checked before use.

gRPC takes PEM bytes and only finds out at the first handshake that they are
wrong, with a log line on stderr and a vague UNAVAILABLE. So every file is read
and checked here first, and a bad one is a one-line ``UsageError`` naming it:
a certificate file must be a regular file holding PEM certificates OpenSSL can
parse; a private key is a secret file (owner-only, as ssh wants a private key:
:func:`txbackup.secrets.read_secret_file`), unencrypted PEM, and must match the
first certificate of its chain. Private keys are never logged nor put in a
message.
"""

from __future__ import annotations

import re
import ssl
from typing import NoReturn

from txbackup.errors import UsageError
from txbackup.secrets import read_secret_file, read_small_file

MAX_CERTIFICATE_BYTES = 1 << 20
"""A certificate file (a chain, a CA bundle) larger than this is not one."""

_PRIVATE_KEY = re.compile(rb"^-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----\s*$", re.MULTILINE)
# PKCS#8 ("BEGIN ENCRYPTED PRIVATE KEY") or OpenSSL's traditional format ("Proc-Type: 4,ENCRYPTED")
_ENCRYPTED_KEY = re.compile(
    rb"^(?:-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,\s*ENCRYPTED)", re.MULTILINE
)


def _read_file(path: str, what: str) -> bytes:
    """The bytes of a (non-secret) certificate file: a regular file, at most 1 MiB."""
    return read_small_file(path, what=what, limit=MAX_CERTIFICATE_BYTES)


def check_certificates(data: bytes, *, what: str) -> bytes:
    """``data`` if it holds PEM certificates OpenSSL can parse (``what`` names it in
    messages: ``ca_file /etc/ca.pem``, ``ca_pem``)."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise UsageError(f"{what}: not a PEM certificate (no BEGIN CERTIFICATE block)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ValueError, ssl.SSLError):
        raise UsageError(f"{what}: not a valid PEM certificate") from None
    return data


def read_certificates(path: str, *, what: str) -> bytes:
    """The PEM certificates of file ``path`` (a CA, a certificate chain), checked."""
    return check_certificates(_read_file(path, what), what=f"{what} {path}")


def _no_passphrase() -> NoReturn:
    # called by OpenSSL only for an encrypted key that the checks below missed: never prompt
    raise UsageError("encrypted")


def load_key_pair(
    cert_file: str, key_file: str, *, cert_what: str = "cert_file", key_what: str = "key_file"
) -> tuple[bytes, bytes]:
    """(certificate chain, private key), both PEM, for ``grpc.ssl_*_credentials``.

    The key is read as the secret it is (an owner-only regular file, else a one-line
    refusal telling ``chmod 600``), must be unencrypted PEM (gRPC cannot use an
    encrypted one) and must belong to the chain's first certificate. ``cert_what`` and
    ``key_what`` name the files in messages (a setting, a flag).
    """
    key = read_secret_file(key_file, what=key_what).encode() + b"\n"
    chain = read_certificates(cert_file, what=cert_what)
    if _ENCRYPTED_KEY.search(key):
        raise UsageError(
            f"{key_what} {key_file}: the private key is encrypted; gRPC needs it unencrypted "
            "(keep it in an owner-only file instead)"
        )
    if not _PRIVATE_KEY.search(key):
        raise UsageError(f"{key_what} {key_file}: not a PEM private key (no BEGIN PRIVATE KEY block)")
    # OpenSSL checks that the key parses and matches the certificate; it reads the files
    # by path (the key was checked above: ours, owner-only)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except UsageError:
        raise UsageError(f"{key_what} {key_file}: the private key is encrypted") from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise UsageError(
                f"{key_what} {key_file}: this private key does not belong to the certificate in {cert_file}"
            ) from None
        raise UsageError(f"{key_what} {key_file}: not a usable private key for {cert_file}") from None
    except OSError as exc:
        raise UsageError(f"{key_what} {key_file}: {exc.strerror}") from None
    return chain, key
