"""PostgreSQL: the dump target (target.py), directory-format restores fed through named
pipes (directory.py) and restore points (restore_point.py)."""
