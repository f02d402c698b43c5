"""moto in server mode: DynamoDB and Application Auto Scaling in memory, for tests.

    with MotoServer() as moto:
        moto.url                  # http://127.0.0.1:<free port>
        moto.client("dynamodb")   # a boto3 client bound to it, fake credentials
        moto.reset()              # forget every table, backup and scaling target

The server runs in a thread of the test process (``ThreadedMotoServer``),
bound to 127.0.0.1 on a port the OS picks. Nothing here can reach AWS: every
client is given the server's endpoint and fake credentials, and ``FAKE_AWS_ENV``
keeps botocore from looking for real ones (no config files, no instance
metadata service).

What moto does not do (see facts.md §4): RestoreTableToPointInTime ignores the
requested time and copies the current items; tables and backups are ACTIVE and
AVAILABLE at once; the PITR window is [the moment PITR was enabled] and does
not move. So PITR *timing* is verified against AWS only; tests check the time
we send.
"""

from __future__ import annotations

import logging
import urllib.request
from types import TracebackType
from typing import Any

REGION = "us-east-1"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/txbackup-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/txbackup-tests/aws-credentials",
}
UNSET_AWS_ENV = (
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


def missing_reason() -> str | None:
    try:
        import boto3  # type: ignore[import-untyped]  # noqa: F401
        import moto.server  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        return f"moto[server] and boto3 are needed for the DynamoDB tests ({exc})"
    return None


class MotoServer:
    def __init__(self) -> None:
        self.url = ""
        self._server: Any = None
        self._clients: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> MotoServer:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        assert host == "127.0.0.1", host
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def client(self, service: str, region: str = REGION) -> Any:
        """A boto3 client of the server (made once: loading a service model is slow)."""
        import boto3

        key = (service, region)
        if key not in self._clients:
            session = boto3.session.Session(
                aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
            )
            self._clients[key] = session.client(service, endpoint_url=self.url)
        return self._clients[key]


def fresh_aws(server: MotoServer, monkeypatch: Any) -> MotoServer:
    """``server`` emptied (``reset``), with the fake AWS credentials in the environment and
    every real AWS setting that could redirect boto3 removed (a ``moto`` fixture's body)."""
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    for key in UNSET_AWS_ENV:
        monkeypatch.delenv(key, raising=False)
    server.reset()
    return server
