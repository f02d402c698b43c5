"""The Azure credentials of the kinds managed through Azure Resource Manager (``cosmos``,
``azure-postgres``, ``azure-mysql``): a service principal whose secret is read from an
environment variable or a file, or else azure-identity's ``DefaultAzureCredential``.

A credential is made on first use (a factory), so reading a cluster file needs no
Azure SDK and contacts nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from txbackup.errors import UsageError
from txbackup.secrets import check_secret, resolve_secret
from txbackup.settings import setting_opt_str

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

CredentialFactory = Callable[[], "TokenCredential"]

KEYS = frozenset({"tenant_id", "client_id", "client_secret_env", "client_secret_file"})


def default_credential() -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _secret_credential(tenant_id: str, client_id: str, secret: str) -> CredentialFactory:
    def make() -> TokenCredential:
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(tenant_id, client_id, secret)

    return make


def read_credential(conf: Mapping[str, Any], culprit: str) -> CredentialFactory | None:
    """A service principal's credential factory, or None for ``DefaultAzureCredential``."""
    check_secret(conf, "client_secret", culprit=culprit)
    tenant = setting_opt_str(conf, "tenant_id", culprit=culprit)
    client = setting_opt_str(conf, "client_id", culprit=culprit)
    if not (tenant or client or "client_secret_env" in conf or "client_secret_file" in conf):
        return None
    secret = resolve_secret(conf, "client_secret", culprit=culprit)
    if not (tenant and client and secret):
        raise UsageError(
            f"{culprit}: a service principal needs tenant_id, client_id and client_secret_env "
            "(or client_secret_file); give none of them for DefaultAzureCredential"
        )
    return _secret_credential(tenant, client, secret)
