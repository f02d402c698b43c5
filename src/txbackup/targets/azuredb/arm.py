"""The Azure Resource Manager calls of the flexible-server kinds, as plain REST.

No SDK of these two services is needed: a flexible server is one ARM resource
(``Microsoft.DBforPostgreSQL/flexibleServers`` or ``Microsoft.DBforMySQL/
flexibleServers``) read with GET and restored with one PUT, through azure-core's
ARM pipeline (bearer token, retries). The two services differ in a few names,
kept in one ``Flavor`` each; above all the restore time field: PostgreSQL's
``pointInTimeUTC``, MySQL's ``restorePointInTime`` (both with
``createMode = "PointInTimeRestore"`` and ``sourceServerResourceId``).

Every failure is one line naming the target, what was being done and what
Azure said (refused or expired credentials, not found, Azure's code and message).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError
from azure.core.pipeline.policies import (
    HeadersPolicy,
    NetworkTraceLoggingPolicy,
    RequestIdPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

from txbackup.errors import TargetError
from txbackup.targets.azureauth import CredentialFactory

log = logging.getLogger(__name__)

ARM = "https://management.azure.com"
SCOPE = "https://management.azure.com/.default"


@dataclass(frozen=True)
class Flavor:
    """What differs between Azure Database for PostgreSQL and for MySQL flexible servers."""

    kind: str
    title: str
    provider: str
    api_version: str
    time_field: str


POSTGRES = Flavor("azure-postgres", "PostgreSQL", "Microsoft.DBforPostgreSQL", "2022-12-01", "pointInTimeUTC")
MYSQL = Flavor("azure-mysql", "MySQL", "Microsoft.DBforMySQL", "2023-12-30", "restorePointInTime")


class AzureCallError(TargetError):
    """A failed management call; ``status`` is the HTTP status (0: none came back)."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 time as ARM returns it (``2026-11-20T10:00:00.123+00:00`` or ``...Z``), in UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        found = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


def _said(body: Any, fallback: str) -> tuple[str, str]:
    """(code, message) of an ARM error document."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        code, message = str(error.get("code") or ""), str(error.get("message") or "")
        return code, " ".join(message.split()) or fallback
    return "", fallback


class FlexArm:
    """One target's management client for its flexible servers."""

    def __init__(
        self,
        label: str,
        flavor: Flavor,
        subscription_id: str,
        resource_group: str,
        credential: CredentialFactory,
        *,
        endpoint: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.label = label
        self.flavor = flavor
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self._credential = credential
        self.endpoint = (endpoint or ARM).rstrip("/")
        self.ca_file = ca_file
        self._client: ARMPipelineClient[Any, Any] | None = None
        self._lock = threading.Lock()

    def where(self) -> str:
        return f"resource group {self.resource_group} of subscription {self.subscription_id}"

    def server_id(self, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{self.flavor.provider}/flexibleServers/{name}"
        )

    @property
    def client(self) -> ARMPipelineClient[Any, Any]:
        with self._lock:
            if self._client is None:
                quiet = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
                if quiet.level == logging.NOTSET:  # one INFO record per HTTP request otherwise
                    quiet.setLevel(logging.WARNING)
                try:
                    credential = self._credential()
                except AzureError as exc:
                    raise self._refused("Azure credentials", str(exc)) from None
                policies = [
                    RequestIdPolicy(),
                    HeadersPolicy(),
                    UserAgentPolicy(sdk_moniker="txbackup"),
                    RetryPolicy(retry_total=3),
                    ARMChallengeAuthenticationPolicy(credential, SCOPE),
                    NetworkTraceLoggingPolicy(),
                ]
                options: dict[str, Any] = {}
                if self.ca_file:
                    options["connection_verify"] = self.ca_file
                self._client = ARMPipelineClient(base_url=self.endpoint, policies=policies, **options)
            return self._client

    def _refused(self, what: str, said: str) -> AzureCallError:
        return AzureCallError(
            f"{self.label}: {what}: Azure refused the credentials ({said}); sign in again "
            "(az login), or renew the service principal's secret",
            401,
        )

    def request(
        self, method: str, url: str, what: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any, Any]:
        """(status, JSON body or None, headers); 4xx/5xx other than 404 -> one-line error."""
        if not url.startswith(("https://", "http://")):
            url = f"{self.endpoint}{url}"
        request = HttpRequest(
            method,
            url,
            json=dict(body) if body is not None else None,
            headers={"Accept": "application/json"},
        )
        try:
            response = self.client.send_request(request)
            raw = response.read()
        except ClientAuthenticationError as exc:
            raise self._refused(what, " ".join(str(exc).split())) from None
        except ServiceRequestError as exc:
            raise AzureCallError(f"{self.label}: {what}: cannot reach {self.endpoint}: {exc}") from None
        except AzureError as exc:
            raise AzureCallError(f"{self.label}: {what}: {' '.join(str(exc).split())}") from None
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        status = int(response.status_code)
        if status >= 400 and status != 404:
            code, message = _said(payload, f"HTTP {status}")
            said = f"{code}: {message}" if code else message
            if status == 401:
                raise self._refused(what, said)
            if status == 403:
                raise AzureCallError(
                    f"{self.label}: {what}: Azure denied it ({said}): the credentials lack a role on "
                    f"{self.where()}",
                    status,
                    code,
                )
            raise AzureCallError(f"{self.label}: {what}: {said}", status, code)
        return status, payload, response.headers

    # -- the calls -------------------------------------------------------------------------

    def server(self, name: str) -> dict[str, Any] | None:
        """The flexible server ``name`` of the resource group, or None if there is none."""
        url = f"{self.server_id(quote(name))}?api-version={self.flavor.api_version}"
        status, payload, _ = self.request("GET", url, f"{self.flavor.title} flexible server {name}")
        if status == 404:
            code, message = _said(payload, "not found")
            if code in ("ResourceGroupNotFound", "SubscriptionNotFound"):
                raise AzureCallError(f"{self.label}: server {name}: {code}: {message}", 404, code)
            return None
        if not isinstance(payload, dict):
            raise AzureCallError(f"{self.label}: server {name}: Azure answered no server document")
        return payload

    def create(self, name: str, body: Mapping[str, Any]) -> str | None:
        """PUT the server ``name``; returns the operation's status URL (None if none given)."""
        url = f"{self.server_id(quote(name))}?api-version={self.flavor.api_version}"
        status, payload, headers = self.request("PUT", url, f"restore as server {name}", body)
        if status == 404:
            code, message = _said(payload, "not found")
            raise AzureCallError(
                f"{self.label}: restore as server {name}: {code or 404}: {message}", 404, code
            )
        found = headers.get("Azure-AsyncOperation") or headers.get("Location")
        return str(found) if found else None

    def operation(self, url: str) -> tuple[str, str]:
        """(status, Azure's error message) of a long-running operation."""
        _, payload, _ = self.request("GET", url, "the restore operation")
        if not isinstance(payload, Mapping):
            return "InProgress", ""
        code, message = _said(payload, "")
        return str(payload.get("status") or "InProgress"), f"{code}: {message}" if code else message
