"""Votes get an optional reason; interactions get an index on created_at for `export --since`.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN keeps every existing vote; their reason is simply unknown (NULL).
    with op.batch_alter_table("votes") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
    op.create_index("ix_interactions_created_at", "interactions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_interactions_created_at", table_name="interactions")
    with op.batch_alter_table("votes") as batch:
        batch.drop_column("reason")
