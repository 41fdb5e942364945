"""Trainings belong to a model: its name, per-model version numbers, and its publications.

``model_name`` (every existing training is in the model ``default``), ``model_version`` (the
automatic numbers, counted per model and unique within it), ``published_by`` and
``publish_note`` are added to ``trainings`` in place (no batch copy: a copy would reset
SQLite's AUTOINCREMENT counter, see 0002). The old globally unique ``auto_version`` stays,
no longer set, for the same reason: dropping a table-level UNIQUE on SQLite needs that copy.
Existing automatic numbers become the model ``default``'s, so its numbering goes on where it
was; and each training published so far gets a publication, in the order they were published,
so the last one published is its model's champion.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

trainings = sa.table(
    "trainings",
    sa.column("id", sa.Integer),
    sa.column("version", sa.String),
    sa.column("published_at", sa.DateTime),
    sa.column("auto_version", sa.Integer),
    sa.column("model_name", sa.String),
    sa.column("model_version", sa.Integer),
)


def upgrade() -> None:
    op.add_column(
        "trainings",
        sa.Column("model_name", sa.String(length=64), server_default="default", nullable=False),
    )
    op.add_column("trainings", sa.Column("model_version", sa.Integer(), nullable=True))
    op.add_column("trainings", sa.Column("published_by", sa.String(length=64), nullable=True))
    op.add_column("trainings", sa.Column("publish_note", sa.Text(), nullable=True))
    op.execute(
        trainings.update()
        .where(trainings.c.auto_version.is_not(None))
        .values(model_version=trainings.c.auto_version)
    )
    op.create_index("ix_trainings_model_name_status", "trainings", ["model_name", "status"])
    op.create_index(
        "ix_trainings_model_name_model_version",
        "trainings",
        ["model_name", "model_version"],
        unique=True,
    )

    publications = op.create_table(
        "publications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=False),
        sa.Column("training_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("published_by", sa.String(length=64), nullable=True),
        sa.Column("published_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_publications_model_name", "publications", ["model_name"])
    published = (
        sa.select(
            trainings.c.model_name,
            trainings.c.id,
            trainings.c.version,
            trainings.c.published_at,
            sa.literal("published before models (0004)"),
        )
        .where(trainings.c.published_at.is_not(None))
        .order_by(trainings.c.published_at, trainings.c.id)
    )
    op.execute(
        publications.insert().from_select(
            ["model_name", "training_id", "version", "published_at", "reason"], published
        )
    )


def downgrade() -> None:
    op.drop_index("ix_publications_model_name", table_name="publications")
    op.drop_table("publications")
    op.drop_index("ix_trainings_model_name_model_version", table_name="trainings")
    op.drop_index("ix_trainings_model_name_status", table_name="trainings")
    op.drop_column("trainings", "publish_note")
    op.drop_column("trainings", "published_by")
    op.drop_column("trainings", "model_version")
    op.drop_column("trainings", "model_name")
