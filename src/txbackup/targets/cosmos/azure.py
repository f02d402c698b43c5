"""The few Azure Resource Manager calls the Cosmos DB target makes (azure-mgmt-cosmosdb).

Every call goes through ``Arm.call``, which turns the SDK's exceptions into one
line naming the target and saying what Azure said: refused credentials
(expired, revoked, none found), a resource that is not there, Azure's own
error code and message, an endpoint that cannot be reached.

Long-running operations (create, update, delete an account; read a
container's continuous-backup information) are the SDK's pollers; ``wait``
polls one with a deadline, logging progress. A poller can be rebuilt from its
continuation token (azure-core >= 1.38 makes it a JSON document holding the
operation's status URL, no credentials), which is how a restore job resumes
waiting for the account it asked for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.polling import LROPoller
from azure.mgmt.cosmosdb import CosmosDBManagementClient
from azure.mgmt.cosmosdb.models import (
    ContinuousBackupRestoreLocation,
    DatabaseAccountGetResults,
    RestorableDatabaseAccountGetResult,
)

from txbackup.errors import TargetError
from txbackup.targets.pitr.polling import log as progress  # the progress of long waits, shown by default

log = logging.getLogger(__name__)

T = TypeVar("T")
CredentialFactory = Callable[[], TokenCredential]

SUCCEEDED = "Succeeded"
FAILED_STATES = ("Failed", "Canceled")


_WHERE_NOT_FOUND = ("ResourceGroupNotFound", "SubscriptionNotFound")


def _code(exc: HttpResponseError) -> str | None:
    return exc.error.code if exc.error is not None else None


def text(value: object) -> str | None:
    """A model's value as plain text: an SDK enum's value (``str()`` of one gives its
    class and member names), None as None."""
    if value is None:
        return None
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def location_name(location: str) -> str:
    """ARM's location name from a display name: ``"West Europe"`` -> ``"westeurope"``."""
    return location.replace(" ", "").lower()


def azure_message(exc: AzureError) -> str:
    """What Azure said, on one line: ``Code: message`` when it gave a code."""
    code = message = None
    if isinstance(exc, HttpResponseError) and exc.error is not None:
        code, message = exc.error.code, exc.error.message
    if not message:
        message = exc.message or str(exc)
        code = code or (getattr(exc, "error_code", None) if isinstance(exc, HttpResponseError) else None)
    text = " ".join(str(message).split())
    return f"{code}: {text}" if code and not text.startswith(str(code)) else text


def parse_azure_time(value: object) -> datetime | None:
    """A timestamp as Azure returns it (a datetime, ISO-8601, or ``M/D/YYYY h:mm:ss AM``), in UTC."""
    if isinstance(value, datetime):
        found = value
    elif isinstance(value, str) and value:
        try:
            found = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                found = datetime.strptime(value, "%m/%d/%Y %I:%M:%S %p")
            except ValueError:
                return None
    else:
        return None
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


def account_summary(account: DatabaseAccountGetResults) -> dict[str, Any]:
    """What the set records of the source account (JSON-safe)."""
    props = account.properties
    policy = props.backup_policy if props is not None else None
    consistency = props.consistency_policy if props is not None else None
    tier = None
    if policy is not None and text(policy.type) == "Continuous":
        continuous = getattr(policy, "continuous_mode_properties", None)
        tier = getattr(continuous, "tier", None)
    return {
        "account": text(account.name),
        "account_id": text(account.id),
        "location": location_name(account.location or ""),
        "location_display": text(account.location),
        "kind": text(account.kind),
        "instance_id": text(props.instance_id) if props is not None else None,
        "document_endpoint": text(props.document_endpoint) if props is not None else None,
        "consistency": text(consistency.default_consistency_level) if consistency is not None else None,
        "backup_policy": text(policy.type) if policy is not None else None,
        "backup_tier": text(tier),
        "provisioning_state": text(props.provisioning_state) if props is not None else None,
    }


class AzureFailed(TargetError):
    """A long-running operation that Azure reports as failed (its message is in the text)."""


class Arm:
    """One target's management client and the calls it makes."""

    def __init__(
        self,
        label: str,
        subscription_id: str,
        resource_group: str,
        credential: CredentialFactory,
        *,
        endpoint: str | None = None,
        ca_file: str | None = None,
        poll_s: float = 30.0,
    ) -> None:
        self.label = label
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self._credential = credential
        self.endpoint = endpoint
        self.ca_file = ca_file
        self.poll_s = poll_s
        self._client: CosmosDBManagementClient | None = None
        self._lock = threading.Lock()

    def where(self) -> str:
        return f"resource group {self.resource_group} of subscription {self.subscription_id}"

    @property
    def client(self) -> CosmosDBManagementClient:
        with self._lock:
            if self._client is None:
                quiet = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
                if quiet.level == logging.NOTSET:  # one INFO record per HTTP request otherwise
                    quiet.setLevel(logging.WARNING)
                options: dict[str, Any] = {"polling_interval": self.poll_s}
                if self.ca_file:
                    options["connection_verify"] = self.ca_file
                credential = self.call("Azure credentials", self._credential)
                self._client = CosmosDBManagementClient(
                    credential, self.subscription_id, base_url=self.endpoint, **options
                )
            return self._client

    def error(self, message: str) -> TargetError:
        return TargetError(f"{self.label}: {message}")

    def translate(self, what: str, exc: AzureError) -> TargetError:
        """One line naming the target, what was being done and what Azure said."""
        if isinstance(exc, ClientAuthenticationError):
            return self.error(
                f"{what}: Azure refused the credentials ({azure_message(exc)}); sign in again "
                "(az login), or renew the service principal's secret"
            )
        if isinstance(exc, ResourceNotFoundError):
            return self.error(f"{what}: not found ({azure_message(exc)})")
        if isinstance(exc, ServiceRequestError):
            where = self.endpoint or "Azure Resource Manager"
            return self.error(f"{what}: cannot reach {where}: {azure_message(exc)}")
        return self.error(f"{what}: {azure_message(exc)}")

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, with Azure's errors turned into one-line ``TargetError``s."""
        try:
            return fn(*args, **kwargs)
        except AzureError as exc:
            raise self.translate(what, exc) from None

    # -- reads -----------------------------------------------------------------

    def account(self, name: str) -> DatabaseAccountGetResults | None:
        """The account ``name`` of the resource group, or None if there is none."""
        client = self.client
        try:
            return client.database_accounts.get(self.resource_group, name)
        except ResourceNotFoundError as exc:
            if _code(exc) in _WHERE_NOT_FOUND:  # the resource group or subscription itself
                raise self.translate(f"account {name}", exc) from None
            return None
        except AzureError as exc:
            raise self.translate(f"account {name}", exc) from None

    def restorable_account(
        self, location: str, instance_id: str
    ) -> RestorableDatabaseAccountGetResult | None:
        """The restorable account (continuous backup) of instance ``instance_id``, or None."""
        client = self.client
        try:
            return client.restorable_database_accounts.get_by_location(location, instance_id)
        except ResourceNotFoundError as exc:
            if _code(exc) in _WHERE_NOT_FOUND:
                raise self.translate(f"restorable account {instance_id} in {location}", exc) from None
            return None
        except AzureError as exc:
            raise self.translate(f"restorable account {instance_id} in {location}", exc) from None

    def sql_databases(self, account: str) -> dict[str, list[str]]:
        """Every database of the account and its containers (NoSQL API)."""
        sql = self.client.sql_resources
        group = self.resource_group

        def databases() -> list[str]:
            return [str(d.name) for d in sql.list_sql_databases(group, account)]

        def containers(database: str) -> list[str]:
            return sorted(str(c.name) for c in sql.list_sql_containers(group, account, database))

        names = self.call(f"list the databases of account {account}", databases)
        return {
            name: self.call(f"list the containers of database {name} of account {account}", containers, name)
            for name in sorted(names)
        }

    def latest_restorable(
        self, account: str, database: str, container: str, location: str
    ) -> datetime | None:
        """The latest time ``database/container`` can be restored to (None if Azure does not say)."""
        what = f"the continuous-backup information of container {database}/{container}"
        poller = self.call(
            what,
            self.client.sql_resources.begin_retrieve_continuous_backup_information,
            self.resource_group,
            account,
            database,
            container,
            ContinuousBackupRestoreLocation(location=location),
        )
        info = self.wait(poller, what, 600.0)
        backup = info.continuous_backup_information if info is not None else None
        return parse_azure_time(backup.latest_restorable_timestamp if backup is not None else None)

    # -- long-running operations ---------------------------------------------------

    def wait(self, poller: LROPoller[T], what: str, timeout_s: float, *, progress_s: float = 60.0) -> T:
        """The poller's result, polled until ``timeout_s`` (``TimeoutError`` then);
        progress is logged every ``progress_s``; Azure's failure -> ``TargetError``."""
        started = time.monotonic()
        deadline = started + timeout_s
        last_log = started
        try:
            while not poller.done():
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError(f"{what}: still {poller.status()} after {timeout_s:g}s")
                poller.wait(min(self.poll_s, deadline - now, progress_s))
                if time.monotonic() - last_log >= progress_s:
                    last_log = time.monotonic()
                    elapsed = round(last_log - started)
                    progress.info("%s: %s: %s for %ds", self.label, what, poller.status(), elapsed)
            return poller.result()
        except HttpResponseError as exc:
            raise AzureFailed(f"{self.label}: {what} failed in Azure: {azure_message(exc)}") from None
        except AzureError as exc:
            raise self.translate(what, exc) from None
