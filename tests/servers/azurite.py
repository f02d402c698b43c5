"""Azurite, the Azure Blob Storage emulator, for the object-store tests (no pytest inside).

    with AzuriteServer() as server:
        container = server.new_container()    # a fresh, empty container (unique name)
        container.blob_endpoint               # http://127.0.0.1:<port>/devstoreaccount1
        container.url("backups/")             # "az://<container>/backups/"
        container.env()                       # AZURE_STORAGE_* variables for a child process
        container.store()                     # an obstore AzureStore of the container
        container.client()                    # an azure-storage-blob ContainerClient
        server.kill()                         # SIGKILL the server now (fault tests)

Azurite comes from the npm registry (``tests/emulators/fetch`` installs it into
``.cache/npm``); only its blob service is started, in loose mode (unknown headers
ignored), with ``--skipApiVersionCheck`` (the SDKs may be newer than the emulator)
and ``--inMemoryPersistence`` (nothing on disk; a kill loses everything). The
account is the emulator's well-known ``devstoreaccount1`` and its published key:
they are test constants, not secrets. Azurite enforces ``If-None-Match: *`` on
Put Blob (409 BlobAlreadyExists) and ``If-Match``. Measured start: about 1.3 s.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.servers.daemon import Daemon, DaemonServer
from tests.servers.obstore_kwargs import obstore_kwargs

if TYPE_CHECKING:
    from obstore.store import AzureStore

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "azurite-blob"
FETCH = REPO / "tests" / "emulators" / "fetch"
ACCOUNT = "devstoreaccount1"
# the emulator's published account key (every Azurite and the old storage emulator use it)
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def missing_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (Azurite runs on Node.js)"
    if not AZURITE.exists():
        return f"Azurite missing ({AZURITE}): run {FETCH.relative_to(REPO)} (needs npm)"
    return None


@dataclass(frozen=True)
class AzureContainer:
    """One container of the emulator, and everything a client needs to reach it."""

    blob_endpoint: str
    account: str
    key: str
    container: str

    def url(self, prefix: str = "") -> str:
        return f"az://{self.container}/{prefix}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};"
            f"AccountKey={self.key};BlobEndpoint={self.blob_endpoint};"
        )

    def env(self) -> dict[str, str]:
        """AZURE_STORAGE_* variables that point obstore's default chain at the emulator."""
        return {
            "AZURE_STORAGE_ACCOUNT_NAME": self.account,
            "AZURE_STORAGE_ACCOUNT_KEY": self.key,
            "AZURE_STORAGE_ENDPOINT": self.blob_endpoint,
            "AZURE_ALLOW_HTTP": "true",
        }

    def store(self, prefix: str | None = None, **config: Any) -> AzureStore:
        """An obstore ``AzureStore`` of the container; ``config`` adds AzureConfig keys."""
        from obstore.store import AzureStore

        settings: dict[str, Any] = {
            "account_name": self.account,
            "account_key": self.key,
            "endpoint": self.blob_endpoint,
        }
        return AzureStore(self.container, prefix=prefix, **obstore_kwargs(settings, config))

    def client(self) -> Any:
        """An azure-storage-blob ``ContainerClient`` of the container."""
        from azure.storage.blob import ContainerClient

        return ContainerClient.from_connection_string(self.connection_string, self.container)


class AzuriteServer(DaemonServer):
    """``persistent=True`` keeps blobs in the server's folder (they survive ``restart()``)."""

    def __init__(self, persistent: bool = False) -> None:
        super().__init__()
        self.persistent = persistent
        self.blob_endpoint = ""

    def _make_daemon(self) -> Daemon:
        def argv(port: int, folder: Path) -> list[str]:
            # in-memory persistence excludes --location (the folder then stays empty)
            keep = ["--location", str(folder / "data")] if self.persistent else ["--inMemoryPersistence"]
            return [
                str(AZURITE),
                "--blobHost", "127.0.0.1",
                "--blobPort", str(port),
                *keep,
                "--loose",
                "--skipApiVersionCheck",
                "--disableProductStyleUrl",
                "--silent",
            ]  # fmt: skip

        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
        env["AZURITE_ACCOUNTS"] = f"{ACCOUNT}:{ACCOUNT_KEY}"
        return Daemon("azurite", argv, env=env)

    def _started(self, port: int) -> None:
        self.blob_endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"

    def container(self, name: str) -> AzureContainer:
        return AzureContainer(self.blob_endpoint, ACCOUNT, ACCOUNT_KEY, name)

    def new_container(self, stem: str = "txb") -> AzureContainer:
        """Create a fresh, empty container with a unique name."""
        container = self.container(f"{stem}-{uuid.uuid4().hex[:16]}")
        container.client().create_container()
        return container
