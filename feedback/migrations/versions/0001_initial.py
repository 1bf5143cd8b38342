"""First schema: conversations, interactions and votes (votes without a reason yet).

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from feedback.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("workspace", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("channel_name", sa.String(), nullable=False),
        sa.Column("thread", sa.String(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("platform", "workspace", "channel", "thread", name="uq_conversations_key"),
    )
    op.create_table(
        "interactions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "conversation_id", sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("sibling_of", sa.String(32), sa.ForeignKey("interactions.id", ondelete="SET NULL"), nullable=True),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("prompt", sa.JSON(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("adapter", sa.String(), nullable=False),
        sa.Column("preset", sa.String(), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("decoding", sa.JSON(), nullable=False),
        sa.Column("called_model", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("first_token_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("message_ref", sa.String(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("platform", "message_ref", name="uq_interactions_message_ref"),
    )
    op.create_index("ix_interactions_conversation_id", "interactions", ["conversation_id"])
    op.create_index("ix_interactions_sibling_of", "interactions", ["sibling_of"])
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "interaction_id", sa.String(32), sa.ForeignKey("interactions.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("value", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("interaction_id", "user_id", name="uq_votes_interaction_user"),
        sa.CheckConstraint("value IN (-1, 1)", name="ck_votes_value"),
    )


def downgrade() -> None:
    op.drop_table("votes")
    op.drop_index("ix_interactions_sibling_of", table_name="interactions")
    op.drop_index("ix_interactions_conversation_id", table_name="interactions")
    op.drop_table("interactions")
    op.drop_table("conversations")
