"""The S3 backend: ``s3://bucket/prefix`` on AWS or an S3-compatible store (boto3).

Why boto3's low-level client and not a higher-level uploader (obstore,
``upload_fileobj``): see ``bench/STORAGE-LIBS.md``. In short, a conditional
create must be sent on ``CompleteMultipartUpload`` (``If-None-Match: *``),
the part size must grow so that a stream of unknown length never meets the
10,000-part limit, and memory must stay bounded: no uploader gives all three.

**Writes.** ``S3Writer`` buffers up to one part (copying what it is given). A
stream that ends before the first part is full goes out as one ``PutObject``
at commit; a longer one becomes a multipart upload whose parts grow
(``part_size``), with at most one part uploading in the background while the
next one fills (memory: about two parts). Each part is retried a few times on
transient errors (its bytes are in memory). ``if_absent`` sends
``If-None-Match: *`` on the ``PutObject`` or the ``CompleteMultipartUpload``:
S3 itself refuses a second creator (412), so of two racing writers exactly one
wins. Some S3-compatible stores ignore the header and overwrite silently
(s3proxy 2.6 does): ``S3Storage.check`` proves the store honours it and
refuses the store otherwise.

**Leftovers.** A writer that dies leaves its multipart upload (parts billed,
nothing visible): ``temporaries`` lists uploads as ``<key>#<upload id>``,
``remove_temporary`` aborts one. A bucket lifecycle rule
(AbortIncompleteMultipartUpload) is a good second net.

**Credentials, region, endpoint** come from boto3's standard chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and the
shared files, ``AWS_REGION``, ``AWS_ENDPOINT_URL``, instance or workload
identity), never from the cluster file. Its non-secret ``[storage]`` options:
``endpoint``, ``region``, ``path_style``, ``storage_class``, ``sse_kms_key_id``,
``object_lock_days`` and ``object_lock_mode``.

**Checksums.** An object written in one PutObject (under 8 MiB) is sent with
``ChecksumAlgorithm=SHA256``: S3 checks the body against it on arrival and keeps
it, and ``stat`` returns it (``ObjectInfo.sha256``, from HeadObject with
``ChecksumMode=ENABLED``), so ``txbackup verify`` compares it with the SHA-256 the
manifest recorded without downloading anything. A multipart object's SHA-256 is
a checksum of its parts' checksums (COMPOSITE), which no record of ours matches:
those objects are checked by size only (``verify --read-data`` reads them).

**Object Lock** (``object_lock_days = N``, ``object_lock_mode = "compliance"`` or
``"governance"``): the bucket must have been created with Object Lock enabled
(``check`` asks GetObjectLockConfiguration and refuses it otherwise, before a
backup pauses anything); the engine then puts a retention date on every object
of a committed set (``retain``: PutObjectRetention, extending and never
shortening a date already there). Object Lock means versioning, and on a
versioned bucket a plain DeleteObject does not delete: it adds a delete marker
that hides the key, while the locked version stays (S3 refuses only the removal
of a version under retention). txbackup does not hide what it cannot delete:
``remove`` and ``remove_prefix`` on a bucket with Object Lock look at each
object first (HeadObject) and raise ``RetainedError`` naming the object and the
date, before removing anything; an object whose retention has ended gets a
plain DeleteObject (a delete marker: the old version is billed until a
lifecycle rule with NoncurrentVersionExpiration removes it).

boto3's own retries are kept low (2 attempts): ``storage.retry`` does the rest.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import email.utils
import hashlib
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any, cast

import boto3  # type: ignore[import-untyped]  # the s3 extra's library
import botocore.config  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]

from txbackup.errors import (
    AlreadyExistsError,
    NotFoundError,
    PermanentStorageError,
    RetainedError,
    StorageError,
    TransientStorageError,
    UsageError,
)
from txbackup.safepaths import shown
from txbackup.storage.base import (
    RESERVED_PREFIX,
    ObjectInfo,
    Retention,
    WriterBase,
    check_name,
    check_ok,
    check_prefix,
    storage_error,
)
from txbackup.storage.registry import shown_url

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger("txbackup.storage")

MiB = 1 << 20
GiB = 1 << 30
MIN_PART = 5 * MiB
"""S3's smallest part (all but the last): EntityTooSmall below."""
MAX_PART = 5 * GiB
MAX_PARTS = 10_000
FIRST_PART = 8 * MiB
GROW_EVERY = 1000
"""The part size doubles every this many parts (see ``part_size``)."""
PART_TRIES = 3
"""Tries of one part (its bytes are in memory) before the upload fails."""
DELETE_BATCH = 1000
"""DeleteObjects takes at most this many keys."""

OPTIONS = (
    "endpoint",
    "region",
    "path_style",
    "storage_class",
    "sse_kms_key_id",
    "object_lock_days",
    "object_lock_mode",
)
"""The ``[storage]`` settings this backend takes (none of them secret)."""

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_URL = re.compile(r"^s3://([^/?#@:]*)(?:/([^?#]*))?$", re.IGNORECASE)
_STORAGE_CLASS = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")

NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchVersion"})
CREDENTIALS = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidSecurity",
        "403",
    }
)
TRANSIENT = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
        "ConditionalRequestConflict",
    }
)
_TRANSIENT_BOTOCORE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionError,  # connect timeout, proxy
    botocore.exceptions.HTTPClientError,  # read timeout, connection closed, SSL
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
)
_NO_CREDENTIALS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ProfileNotFound,
    botocore.exceptions.CredentialRetrievalError,
)
CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
    "or run with an instance/workload identity"
)


def part_size(number: int) -> int:
    """The size of part ``number`` (1-based) of a multipart upload: 8 MiB for parts
    1-1000, then doubling every 1000 parts (16 MiB for 1001-2000, ... 4 GiB for
    9001-10000), capped at 5 GiB. The 10,000 parts then hold about 7.8 TiB, more
    than S3's 5 TiB object limit, so a stream of unknown length never runs out of
    parts, while objects under 7.8 GiB (most dumps) use 8 MiB parts and ~16 MiB
    of memory."""
    return min(MAX_PART, FIRST_PART << ((number - 1) // GROW_EVERY))


# ---------------------------------------------------------------- errors


def _client_error_code(exc: Any) -> tuple[str, str, int]:
    """(code, message, HTTP status) of a botocore ClientError."""
    response = getattr(exc, "response", {}) or {}
    error = response.get("Error", {}) or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or status or "ClientError")
    message = str(error.get("Message") or "")
    return code, message, status


_USERINFO = re.compile(r"//[^/@\s]*@")


def _clean(text: object) -> str:
    """A server's or the SDK's text fit for a message: no control character (a hostile
    server's answer), no ``user:password@`` of an endpoint URL."""
    return _USERINFO.sub("//", "".join(c if c.isprintable() else " " for c in str(text)))


def map_error(exc: BaseException, where: str, operation: str, name: str, bucket: str) -> StorageError:
    """A botocore error as the typed StorageError of ``base`` (one line, no secret)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, message, status = _client_error_code(exc)
        code, message = _clean(code)[:100], _clean(message)
        text = f"{code}: {message}" if message and message != code else code
        cls: type[StorageError] = PermanentStorageError
        if code == "NoSuchBucket":
            return storage_error(
                PermanentStorageError, where, operation, name, f"bucket {bucket} does not exist"
            )
        if code in NOT_FOUND or status == 404:
            cls = NotFoundError
            text = "not found" if code in ("404", "NotFound", "NoSuchKey") else text
        elif code == "PreconditionFailed" or status == 412:
            cls = AlreadyExistsError
            text = "already exists"
        elif code in TRANSIENT or status == 429 or status >= 500:
            cls = TransientStorageError
        elif code in CREDENTIALS or status in (401, 403):
            text += f" (credentials or permissions rejected: {CREDENTIALS_HINT})"
        return storage_error(cls, where, operation, name, text)
    if isinstance(exc, _NO_CREDENTIALS):
        return storage_error(
            PermanentStorageError, where, operation, name, f"no usable AWS credentials ({CREDENTIALS_HINT})"
        )
    if isinstance(exc, _TRANSIENT_BOTOCORE):
        return storage_error(TransientStorageError, where, operation, name, _clean(exc))
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return storage_error(StorageError, where, operation, name, _clean(exc))
    # urllib3's and socket errors that reach us from a response body being read
    text = _clean(f"{type(exc).__name__}: {exc}")
    return storage_error(TransientStorageError, where, operation, name, text)


_CAUGHT = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


def _no_such_bucket() -> Exception:
    return cast(Exception, botocore.exceptions.ClientError({"Error": {"Code": "NoSuchBucket"}}, "HeadBucket"))


def _multipart_etag(parts: list[dict[str, Any]]) -> str | None:
    """The ETag S3 gives a multipart object: the MD5 of its parts' MD5s, "-" their
    count (None when a part's ETag is not an MD5: SSE-KMS, other stores)."""
    try:
        digests = b"".join(bytes.fromhex(str(p["ETag"]).strip('"')) for p in parts)
    except ValueError:
        return None
    return f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"'


def _server_time(response: Mapping[str, Any]) -> float:
    """The server's clock from a response's Date header (this machine's if absent)."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        with contextlib.suppress(TypeError, ValueError):
            return email.utils.parsedate_to_datetime(date).timestamp()
    return time.time()


def _timestamp(value: object) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else time.time()


def _sha256_of(head: Mapping[str, Any]) -> str | None:
    """The whole object's SHA-256 (hex) from a HeadObject answer, or None: absent, or
    a multipart object's checksum of part checksums (``-N`` suffix, COMPOSITE)."""
    value = head.get("ChecksumSHA256")
    if not isinstance(value, str) or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        return None
    return digest.hex() if len(digest) == 32 else None


def _retained_until(head: Mapping[str, Any]) -> float | None:
    until = head.get("ObjectLockRetainUntilDate")
    return until.timestamp() if isinstance(until, dt.datetime) else None


def _date(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- the storage


class S3Storage:
    """The objects under ``prefix`` (``""`` or ending in ``/``) of one bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        client: Any,
        put_args: Mapping[str, str],
        retention: Retention | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client
        self.put_args = dict(put_args)
        """Extra arguments of PutObject and CreateMultipartUpload (storage class, SSE-KMS)."""
        self._where = shown_url(f"s3://{bucket}/{prefix}")
        self._retention = retention
        self._locked: bool | None = None if retention is None else True  # has the bucket Object Lock?

    @property
    def retention(self) -> Retention | None:
        return self._retention

    def describe(self) -> str:
        return self._where

    def _call(self, operation: str, name: str, fn: Callable[..., Any], **params: Any) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], fn(Bucket=self.bucket, **params))
        except _CAUGHT as exc:
            raise self._error(exc, operation, name) from None

    def _error(self, exc: BaseException, operation: str, name: str) -> StorageError:
        return map_error(exc, self._where, operation, name, self.bucket)

    def _name(self, key: str) -> str | None:
        """The storage name of ``key``, or None for a key that is not one of ours
        (outside the prefix, invalid, a server's own leftovers such as s3proxy's
        ``.mpus-...`` multipart stubs, a probe of ``check``)."""
        if not key.startswith(self.prefix):
            return None
        name = key[len(self.prefix) :]
        if not check_ok(name) or name.endswith("/") or any(s.startswith(".mpus-") for s in name.split("/")):
            return None
        return name

    # -- preflight --------------------------------------------------------------------------

    def check(self) -> None:
        """Prove, before a backup pauses anything, that the bucket exists, the
        credentials may write and delete under the prefix, and the server honours
        ``If-None-Match: *`` (a conditional create must never overwrite: on a store
        that ignores it, two backups could both commit a set). A probe object with
        a reserved name (never listed) is created twice and removed."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except _CAUGHT as exc:
            error = self._error(exc, "check", "bucket")
            if isinstance(error, NotFoundError):  # a HEAD answer has no body: 404 alone
                error = self._error(_no_such_bucket(), "check", "bucket")
            raise error from None
        if self._retention is not None:
            self._check_object_lock()
        probe = f"{self.prefix}{RESERVED_PREFIX}probe-{time.time_ns():x}-{threading.get_ident():x}"
        self._call("check", "write", self.client.put_object, Key=probe, Body=b"", IfNoneMatch="*")
        try:
            try:
                self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"", IfNoneMatch="*")
            except _CAUGHT as exc:
                error = self._error(exc, "check", "conditional create")
                if isinstance(error, AlreadyExistsError):
                    return
                raise error from None
            raise storage_error(
                PermanentStorageError, self._where, "check", "conditional create",
                "the server ignores If-None-Match: * (it overwrote an object): it cannot "
                "commit backup sets atomically; use a store that honours conditional writes",
            )  # fmt: skip
        finally:
            self._call("check", "remove", self.client.delete_object, Key=probe)

    def _check_object_lock(self) -> None:
        """The bucket has Object Lock enabled (``object_lock_days`` needs it: S3 refuses a
        retention on a bucket without, and Object Lock can only be chosen at creation)."""
        try:
            answer = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except _CAUGHT as exc:
            code = _client_error_code(exc)[0] if isinstance(exc, botocore.exceptions.ClientError) else ""
            if code != "ObjectLockConfigurationNotFoundError":
                raise self._error(exc, "check", "object lock") from None
            answer = {}
        config = answer.get("ObjectLockConfiguration") or {}
        if config.get("ObjectLockEnabled") != "Enabled":
            raise storage_error(
                PermanentStorageError, self._where, "check", "object lock",
                f"bucket {self.bucket} does not have Object Lock enabled, which object_lock_days "
                "needs (it is chosen when a bucket is created: create one with Object Lock)",
            )  # fmt: skip
        if (config.get("Rule") or {}).get("DefaultRetention"):
            # it would lock every object we write: the locks we must release, the partial
            # sets of failed backups, the probe below; committed sets get theirs from us
            raise storage_error(
                PermanentStorageError, self._where, "check", "object lock",
                f"bucket {self.bucket} has a default retention, which would also lock txbackup's "
                "locks and unfinished sets: remove the bucket's default retention rule "
                "(object_lock_days retains committed sets)",
            )  # fmt: skip

    def _lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock (asked once): only then can a remove meet a
        retained object. If we may not ask, assume it has (a HEAD too many is harmless)."""
        if self._locked is None:
            try:
                answer = self.client.get_object_lock_configuration(Bucket=self.bucket)
                config = answer.get("ObjectLockConfiguration") or {}
                self._locked = config.get("ObjectLockEnabled") == "Enabled"
            except _CAUGHT as exc:
                code = _client_error_code(exc)[0] if isinstance(exc, botocore.exceptions.ClientError) else ""
                if code == "ObjectLockConfigurationNotFoundError":
                    self._locked = False
                else:
                    return True  # not remembered: a transient failure may pass
        return self._locked

    # -- retention --------------------------------------------------------------------------

    def retain(self, name: str, until: float) -> float:
        """PutObjectRetention on the current version of ``name`` (see ``Retaining``)."""
        key = self.prefix + check_name(name)
        if self._retention is None:
            raise storage_error(StorageError, self._where, "retain", name, "object_lock_days is not set")
        head = self._call("retain", name, self.client.head_object, Key=key)
        current = _retained_until(head)
        if current is not None and current >= until:
            return current  # never shortened (compliance mode could not; governance must not)
        # the version we looked at: a newer one written meanwhile is not what we checked
        version = {"VersionId": head["VersionId"]} if head.get("VersionId") else {}
        when = dt.datetime.fromtimestamp(until, dt.UTC)
        self._call(
            "retain", name, self.client.put_object_retention,
            Key=key, Retention={"Mode": self._retention.mode, "RetainUntilDate": when}, **version,
        )  # fmt: skip
        return until

    def _refuse_retained(self, name: str, key: str) -> None:
        """RetainedError if ``key`` is under a retention that has not ended."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except _CAUGHT as exc:
            error = self._error(exc, "remove", name)
            if isinstance(error, NotFoundError):
                return
            raise error from None
        until = _retained_until(head)
        if until is not None and until > _server_time(head):
            mode = str(head.get("ObjectLockMode") or "").lower() or "unknown"
            raise storage_error(
                RetainedError, self._where, "remove", name,
                f"retained until {_date(until)} (S3 Object Lock, {mode} mode): not removed",
            )  # fmt: skip

    # -- writes -----------------------------------------------------------------------------

    def open_write(self, name: str, *, if_absent: bool = False) -> S3Writer:
        return S3Writer(self, check_name(name), if_absent)

    # -- reads ------------------------------------------------------------------------------

    def open_read(self, name: str, offset: int = 0, length: int | None = None) -> IO[bytes]:
        key = self.prefix + check_name(name)
        if offset < 0 or (length is not None and length < 0):
            raise storage_error(StorageError, self._where, "read", name, "negative offset or length")
        if length == 0:
            if self.stat(name) is None:
                raise storage_error(NotFoundError, self._where, "read", name, "not found")
            return io.BytesIO()
        ranged = f"bytes={offset}-" + ("" if length is None else str(offset + length - 1))
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, Range=ranged)
        except _CAUGHT as exc:
            if isinstance(exc, botocore.exceptions.ClientError):
                code, _, status = _client_error_code(exc)
                if code == "InvalidRange" or status == 416:
                    return io.BytesIO()  # at or past the end (or an empty object)
            raise self._error(exc, "read", name) from None
        return io.BufferedReader(_Body(self, name, response["Body"]), 1 << 20)

    def stat(self, name: str) -> ObjectInfo | None:
        key = self.prefix + check_name(name)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except _CAUGHT as exc:
            error = self._error(exc, "stat", name)
            if isinstance(error, NotFoundError):
                return None
            raise error from None
        return ObjectInfo(
            name,
            int(head["ContentLength"]),
            _timestamp(head.get("LastModified")),
            head.get("ETag"),
            sha256=_sha256_of(head),
            retain_until=_retained_until(head),
        )

    def iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        last = ""
        for page in self._pages(
            "list", prefix or "/", "list_objects_v2", "Contents", Prefix=self.prefix + prefix
        ):
            for item in page:
                name = self._name(str(item["Key"]))
                if name is None:
                    continue
                if name <= last:  # S3 lists in UTF-8 byte order, which is code-point order
                    raise storage_error(
                        PermanentStorageError,
                        self._where,
                        "list",
                        prefix or "/",
                        "the server lists keys out of order",
                    )
                last = name
                yield ObjectInfo(
                    name, int(item["Size"]), _timestamp(item.get("LastModified")), item.get("ETag")
                )

    def _pages(
        self, operation: str, name: str, method: str, field: str, **params: Any
    ) -> Iterator[list[Any]]:
        try:
            for page in self.client.get_paginator(method).paginate(Bucket=self.bucket, **params):
                yield list(page.get(field) or [])
        except _CAUGHT as exc:
            raise self._error(exc, operation, name) from None

    # -- removal ----------------------------------------------------------------------------

    def remove(self, name: str) -> None:
        key = self.prefix + check_name(name)
        if self._lock_enabled():
            self._refuse_retained(name, key)
        self._call("remove", name, self.client.delete_object, Key=key)

    def remove_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise StorageError(
                f"storage {self._where}: remove {shown(prefix)}: not a folder (no trailing '/')"
            )
        check_prefix(prefix)
        listed = {"Prefix": self.prefix + prefix}
        if self._lock_enabled():
            # every object looked at before the first is removed: none or all of them go
            for page in self._pages("remove", prefix, "list_objects_v2", "Contents", **listed):
                for item in page:
                    key = str(item["Key"])
                    self._refuse_retained(key[len(self.prefix) :], key)
        batch: list[dict[str, str]] = []
        for page in self._pages("remove", prefix, "list_objects_v2", "Contents", Prefix=self.prefix + prefix):
            for item in page:
                batch.append({"Key": str(item["Key"])})
                if len(batch) == DELETE_BATCH:
                    self._delete(batch, prefix)
                    batch = []
        if batch:
            self._delete(batch, prefix)

    def _delete(self, keys: list[dict[str, str]], prefix: str) -> None:
        answer = self._call(
            "remove", prefix, self.client.delete_objects, Delete={"Objects": keys, "Quiet": True}
        )
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            code = str(first.get("Code", "Error"))
            cls = TransientStorageError if code in TRANSIENT else PermanentStorageError
            raise storage_error(
                cls, self._where, "remove", prefix,
                f"{len(errors)} objects not removed, first {shown(first.get('Key'))}: {code}",
            )  # fmt: skip

    # -- temporaries ------------------------------------------------------------------------

    def temporaries(self, older_than_s: float) -> Iterator[ObjectInfo]:
        """Incomplete multipart uploads begun more than ``older_than_s`` ago, named
        ``<name>#<upload id>`` (size 0: the parts' size is not listed)."""
        cutoff = time.time() - older_than_s
        found = []
        for page in self._pages(
            "list", "temporaries", "list_multipart_uploads", "Uploads", Prefix=self.prefix
        ):
            for upload in page:
                name = self._name(str(upload["Key"]))
                began = _timestamp(upload.get("Initiated"))
                if name is not None and began < cutoff:
                    found.append(ObjectInfo(f"{name}#{upload['UploadId']}", 0, began))
        yield from sorted(found, key=lambda info: info.name)

    def remove_temporary(self, name: str) -> None:
        key, _, upload_id = name.rpartition("#")
        if not check_ok(key) or not upload_id or len(upload_id) > 1024 or not upload_id.isprintable():
            raise StorageError(f"storage {self._where}: remove temporary {shown(name)}: not an upload id")
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id)
        except _CAUGHT as exc:
            error = self._error(exc, "remove temporary", key)
            if not isinstance(error, NotFoundError):  # NoSuchUpload: already gone
                raise error from None


class _Body(io.RawIOBase):
    """A GetObject body whose failures are StorageErrors: a connection cut or a body
    shorter than its Content-Length is transient (the retry wrapper resumes)."""

    def __init__(self, storage: S3Storage, name: str, body: Any) -> None:
        self._storage = storage
        self._name = name
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except Exception as exc:  # urllib3 and socket errors too: all of them end the read
            error = self._storage._error(exc, "read", self._name)
            if not isinstance(error, TransientStorageError):
                error = storage_error(
                    TransientStorageError, self._storage.describe(), "read", self._name, error
                )
            raise error from None
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()


# ---------------------------------------------------------------- the writer


class S3Writer(WriterBase):
    """One object being uploaded (see the module docstring)."""

    def __init__(self, storage: S3Storage, name: str, if_absent: bool) -> None:
        super().__init__(storage.describe(), name)
        self._storage = storage
        self._key = storage.prefix + name
        self._if_absent = if_absent
        self._buffer = bytearray()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []  # appended by the part thread
        self._number = 1  # of the part being filled (the writer's thread only)
        self._pending: Future[None] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def _write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            room = part_size(self._number) - len(self._buffer)
            self._buffer += view[:room]  # a copy: the caller may reuse data
            view = view[room:]
            if len(self._buffer) >= part_size(self._number):
                self._send_part()
        self._size += total
        return total

    def _send_part(self) -> None:
        """Hand the full buffer to the background upload (after the previous part)."""
        self._wait()
        if self._upload_id is None:
            created = self._storage._call(
                "write", self.name, self._storage.client.create_multipart_upload,
                Key=self._key, **self._storage.put_args,
            )  # fmt: skip
            self._upload_id = str(created["UploadId"])
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="txbackup-s3-part")
        assert self._pool is not None
        part, self._buffer = self._buffer, bytearray()
        self._pending = self._pool.submit(self._upload_part, self._number, part)
        self._number += 1

    def _wait(self) -> None:
        """Wait for the part in flight; its error (a StorageError) is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _upload_part(self, number: int, data: bytearray) -> None:
        client = self._storage.client
        for attempt in range(PART_TRIES):
            try:
                answer = client.upload_part(
                    Bucket=self._storage.bucket, Key=self._key, UploadId=self._upload_id,
                    PartNumber=number, Body=data,
                )  # fmt: skip
                self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                return
            except _CAUGHT as exc:
                error = self._storage._error(exc, "write", f"{self.name} (part {number})")
                if not isinstance(error, TransientStorageError) or attempt + 1 == PART_TRIES:
                    raise error from None
                log.warning("%s (retrying the part, try %d of %d)", error, attempt + 2, PART_TRIES)
                time.sleep(0.5 * 2**attempt)

    def _commit(self) -> ObjectInfo:
        storage, client = self._storage, self._storage.client
        condition = {"IfNoneMatch": "*"} if self._if_absent else {}
        if self._if_absent and storage.stat(self.name) is not None:
            # S3 refuses the commit itself (If-None-Match, atomic); this look first
            # also holds on the stores that ignore the header (sequential writers only)
            raise storage_error(AlreadyExistsError, self.where, "create", self.name, "already exists")
        if self._upload_id is None:
            body = bytes(self._buffer)
            self._buffer = bytearray()
            expected = f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
            # SHA256 instead of the SDK's default CRC32: S3 keeps it, and stat() returns it
            return self._send_commit(
                client.put_object, expected, Key=self._key, Body=body, ChecksumAlgorithm="SHA256",
                **condition, **storage.put_args,
            )  # fmt: skip
        if self._buffer:  # the last part may be short
            self._send_part()
        self._wait()
        parts = sorted(self._parts, key=lambda p: p["PartNumber"])
        info = self._send_commit(
            client.complete_multipart_upload, _multipart_etag(parts),
            Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": parts}, **condition,
        )  # fmt: skip
        self._upload_id = None  # completed: nothing to abort
        self._close_pool()
        return info

    def _send_commit(self, send: Callable[..., Any], expected_etag: str | None, **params: Any) -> ObjectInfo:
        """PutObject or CompleteMultipartUpload, retried on transient errors (all it
        sends is in memory). After a try that failed transiently the commit may have
        landed unanswered: a retry then meeting "already exists" (If-None-Match) or
        "no such upload" (completed) is our own commit when the object has the ETag
        ours would have (plain MD5s; with SSE-KMS ETags differ and the error stands)."""
        operation = "create" if self._if_absent else "write"
        uncertain = False
        for attempt in range(PART_TRIES):
            try:
                answer = send(Bucket=self._storage.bucket, **params)
                return ObjectInfo(self.name, self._size, _server_time(answer), answer.get("ETag"))
            except _CAUGHT as exc:
                error = self._storage._error(exc, operation, self.name)
            if uncertain and isinstance(error, AlreadyExistsError | NotFoundError):
                info = self._storage.stat(self.name)
                if info is not None and expected_etag is not None and info.checksum == expected_etag:
                    return ObjectInfo(self.name, self._size, info.mtime, info.checksum)
                raise error
            if not isinstance(error, TransientStorageError) or attempt + 1 == PART_TRIES:
                raise error
            uncertain = True
            log.warning("%s (retrying the commit, try %d of %d)", error, attempt + 2, PART_TRIES)
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _abort(self) -> None:
        self._buffer = bytearray()
        with contextlib.suppress(BaseException):
            self._wait()
        self._close_pool()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            try:
                self._storage.client.abort_multipart_upload(
                    Bucket=self._storage.bucket, Key=self._key, UploadId=upload_id
                )
            except _CAUGHT as exc:  # best effort: the upload stays listed by temporaries()
                log.warning("%s", self._storage._error(exc, "abort", self.name))

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def drop(self) -> None:
        """Forget the upload as a killed process would (tests): no abort, the
        multipart upload stays for ``temporaries``."""
        with contextlib.suppress(BaseException):
            self._wait()
        self._close_pool()
        self._upload_id = None
        self._buffer = bytearray()
        self._done = True


# ---------------------------------------------------------------- the factory


def _option(options: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, str) and (not value or not value.isprintable())):
        what = "true or false" if kind is bool else "a non-empty string"
        raise UsageError(f"storage {where}: option {key} must be {what}")
    return value


def from_url(url: str, options: Mapping[str, Any]) -> S3Storage:
    """The storage at ``s3://bucket[/prefix]`` with the ``[storage]`` ``options``."""
    where = shown_url(url)
    match = _URL.match(url)
    if match is None:
        raise UsageError(f"storage {where}: not an s3://bucket/prefix URL (no user, port, query or fragment)")
    bucket, prefix = match.group(1), (match.group(2) or "").strip("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise UsageError(
            f"storage {where}: bucket name {shown(bucket)} is not valid "
            "(3-63 lowercase letters, digits, dots and hyphens)"
        )
    if prefix:
        try:
            check_name(prefix)
        except StorageError as exc:
            raise UsageError(f"storage {where}: prefix: {exc}") from None
        prefix += "/"
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"storage {where}: unknown option {unknown[0]} (known: {', '.join(OPTIONS)})")
    endpoint = _option(options, "endpoint", str, where)
    if endpoint is not None and not re.match(r"^https?://[^/?#@\s]+/?$", endpoint):
        raise UsageError(f"storage {where}: option endpoint must be http(s)://host[:port]")
    region = _option(options, "region", str, where)
    path_style = _option(options, "path_style", bool, where)
    storage_class = _option(options, "storage_class", str, where)
    if storage_class is not None and not _STORAGE_CLASS.match(storage_class):
        raise UsageError(f"storage {where}: option storage_class must be a class name such as STANDARD_IA")
    kms_key = _option(options, "sse_kms_key_id", str, where)
    retention = _retention(options, where)
    put_args: dict[str, str] = {}
    if storage_class:
        put_args["StorageClass"] = storage_class
    if kms_key:
        put_args |= {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}
    config = botocore.config.Config(
        retries={"max_attempts": 2, "mode": "standard"},  # storage.retry does the rest
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="txbackup",
        s3={"addressing_style": "path"} if path_style else {},
    )
    try:
        session = boto3.session.Session(region_name=region)
        client = session.client("s3", endpoint_url=endpoint, config=config)
    except _CAUGHT as exc:
        raise UsageError(str(map_error(exc, where, "open", "client", bucket))) from None
    except ValueError as exc:  # a malformed AWS_ENDPOINT_URL or region
        raise UsageError(f"storage {where}: {exc}") from None
    return S3Storage(bucket, prefix, client, put_args, retention)


LOCK_MODES = ("compliance", "governance")
MAX_LOCK_DAYS = 36_500


def _retention(options: Mapping[str, Any], where: str) -> Retention | None:
    """``object_lock_days`` (1 to 36500) and ``object_lock_mode`` (default compliance)."""
    days = options.get("object_lock_days")
    mode = _option(options, "object_lock_mode", str, where)
    if days is None:
        if mode is not None:
            raise UsageError(f"storage {where}: option object_lock_mode needs object_lock_days")
        return None
    if type(days) is not int or not 1 <= days <= MAX_LOCK_DAYS:
        raise UsageError(
            f"storage {where}: option object_lock_days must be a whole number of days, 1 to {MAX_LOCK_DAYS}"
        )
    mode = (mode or "compliance").lower()
    if mode not in LOCK_MODES:
        raise UsageError(f"storage {where}: option object_lock_mode must be compliance or governance")
    return Retention(mode.upper(), days)
