"""Alembic revisions of the platform store, one file per revision, oldest first by number."""
