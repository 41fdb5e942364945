"""Each pending training stores when it becomes due (``due_at``), indexed with its status.

A claim used to read every queued row still waiting out a retry back-off (``not_before``
NULL or past: an OR no index serves); it now reads ``status = 'queued' AND due_at <= now`` in
due order from ``ix_trainings_status_due_at``, so it costs the same whatever the backlog.
``due_at`` replaces ``not_before``: a queued training's back-off end, a scheduled one's time,
otherwise when it was queued.

Plain ALTER TABLE, no batch copy: SQLite 3.35 (the oldest the service runs on) adds and drops
columns in place, and a copy of the table would reset its AUTOINCREMENT counter, letting a
deleted training's id be handed out again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

trainings = sa.table(
    "trainings",
    sa.column("status", sa.String),
    sa.column("scheduled_at", sa.DateTime),
    sa.column("created_at", sa.DateTime),
    sa.column("updated_at", sa.DateTime),
    sa.column("not_before", sa.DateTime),
    sa.column("due_at", sa.DateTime),
)


def upgrade() -> None:
    op.add_column("trainings", sa.Column("due_at", sa.DateTime(), nullable=True))
    op.execute(
        trainings.update()
        .where(trainings.c.status == "scheduled")
        .values(due_at=sa.func.coalesce(trainings.c.scheduled_at, trainings.c.created_at))
    )
    op.execute(
        trainings.update()
        .where(trainings.c.status == "queued")
        .values(due_at=sa.func.coalesce(trainings.c.not_before, trainings.c.created_at))
    )
    op.drop_column("trainings", "not_before")
    op.create_index("ix_trainings_status_due_at", "trainings", ["status", "due_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_trainings_status_due_at", table_name="trainings")
    op.add_column("trainings", sa.Column("not_before", sa.DateTime(), nullable=True))
    # Only a back-off is a not_before: a retry is due after it was last updated, any other
    # queued training at or before it.
    op.execute(
        trainings.update()
        .where(trainings.c.status == "queued", trainings.c.due_at > trainings.c.updated_at)
        .values(not_before=trainings.c.due_at)
    )
    op.drop_column("trainings", "due_at")
