"""Azure Blob Storage: ``az://<container>/<prefix>`` (``pip install 'txbackup[azure]'``).

**Where and who.** The account comes from the ``[storage] account`` option or
``AZURE_STORAGE_ACCOUNT``, its endpoint from the ``endpoint`` option (Azurite,
sovereign clouds, private endpoints; default ``https://<account>.blob.core.windows.net``).
Credentials come from the environment only, never from the cluster file:
``AZURE_STORAGE_CONNECTION_STRING`` (then it also says where the account is), or
``AZURE_STORAGE_KEY`` (a shared key), or else azure-identity's
``DefaultAzureCredential`` (environment, workload or managed identity, Azure CLI).

**Writes.** An object smaller than the first block is one Put Blob. A larger one
is a block blob: blocks are staged (``stage_block``) while the producer writes,
at most one in flight while the next one fills (memory: two blocks), and the
blob appears only at ``commit_block_list``. Blocks grow (``block_size``), so the
50,000 blocks of a blob cover about 120 TiB while an object of a few GiB uses
8 MiB blocks. ``if_absent`` sends ``If-None-Match: *`` with the Put Blob or the
block list: of two writers exactly one wins, the other gets AlreadyExistsError.

**Aborts and temporaries.** An aborted (or killed) writer's staged blocks stay
uncommitted, invisible: Azure drops them when a block list is next committed
under that name, or after 7 days. There is no call to delete them (only a
commit or deleting the blob does) and no cheap way to list them next to
committed blobs, so ``temporaries`` lists nothing on Azure.

**Retries.** The SDK does not retry (``retry_total=0``): ``RetryStorage`` retries
whole calls, and the writer retries its own blocks and commit (a staged block is
idempotent; a commit whose answer was lost is recognised by the upload id it
leaves in the blob's metadata).
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient

from txbackup.errors import (
    AlreadyExistsError,
    NotFoundError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
    UsageError,
)
from txbackup.storage.base import (
    ObjectInfo,
    WriterBase,
    check_name,
    check_prefix,
    check_range,
    storage_error,
)
from txbackup.storage.buckets import (
    ChunkReader,
    NoTemporaries,
    changed_while_read,
    check_endpoint,
    check_folder,
    check_options,
    clean_cause,
    error_class,
    listed_name,
    split_url,
)
from txbackup.storage.registry import shown_url
from txbackup.storage.retry import RetryPolicy

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger("txbackup.storage")

T = TypeVar("T")

MIB = 1 << 20
FIRST_BLOCK = 8 * MIB
"""The first blocks' size; an object smaller than this is one Put Blob."""
GROW_EVERY = 2000
"""Blocks double in size every this many blocks..."""
MAX_BLOCK = 4000 * MIB
"""...up to Azure's largest block."""
MAX_BLOCKS = 50_000
"""Azure's limit of blocks in one blob."""
BATCH = 256
"""Blobs deleted per batch request (Azure's limit)."""
MARKER = "txbackupupload"
"""Metadata key holding the writer's upload id (a lost commit answer is recognised by it)."""

_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


def block_size(index: int, first: int = FIRST_BLOCK, grow_every: int = GROW_EVERY) -> int:
    """The size of block ``index`` (0-based): ``first``, doubled every ``grow_every``
    blocks, at most ``MAX_BLOCK``. With the defaults 50,000 blocks hold ~120 TiB."""
    return min(MAX_BLOCK, first << min(index // grow_every, 12))


def from_url(url: str, options: Mapping[str, Any]) -> AzureStorage:
    """The storage of ``az://<container>/<prefix>`` (registry factory)."""
    container, prefix = split_url(url, "az", "container")
    if not _CONTAINER.match(container):
        raise UsageError(
            f"storage {shown_url(url)}: {container!r} is not a container name "
            "(3 to 63 lower-case letters, digits and single hyphens)"
        )
    opts = check_options(url, options, ("account", "endpoint"))
    where = f"az://{container}/{prefix}"
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    client_options: dict[str, Any] = {
        "retry_total": 0,  # RetryStorage and the writer retry
        "max_single_get_size": 4 * MIB,  # what a download holds in memory
        "max_chunk_get_size": 4 * MIB,
        "max_single_put_size": FIRST_BLOCK,
        "connection_timeout": 20,
        "read_timeout": 120,
    }
    if connection:
        if opts:
            raise UsageError(
                f"storage {where}: AZURE_STORAGE_CONNECTION_STRING says where the account is: "
                f"drop the option(s) {', '.join(sorted(opts))} or unset the variable"
            )
        try:
            service = BlobServiceClient.from_connection_string(connection, **client_options)
        except (ValueError, AzureError):
            raise UsageError(f"storage {where}: AZURE_STORAGE_CONNECTION_STRING is malformed") from None
    else:
        account = opts.get("account") or os.environ.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise UsageError(
                f"storage {where}: which storage account? set [storage] account, "
                "AZURE_STORAGE_ACCOUNT or AZURE_STORAGE_CONNECTION_STRING"
            )
        if not re.fullmatch(r"[a-z0-9]{3,24}", account):
            raise UsageError(f"storage {where}: {account[:40]!r} is not a storage account name")
        endpoint = opts.get("endpoint")
        endpoint = check_endpoint(url, endpoint) if endpoint else f"https://{account}.blob.core.windows.net"
        credential: Any
        key = os.environ.get("AZURE_STORAGE_KEY")
        if not key and endpoint.startswith("http:"):
            raise UsageError(
                f"storage {where}: an http:// endpoint takes AZURE_STORAGE_KEY or "
                "AZURE_STORAGE_CONNECTION_STRING (tokens are only sent over https)"
            )
        if key:
            credential = {"account_name": account, "account_key": key}
        else:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError:
                raise UsageError(
                    f"storage {where}: no AZURE_STORAGE_KEY and azure-identity is not installed: "
                    "pip install 'txbackup[azure]'"
                ) from None
            credential = DefaultAzureCredential()
        try:
            service = BlobServiceClient(endpoint, credential=credential, **client_options)
        except ValueError as exc:
            raise UsageError(f"storage {where}: {clean_cause(str(exc))}") from None
    return AzureStorage(service.get_container_client(container), prefix, where)


class AzureStorage(NoTemporaries):
    """A container (and a prefix in it) holding backup sets. No temporaries: uncommitted
    blocks cannot be listed cheaply or deleted (see the module docstring); Azure drops
    them after 7 days."""

    def __init__(
        self,
        container: ContainerClient,
        prefix: str,
        where: str,
        *,
        first_block: int = FIRST_BLOCK,
        grow_every: int = GROW_EVERY,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.container = container
        self.prefix = check_prefix(prefix)
        self.where = where
        self.first_block = first_block
        self.grow_every = grow_every
        self.policy = policy or RetryPolicy()

    def describe(self) -> str:
        return self.where

    def _key(self, name: str) -> str:
        return self.prefix + name

    def open_write(self, name: str, *, if_absent: bool = False) -> AzureWriter:
        return AzureWriter(self, check_name(name), if_absent)

    def open_read(self, name: str, offset: int = 0, length: int | None = None) -> IO[bytes]:
        check_name(name)
        check_range(self.where, name, offset, length)
        blob = self.container.get_blob_client(self._key(name))
        if length == 0:
            if self.stat(name) is None:
                raise storage_error(NotFoundError, self.where, "read", name, "not found")
            return io.BytesIO()
        try:
            downloader = blob.download_blob(offset=offset, length=length)
        except HttpResponseError as exc:
            if exc.status_code == 416:  # the range starts at or past the end
                if self.stat(name) is None:
                    raise storage_error(NotFoundError, self.where, "read", name, "not found") from None
                return io.BytesIO()
            raise self._error(exc, "read", name) from None
        except AzureError as exc:
            raise self._error(exc, "read", name) from None
        return io.BufferedReader(_Download(self, name, downloader.chunks()), MIB)

    def stat(self, name: str) -> ObjectInfo | None:
        check_name(name)
        try:
            props = self.container.get_blob_client(self._key(name)).get_blob_properties()
        except ResourceNotFoundError as exc:
            if _code(exc) == "ContainerNotFound":
                raise self._error(exc, "stat", name) from None
            return None
        except AzureError as exc:
            raise self._error(exc, "stat", name) from None
        return ObjectInfo(name, int(props.size), props.last_modified.timestamp(), props.etag)

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        found: list[ObjectInfo] = []
        try:
            for props in self.container.list_blobs(name_starts_with=self._key(prefix)):
                name = listed_name(self.where, self.prefix, props.name)
                if name is None:
                    continue
                found.append(ObjectInfo(name, int(props.size), props.last_modified.timestamp(), props.etag))
        except AzureError as exc:
            raise self._error(exc, "list", prefix or "/") from None
        found.sort(key=lambda info: info.name)  # the service's order is not promised to be ours
        yield from found

    def remove(self, name: str) -> None:
        check_name(name)
        try:
            self.container.delete_blob(self._key(name), delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if _code(exc) == "ContainerNotFound":
                raise self._error(exc, "remove", name) from None
        except AzureError as exc:
            raise self._error(exc, "remove", name) from None

    def remove_prefix(self, prefix: str) -> None:
        check_folder(self.where, prefix)
        try:
            # every blob under the folder goes, even one whose name we would not list
            keys = [p.name for p in self.container.list_blobs(name_starts_with=self._key(prefix))]
            for start in range(0, len(keys), BATCH):
                answers = self.container.delete_blobs(
                    *keys[start : start + BATCH], delete_snapshots="include", raise_on_any_failure=False
                )
                for key, answer in zip(keys[start : start + BATCH], answers, strict=False):
                    if answer.status_code not in (200, 202, 404):
                        raise storage_error(
                            error_class(answer.status_code), self.where, "remove",
                            key[len(self.prefix) :], f"HTTP {answer.status_code} {answer.reason}",
                        )  # fmt: skip
        except AzureError as exc:
            raise self._error(exc, "remove", prefix) from None

    # -- errors ------------------------------------------------------------------------------------

    def _error(self, exc: BaseException, operation: str, name: str) -> StorageError:
        return _map(exc, self.where, operation, name)

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` with its transient errors retried (the writer's blocks and commit)."""
        return self.policy.call(what, fn)


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", None) or "")


def _map(exc: BaseException, where: str, operation: str, name: str) -> StorageError:
    """One typed, one-line StorageError for an SDK error (no keys, no SAS, no dumps)."""
    code = _code(exc)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, ResourceNotFoundError):
        if code == "ContainerNotFound":
            return storage_error(PermanentStorageError, where, operation, name, "container not found")
        return storage_error(NotFoundError, where, operation, name, "not found")
    if isinstance(exc, ResourceExistsError | ResourceModifiedError) and code in (
        "BlobAlreadyExists", "ConditionNotMet",
    ):  # fmt: skip
        return storage_error(AlreadyExistsError, where, operation, name, "already exists")
    if isinstance(exc, ClientAuthenticationError) and status is None:
        # azure-identity found no credential: its text lists what it tried (no secrets)
        first = clean_cause(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        hint = "set AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING, or sign in (az login)"
        cause = f"no credentials: {first} ({hint})"
        return storage_error(PermanentStorageError, where, operation, name, cause)
    if isinstance(exc, HttpResponseError) and status is not None:
        what = code or (exc.reason or "")
        cause = f"HTTP {status} {what}".strip()
        if status in (401, 403):
            cause += " (access denied: check the credentials and their role on the container)"
        return storage_error(error_class(status), where, operation, name, cause)
    if isinstance(exc, ServiceRequestError | ServiceResponseError | AzureError | OSError):
        text = clean_cause(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return storage_error(TransientStorageError, where, operation, name, text)
    return storage_error(StorageError, where, operation, name, type(exc).__name__)


class _Download(ChunkReader):
    """The chunks of a download, as a raw stream; SDK errors become StorageErrors."""

    def __init__(self, storage: AzureStorage, name: str, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._storage = storage
        self._name = name
        self._chunks = chunks

    def _next_chunk(self) -> bytes | None:
        try:
            return next(self._chunks)
        except StopIteration:
            return None
        except ResourceModifiedError:
            raise changed_while_read(self._storage.where, self._name) from None
        except (AzureError, OSError) as exc:
            raise self._storage._error(exc, "read", self._name) from None


class AzureWriter(WriterBase):
    """A block blob being written: blocks staged while the next one fills."""

    def __init__(self, storage: AzureStorage, name: str, if_absent: bool) -> None:
        super().__init__(storage.where, name)
        self._storage = storage
        self._blob = storage.container.get_blob_client(storage._key(name))
        self._if_absent = if_absent
        self._upload = uuid.uuid4().hex
        self._blocks: list[str] = []  # ids of the blocks staged or being staged
        self._buffer = bytearray()
        self._size = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._in_flight: concurrent.futures.Future[None] | None = None

    def _write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            room = self._limit() - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) >= self._limit():
                self._send_block()
        self._size += total
        return total

    def _limit(self) -> int:
        return block_size(len(self._blocks), self._storage.first_block, self._storage.grow_every)

    def _send_block(self) -> None:
        """Hand the full buffer to the stager thread, after the block before it landed."""
        if len(self._blocks) >= MAX_BLOCKS:
            raise storage_error(
                StorageError, self.where, "write", self.name, f"over Azure's limit of {MAX_BLOCKS} blocks"
            )
        self._wait()
        block_id = f"{self._upload}-{len(self._blocks):06d}"
        data, self._buffer = self._buffer, bytearray()
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="txbackup-azure")
        self._blocks.append(block_id)
        self._in_flight = self._pool.submit(self._stage, block_id, data)

    def _stage(self, block_id: str, data: bytearray) -> None:
        def stage() -> None:
            try:
                self._blob.stage_block(block_id, cast(bytes, data), length=len(data))  # no copy
            except AzureError as exc:
                raise self._storage._error(exc, "write", self.name) from None

        self._storage._retry(f"write {self.name}", stage)

    def _wait(self) -> None:
        future, self._in_flight = self._in_flight, None
        if future is not None:
            future.result()

    def _commit(self) -> ObjectInfo:
        metadata = {MARKER: self._upload}
        conditions: dict[str, Any] = {"match_condition": MatchConditions.IfMissing} if self._if_absent else {}
        if not self._blocks:
            data = bytes(self._buffer)
            self._buffer = bytearray()

            def put() -> dict[str, Any]:
                return self._blob.upload_blob(  # type: ignore[no-any-return]
                    data, length=len(data), overwrite=not self._if_absent, metadata=metadata
                )

            answer = self._committing(put)
        else:
            if self._buffer:
                self._send_block()
            self._wait()
            self._shutdown()
            blocks = [BlobBlock(block_id=b) for b in self._blocks]

            def commit() -> dict[str, Any]:
                return self._blob.commit_block_list(  # type: ignore[no-any-return]
                    blocks, metadata=metadata, **conditions
                )

            answer = self._committing(commit)
        return ObjectInfo(self.name, self._size, answer["last_modified"].timestamp(), answer.get("etag"))

    def _committing(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``fn()`` (the commit), retried when transient. After a retried commit an
        AlreadyExists may be our own earlier commit whose answer was lost: the blob
        then carries our upload id."""
        tried = False

        def once() -> dict[str, Any]:
            nonlocal tried
            try:
                return fn()
            except AzureError as exc:
                error = self._storage._error(exc, "create" if self._if_absent else "write", self.name)
                if isinstance(error, AlreadyExistsError) and tried:
                    props = self._blob.get_blob_properties()
                    if props.metadata.get(MARKER) == self._upload:
                        return {"last_modified": props.last_modified, "etag": props.etag}
                tried = True
                raise error from None
            except BaseException:
                tried = True
                raise

        return self._storage._retry(f"commit {self.name}", once)

    def _abort(self) -> None:
        # nothing to commit: staged blocks stay uncommitted, Azure drops them (7 days at most)
        try:
            self._wait()
        except StorageError as exc:
            log.debug("abort of %s: a block failed: %s", self.name, exc)
        self._shutdown()
        self._buffer = bytearray()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# the SDK logs every request and its headers at INFO: keep the logs to what matters
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
