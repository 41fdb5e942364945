"""Validation packs: a ``reports`` table, one row per succeeded training that has one; and
the model a schedule's trainings belong to (``schedules.model_name``, ``default`` for every
existing schedule, as for every training before models).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("training_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("pack", sa.Text(), nullable=False),
        sa.Column("charts", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("training_id"),
    )
    op.add_column(
        "schedules",
        sa.Column("model_name", sa.String(length=64), server_default="default", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("schedules", "model_name")
    op.drop_table("reports")
