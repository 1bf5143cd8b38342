"""De-duplicating platform deliveries: a retry, an edit re-delivery of the same user message, or the same event
reaching another replica is taken on once.

The keys of a delivery (`event_keys`) are claimed in the feedback database (`feedback.frontend.FrontendState`), so
the answer holds across replicas and restarts; this process also remembers the keys it has seen, which is all there is
without a database, and what still de-duplicates while the database is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from bot.events import IncomingMessage

__all__ = ["Claims", "event_keys"]

logger = logging.getLogger(__name__)


class _Seen:
    """A bounded set of recently seen keys: the fallback de-duplication without a database."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """True the first time `key` is seen."""
        if not key:
            return True
        if key in self._ids:
            return False
        self._ids[key] = None
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


class Claims:
    """Claims on `state` (a `feedback.frontend.FrontendState`, or None: this process's memory only)."""

    def __init__(self, state: Any = None, *, remembered: int = 10_000) -> None:
        self.state = state
        self._seen = _Seen(remembered)

    async def claim(self, platform: str, keys: list[str]) -> bool:
        """True the first time an event with any of `keys` is seen, on any replica (False for retries)."""
        keys = [k for k in keys if k]
        if not keys:
            return True
        local = [self._seen.add(f"{platform}:{k}") for k in keys]
        if self.state is None:
            return all(local)
        if not all(local):
            return False
        try:
            return await asyncio.to_thread(self.state.claim, platform=platform, keys=keys)
        except Exception as e:  # the database is down: answer rather than drop (this process still de-duplicates)
            logger.warning("event de-duplication unavailable (%s); relying on this process's memory", e)
            return True


def event_keys(msg: IncomingMessage) -> list[str]:
    """What identifies a delivery: the platform's event id (repeated by retries) and the user's message (repeated
    when an edit re-delivers it, or when the same message comes as two kinds of event)."""
    return [f"event:{msg.event_id}" if msg.event_id else "",
            f"message:{msg.message_ref}" if msg.message_ref else ""]
