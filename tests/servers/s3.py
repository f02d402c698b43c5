"""Real S3-compatible servers for the object-store tests (no pytest inside).

    with MotoS3Server() as server:            # or S3ProxyServer()
        bucket = server.new_bucket()          # a fresh, empty bucket (unique name)
        bucket.endpoint, bucket.region, bucket.bucket, bucket.access_key, bucket.secret_key
        bucket.url("backups/")                # "s3://<bucket>/backups/"
        bucket.env()                          # AWS_* variables of the server
        bucket.process_env()                  # a child's whole environment, only those AWS_*
        bucket.client()                       # a boto3 S3 client bound to the server
        bucket.store()                        # an obstore S3Store of the bucket
        server.kill()                         # SIGKILL the server now (fault tests)
        server.restart()                      # back on the same endpoint (s3proxy keeps its files)

Two servers, because they fail differently:

- **moto** (``python -m moto.server``, a child process so that it can be killed):
  enforces ``If-None-Match: *`` on PutObject and CompleteMultipartUpload, ``If-Match``,
  EntityTooSmall for parts under 5 MiB, object lock. Credentials are not checked.
- **s3proxy** (``org.gaul:s3proxy`` from Maven Central, ``tests/java/fetch-jars``):
  jclouds' filesystem backend in the server's temporary folder, so objects are real
  files and a kill loses nothing written; multipart uploads are emulated with
  objects that listings show (``.mpus-<upload id>-<key>-stub`` and the parts, named
  after the upload id) until the upload completes or is aborted. It checks
  the signature (a wrong secret gives 403 SignatureDoesNotMatch), but ignores
  ``If-None-Match``/``If-Match`` on PutObject: a conditional create silently
  overwrites there (``enforces_conditional_put`` is False). It runs with
  ``s3proxy.ignore-unknown-headers``: without it, the checksum headers that current
  SDKs send make CreateMultipartUpload (boto3, s3fs) and bulk delete (obstore) 501.

Both listen on 127.0.0.1 on a free port, with fake credentials; nothing can reach
AWS (``FAKE_AWS_ENV`` hides any real configuration from botocore and obstore).
Measured start on the 2-core test machine: moto about 1.5 s, s3proxy about 2-4 s.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.servers.daemon import Daemon, DaemonServer
from tests.servers.moto import FAKE_AWS_ENV, REGION, UNSET_AWS_ENV
from tests.servers.obstore_kwargs import obstore_kwargs

if TYPE_CHECKING:
    from obstore.store import S3Store

REPO = Path(__file__).resolve().parents[2]
S3PROXY_JARS = REPO / ".cache" / "jars" / "s3proxy"
FETCH_JARS = REPO / "tests" / "java" / "fetch-jars"
S3PROXY_JVM = ["-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]

_LOGBACK = """<configuration>
  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level %logger{20} - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="OUT"/></root>
</configuration>
"""


def moto_missing_reason() -> str | None:
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        return "moto[server] and boto3 are needed for the S3 tests (pip install -e .[dev])"
    if importlib.util.find_spec("flask") is None:
        return "moto's server mode needs flask (pip install 'moto[server]')"
    return None


def s3proxy_missing_reason() -> str | None:
    if shutil.which("java") is None:
        return "java is not installed (s3proxy runs on the JVM)"
    if not list(S3PROXY_JARS.glob("s3proxy-*.jar")):
        return f"s3proxy jars missing in {S3PROXY_JARS}: run {FETCH_JARS.relative_to(REPO)} (needs mvn)"
    if importlib.util.find_spec("boto3") is None:
        return "boto3 is needed to create the test buckets"
    return None


def fake_aws_env(**extra: str) -> dict[str, str]:
    """This process's environment without any AWS configuration, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET_AWS_ENV and not k.startswith("AWS_")}
    return env | FAKE_AWS_ENV | extra


@dataclass(frozen=True)
class S3Bucket:
    """One bucket of a test server, and everything a client needs to reach it."""

    endpoint: str
    region: str
    bucket: str
    access_key: str
    secret_key: str

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}"

    def env(self) -> dict[str, str]:
        """AWS_* variables that point the SDKs' default chains at this server.

        Merge them over ``fake_aws_env()`` (see ``process_env``), not over
        ``os.environ``: a developer's AWS_PROFILE or AWS_SESSION_TOKEN would leak in.
        """
        return {
            **FAKE_AWS_ENV,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",  # obstore: the endpoint is plain http
        }

    def process_env(self) -> dict[str, str]:
        """A whole environment for a child process: no AWS configuration but this server's."""
        return fake_aws_env(**self.env())

    def client(self) -> Any:
        """A boto3 S3 client of the server (path-style addressing)."""
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        session = boto3.session.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
        return session.client("s3", endpoint_url=self.endpoint, config=config)

    def store(self, prefix: str | None = None, **config: Any) -> S3Store:
        """An obstore ``S3Store`` of the bucket; ``config`` adds or overrides S3Config keys."""
        from obstore.store import S3Store

        settings: dict[str, Any] = {
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
            "virtual_hosted_style_request": False,
        }
        return S3Store(self.bucket, prefix=prefix, **obstore_kwargs(settings, config))


class S3Server(DaemonServer):
    """What the two servers share: a child process, fake credentials, fresh buckets."""

    name = ""
    access_key = "txbackup-test"
    secret_key = "txbackup-test-secret"
    region = REGION
    enforces_conditional_put = False

    def __init__(self) -> None:
        super().__init__()
        self.endpoint = ""

    def _started(self, port: int) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"

    def bucket(self, name: str) -> S3Bucket:
        return S3Bucket(self.endpoint, self.region, name, self.access_key, self.secret_key)

    def new_bucket(self, stem: str = "txb", object_lock: bool = False) -> S3Bucket:
        """Create a fresh, empty bucket with a unique name (``object_lock``: moto only)."""
        bucket = self.bucket(f"{stem}-{uuid.uuid4().hex[:16]}")
        if object_lock:
            bucket.client().create_bucket(Bucket=bucket.bucket, ObjectLockEnabledForBucket=True)
        else:
            bucket.client().create_bucket(Bucket=bucket.bucket)
        return bucket


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            answer.read()
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer (403 for an unsigned request) means it is serving
    except OSError:
        return False


class MotoS3Server(S3Server):
    """moto's S3 in its own process (``python -m moto.server``)."""

    name = "moto"
    enforces_conditional_put = True

    def __init__(self, *, unauthenticated_actions: int | None = None) -> None:
        """``unauthenticated_actions``: moto enforces IAM after that many requests
        (``INITIAL_NO_AUTH_ACTION_COUNT``), so a test can set up users and policies first."""
        super().__init__()
        self.unauthenticated_actions = unauthenticated_actions

    def _make_daemon(self) -> Daemon:
        env = fake_aws_env()
        if self.unauthenticated_actions is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self.unauthenticated_actions)
        return Daemon(
            "moto",
            lambda port, folder: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            ready=lambda port: _answers_http(f"http://127.0.0.1:{port}/moto-api/data.json"),
        )


class S3ProxyServer(S3Server):
    """s3proxy with the filesystem backend in the server's temporary folder."""

    name = "s3proxy"

    def _make_daemon(self) -> Daemon:
        def argv(port: int, folder: Path) -> list[str]:
            (folder / "data").mkdir(mode=0o700, exist_ok=True)
            (folder / "logback.xml").write_text(_LOGBACK)
            properties = folder / "s3proxy.properties"
            properties.write_text(
                "\n".join(
                    [
                        f"s3proxy.endpoint=http://127.0.0.1:{port}",
                        "s3proxy.authorization=aws-v2-or-v4",
                        f"s3proxy.identity={self.access_key}",
                        f"s3proxy.credential={self.secret_key}",
                        # accept what current SDKs send (x-amz-checksum-*, x-amz-sdk-checksum-algorithm)
                        "s3proxy.ignore-unknown-headers=true",
                        "jclouds.provider=filesystem",
                        f"jclouds.filesystem.basedir={folder / 'data'}",
                        "",
                    ]
                )
            )
            return [
                "java",
                *S3PROXY_JVM,
                f"-Dlogback.configurationFile={folder / 'logback.xml'}",
                "-cp",
                str(S3PROXY_JARS / "*"),
                "org.gaul.s3proxy.Main",
                "--properties",
                str(properties),
            ]

        return Daemon(
            "s3proxy",
            argv,
            env=fake_aws_env(),
            ready=lambda port: _answers_http(f"http://127.0.0.1:{port}/"),
        )

    @property
    def data_folder(self) -> Path:
        """Where the filesystem backend keeps the buckets (one folder per bucket)."""
        return self.daemon.folder / "data"
