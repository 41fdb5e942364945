"""Validation packs: a ``reports`` table, one row per succeeded training that has one.

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


def downgrade() -> None:
    op.drop_table("reports")
