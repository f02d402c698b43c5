"""pytest fixtures of the object-store test servers (a plugin: tests/conftest.py loads it).

Servers are started once per session; every test gets a fresh bucket or container:

    def test_x(s3_bucket: S3Bucket): ...             # parametrized: moto and s3proxy
    def test_y(moto_s3_bucket: S3Bucket): ...        # moto only (enforces conditional writes)
    def test_z(azure_container: AzureContainer): ...
    def test_g(gcs_bucket: GcsBucket): ...

A test that kills its server needs one of its own: use the context managers of
``tests.servers.s3`` / ``azurite`` / ``gcs`` directly, or the ``fresh_s3_server``
fixture (a new server per test, parametrized like ``s3_bucket``).
Missing binaries skip the tests, and fail them under CI=true (tests.conftest.require).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import azurite, gcs, s3
from tests.servers.azurite import AzureContainer, AzuriteServer
from tests.servers.gcs import FakeGcsServer, GcsBucket
from tests.servers.s3 import MotoS3Server, S3Bucket, S3ProxyServer, S3Server

S3_KINDS = ("moto", "s3proxy")
_SESSION_FIXTURE = {"moto": "moto_s3_server", "s3proxy": "s3proxy_server"}


def _require(reason: str | None) -> None:
    from tests.conftest import require

    require(reason)


def _s3_server(kind: str) -> S3Server:
    if kind == "moto":
        _require(s3.moto_missing_reason())
        return MotoS3Server()
    _require(s3.s3proxy_missing_reason())
    return S3ProxyServer()


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[S3Server]:
    with _s3_server("moto") as server:
        yield server


@pytest.fixture(scope="session")
def s3proxy_server() -> Iterator[S3Server]:
    with _s3_server("s3proxy") as server:
        yield server


@pytest.fixture
def moto_s3_bucket(moto_s3_server: S3Server) -> S3Bucket:
    return moto_s3_server.new_bucket()


@pytest.fixture
def s3proxy_bucket(s3proxy_server: S3Server) -> S3Bucket:
    return s3proxy_server.new_bucket()


@pytest.fixture(params=S3_KINDS)
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """The session's moto, then the session's s3proxy."""
    server: S3Server = request.getfixturevalue(_SESSION_FIXTURE[request.param])
    return server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> S3Bucket:
    """A fresh bucket on moto, then on s3proxy."""
    return s3_server.new_bucket()


@pytest.fixture(params=S3_KINDS)
def fresh_s3_server(request: pytest.FixtureRequest) -> Iterator[S3Server]:
    """A server of this test's own (moto, then s3proxy), free to be killed."""
    with _s3_server(request.param) as server:
        yield server


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteServer]:
    _require(azurite.missing_reason())
    with AzuriteServer() as server:
        yield server


@pytest.fixture
def azure_container(azurite_server: AzuriteServer) -> AzureContainer:
    return azurite_server.new_container()


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[FakeGcsServer]:
    _require(gcs.missing_reason())
    with FakeGcsServer() as server:
        yield server


@pytest.fixture
def gcs_bucket(gcs_server: FakeGcsServer) -> GcsBucket:
    return gcs_server.new_bucket()
