"""Google Cloud Storage (gs://) against fake-gcs-server: the conformance suite, plus
resumable uploads in chunks, conditional-create races on both write paths, a
missing bucket and a server killed mid-upload."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from tests.servers import gcs as gcs_server
from tests.servers.gcs import FakeGcsServer, GcsBucket
from tests.servers.object_stores import _require
from tests.storage.bucket_checks import race_two_creators, write_stream
from tests.storage.conformance import Backend, Capabilities, StorageConformance, read_all
from txbackup.errors import PermanentStorageError, StorageError, UsageError
from txbackup.storage import open_storage
from txbackup.storage.base import list_names, save_bytes
from txbackup.storage.gcs import GcsStorage
from txbackup.storage.retry import RetryStorage

MIB = 1 << 20


@pytest.fixture(autouse=True)
def no_google_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials of this machine, no metadata-server probe: the emulator wants none."""
    for key in list(os.environ):
        if key.startswith(("GOOGLE_", "STORAGE_EMULATOR_HOST", "CLOUDSDK_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent")


def storage_of(bucket: GcsBucket, prefix: str = "backups/", chunk_size: int | None = None) -> GcsStorage:
    store = open_storage(bucket.url(prefix), {"endpoint": bucket.base_url})
    assert isinstance(store, RetryStorage) and isinstance(store.inner, GcsStorage)
    if chunk_size is not None:
        store.inner.chunk_size = chunk_size
    return store.inner


class TestGcsConformance(StorageConformance):
    @pytest.fixture
    def backend(self, gcs_bucket: GcsBucket) -> Iterator[Backend]:
        # small chunks so the suite's objects take the resumable path too
        yield Backend(storage_of(gcs_bucket, chunk_size=256 * 1024), Capabilities(temporaries_listed=False))


def test_a_40_mib_stream_goes_up_in_resumable_chunks(gcs_bucket):
    storage = storage_of(gcs_bucket, chunk_size=4 * MIB)
    with storage.open_write("sets/s1/pg/big.zst") as writer:
        sent = write_stream(writer, 40)
        assert storage.stat("sets/s1/pg/big.zst") is None  # chunks sent, nothing visible
        info = writer.commit()
    assert info.size == 40 * MIB
    data = read_all(storage, "sets/s1/pg/big.zst")
    assert hashlib.sha256(data).hexdigest() == sent
    assert read_all(storage, "sets/s1/pg/big.zst", 9 * MIB - 3, 10) == data[9 * MIB - 3 : 9 * MIB + 7]


@pytest.mark.parametrize("size", [1000, 3 * MIB], ids=["single-upload", "resumable"])
def test_two_racing_writers_one_already_exists(gcs_bucket, size):
    race_two_creators(storage_of(gcs_bucket, chunk_size=MIB), "sets/s1/manifest.json", size)


def test_a_missing_bucket_is_one_permanent_line(gcs_bucket):
    storage = open_storage("gs://no-such-bucket/p", {"endpoint": gcs_bucket.base_url})
    for call in (lambda: list_names(storage), lambda: save_bytes(storage, "x", b".")):
        with pytest.raises(
            PermanentStorageError, match=r"^storage gs://no-such-bucket/p/: .*bucket not found$"
        ):
            call()


def test_without_credentials_or_endpoint_one_line_and_nothing_sent(monkeypatch):
    storage = open_storage("gs://some-bucket/p")
    with pytest.raises(
        PermanentStorageError, match=r"^storage gs://some-bucket/p/: list '/': no Google credentials"
    ):
        list_names(storage)


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("gs://UPPER/p", {}, "not a bucket name"),
        ("gs://key:secret@bucket/p", {}, "no user, password or port"),
        ("gs://bucket/p?X-Goog-Signature=SECRET", {}, "no query"),
        ("gs://bucket/a/../b", {}, "bad prefix"),
        ("gs://bucket/p", {"account": "x"}, "option 'account' does not apply"),
        ("gs://bucket/p", {"endpoint": "ftp://h"}, "option endpoint"),
    ],
)
def test_bad_urls_and_options_are_usage_errors(url, options, message):
    with pytest.raises(UsageError, match=message) as err:
        open_storage(url, options)
    assert "SECRET" not in str(err.value) and "secret" not in str(err.value)


def test_server_killed_mid_upload_commits_nothing():
    _require(gcs_server.missing_reason())
    with FakeGcsServer() as server:
        bucket = server.new_bucket()
        storage = storage_of(bucket, chunk_size=MIB)
        storage.upload_retry = storage.upload_retry.with_timeout(2.0)
        writer = storage.open_write("sets/s1/pg/a.dump.zst", if_absent=True)
        writer.write(os.urandom(3 * MIB))  # chunks sent
        server.kill()
        with pytest.raises(StorageError) as err:
            writer.write(os.urandom(2 * MIB))
            writer.commit()
        message = str(err.value)
        assert message.startswith("storage gs://") and "\n" not in message and "upload_id" not in message
        writer.abort()
        server.daemon.restart()  # the filesystem backend keeps the bucket
        assert list_names(storage) == []
        data = os.urandom(2 * MIB)
        save_bytes(storage, "sets/s1/pg/a.dump.zst", data, if_absent=True)
        assert read_all(storage, "sets/s1/pg/a.dump.zst") == data
