"""Shared fixtures: real database servers, started once per test session.

A server whose binaries are not installed makes its tests skip, with the
reason, on a developer's machine; under ``CI=true`` they fail instead, so a
broken CI image cannot pass silently. A server that is installed but fails
to start is always an error.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.servers import cassandra as cassandra_servers
from tests.servers import mariadb as mariadb_servers
from tests.servers import postgres as postgres_servers
from tests.servers.cassandra import CassandraCluster
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from txbackup.demo.sample_service import SampleServer, start_sample_server

# S3 (moto, s3proxy), Azure (Azurite) and GCS (fake-gcs-server) fixtures
pytest_plugins = ["tests.servers.object_stores"]


def require(reason: str | None) -> None:
    """Skip (or, under CI=true, fail) when ``reason`` says something is missing."""
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: not skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    require(postgres_servers.missing_reason())
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    require(mariadb_servers.missing_reason())
    with MariaDBServer() as server:
        yield server


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> str:
    """A fresh, empty database (unique name) on the session's PostgreSQL server."""
    return postgres_server.create_database("src")


@pytest.fixture
def mariadb_db(mariadb_server: MariaDBServer) -> str:
    """A fresh, empty database (unique name) on the session's MariaDB server."""
    return mariadb_server.create_database("src")


@pytest.fixture(scope="session")
def cassandra_cluster() -> Iterator[CassandraCluster]:
    """One real Cassandra 5.0 node for the whole session."""
    require(cassandra_servers.missing_reason())
    with CassandraCluster(1) as cluster:
        yield cluster


@pytest.fixture
async def app() -> AsyncIterator[SampleServer]:
    """A sample service (the one the demo pauses) for a backup to pause and unpause."""
    server = await start_sample_server()
    yield server
    await server.stop()
