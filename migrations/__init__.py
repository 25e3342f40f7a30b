"""Alembic environment and versions: one file per schema change, checked against ``db.models``."""
