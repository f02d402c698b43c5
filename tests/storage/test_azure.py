"""Azure Blob (az://) against Azurite: the conformance suite, plus growing blocks,
conditional-create races on both write paths, credentials and a server killed mid-upload."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import pytest

from tests.servers.azurite import AzureContainer, AzuriteServer
from tests.servers.object_stores import _require
from tests.storage.bucket_checks import race_two_creators, write_stream
from tests.storage.conformance import Backend, Capabilities, StorageConformance, read_all
from txbackup.errors import (
    PermanentStorageError,
    StorageError,
    TransientStorageError,
    UsageError,
)
from txbackup.storage import open_storage
from txbackup.storage.azure import MAX_BLOCKS, AzureStorage, AzureWriter, block_size
from txbackup.storage.base import Writer, list_names, save_bytes
from txbackup.storage.buckets import clean_cause
from txbackup.storage.retry import RetryPolicy, RetryStorage

MIB = 1 << 20
NO_WAIT = RetryPolicy(attempts=2, sleep=lambda s: None)


def kill(writer: Writer) -> None:
    """A killed process: its staged blocks stay uncommitted, nothing more happens."""
    assert isinstance(writer, AzureWriter)
    writer._wait()
    writer._shutdown()
    writer._done = True


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch, azure_container: AzureContainer) -> AzureContainer:
    """The process environment of an operator of this container (account key)."""
    for key in list(os.environ):
        if key.startswith("AZURE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", azure_container.account)
    monkeypatch.setenv("AZURE_STORAGE_KEY", azure_container.key)
    return azure_container


def storage_of(container: AzureContainer, prefix: str = "backups/", **kwargs: object) -> AzureStorage:
    store = open_storage(container.url(prefix), {"endpoint": container.blob_endpoint})
    assert isinstance(store, RetryStorage) and isinstance(store.inner, AzureStorage)
    inner = store.inner
    for key, value in kwargs.items():
        setattr(inner, key, value)
    return inner


class TestAzureConformance(StorageConformance):
    @pytest.fixture
    def backend(self, azure_env: AzureContainer) -> Iterator[Backend]:
        # small blocks so the suite's objects take the block path too
        storage = storage_of(azure_env, first_block=256 * 1024, grow_every=4)
        yield Backend(storage, Capabilities(temporaries_listed=False), kill=kill)


def test_block_sizes_grow_to_cover_a_huge_object_with_bounded_memory():
    sizes = [block_size(i) for i in range(MAX_BLOCKS)]
    assert sizes == sorted(sizes) and sizes[0] == 8 * MIB
    assert sum(sizes) >= 100 << 40  # 50,000 blocks hold over 100 TiB
    assert sum(sizes[:128]) >= 1 << 30 and max(sizes[:2000]) == 8 * MIB  # 1 GiB: 8 MiB blocks
    assert max(sizes) <= 4000 * MIB


def test_an_unknown_length_stream_goes_in_growing_blocks(azure_env):
    storage = storage_of(azure_env, first_block=2 * MIB, grow_every=2)
    with storage.open_write("sets/s1/pg/big.zst") as writer:
        sent = write_stream(writer, 40)
        info = writer.commit()
    assert info.size == 40 * MIB
    committed = (
        azure_env.client().get_blob_client("backups/sets/s1/pg/big.zst").get_block_list("committed")[0]
    )
    assert [b.size for b in committed] == [2 * MIB] * 2 + [4 * MIB] * 2 + [8 * MIB] * 2 + [12 * MIB]
    got = hashlib.sha256(read_all(storage, "sets/s1/pg/big.zst")).hexdigest()
    assert got == sent
    assert (
        read_all(storage, "sets/s1/pg/big.zst", 3 * MIB, 10)
        == read_all(storage, "sets/s1/pg/big.zst")[3 * MIB : 3 * MIB + 10]
    )


@pytest.mark.parametrize("size", [1000, 3 * MIB], ids=["put-blob", "block-list"])
def test_two_racing_writers_one_already_exists(azure_env, size):
    race_two_creators(storage_of(azure_env, first_block=MIB), "sets/s1/manifest.json", size)


def test_a_wrong_key_is_one_permanent_line_without_the_key(azure_env, monkeypatch):
    wrong = "A" * 86 + "=="
    monkeypatch.setenv("AZURE_STORAGE_KEY", wrong)
    storage = open_storage(azure_env.url("p/"), {"endpoint": azure_env.blob_endpoint})
    for call in (
        lambda: list_names(storage),
        lambda: save_bytes(storage, "x", b"."),
        lambda: storage.stat("x"),
    ):
        with pytest.raises(PermanentStorageError) as err:
            call()
        message = str(err.value)
        assert message.startswith(f"storage az://{azure_env.container}/p/: ") and "\n" not in message
        assert "HTTP 403" in message and wrong not in message and azure_env.key not in message


def test_a_missing_container_is_one_permanent_line(azure_env):
    storage = open_storage("az://no-such-container/p", {"endpoint": azure_env.blob_endpoint})
    for call in (
        lambda: list_names(storage),
        lambda: save_bytes(storage, "x", b"."),
        lambda: storage.stat("x"),
    ):
        with pytest.raises(
            PermanentStorageError, match=r"^storage az://no-such-container/p/: .*container not found$"
        ):
            call()


def test_a_connection_string_is_used_and_never_shown(azure_container, monkeypatch):
    for key in list(os.environ):
        if key.startswith("AZURE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azure_container.connection_string)
    storage = open_storage(azure_container.url("c"))
    save_bytes(storage, "a", b"via connection string")
    assert read_all(storage, "a") == b"via connection string"
    with pytest.raises(UsageError, match="AZURE_STORAGE_CONNECTION_STRING says where the account is"):
        open_storage(azure_container.url("c"), {"endpoint": "http://127.0.0.1:1/x"})
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountKey=SECRETKEY;garbage")
    with pytest.raises(UsageError) as err:
        open_storage(azure_container.url("c"))
    assert "SECRETKEY" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("az://UPPER/p", {"account": "acct"}, "not a container name"),
        ("az://user:pw@container/p", {"account": "acct"}, "no user, password or port"),
        ("az://container/p?sig=SECRET", {"account": "acct"}, "no query"),
        ("az://container/../p", {"account": "acct"}, "bad prefix"),
        ("az://container/p", {"account": "acct", "region": "x"}, "option 'region' does not apply"),
        ("az://container/p", {"account": "acct", "endpoint": "https://h/?sig=SECRET"}, "option endpoint"),
        ("az://container/p", {}, "which storage account"),
    ],
)
def test_bad_urls_and_options_are_usage_errors(monkeypatch, url, options, message):
    for key in list(os.environ):
        if key.startswith("AZURE_"):
            monkeypatch.delenv(key)
    with pytest.raises(UsageError, match=message) as err:
        open_storage(url, options)
    assert "SECRET" not in str(err.value) and "pw" not in str(err.value)


def test_server_killed_mid_upload_commits_nothing(monkeypatch):
    _require(__import__("tests.servers.azurite", fromlist=["x"]).missing_reason())
    with AzuriteServer(persistent=True) as server:
        container = server.new_container()
        for key in list(os.environ):
            if key.startswith("AZURE_"):
                monkeypatch.delenv(key)
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", container.account)
        monkeypatch.setenv("AZURE_STORAGE_KEY", container.key)
        storage = storage_of(container, first_block=MIB, policy=NO_WAIT)
        writer = storage.open_write("sets/s1/pg/a.dump.zst", if_absent=True)
        writer.write(os.urandom(3 * MIB))  # blocks staged
        writer._wait()
        time.sleep(6)  # Azurite saves its metadata every 5 s: the staged blocks survive the kill
        server.kill()
        with pytest.raises(StorageError) as err:
            writer.write(os.urandom(2 * MIB))
            writer.commit()
        message = str(err.value)
        assert message.startswith("storage az://") and "\n" not in message and container.key not in message
        writer.abort()
        server.daemon.restart()  # the staged blocks survive it, uncommitted
        assert list_names(storage) == []
        assert storage.stat("sets/s1/pg/a.dump.zst") is None
        blob = container.client().get_blob_client("backups/sets/s1/pg/a.dump.zst")
        assert len(blob.get_block_list("uncommitted")[1]) >= 2  # the leftovers Azure drops itself
        # the next run's upload of the name commits (Azurite refuses a Put Blob
        # with If-None-Match: * over uncommitted blocks, not a block list)
        data = os.urandom(2 * MIB)
        save_bytes(storage, "sets/s1/pg/a.dump.zst", data, if_absent=True)
        assert read_all(storage, "sets/s1/pg/a.dump.zst") == data


@pytest.fixture
def no_azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("AZURE_"):
            monkeypatch.delenv(key)


def test_no_credentials_is_one_permanent_line(no_azure_env, monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "someaccount")
    storage = open_storage("az://cont/p", {"endpoint": "https://127.0.0.1:9/someaccount"})
    with pytest.raises(
        PermanentStorageError, match=r"^storage az://cont/p/: list '/': no credentials: [^\n]*az login"
    ):
        list_names(storage)
    with pytest.raises(UsageError, match="an http:// endpoint takes AZURE_STORAGE_KEY"):
        open_storage("az://cont/p", {"endpoint": "http://127.0.0.1:9/someaccount"})


def test_a_shared_access_signature_never_shows_in_errors(no_azure_env, monkeypatch):
    sas = "sv=2020-08-04&ss=b&srt=sco&sp=rwdlacx&se=2030-01-01T00:00:00Z&sig=SECRETSIG"
    connection = f"BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;SharedAccessSignature={sas}"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
    store = open_storage("az://cont/p")
    assert isinstance(store, RetryStorage) and isinstance(store.inner, AzureStorage)
    storage = store.inner
    storage.policy = NO_WAIT
    for call in (
        lambda: list_names(storage),
        lambda: storage.stat("a/b"),
        lambda: save_bytes(storage, "a/b", b"x"),
        lambda: save_bytes(storage, "a/c", os.urandom(9 * MIB)),
    ):
        with pytest.raises(TransientStorageError) as err:
            call()
        assert (
            "SECRETSIG" not in str(err.value) and "sig=" not in str(err.value) and "\n" not in str(err.value)
        )


def test_causes_lose_query_strings_and_keys():
    text = (
        "HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: "
        "/c/x?comp=block&blockid=QQ&sig=SECRETSIG (Caused by ...); AccountKey=SECRETKEY;"
    )
    cleaned = clean_cause(text)
    assert "SECRET" not in cleaned and "Max retries exceeded with url: /c/x?..." in cleaned
