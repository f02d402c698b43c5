"""The S3 backend on real servers (moto and s3proxy): the conformance suite, plus
what only S3 has (multipart with growing parts, If-None-Match on both commit
paths, uploads left by a killed server, credentials, SSE-KMS, memory)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.response import StreamingBody  # type: ignore[import-untyped]

from tests.servers.s3 import S3Bucket, S3Server
from tests.storage.conformance import Backend, Capabilities, StorageConformance, read_all
from txbackup.errors import (
    AlreadyExistsError,
    NotFoundError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
    UsageError,
)
from txbackup.storage import open_storage
from txbackup.storage.base import Writer, list_names, save_bytes
from txbackup.storage.s3 import (
    FIRST_PART,
    MAX_PART,
    MAX_PARTS,
    MIN_PART,
    S3Storage,
    S3Writer,
    _Body,
    from_url,
    map_error,
    part_size,
)

MiB = 1 << 20


def kill(writer: Writer) -> None:
    """A killed process: its multipart upload stays, unaborted."""
    assert isinstance(writer, S3Writer)
    writer.drop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No AWS configuration of this machine leaks into the tests (profiles, tokens)."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    yield


def s3(bucket: S3Bucket, prefix: str = "", **options: object) -> S3Storage:
    """The backend of ``bucket`` with the server's credentials from the environment,
    as a user gives them (the standard chain), and ``options`` as [storage] does."""
    os.environ.update(bucket.env())
    return from_url(bucket.url(prefix), {"path_style": True, **options})


def killed_writer_clause(backend: Backend, *, dated: bool = True) -> None:
    """The suite's killed-writer clause with a writer past its first part: a smaller
    one has sent nothing yet (it is one PutObject at commit) and leaves nothing."""
    storage = backend.storage
    small = storage.open_write("sets/s1/pg/small")
    small.write(b"x" * 100_000)
    backend.kill(small)
    writer = storage.open_write("sets/s1/pg/a.dump.zst")
    writer.write(b"x" * (FIRST_PART + 1))  # a multipart upload begins
    backend.kill(writer)
    assert list_names(storage) == []  # never listed as an object (nor s3proxy's stubs)
    assert storage.stat("sets/s1/pg/a.dump.zst") is None
    if dated:
        assert list(storage.temporaries(3600)) == []  # too young to be a leftover
    (left,) = storage.temporaries(-3600)
    assert left.name.rpartition("/")[0] == "sets/s1/pg"  # in the object's folder
    if dated:
        assert abs(left.mtime - time.time()) <= backend.capabilities.clock_skew_s + 60
    storage.remove_temporary(left.name)
    storage.remove_temporary(left.name)  # idempotent
    assert list(storage.temporaries(-3600)) == []
    assert list_names(storage) == []


class TestMotoConformance(StorageConformance):
    @pytest.fixture
    def backend(self, moto_s3_bucket: S3Bucket, aws_env: None) -> Iterator[Backend]:
        yield Backend(s3(moto_s3_bucket), kill=kill)

    def test_a_killed_writer_leaves_a_removable_temporary(self, backend: Backend) -> None:
        # moto answers every ListMultipartUploads with Initiated = 2010-11-10 (hard-coded
        # in moto.s3.responses): the ages cannot be checked there (s3proxy checks them)
        killed_writer_clause(backend, dated=False)


class TestS3ProxyConformance(StorageConformance):
    """s3proxy ignores If-None-Match: the backend's look before the commit keeps a
    sequential if_absent from overwriting, but two racing writers may both win
    (``check`` refuses such a store for backups, see below)."""

    @pytest.fixture
    def backend(self, s3proxy_bucket: S3Bucket, aws_env: None) -> Iterator[Backend]:
        # under a prefix: s3proxy keeps its multipart stubs at the bucket's top
        yield Backend(s3(s3proxy_bucket, "repo/one"), Capabilities(if_absent_atomic=False), kill=kill)

    def test_a_killed_writer_leaves_a_removable_temporary(self, backend: Backend) -> None:
        killed_writer_clause(backend)


# ---------------------------------------------------------------- the part schedule


def test_the_part_size_grows_so_10000_parts_hold_5_tib() -> None:
    sizes = [part_size(n) for n in range(1, MAX_PARTS + 1)]
    assert sum(sizes) >= 5 << 40  # S3's largest object fits in the 10,000 parts
    assert all(MIN_PART <= s <= MAX_PART for s in sizes)
    assert sizes[0] == sizes[999] == FIRST_PART and sizes[1000] == 2 * FIRST_PART
    assert sizes == sorted(sizes)
    assert part_size(10**6) == MAX_PART  # capped


# ---------------------------------------------------------------- multipart


def test_an_unknown_length_stream_goes_multipart(s3_bucket: S3Bucket, aws_env: None) -> None:
    """60 MiB in odd-sized writes: several full parts (moto refuses parts under 5 MiB
    but the last) and a short last one, read back whole and by range."""
    storage = s3(s3_bucket, "p")
    block = os.urandom(MiB + 7)
    sent = bytearray()
    with storage.open_write("big") as writer:
        while len(sent) < 60 * MiB:
            piece = block[len(sent) % 97 :]
            writer.write(piece)
            sent += piece
        upload = writer._upload_id
        info = writer.commit()
    assert upload is not None  # it was a multipart upload
    assert info.size == len(sent)
    head = s3_bucket.client().head_object(Bucket=s3_bucket.bucket, Key="p/big")
    assert head["ContentLength"] == len(sent)
    assert read_all(storage, "big") == sent
    assert read_all(storage, "big", 20 * MiB + 3, 10) == sent[20 * MiB + 3 : 20 * MiB + 13]
    assert list(storage.temporaries(-3600)) == []


def test_a_part_failing_transiently_is_sent_again(moto_s3_bucket: S3Bucket, aws_env: None) -> None:
    storage = s3(moto_s3_bucket)
    real = storage.client.upload_part
    calls = []

    def flaky(**params: object) -> object:
        calls.append(params["PartNumber"])
        if len(calls) == 1:  # the server's answer: 503 SlowDown
            from botocore.exceptions import ClientError  # type: ignore[import-untyped]

            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce"}}, "UploadPart")
        return real(**params)

    storage.client.upload_part = flaky
    data = os.urandom(FIRST_PART + 100)
    with storage.open_write("x") as writer:
        writer.write(data)
        writer.commit()
    assert calls == [1, 1, 2]
    assert read_all(storage, "x") == data


@pytest.mark.parametrize("size", [1000, FIRST_PART + 1000], ids=["put", "multipart"])
@pytest.mark.parametrize("if_absent", [True, False], ids=["if_absent", "replace"])
def test_a_commit_landed_but_unanswered_is_ours(
    moto_s3_bucket: S3Bucket, aws_env: None, size: int, if_absent: bool
) -> None:
    """The commit reaches the server, the answer is lost (a read timeout): the retry
    meets our own object (412 with If-None-Match) and recognises it by its ETag."""
    from botocore.exceptions import ReadTimeoutError

    storage = s3(moto_s3_bucket)
    calls = []

    def answer_lost_once(real: Any) -> Any:
        def call(**params: Any) -> Any:
            calls.append(params["Key"])
            answer = real(**params)
            if len(calls) == 1:
                raise ReadTimeoutError(endpoint_url=moto_s3_bucket.endpoint)
            return answer

        return call

    for method in ("put_object", "complete_multipart_upload"):
        setattr(storage.client, method, answer_lost_once(getattr(storage.client, method)))
    data = os.urandom(size)
    with storage.open_write("sets/s1/manifest.json", if_absent=if_absent) as writer:
        writer.write(data)
        info = writer.commit()
    assert len(calls) == 2 and info.size == size
    assert read_all(storage, "sets/s1/manifest.json") == data
    assert list(storage.temporaries(-3600)) == []
    if if_absent:  # someone else's object is never taken for ours
        with pytest.raises(AlreadyExistsError):
            save_bytes(storage, "sets/s1/manifest.json", b"other", if_absent=True)


# ---------------------------------------------------------------- conditional create


@pytest.mark.parametrize("size", [1000, FIRST_PART + 1000], ids=["put", "multipart"])
def test_the_server_refuses_the_second_creator(
    moto_s3_bucket: S3Bucket, aws_env: None, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Two writers upload at once, then commit one after the other, both having looked
    before the first commit (the look is disabled): the If-None-Match header sent on
    PutObject / CompleteMultipartUpload makes the server refuse the second. (Their
    commits are not sent at the same instant: moto checks the header of a multipart
    completion before assembling the parts, without a lock, so two completions
    that overlap there both pass; AWS S3 decides atomically, and the suite's
    concurrent race runs on moto's PutObject.)"""
    storage = s3(moto_s3_bucket)
    monkeypatch.setattr(storage, "stat", lambda name: None)
    first = storage.open_write("sets/s1/manifest.json", if_absent=True)
    second = storage.open_write("sets/s1/manifest.json", if_absent=True)
    first.write(b"1" * size)
    second.write(b"2" * size)
    assert (first._upload_id is None) == (second._upload_id is None) == (size < FIRST_PART)
    first.commit()
    with pytest.raises(AlreadyExistsError) as err:
        second.commit()
    assert "\n" not in str(err.value) and "sets/s1/manifest.json" in str(err.value)
    assert read_all(storage, "sets/s1/manifest.json") == b"1" * size
    assert list(storage.temporaries(-3600)) == []  # the loser's upload was aborted


# ---------------------------------------------------------------- faults


def test_a_server_killed_mid_upload(fresh_s3_server: S3Server, aws_env: None) -> None:
    server = fresh_s3_server
    bucket = server.new_bucket()
    storage = s3(bucket, "p")
    writer = storage.open_write("sets/s1/big")
    writer.write(os.urandom(FIRST_PART + 10))  # a multipart upload with a part in flight
    writer._wait()
    server.kill()
    started = time.monotonic()
    with pytest.raises(TransientStorageError) as err:
        writer.write(os.urandom(FIRST_PART))
        writer.commit()
    writer.abort()
    message = str(err.value)
    assert message.startswith(f"storage {storage.describe()}: write sets/s1/big") and "\n" not in message
    assert time.monotonic() - started < 60
    server.restart()
    if server.name == "moto":  # moto restarts empty
        server.bucket(bucket.bucket).client().create_bucket(Bucket=bucket.bucket)
    assert list_names(storage) == [] and storage.stat("sets/s1/big") is None
    if server.name == "s3proxy":  # the upload outlived the kill: listed, then removed
        (left,) = storage.temporaries(-3600)
        assert left.name.startswith("sets/s1/big#")
        storage.remove_temporary(left.name)
    assert list(storage.temporaries(-3600)) == []
    save_bytes(storage, "sets/s1/big", b"next run")  # the next run works
    assert read_all(storage, "sets/s1/big") == b"next run"


def test_wrong_credentials_are_permanent_in_one_line(s3proxy_bucket: S3Bucket, aws_env: None) -> None:
    storage = s3(s3proxy_bucket)  # s3proxy checks signatures (moto does not)
    os.environ["AWS_SECRET_ACCESS_KEY"] = "wrong-secret-never-shown"
    storage = from_url(s3proxy_bucket.url(), {"path_style": True})
    for operation in (storage.check, lambda: storage.stat("x"), lambda: save_bytes(storage, "x", b".")):
        with pytest.raises(PermanentStorageError) as err:
            operation()
        message = str(err.value)
        # a HEAD answer has no body: only its status tells (403)
        assert ("SignatureDoesNotMatch" in message or "403" in message) and "AWS_ACCESS_KEY_ID" in message
        assert "\n" not in message and "wrong-secret" not in message


def test_no_credentials_at_all(s3proxy_bucket: S3Bucket, aws_env: None) -> None:
    storage = s3(s3proxy_bucket)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        del os.environ[key]
    storage = from_url(s3proxy_bucket.url(), {"path_style": True})
    with pytest.raises(PermanentStorageError, match=r"no usable AWS credentials .*AWS_ACCESS_KEY_ID"):
        storage.check()


def test_a_missing_bucket_is_permanent_in_one_line(s3_bucket: S3Bucket, aws_env: None) -> None:
    missing = dataclasses.replace(s3_bucket, bucket="no-such-bucket-here")
    storage = s3(missing)
    operations = (storage.check, lambda: save_bytes(storage, "x", b"."), lambda: list(storage.iterate("")))
    for operation in operations:
        with pytest.raises(PermanentStorageError) as err:
            operation()
        assert "bucket no-such-bucket-here does not exist" in str(err.value)
        assert "\n" not in str(err.value)


def test_check_refuses_a_store_that_ignores_if_none_match(s3_server: S3Server, aws_env: None) -> None:
    bucket = s3_server.new_bucket()
    storage = s3(bucket, "p")
    if s3_server.enforces_conditional_put:
        storage.check()
    else:
        with pytest.raises(PermanentStorageError, match="ignores If-None-Match"):
            storage.check()
    assert bucket.client().list_objects_v2(Bucket=bucket.bucket).get("KeyCount", 0) == 0  # probe gone


def test_error_texts_are_cleaned(aws_env: None) -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    hostile = ClientError({"Error": {"Code": "Weird\x1b[2J", "Message": "line\nnext\x07"}}, "GetObject")
    error = map_error(hostile, "s3://b/", "read", "x", "b")
    assert str(error) == "storage s3://b/: read x: Weird [2J: line next" and isinstance(error, StorageError)
    leak = EndpointConnectionError(endpoint_url="https://user:secret@s3.example.com/b")
    error = map_error(leak, "s3://b/", "read", "x", "b")
    assert isinstance(error, TransientStorageError) and "secret" not in str(error)
    assert "https://s3.example.com/b" in str(error)


def test_a_body_cut_short_is_transient(moto_s3_bucket: S3Bucket, aws_env: None) -> None:
    storage = s3(moto_s3_bucket)
    body = _Body(storage, "x", StreamingBody(io.BytesIO(b"abc"), 10))  # Content-Length 10, 3 sent
    with pytest.raises(TransientStorageError, match=r"storage s3://.*: read x: .*"):
        while body.read(4):
            pass


def test_sse_kms_and_storage_class_are_sent(moto_s3_bucket: S3Bucket, aws_env: None) -> None:
    storage = s3(moto_s3_bucket, storage_class="STANDARD_IA", sse_kms_key_id="alias/txbackup-test")
    save_bytes(storage, "small", b"x")
    with storage.open_write("big") as writer:
        writer.write(b"x" * (FIRST_PART + 1))
        writer.commit()
    client = moto_s3_bucket.client()
    for key in ("small", "big"):
        head = client.head_object(Bucket=moto_s3_bucket.bucket, Key=key)
        assert head["StorageClass"] == "STANDARD_IA"
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"].endswith("alias/txbackup-test")


# ---------------------------------------------------------------- URLs and options


@pytest.mark.parametrize(
    ("url", "options", "culprit"),
    [
        ("s3://", {}, "bucket name"),
        ("s3://Bad_Bucket/p", {}, "bucket name"),
        ("s3://ab/p", {}, "bucket name"),
        ("s3://user:secret@bucket/p", {}, "not an s3://bucket/prefix URL"),
        ("s3://bucket/p?X-Amz-Signature=abc", {}, "not an s3://bucket/prefix URL"),
        ("s3://bucket/../etc", {}, "prefix"),
        ("s3://bucket/a//b", {}, "prefix"),
        ("s3://bucket/p", {"region": 5}, "option region"),
        ("s3://bucket/p", {"path_style": "yes"}, "option path_style"),
        ("s3://bucket/p", {"endpoint": "ftp://x"}, "option endpoint"),
        ("s3://bucket/p", {"storage_class": "cheap one"}, "option storage_class"),
        ("s3://bucket/p", {"sse_kms_key_id": ""}, "option sse_kms_key_id"),
        ("s3://bucket/p", {"secret_access_key": "x"}, "unknown option secret_access_key"),
    ],
)
def test_bad_urls_and_options(aws_env: None, url: str, options: dict[str, object], culprit: str) -> None:
    with pytest.raises(UsageError) as err:
        open_storage(url, options)
    message = str(err.value)
    assert culprit in message and "\n" not in message
    assert "secret" not in message.replace("secret_access_key", "")


def test_url_prefix_is_normalised(aws_env: None) -> None:
    for url in ("s3://my-bucket/a/b", "s3://my-bucket/a/b/", "s3://my-bucket//a/b"):
        storage = from_url(url, {"region": "eu-west-1"})
        assert (storage.bucket, storage.prefix) == ("my-bucket", "a/b/")
        assert storage.describe() == "s3://my-bucket/a/b/"
    assert from_url("s3://my-bucket", {}).prefix == ""


def test_names_outside_the_prefix_are_never_ours(moto_s3_bucket: S3Bucket, aws_env: None) -> None:
    client = moto_s3_bucket.client()
    for key in ("p/ok", "p/.mpus-1-p/x-stub", "p//double", "p/a/../b", "pother", "p/.txbackup-tmp-probe"):
        client.put_object(Bucket=moto_s3_bucket.bucket, Key=key, Body=b".")
    storage = s3(moto_s3_bucket, "p")
    assert list_names(storage) == ["ok"]
    with pytest.raises(NotFoundError):
        read_all(storage, "other")
    with pytest.raises(StorageError, match="not an upload id"):
        storage.remove_temporary("../x#id")


# ---------------------------------------------------------------- memory


MEMORY_PROBE = textwrap.dedent(
    """
    import json, os, resource, sys
    from txbackup.storage.s3 import from_url
    def rss():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) * 1024
    storage = from_url(sys.argv[1], {"path_style": True})
    storage.stat("warm-up")  # clients, TLS and signer loaded before the baseline
    block = os.urandom(1 << 20)
    base = rss()
    with storage.open_write("big") as w:
        for i in range(int(sys.argv[2])):
            w.write(block)
        info = w.commit()
    print(json.dumps({"base": base, "peak": rss(), "size": info.size}))
    """
)


def test_memory_of_a_200_mib_upload_stays_flat(moto_s3_bucket: S3Bucket) -> None:
    """Peak RSS (VmHWM) of a 200 MiB upload, measured in a fresh process: about two parts
    (16 MiB) plus the SDK's own buffers, whatever the size."""
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, moto_s3_bucket.url("m"), "200"],
        capture_output=True,
        text=True,
        timeout=240,
        env=moto_s3_bucket.process_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout)
    assert measured["size"] == 200 * MiB
    assert measured["peak"] - measured["base"] < 100 * MiB, measured


def test_permission_denied_on_write_is_one_permanent_line(aws_env: None) -> None:
    """A user who may read and list the bucket but not write it: the preflight check and a
    write each fail with one permanent line naming the operation (moto enforcing IAM)."""
    from tests.servers.s3 import MotoS3Server, moto_missing_reason

    if (reason := moto_missing_reason()) is not None:
        pytest.skip(reason)
    # four unauthenticated requests set up the bucket, the user, its policy and its key
    with MotoS3Server(unauthenticated_actions=4) as server:
        admin = server.new_bucket("denied")
        import boto3  # type: ignore[import-untyped]

        iam = boto3.client(
            "iam",
            endpoint_url=admin.endpoint,
            region_name=admin.region,
            aws_access_key_id=admin.access_key,
            aws_secret_access_key=admin.secret_key,
        )
        iam.create_user(UserName="reader")
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}
            ],
        }
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        reader = dataclasses.replace(
            admin, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"]
        )
        storage = s3(reader, "txb")
        assert list_names(storage, "") == []  # reading is allowed
        with pytest.raises(PermanentStorageError) as denied:
            save_bytes(storage, "sets/s1/manifest.json", b"{}")
        message = str(denied.value)
        assert "denied" in message.lower(), message
        assert "\n" not in message and "sets/s1/manifest.json" in message
        assert key["SecretAccessKey"] not in message
        with pytest.raises(PermanentStorageError) as checked:
            storage.check()
        assert "\n" not in str(checked.value)
        assert reader.client().list_objects_v2(Bucket=reader.bucket).get("KeyCount", 0) == 0
