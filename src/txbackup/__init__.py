"""txbackup: transactionally-consistent backups across the databases under ScalarDB."""

__version__ = "0.1.0"
