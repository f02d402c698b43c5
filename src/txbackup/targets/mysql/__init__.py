"""MySQL/MariaDB: the dump target (target.py), its restore guard (script.py), the parallel
parts layout (parts.py) and restore points (restore_point.py)."""
