"""Front-end state every replica shares through the feedback database (tables of revision 0003).

- Events taken on (`claim`): a platform's retry, an edit re-delivery of the same user message, or the same event
  reaching another replica or a restarted process finds its row and is not answered twice. Rows expire after
  `event_ttl` (`purge`).
- The parts of each posted answer (`add_parts`, `find`): a vote on any part of a split answer is a vote on it.
- Reactions that arrive before their answer is recorded (`hold_vote`, `take_held`): kept, then applied when the
  answer's parts are stored. Either side checks the other after its own write is committed, so a reaction is never
  missed by both (it may be seen by both; votes are idempotent).

All functions are keyword-only, thread-safe and blocking (call them with `asyncio.to_thread`); they raise
SQLAlchemy's errors when the database is unreachable, which callers treat as "unknown" and go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from feedback.db import dialect_insert
from feedback.models import FrontendEvent, Interaction, MessagePart, PendingVote

__all__ = ["EVENT_TTL", "HELD_VOTE_TTL", "FrontendState"]

logger = logging.getLogger(__name__)

EVENT_TTL = timedelta(days=3)  # Slack retries within an hour; edits re-deliver days later at most rarely
HELD_VOTE_TTL = timedelta(hours=1)  # an answer not posted within an hour never will be
_PURGE_EVERY = 500  # claims between two purges


class FrontendState:
    """Shared de-duplication, part refs and held votes on one SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine, *, event_ttl: timedelta = EVENT_TTL,
                 held_vote_ttl: timedelta = HELD_VOTE_TTL, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.event_ttl, self.held_vote_ttl = event_ttl, held_vote_ttl
        self.clock = clock or (lambda: datetime.now(UTC))
        self._insert = dialect_insert(engine)
        self._claims = 0

    # ---- de-duplication -----------------------------------------------------------------------------------

    def claim(self, *, platform: str, keys: Sequence[str]) -> bool:
        """Take on an event known by `keys` (e.g. "event:Ev1" and "message:C1:171.2"): True the first time,
        False when any key was already taken (by this process, another replica or before a restart).
        Empty keys are ignored; with none left, always True."""
        keys = [k for k in dict.fromkeys(keys) if k]
        if not keys:
            return True
        now = self.clock()
        table = FrontendEvent.__table__
        first = True
        with self.engine.begin() as conn:
            for key in keys:
                # RETURNING says whether the row went in (psycopg reports no rowcount for ON CONFLICT DO NOTHING).
                inserted = conn.execute(
                    self._insert(table).values(platform=platform, key=key, created_at=now)
                    .on_conflict_do_nothing(index_elements=["platform", "key"]).returning(table.c.key)
                ).first()
                first = first and inserted is not None
        self._claims += 1
        if self._claims % _PURGE_EVERY == 1:
            self.purge()
        return first

    def purge(self) -> int:
        """Delete expired event rows and held votes; returns how many rows went."""
        now = self.clock()
        events, held = FrontendEvent.__table__, PendingVote.__table__
        with self.engine.begin() as conn:
            gone = conn.execute(sa.delete(events).where(events.c.created_at < now - self.event_ttl)).rowcount
            gone += conn.execute(sa.delete(held).where(held.c.created_at < now - self.held_vote_ttl)).rowcount
        return gone

    # ---- parts of an answer -------------------------------------------------------------------------------

    def add_parts(self, *, platform: str, interaction_id: str, refs: Sequence[str]) -> list[tuple[str, int]]:
        """Store the posted messages of one recorded answer (in order; a ref already stored keeps its answer).
        Returns the votes held for them as (user, value) — value 0: the reaction was taken back — and forgets
        them: the caller applies them."""
        now = self.clock()
        parts = MessagePart.__table__
        with self.engine.begin() as conn:
            for i, ref in enumerate(refs, 1):
                conn.execute(
                    self._insert(parts).values(platform=platform, ref=ref, interaction_id=interaction_id, part=i,
                                               created_at=now)
                    .on_conflict_do_nothing(index_elements=["platform", "ref"])
                )
        return self.take_held(platform=platform, refs=refs)

    def find(self, *, platform: str, ref: str) -> str | None:
        """The interaction whose answer includes message `ref`, or None."""
        parts, interactions = MessagePart.__table__, Interaction.__table__
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(parts.c.interaction_id).where(parts.c.platform == platform, parts.c.ref == ref)
            ).scalar()
            if found is None:  # answers recorded before parts were stored keep their first message's ref
                found = conn.execute(
                    sa.select(interactions.c.id).where(interactions.c.platform == platform,
                                                       interactions.c.message_ref == ref)
                ).scalar()
        return found

    # ---- reactions before their answer is recorded --------------------------------------------------------

    def hold_vote(self, *, platform: str, ref: str, user: str, value: int) -> str | None:
        """Keep `user`'s reaction on message `ref` (value +1/-1, 0 = taken back) until its answer's parts are
        stored. Returns the interaction id if they are stored already (then the caller applies the vote now)."""
        if value not in (-1, 0, 1):
            raise ValueError(f"a held vote is -1, 0 or 1, got {value!r}")
        held = PendingVote.__table__
        stmt = self._insert(held).values(platform=platform, ref=ref, user_id=user, value=value,
                                         created_at=self.clock())
        stmt = stmt.on_conflict_do_update(index_elements=["platform", "ref", "user_id"],
                                          set_={"value": stmt.excluded.value, "created_at": stmt.excluded.created_at})
        with self.engine.begin() as conn:
            conn.execute(stmt)
        # Checked after the hold is committed: if the parts were stored meanwhile, their writer may have missed it.
        found = self.find(platform=platform, ref=ref)
        if found is not None:
            self.take_held(platform=platform, refs=[ref])
        return found

    def take_held(self, *, platform: str, refs: Sequence[str]) -> list[tuple[str, int]]:
        """The votes held for `refs` as (user, value), removed from the table."""
        if not refs:
            return []
        held = PendingVote.__table__
        where = (held.c.platform == platform, held.c.ref.in_(list(refs)))
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(held.c.user_id, held.c.value, held.c.created_at).where(*where)).all()
            if rows:
                conn.execute(sa.delete(held).where(*where))
        latest: dict[str, tuple[datetime, int]] = {}
        for user, value, at in rows:
            if user not in latest or at >= latest[user][0]:
                latest[user] = (at, value)
        return [(user, value) for user, (_, value) in sorted(latest.items())]
