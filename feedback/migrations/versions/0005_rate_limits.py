"""A per-user request log shared by every replica, so the rate limit holds across them (feedback.ratelimit).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from feedback.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("hits", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_rate_limits_updated_at", "rate_limits", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_rate_limits_updated_at", table_name="rate_limits")
    op.drop_table("rate_limits")
