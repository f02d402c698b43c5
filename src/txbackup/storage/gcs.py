"""Google Cloud Storage: ``gs://<bucket>/<prefix>`` (``pip install 'txbackup[gcs]'``).

**Who.** Credentials are Application Default Credentials (google-auth):
``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``,
workload identity or the metadata server; never the cluster file. The
``endpoint`` option (or ``STORAGE_EMULATOR_HOST``, which the library reads)
points at another server, such as an emulator; without credentials there, the
requests go unauthenticated (an emulator wants none, a real server refuses).
The client is made on first use: opening the storage reaches nothing.

**Writes.** An object smaller than one chunk is one upload. A larger one is a
resumable upload sent in ``CHUNK_SIZE`` chunks as the producer writes (memory:
one chunk; a resumable upload has no limit of parts), and the object appears
only when the last chunk is sent at ``commit``. ``if_absent`` sends
``ifGenerationMatch=0``: of two writers exactly one wins, the other gets
AlreadyExistsError (HTTP 412). An aborted writer cancels its upload session; a
killed one's session expires after a week, invisible and not listable, so
``temporaries`` lists nothing on GCS.

**Retries.** Reads, listings and removals are not retried by the library
(``RetryStorage`` does it); the chunks of a resumable upload are (the library
resumes a session where the server says it stopped). The writer marks the
object with its upload id (metadata), so a commit whose answer was lost and
whose retry met HTTP 412 is recognised as its own.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import IO, TYPE_CHECKING, Any

from google.api_core import exceptions as api
from google.api_core.retry import Retry
from google.auth import exceptions as auth
from google.cloud import storage as gcs
from google.cloud.storage.exceptions import InvalidResponse
from google.cloud.storage.fileio import BlobWriter
from google.cloud.storage.retry import DEFAULT_RETRY

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

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger("txbackup.storage")

MIB = 1 << 20
CHUNK_SIZE = 8 * MIB
"""The chunk of a resumable upload (a multiple of 256 KiB); smaller objects are one upload."""
READ_SIZE = 8 * MIB
"""Bytes fetched per ranged GET while reading."""
TIMEOUT = (20, 120)
"""Seconds to connect, and to wait for each answer."""
MARKER = "txbackupupload"
"""Metadata key holding the writer's upload id (a lost commit answer is recognised by it)."""
UPLOAD_RETRY_S = 60.0
"""How long the library retries a chunk (or a small upload) before the upload fails."""

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def from_url(url: str, options: Mapping[str, Any]) -> GcsStorage:
    """The storage of ``gs://<bucket>/<prefix>`` (registry factory)."""
    bucket, prefix = split_url(url, "gs", "bucket")
    if not _BUCKET.match(bucket):
        raise UsageError(
            f"storage {shown_url(url)}: {bucket!r} is not a bucket name "
            "(3 to 222 lower-case letters, digits, '-', '_' and '.')"
        )
    opts = check_options(url, options, ("endpoint",))
    endpoint = check_endpoint(url, opts["endpoint"]) if "endpoint" in opts else None
    return GcsStorage(bucket, prefix, endpoint)


class GcsStorage(NoTemporaries):
    """A bucket (and a prefix in it) holding backup sets. No temporaries: resumable
    upload sessions cannot be listed (they expire after a week)."""

    def __init__(self, bucket: str, prefix: str, endpoint: str | None = None, chunk_size: int = CHUNK_SIZE):
        self.bucket_name = bucket
        self.prefix = check_prefix(prefix)
        self.endpoint = endpoint
        self.chunk_size = chunk_size
        self.upload_retry: Retry = DEFAULT_RETRY.with_timeout(UPLOAD_RETRY_S)
        self.where = f"gs://{bucket}/{prefix}"
        self._bucket: gcs.Bucket | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.where

    def bucket(self, operation: str, name: str) -> gcs.Bucket:
        """The library's bucket, its client made on first use (credentials looked up then)."""
        with self._lock:
            if self._bucket is None:
                self._bucket = self._client(operation, name).bucket(self.bucket_name)
            return self._bucket

    def _client(self, operation: str, name: str) -> gcs.Client:
        endpoint = self.endpoint
        emulator = endpoint or os.environ.get("STORAGE_EMULATOR_HOST")
        client_options = {"api_endpoint": endpoint} if endpoint else None
        try:
            import google.auth

            credentials, project = google.auth.default()
        except auth.DefaultCredentialsError:
            if not emulator:
                raise storage_error(
                    PermanentStorageError, self.where, operation, name,
                    "no Google credentials (Application Default Credentials: set "
                    "GOOGLE_APPLICATION_CREDENTIALS or run gcloud auth application-default login)",
                ) from None  # fmt: skip
            from google.auth.credentials import AnonymousCredentials

            credentials, project = AnonymousCredentials(), "<none>"  # type: ignore[no-untyped-call]
        try:
            return gcs.Client(
                project=project or "<none>", credentials=credentials, client_options=client_options
            )
        except (auth.GoogleAuthError, ValueError) as exc:
            raise self._error(exc, operation, name) from None

    def _blob(self, name: str, operation: str) -> gcs.Blob:
        return self.bucket(operation, name).blob(self.prefix + name, chunk_size=self.chunk_size)

    def _error(self, exc: BaseException, operation: str, name: str) -> StorageError:
        return _map(exc, self.where, operation, name)

    def open_write(self, name: str, *, if_absent: bool = False) -> GcsWriter:
        return GcsWriter(self, check_name(name), if_absent)

    def open_read(self, name: str, offset: int = 0, length: int | None = None) -> IO[bytes]:
        check_name(name)
        check_range(self.where, name, offset, length)
        blob = self._blob(name, "read")
        try:
            blob.reload(retry=None, timeout=TIMEOUT)
        except Exception as exc:
            raise self._error(exc, "read", name) from None
        size = int(blob.size or 0)
        end = size if length is None else min(size, offset + length)
        if offset >= end:
            return io.BytesIO()
        return io.BufferedReader(_Download(self, name, blob, offset, end), MIB)

    def stat(self, name: str) -> ObjectInfo | None:
        check_name(name)
        blob = self._blob(name, "stat")
        try:
            blob.reload(retry=None, timeout=TIMEOUT)
        except api.NotFound as exc:
            if _bucket_missing(exc):
                raise self._error(exc, "stat", name) from None
            return None
        except Exception as exc:
            raise self._error(exc, "stat", name) from None
        return _info(name, blob)

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        bucket = self.bucket("list", prefix or "/")
        found: list[ObjectInfo] = []
        try:
            for blob in bucket.client.list_blobs(
                bucket, prefix=self.prefix + prefix, retry=None, timeout=TIMEOUT
            ):
                name = listed_name(self.where, self.prefix, blob.name)
                if name is None:
                    continue
                found.append(_info(name, blob))
        except Exception as exc:
            raise self._error(exc, "list", prefix or "/") from None
        found.sort(key=lambda info: info.name)
        yield from found

    def remove(self, name: str) -> None:
        check_name(name)
        try:
            self._blob(name, "remove").delete(retry=None, timeout=TIMEOUT)
        except api.NotFound as exc:
            if _bucket_missing(exc):
                raise self._error(exc, "remove", name) from None
        except Exception as exc:
            raise self._error(exc, "remove", name) from None

    def remove_prefix(self, prefix: str) -> None:
        check_folder(self.where, prefix)
        bucket = self.bucket("remove", prefix)
        try:
            # every object under the folder goes, even one whose name we would not list
            for blob in list(bucket.client.list_blobs(bucket, prefix=self.prefix + prefix, retry=None)):
                with contextlib.suppress(api.NotFound):  # gone meanwhile
                    blob.delete(retry=None, timeout=TIMEOUT)
        except Exception as exc:
            raise self._error(exc, "remove", prefix) from None


def _info(name: str, blob: gcs.Blob) -> ObjectInfo:
    mtime = blob.updated.timestamp() if blob.updated is not None else 0.0
    return ObjectInfo(name, int(blob.size or 0), mtime, blob.etag)


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, api.GoogleAPICallError):
        return int(exc.code) if exc.code is not None else None
    if isinstance(exc, InvalidResponse):
        return int(exc.response.status_code)
    return None


def _bucket_missing(exc: BaseException) -> bool:
    return "bucket" in str(exc).lower()


def _map(exc: BaseException, where: str, operation: str, name: str) -> StorageError:
    """One typed, one-line StorageError for a library error (no tokens, no upload URLs)."""
    if isinstance(exc, StorageError):
        return exc
    status = _status(exc)
    if status is not None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        cause = f"HTTP {status} {phrase}".strip()
        if status == 404:
            if _bucket_missing(exc) or operation == "list":
                return storage_error(PermanentStorageError, where, operation, name, "bucket not found")
            return storage_error(NotFoundError, where, operation, name, "not found")
        if status == 412:
            return storage_error(AlreadyExistsError, where, operation, name, "already exists")
        if status in (401, 403):
            cause += " (access denied: check the credentials and their role on the bucket)"
        return storage_error(error_class(status), where, operation, name, cause)
    text = clean_cause(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if isinstance(exc, auth.RefreshError | auth.DefaultCredentialsError):
        return storage_error(PermanentStorageError, where, operation, name, f"credentials refused: {text}")
    if isinstance(exc, auth.TransportError | OSError | api.RetryError) or _is_requests_error(exc):
        return storage_error(TransientStorageError, where, operation, name, text)
    return storage_error(StorageError, where, operation, name, f"{type(exc).__name__}: {text}")


def _is_requests_error(exc: BaseException) -> bool:
    import requests

    return isinstance(exc, requests.exceptions.RequestException)


class _Download(ChunkReader):
    """Bytes [offset, end) of one generation of an object, fetched READ_SIZE at a time."""

    def __init__(self, storage: GcsStorage, name: str, blob: gcs.Blob, offset: int, end: int) -> None:
        super().__init__()
        self._storage = storage
        self._name = name
        self._blob = blob
        self._generation = blob.generation  # a replaced object is not mixed into the read
        self._next = offset
        self._end = end

    def _next_chunk(self) -> bytes | None:
        if self._next >= self._end:
            return None
        last = min(self._end, self._next + READ_SIZE) - 1
        try:
            data: bytes = self._blob.download_as_bytes(
                start=self._next, end=last, if_generation_match=self._generation,
                checksum=None, retry=None, timeout=TIMEOUT,
            )  # fmt: skip
        except (api.PreconditionFailed, api.NotFound):
            raise changed_while_read(self._storage.where, self._name) from None
        except Exception as exc:
            raise self._storage._error(exc, "read", self._name) from None
        if not data:
            raise storage_error(
                TransientStorageError, self._storage.where, "read", self._name, "the answer was cut short"
            )
        self._next += len(data)
        return data


class GcsWriter(WriterBase):
    """One object being written: a buffer, then a resumable upload once it outgrows a chunk."""

    def __init__(self, storage: GcsStorage, name: str, if_absent: bool) -> None:
        super().__init__(storage.where, name)
        self._storage = storage
        self._blob = storage._blob(name, "write")
        self._upload = uuid.uuid4().hex
        self._blob.metadata = {MARKER: self._upload}
        self._conditions = {"if_generation_match": 0} if if_absent else {}
        self._if_absent = if_absent
        self._buffer = bytearray()  # until the object outgrows one chunk
        self._resumable: BlobWriter | None = None
        self._size = 0

    def _write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        try:
            if self._resumable is None:
                self._buffer += view
                if len(self._buffer) > self._storage.chunk_size:
                    self._resumable = BlobWriter(
                        self._blob, chunk_size=self._storage.chunk_size, ignore_flush=True,
                        retry=self._storage.upload_retry, timeout=TIMEOUT, **self._conditions,
                    )  # fmt: skip
                    pending, self._buffer = self._buffer, bytearray()
                    self._resumable.write(pending)
            else:
                self._resumable.write(view)
        except Exception as exc:
            raise self._storage._error(exc, "write", self.name) from None
        self._size += len(view)
        return len(view)

    def _commit(self) -> ObjectInfo:
        operation = "create" if self._if_absent else "write"
        try:
            if self._resumable is None:
                self._blob.upload_from_string(
                    bytes(self._buffer), content_type="application/octet-stream",
                    retry=self._storage.upload_retry, timeout=TIMEOUT, **self._conditions,
                )  # fmt: skip
            else:
                writer, self._resumable = self._resumable, None
                writer.close()
                self._blob.reload(retry=None, timeout=TIMEOUT)
        except Exception as exc:
            error = self._storage._error(exc, operation, self.name)
            if isinstance(error, AlreadyExistsError) and self._ours():
                return _info(self.name, self._blob)  # our own commit, its answer lost and retried
            raise error from None
        return _info(self.name, self._blob)

    def _ours(self) -> bool:
        """Whether the object under the name was written by this writer."""
        try:
            self._blob.reload(retry=None, timeout=TIMEOUT)
        except Exception:
            return False
        return (self._blob.metadata or {}).get(MARKER) == self._upload

    def _abort(self) -> None:
        self._buffer = bytearray()
        writer, self._resumable = self._resumable, None
        if writer is not None:
            try:
                writer.terminate()  # cancels the upload session
            except Exception as exc:
                log.debug(
                    "abort of %s: cancelling its upload: %s", self.name, _map(exc, self.where, "abort", "")
                )
