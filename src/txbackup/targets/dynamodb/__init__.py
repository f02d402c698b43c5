"""Amazon DynamoDB (kind ``dynamodb``): ``target`` (settings, preflight, capture, record
checks, discard), ``aws`` (clients, errors, table settings), ``restore`` (the guide's
restore procedure on the shared point-in-time job)."""

from txbackup.targets.dynamodb.target import (
    SETTINGS_ARTIFACT,
    DynamoCapture,
    DynamoTarget,
    from_config,
)

__all__ = ["SETTINGS_ARTIFACT", "DynamoCapture", "DynamoTarget", "from_config"]
