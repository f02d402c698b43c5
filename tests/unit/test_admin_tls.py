"""rpc.Admin's TLS files (txbackup.admin.tls) and mutual TLS between AdminClient and a
grpc.aio server made with server_credentials, in-process.

Every bad certificate or key is one line naming the file, found before gRPC sees it
(gRPC would only fail at the handshake, logging on stderr); a private key is never in
a message.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.certs import CertificateAuthority, Issued
from tests.integration.test_engine import PauseCounter
from txbackup.admin.client import AdminClient, ClientOptions, Endpoint, TlsOptions
from txbackup.admin.gate import PauseGate
from txbackup.admin.server import server_credentials, start_admin_server
from txbackup.admin.tls import load_key_pair
from txbackup.config import load_cluster
from txbackup.demo.sample_service import call_work, start_sample_server
from txbackup.errors import PauseError, UsageError


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def ours(folder: Path) -> CertificateAuthority:
    return CertificateAuthority(folder, "ours")


@pytest.fixture(scope="module")
def client(ours: CertificateAuthority) -> Issued:
    return ours.client()


def _encrypted(key: Path, to: Path, form: serialization.PrivateFormat) -> Path:
    """A copy of ``key`` protected by a passphrase (0600)."""
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    encryption = serialization.BestAvailableEncryption(b"passphrase")
    return _write(to, private.private_bytes(serialization.Encoding.PEM, form, encryption))


BAD_PAIRS: dict[str, tuple[Callable[[Path, Issued, Issued], tuple[Path, Path]], str]] = {
    "key readable by others": (
        lambda d, c, o: (c.cert, _copy(c.key, d / "k", 0o644)),
        "key_file {key}: permissions 0644 are too open (group or others may use it); run chmod 600 {key}",
    ),
    "key of another certificate": (lambda d, c, o: (c.cert, o.key), "does not belong to the certificate in"),
    "key encrypted (PKCS#8)": (
        lambda d, c, o: (c.cert, _encrypted(c.key, d / "k", serialization.PrivateFormat.PKCS8)),
        "key_file {key}: the private key is encrypted",
    ),
    "key encrypted (OpenSSL's traditional format)": (
        lambda d, c, o: (c.cert, _encrypted(c.key, d / "k", serialization.PrivateFormat.TraditionalOpenSSL)),
        "key_file {key}: the private key is encrypted",
    ),
    "key not PEM": (lambda d, c, o: (c.cert, _write(d / "k", b"not a key\n")), "not a PEM private key"),
    "key a folder": (lambda d, c, o: (c.cert, d), "key_file {key}: not a regular file"),
    "key missing": (lambda d, c, o: (c.cert, d / "nope.key"), "key_file {key}: no such file"),
    "certificate not PEM": (lambda d, c, o: (_write(d / "c", b"junk"), c.key), "cert_file {cert}: not a PEM"),
    "certificate corrupt": (
        lambda d, c, o: (
            _write(d / "c", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            c.key,
        ),
        "cert_file {cert}: not a valid PEM certificate",
    ),
    "certificate a FIFO": (lambda d, c, o: (_fifo(d / "c"), c.key), "cert_file {cert}: not a regular file"),
    "certificate is the key": (lambda d, c, o: (c.key, c.key), "cert_file {cert}: not a PEM certificate"),
}


def _copy(source: Path, to: Path, mode: int) -> Path:
    shutil.copyfile(source, to)
    to.chmod(mode)
    return to


def _write(to: Path, data: bytes) -> Path:
    to.write_bytes(data)
    to.chmod(0o600)
    return to


def _fifo(to: Path) -> Path:
    os.mkfifo(to)
    return to


@pytest.mark.parametrize("case", list(BAD_PAIRS))
def test_a_bad_certificate_or_key_is_one_line_naming_the_file(
    case: str, ours: CertificateAuthority, client: Issued, tmp_path: Path
) -> None:
    other = CertificateAuthority(tmp_path, "other").client()
    make, expected = BAD_PAIRS[case]
    cert, key = make(tmp_path, client, other)
    with pytest.raises(UsageError) as err:
        TlsOptions(ca_file=str(ours.cert), cert_file=str(cert), key_file=str(key)).load()
    message = str(err.value)
    assert expected.format(cert=cert, key=key) in message and "\n" not in message
    secret = client.key.read_text().splitlines()[1]
    assert secret not in message


def test_the_certificate_goes_with_its_key(ours: CertificateAuthority, client: Issued) -> None:
    with pytest.raises(UsageError, match="cert_file needs key_file"):
        TlsOptions(cert_file=str(client.cert))
    with pytest.raises(UsageError, match="key_file needs cert_file"):
        TlsOptions(key_file=str(client.key))
    with pytest.raises(UsageError, match="ca_pem: not a PEM certificate"):
        TlsOptions(ca_pem="hello").load()
    pasted = ours.cert.read_text() + client.key.read_text()
    with pytest.raises(UsageError) as err:
        TlsOptions(ca_pem=pasted).load()
    assert str(err.value).startswith("ca_pem holds a private key; a key never goes in the cluster file")
    assert client.key.read_text().splitlines()[1] not in str(err.value)
    chain, key = load_key_pair(str(client.cert), str(client.key))
    assert chain == client.cert.read_bytes() and b"PRIVATE KEY" in key


def test_the_cluster_file_names_the_table(client: Issued, tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(
        f'[applications]\nendpoints = ["h:1"]\n[applications.tls]\ncert_file = "{client.cert}"\n'
        '[[targets]]\nname = "a"\nkind = "sqlite"\npath = "a.db"\n'
    )
    with pytest.raises(UsageError) as err:
        load_cluster(config)
    assert str(err.value) == f"cluster file {config} [applications.tls]: cert_file needs key_file: " + (
        "a client certificate goes with its private key"
    )


def test_server_credentials_names_the_files_as_told(client: Issued, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--tls-client-ca .*: no such file$"):
        server_credentials(str(client.cert), str(client.key), str(tmp_path / "ca.pem"),
                           names=("--tls-cert", "--tls-key", "--tls-client-ca"))  # fmt: skip


async def test_a_client_without_a_certificate_never_reaches_the_gate(
    ours: CertificateAuthority, client: Issued
) -> None:
    """The sample service (Work and rpc.Admin on one port), mutual TLS: a client without a
    certificate is refused in the handshake, so the gate never sees its Pause."""
    server = ours.server()
    tls = server_credentials(str(server.cert), str(server.key), client_ca_file=str(ours.cert))
    sample = await start_sample_server(lease_seconds=None, tls=tls)
    counter = PauseCounter(sample)
    endpoint = Endpoint("127.0.0.1", sample.port)
    try:
        anonymous = TlsOptions(ca_file=str(ours.cert))
        async with AdminClient(endpoint, ClientOptions(timeout=5, tls=anonymous)) as refused:
            with pytest.raises(PauseError) as err:
                await refused.pause()
        assert str(err.value).startswith(f"pause {endpoint}: ") and "client certificate" in str(err.value)
        assert counter.pauses == 0 and not sample.gate.paused

        mutual = TlsOptions(ca_file=str(ours.cert), cert_file=str(client.cert), key_file=str(client.key))
        async with AdminClient(endpoint, ClientOptions(timeout=5, tls=mutual)) as accepted:
            await accepted.pause(wait_outstanding=False)
            assert counter.pauses == 1 and await accepted.check_paused() is True
            await accepted.unpause()
        assert await call_work(sample.target, 0, timeout=5, credentials=mutual.credentials()) == b"done 0"
    finally:
        await sample.stop(None)


async def test_admin_port_of_its_own_with_mutual_tls(ours: CertificateAuthority, client: Issued) -> None:
    """The pattern the README shows: rpc.Admin alone on a port of its own, client
    certificates required, sharing the application's gate."""
    server = ours.server()
    gate = PauseGate(lease_seconds=None)
    tls = server_credentials(str(server.cert), str(server.key), client_ca_file=str(ours.cert))
    admin, port = await start_admin_server(gate, tls=tls)
    endpoint = Endpoint("127.0.0.1", port)
    try:
        mutual = TlsOptions(ca_file=str(ours.cert), cert_file=str(client.cert), key_file=str(client.key))
        async with AdminClient(endpoint, ClientOptions(timeout=5, tls=mutual)) as accepted:
            await accepted.pause(wait_outstanding=False)
            assert gate.paused and await accepted.check_paused() is True
            await accepted.unpause()
            assert not gate.paused
        async with AdminClient(endpoint, ClientOptions(timeout=5)) as plaintext:
            with pytest.raises(PauseError, match=f"^check {endpoint}: .*does it require TLS"):
                await plaintext.check_paused()
    finally:
        await admin.stop(None)
        await gate.unpause()


async def test_a_server_certificate_for_another_name_says_so(ours: CertificateAuthority) -> None:
    server = ours.issue("admin.example", dns=("admin.example",), file="named")
    gate = PauseGate(lease_seconds=None)
    admin, port = await start_admin_server(gate, tls=server_credentials(str(server.cert), str(server.key)))
    endpoint = Endpoint("127.0.0.1", port)
    try:
        tls = TlsOptions(ca_file=str(ours.cert))
        async with AdminClient(endpoint, ClientOptions(timeout=5, tls=tls)) as client:
            expected = f"^check {endpoint}: TLS: the server's certificate does not name the host"
            with pytest.raises(PauseError, match=expected):
                await client.check_paused()
        named = TlsOptions(ca_file=str(ours.cert), override_authority="admin.example")
        async with AdminClient(endpoint, ClientOptions(timeout=5, tls=named)) as client:
            assert await client.check_paused() is False
    finally:
        await admin.stop(None)
