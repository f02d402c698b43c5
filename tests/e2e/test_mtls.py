"""Mutual TLS on rpc.Admin, end to end: a ``txbackup sample-server`` that requires client
certificates, and ``txbackup pause/status/unpause/backup`` as processes, with the right
certificate, without one, with one from another CA, in plaintext, with a key others may read.

The scalar-admin protocol authenticates nobody: on a plaintext port whoever connects may
pause the applications. These tests check that with ``--tls-client-ca`` only holders of a
certificate signed by that CA can, and that every refusal is one line naming the endpoint
(or the file) and leaves the server serving.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import CertificateAuthority, Issued
from tests.e2e.support import check_backup_events
from tests.integration.test_engine import make_db
from tests.servers.processes import TXBACKUP, sample_server_process, txbackup
from txbackup.admin.client import AdminClient, ClientOptions, Endpoint, TlsOptions


@dataclass(frozen=True)
class Pki:
    ca: Path  # signed the server's and the good client's certificates
    server: Issued
    client: Issued
    stranger: Issued  # a client certificate from another CA
    other_ca: Path  # signed the stranger's


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ours, other = CertificateAuthority(folder, "ours"), CertificateAuthority(folder, "other")
    return Pki(ours.cert, ours.server(), ours.client(), other.client(), other.cert)


@pytest.fixture(scope="module")
def endpoint(pki: Pki) -> Iterator[str]:
    tls = ("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    with sample_server_process("--lease", "30s", *tls, "--tls-client-ca", str(pki.ca)) as (_, address):
        yield address


def good(pki: Pki) -> list[str]:
    """The flags of a client the server accepts."""
    return ["--ca-root-cert-path", str(pki.ca), "--tls-cert-path", str(pki.client.cert),
            "--tls-key-path", str(pki.client.key)]  # fmt: skip


def paused(endpoint: str, pki: Pki) -> bool | None:
    """Whether the endpoint is paused, asked in-process by a client it accepts."""
    tls = TlsOptions(ca_file=str(pki.ca), cert_file=str(pki.client.cert), key_file=str(pki.client.key))

    async def check() -> bool | None:
        async with AdminClient(Endpoint.parse(endpoint), ClientOptions(timeout=5, tls=tls)) as client:
            return await client.check_paused()

    return asyncio.run(check())


def test_pause_status_unpause_with_a_client_certificate(endpoint: str, pki: Pki) -> None:
    holder = subprocess.Popen(
        [*TXBACKUP, "pause", "-a", endpoint, *good(pki), "--hold", "60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not paused(endpoint, pki):
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the pause did not take effect"
            time.sleep(0.05)
        status = txbackup("status", "-a", endpoint, *good(pki), "--json")
        assert status.returncode == 0, status.stderr
        assert [row["state"] for row in json.loads(status.stdout)] == ["paused"]
        result = txbackup("unpause", "-a", endpoint, *good(pki))
        assert result.returncode == 0, result.stderr
        assert paused(endpoint, pki) is False
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.communicate(timeout=10)


def test_a_client_without_an_accepted_certificate_cannot_pause(endpoint: str, pki: Pki) -> None:
    cases = {
        "does it require a client certificate?": ["--ca-root-cert-path", str(pki.ca)],  # no client cert
        "did it refuse our certificate?": ["--ca-root-cert-path", str(pki.ca),  # one from another CA
                                           "--tls-cert-path", str(pki.stranger.cert),
                                           "--tls-key-path", str(pki.stranger.key)],
        "does it require TLS?": [],  # plaintext
        "the server's certificate is not trusted": ["--ca-root-cert-path", str(pki.other_ca),
                                                    *good(pki)[2:]],  # we distrust the server
    }  # fmt: skip
    attempts = {  # at once: each is a process of its own
        expected: subprocess.Popen(
            [*TXBACKUP, "pause", "-a", endpoint, *flags, "--hold", "5s"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for expected, flags in cases.items()
    }
    for expected, proc in attempts.items():
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1, err
        assert err.count("\n") == 1 and endpoint in err and expected in err, err
        assert "Traceback" not in err and out == ""
    assert paused(endpoint, pki) is False


def test_a_key_others_may_read_is_refused_before_any_call(pki: Pki, tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    shutil.copyfile(pki.client.key, key)
    key.chmod(0o644)
    flags = ["--ca-root-cert-path", str(pki.ca), "--tls-cert-path", str(pki.client.cert),
             "--tls-key-path", str(key)]  # fmt: skip
    result = txbackup("pause", "-a", "127.0.0.1:1", *flags)  # no server: refused before connecting
    assert result.returncode == 2
    assert result.stderr == (
        f"txbackup: --tls-key-path {key}: permissions 0644 are too open (group or others may use it); "
        f"run chmod 600 {key}\n"
    )
    server = ("sample-server", "--port", "0", "--tls-cert", str(pki.client.cert), "--tls-key", str(key))
    result = txbackup(*server)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"--tls-key {key}: permissions 0644" in result.stderr


def _cluster(folder: Path, endpoint: str) -> Path:
    """A cluster file in ``folder`` whose certificates are given relative to it (certs/)."""
    make_db(folder / "app.db", 50)
    config = folder / "cluster.toml"
    config.write_text(
        f"""
[applications]
endpoints = ["{endpoint}"]

[applications.tls]
ca_file = "certs/ca.pem"
cert_file = "certs/client.pem"
key_file = "certs/client.key"

[storage]
path = "store"

[[targets]]
name = "app"
kind = "sqlite"
path = "app.db"
"""
    )
    return config


def test_backup_through_mutual_tls_with_paths_relative_to_the_cluster_file(
    endpoint: str, pki: Pki, tmp_path: Path
) -> None:
    folder = tmp_path / "cluster"
    (folder / "certs").mkdir(parents=True)
    shutil.copyfile(pki.ca, folder / "certs" / "ca.pem")
    shutil.copyfile(pki.client.cert, folder / "certs" / "client.pem")
    shutil.copy2(pki.client.key, folder / "certs" / "client.key")  # keeps 0600
    config = _cluster(folder, endpoint)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = txbackup("backup", "-c", str(config), "--json", cwd=str(elsewhere))
    assert result.returncode == 0, result.stderr
    check_backup_events(result.stdout)
    assert paused(endpoint, pki) is False

    # the key is checked where the file says it is, before anything is paused
    (folder / "certs" / "client.key").chmod(0o640)
    result = txbackup("backup", "-c", str(config), cwd=str(elsewhere))
    assert result.returncode == 2
    key = folder / "certs" / "client.key"
    assert result.stderr.count("\n") == 1
    assert f"[applications.tls]: key_file {key}: permissions 0640 are too open" in result.stderr
