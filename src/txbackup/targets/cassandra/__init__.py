"""Cassandra: the target (target.py) that drives the per-node agents (txbackup.agent)."""
