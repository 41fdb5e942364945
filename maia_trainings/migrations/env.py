"""Alembic's environment: migrations run on the connection maia_trainings.migrations hands in."""

from __future__ import annotations

from alembic import context

from maia_trainings.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters a table by copying it; batch mode does that for the revisions.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
