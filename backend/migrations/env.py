"""Alembic environment: migrations run on the connection backend.db hands over (no ini file)."""

from __future__ import annotations

from alembic import context

from backend.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
