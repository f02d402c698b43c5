"""Azure Cosmos DB (kind ``cosmos``): ``target`` (settings, preflight, capture, record
checks), ``azure`` (the management API calls, needs the Azure SDK), ``restore``
(the point-in-time restore job). Importing the package needs no Azure SDK."""

from txbackup.targets.cosmos.target import (
    ACCOUNT_ARTIFACT,
    CosmosCapture,
    CosmosTarget,
    check_account_name,
    from_config,
    parse_databases,
    restored_name,
)

__all__ = [
    "ACCOUNT_ARTIFACT",
    "CosmosCapture",
    "CosmosTarget",
    "check_account_name",
    "from_config",
    "parse_databases",
    "restored_name",
]
