"""What the SQL kinds share: server settings, passwords and prepared sessions (common.py),
the restore-point mode's rules and recovery hints (restore_points.py)."""
