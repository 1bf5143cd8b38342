"""The per-user rate limit, shared by every replica through the feedback database (table `rate_limits`, 0005).

One row per user key ("<platform>:<user id>") holds the request times admitted in the last window (a sliding log of
at most `per_window` entries). `allow` locks that row for the length of one short transaction — an upsert that takes
the row lock on PostgreSQL and the write lock on SQLite — reads it, prunes it and appends, so two replicas asking for
the same user at once are serialised and the limit holds exactly across them. Rows idle for longer than the window
are deleted now and then (`purge`).

Functions are keyword-only, thread-safe and blocking (call them with `asyncio.to_thread`); they raise SQLAlchemy's
errors when the database is unreachable (the caller decides what to do then).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from feedback.db import dialect_insert
from feedback.models import RateLimit

__all__ = ["SharedRateLimiter"]

logger = logging.getLogger(__name__)

_PURGE_EVERY = 500  # requests between two purges


class SharedRateLimiter:
    """At most `per_window` requests per user key in any sliding `window_s` seconds, counted across every process
    using `engine`. `clock` returns UTC epoch seconds (replicas compare their times: keep their clocks in sync, as
    NTP does; a skew of a second or two only shifts the window by as much)."""

    def __init__(self, engine: sa.Engine, per_window: int, *, window_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        if per_window < 0 or window_s <= 0:
            raise ValueError(f"a rate limit needs per_window >= 0 and window_s > 0, got {per_window}, {window_s}")
        self.engine = engine
        self.per_window, self.window_s, self.clock = per_window, window_s, clock
        self._insert = dialect_insert(engine)
        self._calls = 0

    def allow(self, *, key: str) -> bool:
        """Count one request for `key` and say whether it is within the limit (a refused request is not counted)."""
        now = self.clock()
        table = RateLimit.__table__
        at = datetime.fromtimestamp(now, UTC)
        upsert = self._insert(table).values(key=key, hits="[]", updated_at=at)
        # DO UPDATE (not DO NOTHING) so the row is locked until commit and RETURNING gives its latest hits.
        upsert = upsert.on_conflict_do_update(index_elements=["key"], set_={"updated_at": upsert.excluded.updated_at})
        with self.engine.begin() as conn:
            raw = conn.execute(upsert.returning(table.c.hits)).scalar_one()
            hits = [t for t in _times(raw) if now - t < self.window_s]
            allowed = len(hits) < self.per_window
            if allowed:
                hits.append(now)
            conn.execute(sa.update(table).where(table.c.key == key).values(hits=json.dumps(hits)))
        self._calls += 1
        if self._calls % _PURGE_EVERY == 0:
            self.purge()
        return allowed

    def purge(self) -> int:
        """Delete the rows of users idle for a whole window; returns how many went."""
        table = RateLimit.__table__
        cutoff = datetime.fromtimestamp(self.clock(), UTC) - timedelta(seconds=self.window_s)
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(table).where(table.c.updated_at < cutoff)).rowcount


def _times(raw: str) -> list[float]:
    try:
        values = json.loads(raw)
    except ValueError:
        logger.warning("unreadable rate-limit row %r: starting it again", raw[:80])
        return []
    return [float(v) for v in values if isinstance(v, int | float)] if isinstance(values, list) else []
