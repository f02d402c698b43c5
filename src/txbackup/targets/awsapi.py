"""What the AWS kinds (``dynamodb``, ``rds``) share: credentials, the boto3 session,
and every failed call turned into one line.

boto3 has no type information of its own: everything it returns goes through
``call`` and comes back as ``dict[str, Any]``. Every error becomes an
``AwsError`` naming the target, the operation and its subject, with a hint for
the usual causes (credentials refused or expired, wrong region or name).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import boto3  # type: ignore[import-untyped]
import botocore.config  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]

from txbackup.errors import TargetError, UsageError
from txbackup.secrets import resolve_secret

CREDENTIAL_KEYS = frozenset(
    f"{secret}_{source}"
    for secret in ("access_key_id", "secret_access_key", "session_token")
    for source in ("env", "file")
)
"""The settings naming where the credentials are (never the credentials themselves)."""

REFUSED = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ExpiredToken",
        "AccessDeniedException",
        "AccessDenied",
        "MissingAuthenticationTokenException",
        "IncompleteSignature",
        "SignatureDoesNotMatch",
        "AuthFailure",
    }
)
"""Error codes meaning the credentials were refused (wrong, expired, or not allowed)."""


class AwsError(TargetError):
    """A failed AWS call; ``code`` is the AWS error code (or a botocore error name)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Credentials:
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


def read_credentials(conf: Mapping[str, Any], culprit: str) -> Credentials:
    """``access_key_id_*`` and ``secret_access_key_*`` (both or neither; then the
    standard AWS chain), ``session_token_*`` optional."""
    key_id = resolve_secret(conf, "access_key_id", culprit=culprit)
    secret = resolve_secret(conf, "secret_access_key", culprit=culprit)
    if (key_id is None) != (secret is None):
        raise UsageError(f"{culprit}: give both access_key_id_* and secret_access_key_*, or neither")
    return Credentials(key_id, secret, resolve_secret(conf, "session_token", culprit=culprit))


def client(
    service: str, region: str, credentials: Credentials, endpoint_url: str | None, max_attempts: int = 5
) -> Any:
    """A boto3 client (thread-safe) with bounded retries and timeouts."""
    session = boto3.session.Session(
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        region_name=region,
    )
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="txbackup",
    )
    return session.client(service, endpoint_url=endpoint_url, config=config)


def where(region: str, endpoint_url: str | None) -> str:
    return f"region {region}" + (f" at {endpoint_url}" if endpoint_url else "")


def call(
    label: str,
    fn: Callable[..., Any],
    operation: str,
    subject: str,
    *,
    service: str,
    place: str,
    not_found: frozenset[str] = frozenset(),
    **params: Any,
) -> dict[str, Any]:
    """``fn(**params)`` (a client's ``operation``); any failure is one ``AwsError`` line
    about ``subject``, ``place`` being where (``where()``)."""
    about = f" {subject}" if subject else ""
    try:
        return cast(dict[str, Any], fn(**params))
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "ClientError"))
        text = " ".join(str(error.get("Message", exc)).split())
        if code.isdigit():  # an XML error document where JSON was expected (proxies, emulators)
            found = re.search(r"<Code>([^<]+)</Code>", text)
            message = re.search(r"<Message>([^<]*)</Message>", text)
            code = found.group(1) if found else f"HTTP {code}"
            text = message.group(1) if message else text
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        hint = ""
        if code in REFUSED or status == 403:
            hint = (
                f" (credentials rejected in {place}: check the access key, secret, session token and region)"
            )
        elif code in not_found:
            hint = f" (not found in {place}: wrong region or name?)"
        raise AwsError(f"{label}: {operation}{about}: {code}: {text}{hint}", code) from None
    except botocore.exceptions.NoCredentialsError:
        raise AwsError(
            f"{label}: no AWS credentials found (set access_key_id_env and "
            "secret_access_key_env, or configure the standard AWS credential chain)",
            "NoCredentialsError",
        ) from None
    except botocore.exceptions.EndpointConnectionError as exc:
        raise AwsError(
            f"{label}: cannot reach {service} in {place}: {exc}", "EndpointConnectionError"
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise AwsError(f"{label}: {operation}{about}: {exc}", type(exc).__name__) from None
