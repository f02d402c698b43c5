"""Test certificates, made in-process with ``cryptography`` (no openssl binary needed).

A :class:`CertificateAuthority` issues server and client certificates the way a
real deployment has them: a CA certificate (``ca.cert``) that the other side
trusts, and leaf certificates with the right extended key usage, subject
alternative names, key identifiers and validity. Keys are written 0600, as a
real private key must be (txbackup refuses one others may read).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate (PEM) and its private key (PEM, 0600)."""

    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _names(dns: tuple[str, ...], ips: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    return names


class CertificateAuthority:
    """A CA in ``folder`` (``<name>-ca.pem``, ``<name>-ca.key``) that issues certificates."""

    def __init__(self, folder: Path, name: str = "test") -> None:
        self.folder = folder
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"txbackup {name} CA")])
        start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        public = self._key.public_key()
        usage = x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = folder / f"{name}-ca.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        _write_key(folder / f"{name}-ca.key", self._key)

    def issue(
        self,
        common_name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        client: bool = False,
        file: str | None = None,
    ) -> Issued:
        """A leaf certificate for ``common_name``: a server certificate (names ``dns`` and
        ``ips``), or a client certificate when ``client``. Files: ``<file>.pem`` and
        ``<file>.key`` in the CA's folder (``file`` defaults to the common name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
        )
        names = _names(dns, ips)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        stem = file or common_name
        issued = Issued(self.folder / f"{stem}.pem", self.folder / f"{stem}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(issued.key, key)
        return issued

    def server(self, file: str = "server") -> Issued:
        """A server certificate for ``localhost`` and ``127.0.0.1``."""
        return self.issue("localhost", dns=("localhost",), ips=("127.0.0.1",), file=f"{self.name}-{file}")

    def client(self, file: str = "client") -> Issued:
        """A client certificate (``CN=txbackup``)."""
        return self.issue("txbackup", client=True, file=f"{self.name}-{file}")
