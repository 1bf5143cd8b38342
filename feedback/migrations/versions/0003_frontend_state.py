"""Front-end state shared by every replica: events already taken on, the parts of each posted answer, and reactions
that arrived before their answer was recorded.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from feedback.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "frontend_events",
        sa.Column("platform", sa.String(), primary_key=True),
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_frontend_events_created_at", "frontend_events", ["created_at"])
    op.create_table(
        "message_parts",
        sa.Column("platform", sa.String(), primary_key=True),
        sa.Column("ref", sa.String(), primary_key=True),
        sa.Column(
            "interaction_id", sa.String(32), sa.ForeignKey("interactions.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_message_parts_interaction_id", "message_parts", ["interaction_id"])
    # Every answer recorded before this revision has one part: the message its ref names.
    op.execute(
        "INSERT INTO message_parts (platform, ref, interaction_id, part, created_at) "
        "SELECT platform, message_ref, id, 1, created_at FROM interactions WHERE message_ref IS NOT NULL"
    )
    op.create_table(
        "pending_votes",
        sa.Column("platform", sa.String(), primary_key=True),
        sa.Column("ref", sa.String(), primary_key=True),
        sa.Column("user_id", sa.String(), primary_key=True),
        sa.Column("value", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("value IN (-1, 0, 1)", name="ck_pending_votes_value"),
    )
    op.create_index("ix_pending_votes_created_at", "pending_votes", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_pending_votes_created_at", table_name="pending_votes")
    op.drop_table("pending_votes")
    op.drop_index("ix_message_parts_interaction_id", table_name="message_parts")
    op.drop_table("message_parts")
    op.drop_index("ix_frontend_events_created_at", table_name="frontend_events")
    op.drop_table("frontend_events")
