"""Amazon RDS instances and Aurora clusters (kind ``rds``): ``target`` (settings,
preflight, capture, record checks), ``aws`` (the RDS calls, windows, what a set
records), ``restore`` (the restore to a new identifier on the shared point-in-time job)."""

from txbackup.targets.rds.target import ARTIFACT, RdsCapture, RdsTarget, from_config, restored_name

__all__ = ["ARTIFACT", "RdsCapture", "RdsTarget", "from_config", "restored_name"]
