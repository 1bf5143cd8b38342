"""Corrections (a person's corrected text for an answer) and an index on votes.updated_at for training windows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from feedback.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "interaction_id", sa.String(32), sa.ForeignKey("interactions.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("interaction_id", "user_id", name="uq_corrections_interaction_user"),
    )
    op.create_index("ix_corrections_updated_at", "corrections", ["updated_at"])
    op.create_index("ix_votes_updated_at", "votes", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_votes_updated_at", table_name="votes")
    op.drop_index("ix_corrections_updated_at", table_name="corrections")
    op.drop_table("corrections")
