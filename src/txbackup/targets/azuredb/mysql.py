"""Kind ``azure-mysql``: Azure Database for MySQL flexible servers (see ``target``)."""

from collections.abc import Mapping
from typing import Any

from txbackup.targets.azuredb.target import FlexTarget
from txbackup.targets.azuredb.target import from_config as _from_config

KIND = "azure-mysql"


def from_config(name: str, conf: Mapping[str, Any]) -> FlexTarget:
    return _from_config(KIND, name, conf)
