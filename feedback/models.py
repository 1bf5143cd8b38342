"""The feedback tables: conversations, the interactions recorded in them, and the votes on each interaction.

The schema itself is created and changed only by the Alembic revisions in `feedback/migrations/versions`;
these classes must describe the head revision exactly (a test compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

__all__ = [
    "Conversation",
    "Correction",
    "FrontendEvent",
    "Interaction",
    "MessagePart",
    "PendingVote",
    "RateLimit",
    "TABLES",
    "UTCDateTime",
    "Vote",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps go in and come out as aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Kaizen stores UTC timestamps only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Conversation(SQLModel, table=True):
    """One place answers are given in: a platform thread, or a channel when there is no thread."""

    __tablename__ = "conversations"
    __table_args__ = (sa.UniqueConstraint("platform", "workspace", "channel", "thread", name="uq_conversations_key"),)

    id: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))
    platform: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    workspace: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    channel: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    channel_name: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    thread: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    created_at: datetime = Field(default_factory=_utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class Interaction(SQLModel, table=True):
    """One answer exactly as it was produced: what the model saw, what it said, and how."""

    __tablename__ = "interactions"
    __table_args__ = (
        sa.UniqueConstraint("platform", "message_ref", name="uq_interactions_message_ref"),
        sa.Index("ix_interactions_conversation_id", "conversation_id"),
        sa.Index("ix_interactions_sibling_of", "sibling_of"),
        sa.Index("ix_interactions_created_at", "created_at"),
    )

    id: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))
    conversation_id: str = Field(
        sa_column=sa.Column(sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False)
    )
    # An alternative answer ("try another answer") points at the interaction it is a sibling of.
    sibling_of: str | None = Field(
        default=None,
        sa_column=sa.Column(sa.String(32), sa.ForeignKey("interactions.id", ondelete="SET NULL"), nullable=True),
    )
    platform: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    user_id: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    question: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    # [{"role", "content"}, ...]: exactly the messages the model saw.
    prompt: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    # [{"id", "title", "uri", "channels"}, ...]: empty channels = anyone may read the source.
    sources: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    restricted: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False))
    answer: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    model: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    adapter: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    preset: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    mode: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    decoding: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    called_model: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False))
    latency_ms: float = Field(sa_column=sa.Column(sa.Float(), nullable=False))
    first_token_ms: float | None = Field(default=None, sa_column=sa.Column(sa.Float(), nullable=True))
    prompt_tokens: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False))
    completion_tokens: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False))
    # The platform's reference to the posted message (e.g. Slack "channel:ts"), attached after posting.
    message_ref: str | None = Field(default=None, sa_column=sa.Column(sa.String(), nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class Vote(SQLModel, table=True):
    """One user's 👍 (+1) or 👎 (-1) on one interaction; changing the reaction updates this row."""

    __tablename__ = "votes"
    __table_args__ = (
        sa.UniqueConstraint("interaction_id", "user_id", name="uq_votes_interaction_user"),
        sa.CheckConstraint("value IN (-1, 1)", name="ck_votes_value"),
        # Training windows select votes by when they were cast (see `feedback.window`).
        sa.Index("ix_votes_updated_at", "updated_at"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer(), primary_key=True, autoincrement=True))
    interaction_id: str = Field(
        sa_column=sa.Column(sa.String(32), sa.ForeignKey("interactions.id", ondelete="CASCADE"), nullable=False)
    )
    user_id: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    value: int = Field(sa_column=sa.Column(sa.SmallInteger(), nullable=False))
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class FrontendEvent(SQLModel, table=True):
    """A platform event (or a user message) a front end has taken on: a retry or an edit re-delivery of it, on any
    replica or after a restart, finds its row and is not answered again. Rows expire (see `feedback.frontend`)."""

    __tablename__ = "frontend_events"
    __table_args__ = (sa.Index("ix_frontend_events_created_at", "created_at"),)

    platform: str = Field(sa_column=sa.Column(sa.String(), primary_key=True))
    # "event:<platform event id>" or "message:<channel>:<message id>"
    key: str = Field(sa_column=sa.Column(sa.String(), primary_key=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class MessagePart(SQLModel, table=True):
    """One posted message of an answer (a long answer is split into several): a vote on any part is a vote on it."""

    __tablename__ = "message_parts"
    __table_args__ = (sa.Index("ix_message_parts_interaction_id", "interaction_id"),)

    platform: str = Field(sa_column=sa.Column(sa.String(), primary_key=True))
    ref: str = Field(sa_column=sa.Column(sa.String(), primary_key=True))
    interaction_id: str = Field(
        sa_column=sa.Column(sa.String(32), sa.ForeignKey("interactions.id", ondelete="CASCADE"), nullable=False)
    )
    part: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class PendingVote(SQLModel, table=True):
    """A reaction on a message whose answer is not recorded yet (still streaming, possibly on another replica):
    applied as a vote when the message's part is stored. value 0 = the reaction was removed."""

    __tablename__ = "pending_votes"
    __table_args__ = (
        sa.Index("ix_pending_votes_created_at", "created_at"),
        sa.CheckConstraint("value IN (-1, 0, 1)", name="ck_pending_votes_value"),
    )

    platform: str = Field(sa_column=sa.Column(sa.String(), primary_key=True))
    ref: str = Field(sa_column=sa.Column(sa.String(), primary_key=True))
    user_id: str = Field(sa_column=sa.Column(sa.String(), primary_key=True))
    value: int = Field(sa_column=sa.Column(sa.SmallInteger(), nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class Correction(SQLModel, table=True):
    """A person's corrected text for one answer: training takes it as the liked answer and the model's as the
    disliked one. One per user and answer; correcting again replaces the text (and moves it to the new window)."""

    __tablename__ = "corrections"
    __table_args__ = (
        sa.UniqueConstraint("interaction_id", "user_id", name="uq_corrections_interaction_user"),
        sa.Index("ix_corrections_updated_at", "updated_at"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer(), primary_key=True, autoincrement=True))
    interaction_id: str = Field(
        sa_column=sa.Column(sa.String(32), sa.ForeignKey("interactions.id", ondelete="CASCADE"), nullable=False)
    )
    user_id: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    # Where the correction was made: slack, discord, console, cli.
    platform: str = Field(sa_column=sa.Column(sa.String(), nullable=False))
    text: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class RateLimit(SQLModel, table=True):
    """One user's recent requests, shared by every replica so the per-user limit holds across them (see
    `feedback.ratelimit`). Rows idle for longer than the window expire."""

    __tablename__ = "rate_limits"
    __table_args__ = (sa.Index("ix_rate_limits_updated_at", "updated_at"),)

    key: str = Field(sa_column=sa.Column(sa.String(), primary_key=True))  # "<platform>:<user id>"
    # The request times admitted in the current window: a JSON list of UTC epoch seconds, oldest first.
    hits: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


TABLES: tuple[sa.Table, ...] = (  # type: ignore[attr-defined]
    Conversation.__table__,  # type: ignore[attr-defined]
    Interaction.__table__,  # type: ignore[attr-defined]
    Vote.__table__,  # type: ignore[attr-defined]
    FrontendEvent.__table__,  # type: ignore[attr-defined]
    MessagePart.__table__,  # type: ignore[attr-defined]
    PendingVote.__table__,  # type: ignore[attr-defined]
    Correction.__table__,  # type: ignore[attr-defined]
    RateLimit.__table__,  # type: ignore[attr-defined]
)
