"""Object-store client libraries compared: streaming a stream of unknown length into local servers.

    .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python -m bench.storage_libs [--mib 200] [--gib] [--rounds 1] [--only obstore,boto3]

Starts the test servers of ``tests/servers`` on 127.0.0.1 (moto's S3 and s3proxy
with its filesystem backend; Azurite for Azure Blob) and, for every library and
server, runs ONE CHILD PROCESS that uploads ``--mib`` MiB (``--gib``: 1 GiB) of
incompressible bytes from a generator (the length is never told to the library,
as with a dump read from a pipe) into a fresh key. The child's peak RSS is its
own high-water mark (``VmHWM``), wall time is measured by the parent; the object's
size is checked after each upload. ``none`` is the same child that only drains
the generator: the interpreter's and the generator's own cost.

Libraries (those not installed are reported, not fatal):
- ``obstore-put``: ``obstore.put(store, key, iterator)`` (multipart, 5 MiB parts, 12 in flight)
- ``obstore-unsigned``: the same with ``unsigned_payload`` (no SHA-256 of each part)
- ``obstore-writer``: ``obstore.open_writer(store, key)`` + ``write()`` (10 MiB buffer)
- ``opendal``: ``Operator.open(key, "wb", chunk=8 MiB, concurrent=4)`` + ``write()``
- ``boto3``: ``upload_fileobj`` of a file-like wrapper of the generator (TransferConfig defaults)
- ``s3fs``: ``S3FileSystem.open(key, "wb")`` + ``write()``
- ``txbackup-s3``: txbackup's own S3 backend (``txbackup.storage.s3``, boto3's low-level
  client): ``open_write(key)`` + ``write()`` + ``commit()`` (8 MiB parts, one in flight)
- Azure: ``obstore-put`` and ``azure-blob`` (``BlobClient.upload_blob(iterator)``)

Numbers are the median of ``--rounds``; ratios are to obstore-put on the same
server in the same run. The load average is printed: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
CHUNK = 1 * MIB
S3_LIBS = (
    "none", "obstore-put", "obstore-unsigned", "obstore-writer", "opendal", "boto3", "s3fs", "txbackup-s3",
)  # fmt: skip
AZURE_LIBS = ("none", "obstore-put", "azure-blob")
IMPORTS = {
    "obstore-put": "obstore",
    "obstore-unsigned": "obstore",
    "obstore-writer": "obstore",
    "opendal": "opendal",
    "boto3": "boto3",
    "s3fs": "s3fs",
    "txbackup-s3": "boto3",
    "azure-blob": "azure.storage.blob",
}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the child: one upload -------------------------------------------------------------------


def stream(total: int) -> Iterator[bytes]:
    """``total`` bytes in 1 MiB chunks, random (16 MiB pool) with a counter: no two chunks alike."""
    pool = os.urandom(16 * MIB)
    sent = 0
    index = 0
    while sent < total:
        size = min(CHUNK, total - sent)
        start = (index * 7919 * 4096) % (len(pool) - size)
        chunk = index.to_bytes(8, "little") + pool[start + 8 : start + size]
        yield chunk
        sent += size
        index += 1


class GeneratorFile:
    """A read-only file over a generator (boto3's upload_fileobj wants ``read``)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def upload(lib: str, target: dict[str, Any], key: str, total: int) -> None:
    chunks = stream(total)
    kind = target["kind"]
    if lib == "none":
        for _ in chunks:
            pass
    elif lib in ("obstore-put", "obstore-unsigned", "obstore-writer"):
        import obstore

        store = obstore_store(target, unsigned_payload=lib == "obstore-unsigned")
        if lib != "obstore-writer":
            obstore.put(store, key, chunks)
        else:
            with obstore.open_writer(store, key) as writer:
                for chunk in chunks:
                    writer.write(chunk)
    elif lib == "opendal":
        import opendal

        operator = opendal.Operator(
            "s3",
            bucket=target["bucket"],
            endpoint=target["endpoint"],
            region=target["region"],
            access_key_id=target["access_key"],
            secret_access_key=target["secret_key"],
            disable_config_load="true",
            disable_ec2_metadata="true",
        )
        with operator.open(key, "wb", chunk=8 * MIB, concurrent=4) as file:
            for chunk in chunks:
                file.write(chunk)
    elif lib == "boto3":
        import boto3  # type: ignore[import-untyped]

        client = boto3.client(
            "s3",
            endpoint_url=target["endpoint"],
            region_name=target["region"],
            aws_access_key_id=target["access_key"],
            aws_secret_access_key=target["secret_key"],
        )
        client.upload_fileobj(GeneratorFile(chunks), target["bucket"], key)
    elif lib == "s3fs":
        import s3fs  # type: ignore[import-untyped]

        fs = s3fs.S3FileSystem(
            key=target["access_key"],
            secret=target["secret_key"],
            endpoint_url=target["endpoint"],
            client_kwargs={"region_name": target["region"]},
        )
        with fs.open(f"{target['bucket']}/{key}", "wb") as file:
            for chunk in chunks:
                file.write(chunk)
    elif lib == "txbackup-s3":
        from txbackup.storage.s3 import from_url

        os.environ.update(target["env"])  # credentials and endpoint through the standard chain
        with from_url(f"s3://{target['bucket']}", {"path_style": True}).open_write(key) as writer:
            for chunk in chunks:
                writer.write(chunk)
            writer.commit()
    elif lib == "azure-blob" and kind == "azure":
        from azure.storage.blob import BlobClient

        blob = BlobClient.from_connection_string(target["connection_string"], target["container"], key)
        blob.upload_blob(chunks, overwrite=True, max_concurrency=4)
    else:
        raise SystemExit(f"unknown library {lib} for {kind}")


def obstore_store(target: dict[str, Any], unsigned_payload: bool = False) -> Any:
    from obstore.store import AzureStore, S3Store

    if target["kind"] == "azure":
        return AzureStore(
            target["container"],
            account_name=target["account"],
            account_key=target["key"],
            endpoint=target["endpoint"],
            client_options={"allow_http": True},
        )
    return S3Store(
        target["bucket"],
        endpoint=target["endpoint"],
        region=target["region"],
        access_key_id=target["access_key"],
        secret_access_key=target["secret_key"],
        unsigned_payload=unsigned_payload,
        client_options={"allow_http": True},
    )


def child_main(lib: str, target_json: str, key: str, total: int) -> None:
    upload(lib, json.loads(target_json), key, total)
    print(json.dumps({"peak_rss_kib": peak_rss_kib()}), flush=True)


def peak_rss_kib() -> int:
    """This process's peak RSS since its exec (VmHWM).

    Not ``getrusage``/``wait4``: on Linux a child's ru_maxrss starts from its
    parent's RSS at fork, so a bigger parent would inflate every child.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


# -- the parent: servers, children, table ----------------------------------------------------


@dataclass
class Result:
    server: str
    lib: str
    seconds: float
    peak_rss_mib: float
    error: str = ""


def run_child(lib: str, target: dict[str, Any], key: str, total: int) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of that child alone, error text)."""
    command = [
        sys.executable,
        "-m",
        "bench.storage_libs",
        "--child",
        lib,
        json.dumps(target),
        key,
        str(total),
    ]
    env = target.get("env") or dict(os.environ)
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        return seconds, 0.0, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:160]
    peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_kib"]
    return seconds, peak / 1024, ""


def installed(lib: str) -> bool:
    import importlib.util

    module = IMPORTS.get(lib)
    if module is None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def s3_target(bucket: Any) -> dict[str, Any]:
    return {
        "kind": "s3",
        "endpoint": bucket.endpoint,
        "region": bucket.region,
        "bucket": bucket.bucket,
        "access_key": bucket.access_key,
        "secret_key": bucket.secret_key,
        "env": bucket.process_env(),
    }


def azure_target(container: Any) -> dict[str, Any]:
    return {
        "kind": "azure",
        "endpoint": container.blob_endpoint,
        "account": container.account,
        "key": container.key,
        "container": container.container,
        "connection_string": container.connection_string,
    }


def measure(
    server_name: str,
    target: dict[str, Any],
    libs: tuple[str, ...],
    total: int,
    rounds: int,
    size_of: Any,
) -> list[Result]:
    results = []
    for lib in libs:
        if not installed(lib):
            results.append(Result(server_name, lib, 0, 0, "not installed"))
            continue
        times, rss, error = [], [], ""
        for n in range(rounds):
            key = f"bench/{lib}/{n}"
            say(f"  {server_name:8} {lib:16} round {n + 1}/{rounds} ...")
            seconds, peak, error = run_child(lib, target, key, total)
            if not error and lib != "none":
                size = size_of(key)
                if size != total:
                    error = f"object has {size} bytes, not {total}"
            if error:
                break
            times.append(seconds)
            rss.append(peak)
        if error:
            results.append(Result(server_name, lib, 0, 0, error))
        else:
            results.append(Result(server_name, lib, statistics.median(times), statistics.median(rss)))
    return results


# -- obstore's capabilities, checked against the local servers (--capabilities) --------------


def _outcome(action: Any) -> str:
    """What ``action()`` did: "ok <value>" or "<ExceptionClass>: <first line>"."""
    try:
        value = action()
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0]
        return f"{type(exc).__module__}.{type(exc).__name__}: {first[:110]}"
    return f"ok {value!r}"[:160]


def _child_hwm_mib(code: str, env: dict[str, str]) -> float:
    """Run ``code`` in a fresh interpreter; its peak RSS (MiB)."""
    script = code + "\nimport json; from bench.storage_libs import peak_rss_kib\nprint(peak_rss_kib())\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    return int(done.stdout.split()[-1]) / 1024


def capabilities() -> list[tuple[str, str]]:
    """Each claim of bench/STORAGE-LIBS.md, run: (check, outcome)."""
    import obstore
    from obstore.exceptions import NotFoundError

    from tests.servers.azurite import AzuriteServer
    from tests.servers.s3 import MotoS3Server, S3ProxyServer

    out: list[tuple[str, str]] = []

    def check(name: str, action: Any) -> None:
        out.append((name, _outcome(action)))
        say(f"  {name}: {out[-1][1]}")

    def chunks(total: int, fail_after: int | None = None) -> Iterator[bytes]:
        for n, chunk in enumerate(stream(total)):
            if fail_after is not None and n == fail_after:
                raise RuntimeError("source failed mid-stream")
            yield chunk

    with MotoS3Server() as moto, S3ProxyServer() as s3proxy, AzuriteServer() as azurite:
        mb, pb, az = moto.new_bucket(), s3proxy.new_bucket(), azurite.new_container()
        ms, ps, zs = mb.store(), pb.store(), az.store()
        mc = mb.client()
        for label, store in (("moto", ms), ("s3proxy", ps), ("azurite", zs)):
            store.put("c", b"1")
            check(
                f"{label}: put mode=create on an existing key",
                lambda st=store: st.put("c", b"2", mode="create"),
            )
            check(
                f"{label}: put mode=create, multipart-sized iterator, existing key",
                lambda st=store: st.put("c", chunks(12 * MIB), mode="create"),
            )
            etag = store.head("c")["e_tag"]
            check(
                f"{label}: put mode={{e_tag: stale}}",
                lambda st=store: st.put("c", b"3", mode={"e_tag": '"0123"'}),
            )
            check(
                f"{label}: put mode={{e_tag: current}}",
                lambda st=store, e=etag: st.put("c", b"4", mode={"e_tag": e}),
            )
            check(f"{label}: get missing key", lambda st=store: st.get("missing"))
            check(f"{label}: head missing key", lambda st=store: st.head("missing"))
            check(f"{label}: delete missing key", lambda st=store: st.delete("missing"))
            check(
                f"{label}: missing key is obstore NotFoundError?",
                lambda st=store: _raises_class(lambda: st.get("missing"), NotFoundError),
            )
            check(f"{label}: head", lambda st=store: st.head("c"))
            check(
                f"{label}: get_range(1, 1) of 1-byte object",
                lambda st=store: bytes(st.get_range("c", start=0, end=1)),
            )
            check(f"{label}: get range past the end", lambda st=store: st.get_range("c", start=5, end=9))
        check("moto: missing bucket (put)", lambda: moto.bucket("no-such-bucket").store().put("x", b"1"))
        check(
            "s3proxy: missing bucket (put)", lambda: s3proxy.bucket("no-such-bucket").store().put("x", b"1")
        )
        check("azurite: missing container (put)", lambda: azurite.container("no-such").store().put("x", b"1"))
        check(
            "s3proxy: wrong secret (get)",
            lambda: pb.store(secret_access_key="wrong", retry_config={"max_retries": 0}).get("c"),
        )
        check(
            "azurite: wrong key (get)",
            lambda: az.store(account_key="d3Jvbmc=", retry_config={"max_retries": 0}).get("c"),
        )
        check(
            "moto: wrong secret (get) [moto checks no credentials]",
            lambda: bytes(mb.store(secret_access_key="wrong").get("c").bytes()),
        )

        # streaming uploads of unknown length, abort on a failing source
        for label, store in (("moto", ms), ("s3proxy", ps)):
            check(
                f"{label}: put(iterator 40 MiB) then head size",
                lambda st=store: (st.put("big", chunks(40 * MIB)), st.head("big")["size"])[1],
            )
            check(
                f"{label}: put(iterator) whose source raises after 23 MiB",
                lambda st=store: st.put("broken", chunks(40 * MIB, fail_after=23)),
            )
            check(f"{label}:   -> object visible?", lambda st=store: st.head("broken"))

            def writer_fails(st: Any = store) -> None:
                with obstore.open_writer(st, "broken-w") as writer:
                    for n, chunk in enumerate(stream(40 * MIB)):
                        if n == 23:
                            raise RuntimeError("source failed mid-stream")
                        writer.write(chunk)

            check(f"{label}: open_writer, exception inside the with block", writer_fails)
            check(f"{label}:   -> object visible?", lambda st=store: st.head("broken-w"))
        check(
            "moto: multipart uploads left after both failures",
            lambda: [u["Key"] for u in mc.list_multipart_uploads(Bucket=mb.bucket).get("Uploads", [])],
        )
        check(
            "s3proxy: multipart uploads left after both failures",
            lambda: [
                u["Key"] for u in pb.client().list_multipart_uploads(Bucket=pb.bucket).get("Uploads", [])
            ],
        )
        check(
            "moto: put chunk_size=3 MiB (parts < 5 MiB)",
            lambda: ms.put("small-parts", chunks(12 * MIB), chunk_size=3 * MIB),
        )

        # memory: a conditional create of a stream is buffered whole
        env = mb.process_env()
        for mode in ("overwrite", "create"):
            code = (
                "import obstore; from obstore.store import S3Store; from bench.storage_libs import stream\n"
                f"store = S3Store({mb.bucket!r})\n"
                f"obstore.put(store, 'mem-{mode}', stream({200 * MIB}), mode={mode!r})\n"
            )
            check(
                f"moto: peak RSS MiB of put(200 MiB iterator, mode={mode}), store from AWS_* env only",
                lambda c=code: round(_child_hwm_mib(c, env)),
            )

        # listing, storage class, SSE-KMS, timeouts
        for n in range(7):
            ms.put(f"l/a/{n}", b"x")
        ms.put("l/b/0", b"x")
        ms.put("l/ab", b"x")
        check("moto: list('l/a', chunk_size=3) pages", lambda: [len(p) for p in ms.list("l/a", chunk_size=3)])
        check(
            "moto: list_with_delimiter('l')",
            lambda: (lambda r: (r["common_prefixes"], [o["path"] for o in r["objects"]]))(
                ms.list_with_delimiter("l")
            ),
        )
        check(
            "moto: list(offset='l/a/4')",
            lambda: [o["path"] for p in ms.list("l/a", offset="l/a/4") for o in p],
        )
        check(
            "moto: Storage-Class attribute (single put) -> head_object StorageClass",
            lambda: (
                ms.put("sc", b"x", attributes={"Storage-Class": "STANDARD_IA"}),
                mc.head_object(Bucket=mb.bucket, Key="sc").get("StorageClass"),
            )[1],
        )
        check(
            "moto: Storage-Class attribute (multipart put) -> StorageClass",
            lambda: (
                ms.put("sc-mp", chunks(12 * MIB), attributes={"Storage-Class": "GLACIER_IR"}),
                mc.head_object(Bucket=mb.bucket, Key="sc-mp").get("StorageClass"),
            )[1],
        )
        kms = mb.store(
            server_side_encryption="aws:kms", sse_kms_key_id="arn:aws:kms:us-east-1:123456789012:key/test"
        )
        check(
            "moto: SSE-KMS config -> head_object ServerSideEncryption, SSEKMSKeyId",
            lambda: (
                kms.put("kms", chunks(12 * MIB)),
                {
                    k: v
                    for k, v in mc.head_object(Bucket=mb.bucket, Key="kms").items()
                    if k in ("ServerSideEncryption", "SSEKMSKeyId")
                },
            )[1],
        )
        slow = mb.store(client_options={"allow_http": True, "timeout": "300ms"})

        def slow_read() -> int:
            got = 0
            for chunk in slow.get("big").stream(min_chunk_size=MIB):
                got += len(chunk)
                time.sleep(0.05)
            return got

        check("moto: get of 40 MiB consumed slowly, ClientConfig timeout=300ms", slow_read)
        moto.kill()
        check(
            "moto killed: put with max_retries=2",
            lambda: mb.store(retry_config={"max_retries": 2}).put("after", b"x"),
        )
        started = time.monotonic()
        check(
            "moto killed: put with the default retry config (seconds to fail)",
            lambda: (
                _outcome(lambda: ms.put("after", b"x")).split(":")[0]
                + f" after {time.monotonic() - started:.1f} s"
            ),
        )
    return out


def _raises_class(action: Any, cls: type[BaseException]) -> str:
    try:
        action()
    except cls:
        return "yes"
    except Exception as exc:
        return (
            f"no: {type(exc).__module__}.{type(exc).__name__} (mro {[k.__name__ for k in type(exc).__mro__]})"
        )
    return "nothing raised"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=200, help="MiB streamed per upload (default 200)")
    parser.add_argument("--gib", action="store_true", help="stream 1 GiB instead")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", default="", help="comma-separated libraries (default: all)")
    parser.add_argument("--servers", default="moto,s3proxy,azurite")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--capabilities", action="store_true", help="check obstore's behaviours instead")
    parser.add_argument("--child", nargs=4, metavar=("LIB", "TARGET", "KEY", "BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        lib, target, key, total = args.child
        child_main(lib, target, key, int(total))
        return 0

    if args.capabilities:
        for name, outcome in capabilities():
            print(f"{name}\n    {outcome}")
        return 0

    from tests.servers.azurite import AzuriteServer
    from tests.servers.s3 import MotoS3Server, S3ProxyServer

    total = 1024 * MIB if args.gib else args.mib * MIB
    only = {x for x in args.only.split(",") if x}
    pick = lambda libs: tuple(lib for lib in libs if not only or lib in only or lib == "none")  # noqa: E731
    servers = [x for x in args.servers.split(",") if x]
    results: list[Result] = []
    starts: dict[str, float] = {}
    say(f"streaming {total // MIB} MiB of unknown length per upload; load average {os.getloadavg()}")
    for name in servers:
        if name in ("moto", "s3proxy"):
            with MotoS3Server() if name == "moto" else S3ProxyServer() as server:
                starts[name] = server.started_in
                bucket = server.new_bucket("bench")
                client = bucket.client()

                def s3_size(key: str, client: Any = client, bucket: Any = bucket) -> int:
                    size: int = client.head_object(Bucket=bucket.bucket, Key=key)["ContentLength"]
                    return size

                results += measure(name, s3_target(bucket), pick(S3_LIBS), total, args.rounds, s3_size)
        elif name == "azurite":
            with AzuriteServer() as azurite:
                starts[name] = azurite.started_in
                container = azurite.new_container("bench")
                cclient = container.client()

                def az_size(key: str, cclient: Any = cclient) -> int:
                    size: int = cclient.get_blob_client(key).get_blob_properties().size
                    return size

                results += measure(
                    name, azure_target(container), pick(AZURE_LIBS), total, args.rounds, az_size
                )
        else:
            raise SystemExit(f"unknown server {name}")
    load = os.getloadavg()
    if args.json:
        print(
            json.dumps(
                {
                    "mib": total // MIB,
                    "load": load,
                    "starts": starts,
                    "results": [r.__dict__ for r in results],
                }
            )
        )
        return 0
    print(f"{total // MIB} MiB streamed (length unknown to the library), median of {args.rounds} round(s)")
    print("server start (s): " + ", ".join(f"{k} {v:.2f}" for k, v in starts.items()))
    columns = ("wall s", "MiB/s", "peak RSS MiB", "time x", "RSS x")
    header = f"{'server':9} {'library':16} " + " ".join(f"{c:>7}" for c in columns)
    print(header)
    print("-" * len(header))
    for server in servers:
        rows = [r for r in results if r.server == server]
        base = next((r for r in rows if r.lib == "obstore-put" and not r.error), None)
        for r in rows:
            if r.error:
                print(f"{r.server:9} {r.lib:16} {'-':>7} {'-':>7} {'-':>12}   {r.error}")
                continue
            speed = total / MIB / r.seconds if r.seconds else 0.0
            tx = f"{r.seconds / base.seconds:.2f}" if base else "-"
            rx = f"{r.peak_rss_mib / base.peak_rss_mib:.2f}" if base else "-"
            rss = r.peak_rss_mib
            print(f"{r.server:9} {r.lib:16} {r.seconds:7.2f} {speed:7.1f} {rss:12.1f} {tx:>7} {rx:>7}")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
