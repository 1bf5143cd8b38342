"""What every chat front end does, independent of the platform: decide whether to answer, de-duplicate retries,
rate-limit, call the engine, record, map reactions and buttons back to votes, and make sibling answers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from bot.events import ButtonPress, IncomingMessage, Reaction, vote_value
from core.engine import Engine
from core.types import Message, Reply, Source, Turn
from feedback import FeedbackError

__all__ = ["APOLOGY", "Dispatcher", "RateLimiter", "RATE_LIMITED"]

logger = logging.getLogger(__name__)

APOLOGY = "Sorry — something went wrong while I was answering. Please try again in a moment."
RATE_LIMITED = "You're sending questions faster than I can answer them — please wait a minute and try again."
ATTACHMENTS_ONLY = "I can only read text for now — please type your question."


class RateLimiter:
    """At most `per_minute` requests per user in any sliding minute."""

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
        return True


class _Seen:
    """A bounded set of recently seen event ids: a platform's retry of the same event is answered once."""

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


class Dispatcher:
    def __init__(self, engine: Engine, store: Any = None, *, rate_limit_per_minute: int = 10,
                 metrics: Any = None) -> None:
        self.engine = engine
        self.metrics = metrics  # bot.observability.Metrics, or None
        self.store = store  # a feedback.FeedbackStore, or None (then nothing is recorded)
        self.limiter = RateLimiter(rate_limit_per_minute)
        self._seen = _Seen()
        self._recent: OrderedDict[str, Reply] = OrderedDict()
        # (platform, channel, thread) the bot answers in; bounded, oldest forgotten first.
        self.bot_threads: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    # -- messages ----------------------------------------------------------------------------------------

    def should_answer(self, msg: IncomingMessage) -> bool:
        """Own and other bots' messages never; DMs and mentions always; follow-ups in the bot's threads when the
        channel's profile allows it."""
        if msg.from_bot:
            return False
        if msg.is_dm or msg.mentioned:
            return True
        if msg.thread and (msg.in_bot_thread or (msg.platform, msg.channel, msg.thread) in self.bot_threads):
            profile = self.engine.settings.profile_for(msg.channel, msg.channel_name, msg.workspace)
            return profile.follow_threads
        return False

    def first_delivery(self, event_id: str) -> bool:
        return self._seen.add(event_id)

    async def answer(self, msg: IncomingMessage, *, on_text: Callable[[str], None] | None = None) -> Reply:
        """The reply to post (recorded before it is returned). Never raises: failures become a short apology."""
        if not self.limiter.allow(f"{msg.platform}:{msg.user}"):
            return self._canned(msg, RATE_LIMITED, "rate_limited")
        if not msg.text.strip() and msg.has_attachments:
            return self._canned(msg, ATTACHMENTS_ONLY, "attachments_only")
        turn = Turn(text=msg.text, platform=msg.platform, workspace=msg.workspace, channel=msg.channel,
                    channel_name=msg.channel_name, thread=msg.thread, user=msg.user, preset=msg.preset,
                    mode=msg.mode, history=msg.history)
        try:
            reply = await self.engine.answer(turn, on_text=on_text)
        except ValueError as e:  # the user's choice of preset/mode was invalid: tell them which are valid
            return self._canned(msg, str(e), "invalid_request")
        except Exception:
            logger.exception("engine failed on a %s message", msg.platform)
            self._count_error("engine")
            return self._canned(msg, APOLOGY, "error")
        if msg.thread:
            self.bot_threads[(msg.platform, msg.channel, msg.thread)] = None
            while len(self.bot_threads) > 50_000:
                self.bot_threads.popitem(last=False)
        self._remember(reply)
        return reply

    async def posted(self, reply: Reply, ref: str) -> None:
        """The front end posted `reply` as message `ref`: reactions to that message now map back to it."""
        if self.store is None or not reply.called_model:
            return
        try:
            await asyncio.to_thread(self.store.attach_message_ref, interaction_id=reply.id,
                                    platform=reply.turn.platform, ref=ref)
        except Exception:
            logger.exception("could not attach message ref %s", ref)

    # -- feedback ----------------------------------------------------------------------------------------

    async def reaction(self, ev: Reaction) -> str | None:
        """Turn a thumbs reaction on one of our answers into a vote (or retract it). Returns the interaction id."""
        value = vote_value(ev.emoji)
        if value is None or self.store is None or not self.first_delivery(ev.event_id):
            return None
        interaction_id = await asyncio.to_thread(self.store.find_by_message_ref, platform=ev.platform,
                                                 ref=ev.message_ref)
        if interaction_id is None:
            return None  # not one of our answers
        if ev.added:
            await asyncio.to_thread(self.store.vote, interaction_id=interaction_id, user=ev.user, value=value)
            if self.metrics is not None:
                self.metrics.vote(value)
        else:
            await self._retract_if(interaction_id, ev.user, value)
        return interaction_id

    async def _retract_if(self, interaction_id: str, user: str, value: int) -> None:
        # Removing 👍 retracts only a +1: a user who switched to 👎 keeps that vote.
        votes = await asyncio.to_thread(self.store.get_votes, interaction_id=interaction_id)
        mine = [v for v in votes if v.user_id == user] if votes else []
        if not mine or mine[0].value == value:
            await asyncio.to_thread(self.store.retract_vote, interaction_id=interaction_id, user=user)

    async def button(self, press: ButtonPress, *, on_text: Callable[[str], None] | None = None) -> Reply | None:
        """👍/👎/reason buttons record votes; "another" returns a sibling answer to post."""
        match press.action:
            case "up" | "down":
                if self.store is not None:
                    await asyncio.to_thread(self.store.vote, interaction_id=press.interaction_id, user=press.user,
                                            value=1 if press.action == "up" else -1,
                                            reason=press.reason or None)
                    if self.metrics is not None:
                        self.metrics.vote(1 if press.action == "up" else -1)
                return None
            case "reason":
                if self.store is not None:
                    try:
                        await asyncio.to_thread(self.store.set_reason, interaction_id=press.interaction_id,
                                                user=press.user, reason=press.reason or None)
                    except FeedbackError as e:  # e.g. a reason without a vote: nothing to attach it to
                        logger.info("reason not recorded: %s", e)
                return None
            case "another":
                return await self.another(press.interaction_id, on_text=on_text, user=f"{press.platform}:{press.user}")
        raise ValueError(f"unknown button action {press.action!r}")

    async def another(self, interaction_id: str, *, on_text: Callable[[str], None] | None = None,
                      user: str = "") -> Reply | None:
        """A sibling answer to `interaction_id`; `user` ("platform:id") counts against the rate limit."""
        previous = self._recent.get(interaction_id) or await self._load(interaction_id)
        if previous is None:
            return None
        if user and not self.limiter.allow(user):
            return self._canned_turn(previous.turn, RATE_LIMITED, "rate_limited")
        try:
            reply = await self.engine.another(previous, on_text=on_text)
        except Exception:
            logger.exception("another answer failed")
            self._count_error("engine")
            return self._canned_turn(previous.turn, APOLOGY, "error")
        self._remember(reply)
        return reply

    # -- helpers -----------------------------------------------------------------------------------------

    def _count_error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.error(kind)

    def _remember(self, reply: Reply) -> None:
        self._recent[reply.id] = reply
        while len(self._recent) > 1000:
            self._recent.popitem(last=False)

    async def _load(self, interaction_id: str) -> Reply | None:
        """Rebuild a reply from the store (after a restart, or on another replica)."""
        if self.store is None:
            return None
        row = await asyncio.to_thread(self.store.get_interaction, interaction_id=interaction_id)
        if row is None:
            return None
        conv = await asyncio.to_thread(self.store.get_conversation, conversation_id=row.conversation_id) \
            if hasattr(self.store, "get_conversation") else None
        turn = Turn(text=row.question, platform=row.platform, user=row.user_id,
                    channel=getattr(conv, "channel", ""), workspace=getattr(conv, "workspace", ""),
                    thread=getattr(conv, "thread", ""))
        return Reply(answer=row.answer, turn=turn, id=row.id, prompt=[Message(m["role"], m["content"])
                                                                      for m in row.prompt],
                     sources=[Source(id=s.get("id", ""), text="", title=s.get("title", ""), uri=s.get("uri", ""),
                                     channels=tuple(s.get("channels") or ())) for s in row.sources],
                     model=row.model, adapter=row.adapter, preset=row.preset, mode=row.mode,
                     decoding=dict(row.decoding))

    def _canned(self, msg: IncomingMessage, text: str, kind: str) -> Reply:
        turn = Turn(text=msg.text, platform=msg.platform, channel=msg.channel, thread=msg.thread, user=msg.user)
        return self._canned_turn(turn, text, kind)

    @staticmethod
    def _canned_turn(turn: Turn, text: str, kind: str) -> Reply:
        from core.types import TraceStep

        return Reply(answer=text, turn=turn, called_model=False, mode="none", trace=[TraceStep(kind, {})])
