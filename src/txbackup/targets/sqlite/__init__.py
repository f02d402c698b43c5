"""SQLite: the online-backup target (target.py)."""
