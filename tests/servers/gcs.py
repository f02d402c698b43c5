"""fake-gcs-server, a Google Cloud Storage emulator, for the object-store tests (no pytest inside).

    with FakeGcsServer() as server:
        bucket = server.new_bucket()          # a fresh, empty bucket (unique name)
        bucket.base_url                       # http://127.0.0.1:<port>
        bucket.url("backups/")                # "gs://<bucket>/backups/"
        bucket.env()                          # GOOGLE_* variables for a child process
        bucket.store()                        # an obstore GCSStore of the bucket
        server.kill()                         # SIGKILL the server now (fault tests)

The emulator is ``github.com/fsouza/fake-gcs-server``, built from the Go module
proxy by ``tests/emulators/fetch`` into ``.cache/go/bin``. It serves plain http on
127.0.0.1 with the filesystem backend in the server's temporary folder; it checks
no credentials (clients send a fake bearer token). No pub/sub events are
configured, so it talks to nothing else. Measured start: well under a second.

What it does not emulate (checked with obstore 0.12.1): the XML API's object PUT
and multipart upload (``POST ?uploads``), which obstore's GCSStore uses for every
write; they answer 400 "invalid uploadType". obstore's get, get_range, head, list
(JSON API) and delete work. So writes go through ``GcsBucket.upload`` (JSON API
media upload) and GCS writes through obstore are verified against GCS only.
(``gcp-storage-emulator`` from PyPI is worse: 501 for every obstore request.)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.servers.daemon import Daemon, DaemonServer
from tests.servers.obstore_kwargs import obstore_kwargs

if TYPE_CHECKING:
    from obstore.store import GCSStore

REPO = Path(__file__).resolve().parents[2]
FAKE_GCS = REPO / ".cache" / "go" / "bin" / "fake-gcs-server"
FETCH = REPO / "tests" / "emulators" / "fetch"
PROJECT = "txbackup-test"
FAKE_TOKEN = "txbackup-test-token"


def missing_reason() -> str | None:
    if not FAKE_GCS.exists():
        return f"fake-gcs-server missing ({FAKE_GCS}): run {FETCH.relative_to(REPO)} (needs go)"
    return None


@dataclass(frozen=True)
class GcsBucket:
    base_url: str
    bucket: str

    def url(self, prefix: str = "") -> str:
        return f"gs://{self.bucket}/{prefix}"

    def env(self) -> dict[str, str]:
        """GOOGLE_* variables that point obstore's default chain at the emulator."""
        return {
            "GOOGLE_BASE_URL": self.base_url,
            "GOOGLE_BEARER_TOKEN": FAKE_TOKEN,
            "GOOGLE_ALLOW_HTTP": "true",
        }

    def upload(self, name: str, data: bytes) -> None:
        """Write one object through the JSON API (obstore's XML-API PUT is not emulated)."""
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        request = urllib.request.Request(
            f"{self.base_url}/upload/storage/v1/b/{self.bucket}/o?{query}",
            data=data,
            headers={"Authorization": f"Bearer {FAKE_TOKEN}", "Content-Type": "application/octet-stream"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    def store(self, prefix: str | None = None, **config: Any) -> GCSStore:
        """An obstore ``GCSStore`` of the bucket; ``config`` adds GCSConfig keys."""
        from obstore.store import GCSStore

        settings: dict[str, Any] = {"base_url": self.base_url, "bearer_token": FAKE_TOKEN}
        return GCSStore(self.bucket, prefix=prefix, **obstore_kwargs(settings, config))


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b?project={PROJECT}", timeout=2):
            return True
    except (OSError, urllib.error.HTTPError):
        return False


class FakeGcsServer(DaemonServer):
    def __init__(self) -> None:
        super().__init__()
        self.base_url = ""

    def _make_daemon(self) -> Daemon:
        def argv(port: int, folder: Path) -> list[str]:
            url = f"http://127.0.0.1:{port}"
            return [
                str(FAKE_GCS),
                "-scheme", "http",
                "-host", "127.0.0.1",
                "-port", str(port),
                "-backend", "filesystem",
                "-filesystem-root", str(folder / "data"),
                "-external-url", url,
                "-public-host", f"127.0.0.1:{port}",
                "-log-level", "error",
            ]  # fmt: skip

        return Daemon("fake-gcs", argv, ready=_serving)

    def _started(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}"

    def bucket(self, name: str) -> GcsBucket:
        return GcsBucket(self.base_url, name)

    def new_bucket(self, stem: str = "txb") -> GcsBucket:
        """Create a fresh, empty bucket with a unique name (JSON API ``buckets.insert``)."""
        bucket = self.bucket(f"{stem}-{uuid.uuid4().hex[:16]}")
        request = urllib.request.Request(
            f"{self.base_url}/storage/v1/b?project={PROJECT}",
            data=json.dumps({"name": bucket.bucket}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {FAKE_TOKEN}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
        return bucket
