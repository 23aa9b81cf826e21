"""Alembic migrations of the platform store (see README.md in this folder)."""
