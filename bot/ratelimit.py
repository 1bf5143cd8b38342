"""The rate limit the dispatcher applies to every model call a user triggers (questions, "Try another answer").

With a feedback database the count is shared by every replica (`feedback.ratelimit.SharedRateLimiter`), so a user
gets the limit once, not once per replica. Without one (the console, tests without a store) it is kept in this
process (`RateLimiter`). When the database cannot be reached the process's own count decides, so a database outage
neither blocks every user nor lifts the limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Limiter", "RateLimiter"]

logger = logging.getLogger(__name__)


class RateLimiter:
    """At most `per_minute` requests per user in any sliding minute, in this process only."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def allow(self, user: str) -> bool:
        now = self.clock()
        hits = self._hits.setdefault(user, deque())
        while hits and now - hits[0] >= 60:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return False
        hits.append(now)
        if len(self._hits) > 100_000:  # forget users with nothing left in the window
            self._hits = {k: v for k, v in self._hits.items() if v and now - v[-1] < 60}
        return True


class Limiter:
    """The dispatcher's limiter: shared through `engine` (a SQLAlchemy engine of the feedback database) when given,
    else per process."""

    def __init__(self, per_minute: int, *, engine: Any = None) -> None:
        self.per_minute = per_minute
        self.local = RateLimiter(per_minute)
        self.shared: Any = None
        if engine is not None:
            from feedback.ratelimit import SharedRateLimiter

            self.shared = SharedRateLimiter(engine, per_minute)

    async def allow(self, user: str) -> bool:
        """True when `user` ("platform:id") may make one more request now (and counts it)."""
        if self.shared is None:
            return self.local.allow(user)
        try:
            return await asyncio.to_thread(self.shared.allow, key=user)
        except Exception as e:
            logger.warning("shared rate limit unavailable (%s); counting in this process", e)
            return self.local.allow(user)
