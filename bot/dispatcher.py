"""What every chat front end does, independent of the platform, in one flow:

    decide whether to answer -> de-duplicate -> rate-limit -> engine -> record the posted message refs

A front end translates a platform payload into a `bot.events` value and hands it to `Dispatcher.handle` with an
`Outlet` — the platform's transport for this one answer (read, post a placeholder or thread, stream, post the
final parts). Deciding uses only reads, so de-duplication still comes before anything is posted. Votes
(reactions, buttons) and "Try another answer" go through the same object. De-duplication, part refs and
reactions that arrive while an answer streams are kept in the feedback database (`feedback.frontend`), so they
hold across replicas and restarts; without a store they are kept in memory. De-duplication is `bot.dedup`'s, the
per-user rate limit (shared through the database too) `bot.ratelimit`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from bot.dedup import Claims, event_keys
from bot.events import ButtonPress, IncomingMessage, Reaction, vote_value
from bot.ratelimit import Limiter, RateLimiter
from bot.replies import load_reply
from core.engine import MODES, Engine
from core.text import clean_text, is_blank
from core.types import Reply, TraceStep, Turn
from feedback import FeedbackError

__all__ = ["APOLOGY", "RATE_LIMITED", "SHUTTING_DOWN", "UNKNOWN_ANSWER", "Dispatcher", "Outlet", "RateLimiter",
           "event_keys"]

logger = logging.getLogger(__name__)

APOLOGY = "Sorry — something went wrong while I was answering. Please try again in a moment."
RATE_LIMITED = "You're sending questions faster than I can answer them — please wait a minute and try again."
ATTACHMENTS_ONLY = "I can only read text for now — please type your question."
UNKNOWN_ANSWER = "Sorry — I can no longer find that answer, so I can't try another one. Please ask again."
SHUTTING_DOWN = "Sorry — I'm restarting and couldn't finish this answer. Please ask again in a minute."

OnText = Callable[[str], None]


class Outlet(Protocol):
    """A platform's transport for one answer (see `Dispatcher.handle`)."""

    async def prepare(self, msg: IncomingMessage) -> IncomingMessage:
        """Platform reads before deciding (nothing posted yet): channel name, whether the thread is the bot's."""
        ...

    async def open(self, msg: IncomingMessage) -> IncomingMessage | None:
        """Make the place the answer goes (a question posted for /ask, a thread, a placeholder) and read the
        conversation so far; returns the message as it will be answered, or None when the bot cannot post there
        (then nothing more is done)."""
        ...

    def feed(self, text: str) -> None:
        """The answer so far, while it is generated."""
        ...

    async def deliver(self, reply: Reply) -> list[str]:
        """Post the final answer; returns the refs of its messages in order (empty when nothing was posted)."""
        ...

    async def fail(self, text: str) -> None:
        """Replace whatever was posted for this answer with `text` (an apology); nothing when nothing was."""
        ...


class Dispatcher:
    """The platform-neutral flow. `store` is a `feedback.FeedbackStore` (or None: nothing is recorded and state
    stays in this process)."""

    def __init__(self, engine: Engine, store: Any = None, *, rate_limit_per_minute: int = 10,
                 metrics: Any = None) -> None:
        self.engine = engine
        self.metrics = metrics  # bot.observability.Metrics, or None
        self.store = store
        self.state: Any = None
        db = getattr(store, "engine", None) if store is not None else None
        if db is not None:
            from feedback.frontend import FrontendState

            self.state = FrontendState(db)
        self.claims = Claims(self.state)
        # Shared by every replica on the feedback database; per process without one.
        self.limiter = Limiter(rate_limit_per_minute, engine=db)
        self._recent: OrderedDict[str, Reply] = OrderedDict()
        # (platform, channel, thread) the bot answers in; bounded, oldest forgotten first.
        self.bot_threads: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self.draining = False  # set on shutdown: new events are not taken on
        self.in_flight: set[asyncio.Task[Any]] = set()
        # Called first on shutdown, e.g. a Socket Mode connection closing so the platform sends events elsewhere.
        self.on_drain: list[Callable[[], Any]] = []

    # -- the flow ----------------------------------------------------------------------------------------

    async def handle(self, msg: IncomingMessage, outlet: Outlet) -> Reply | None:
        """The one flow for a message: decide from what the platform can read (nothing is posted yet) ->
        de-duplicate across replicas -> open the place the answer goes -> rate-limit, engine, record -> post and
        record the message refs. Returns the posted reply, or None when there was nothing to answer. Never raises
        for an answer's failure: the outlet shows an apology instead."""
        if self.draining:
            return None
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)  # from here on, shutdown waits for this event
        try:
            msg = await outlet.prepare(msg)
            if not self.should_answer(msg):
                return None
            if not await self.claim(msg.platform, event_keys(msg)):
                logger.info("%s event %s already taken on: not answered again", msg.platform,
                            msg.event_id or msg.message_ref)
                return None
            return await self._run(outlet, msg, lambda m: self.answer(m, on_text=outlet.feed))
        finally:
            if task is not None:
                self.in_flight.discard(task)

    async def handle_another(self, press: ButtonPress, outlet: Outlet) -> Reply | None:
        """"Try another answer": the same flow, rate-limited like a question, in the first answer's conversation.
        An unknown first answer gets a short note."""
        previous = self._recent.get(press.interaction_id) or await load_reply(self.store, press.interaction_id)
        turn = previous.turn if previous is not None else Turn(text="", platform=press.platform)
        msg = IncomingMessage(platform=turn.platform, text=turn.text, user=press.user, channel=turn.channel,
                              thread=turn.thread, workspace=turn.workspace, channel_name=turn.channel_name,
                              mentioned=True)
        return await self._run(outlet, msg, lambda m: self.another(
            press.interaction_id, on_text=outlet.feed, user=f"{press.platform}:{press.user}"))

    async def _run(self, outlet: Outlet, msg: IncomingMessage, produce: Callable[[IncomingMessage], Any]) -> Any:
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        opened = False
        try:
            opened_msg = await outlet.open(msg)
            if opened_msg is None:
                return None
            opened = True
            reply = await produce(opened_msg)
            if reply is None:
                await outlet.fail(UNKNOWN_ANSWER)
                return None
            await self.posted(reply, await outlet.deliver(reply))
            return reply
        except asyncio.CancelledError:
            # Shutdown ran out of time: never leave a half-written answer behind.
            if opened:
                await asyncio.shield(_quietly(outlet.fail(SHUTTING_DOWN)))
            raise
        except Exception:
            logger.exception("answering a %s message failed", msg.platform)
            self._count_error("front_end")
            if opened:
                await _quietly(outlet.fail(APOLOGY))
            return None
        finally:
            if task is not None:
                self.in_flight.discard(task)

    async def claim(self, platform: str, keys: list[str]) -> bool:
        """True the first time an event with any of `keys` is seen, on any replica (False for retries)."""
        return await self.claims.claim(platform, keys)

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

    async def answer(self, msg: IncomingMessage, *, on_text: OnText | None = None) -> Reply:
        """The reply to post (recorded before it is returned). Never raises: failures become a short apology.
        Text that shows nothing (only spaces or zero-width/format characters) gets the greeting: no model call,
        nothing recorded."""
        text = clean_text(msg.text)
        if is_blank(text):
            text = ""
        if not await self.limiter.allow(f"{msg.platform}:{msg.user}"):
            return self._canned(msg, RATE_LIMITED, "rate_limited")
        if not text and msg.has_attachments:
            return self._canned(msg, ATTACHMENTS_ONLY, "attachments_only")
        if problem := self._invalid_choice(msg):
            return self._canned(msg, problem, "invalid_request")
        turn = Turn(text=text, platform=msg.platform, workspace=msg.workspace, channel=msg.channel,
                    channel_name=msg.channel_name, thread=msg.thread, user=msg.user, preset=msg.preset,
                    mode=msg.mode, history=msg.history)
        try:
            reply = await self.engine.answer(turn, on_text=on_text)
        except ValueError as e:
            if type(e) is not ValueError:  # e.g. a codec error: its text is not for users
                logger.exception("engine failed on a %s message", msg.platform)
                self._count_error("engine")
                return self._canned(msg, APOLOGY, "error")
            return self._canned(msg, str(e).splitlines()[0][:300], "invalid_request")
        except Exception:
            logger.exception("engine failed on a %s message", msg.platform)
            self._count_error("engine")
            return self._canned(msg, APOLOGY, "error")
        if msg.thread and reply.called_model:
            self.bot_threads[(msg.platform, msg.channel, msg.thread)] = None
            while len(self.bot_threads) > 50_000:
                self.bot_threads.popitem(last=False)
        self._remember(reply)
        return reply

    async def posted(self, reply: Reply, refs: list[str] | str) -> None:
        """The front end posted `reply` as messages `refs` (in order): a reaction on any of them is a vote on it,
        on any replica; reactions that came while it streamed are applied now."""
        refs = [refs] if isinstance(refs, str) else [r for r in refs if r]
        if self.store is None or not reply.called_model or not refs:
            return
        platform = reply.turn.platform
        try:
            await asyncio.to_thread(self.store.attach_message_ref, interaction_id=reply.id, platform=platform,
                                    ref=refs[0])
            if self.state is None:
                return
            held = await asyncio.to_thread(self.state.add_parts, platform=platform, interaction_id=reply.id,
                                           refs=refs)
            for user, value in held:
                await self._apply_vote(reply.id, user, value)
        except Exception:
            logger.exception("could not store the message refs of %s", reply.id)

    # -- feedback ----------------------------------------------------------------------------------------

    async def reaction(self, ev: Reaction) -> str | None:
        """Turn a thumbs reaction on one of our answers (any part of it) into a vote, or retract it. A reaction on
        an answer still being written is held and applied when it is posted. Returns the interaction id when the
        vote was applied now."""
        value = vote_value(ev.emoji)
        if value is None or self.store is None:
            return None
        if not await self.claim(ev.platform, [f"event:{ev.event_id}" if ev.event_id else ""]):
            return None
        if self.state is not None:
            interaction_id = await asyncio.to_thread(self.state.find, platform=ev.platform, ref=ev.message_ref)
            if interaction_id is None:
                # Perhaps an answer still streaming (here or on another replica): hold the vote for it.
                interaction_id = await asyncio.to_thread(
                    self.state.hold_vote, platform=ev.platform, ref=ev.message_ref, user=ev.user,
                    value=value if ev.added else 0)
        else:
            interaction_id = await asyncio.to_thread(self.store.find_by_message_ref, platform=ev.platform,
                                                     ref=ev.message_ref)
        if interaction_id is None:
            return None
        await self._apply_vote(interaction_id, ev.user, value if ev.added else 0, removed=value)
        return interaction_id

    async def _apply_vote(self, interaction_id: str, user: str, value: int, *, removed: int = 0) -> None:
        """value ±1 sets the vote; 0 takes back `removed` (any vote when 0 too)."""
        if value:
            await asyncio.to_thread(self.store.vote, interaction_id=interaction_id, user=user, value=value)
            if self.metrics is not None:
                self.metrics.vote(value)
            return
        # Removing 👍 retracts only a +1: a user who switched to 👎 keeps that vote.
        votes = await asyncio.to_thread(self.store.get_votes, interaction_id=interaction_id)
        mine = [v for v in votes if v.user_id == user] if votes else []
        if mine and (not removed or mine[0].value == removed):
            await asyncio.to_thread(self.store.retract_vote, interaction_id=interaction_id, user=user)

    async def button(self, press: ButtonPress, *, on_text: OnText | None = None) -> Reply | None:
        """👍/👎/reason buttons record votes; "another" returns a sibling answer to post."""
        match press.action:
            case "up" | "down":
                if self.store is not None:
                    await asyncio.to_thread(self.store.vote, interaction_id=press.interaction_id, user=press.user,
                                            value=1 if press.action == "up" else -1,
                                            reason=clean_text(press.reason) or None)
                    if self.metrics is not None:
                        self.metrics.vote(1 if press.action == "up" else -1)
                return None
            case "reason":
                if self.store is not None:
                    try:
                        await asyncio.to_thread(self.store.set_reason, interaction_id=press.interaction_id,
                                                user=press.user, reason=clean_text(press.reason) or None)
                    except FeedbackError as e:  # e.g. a reason without a vote: nothing to attach it to
                        logger.info("reason not recorded: %s", e)
                return None
            case "another":
                return await self.another(press.interaction_id, on_text=on_text, user=f"{press.platform}:{press.user}")
        raise ValueError(f"unknown button action {press.action!r}")

    async def correct(self, press: ButtonPress) -> str:
        """Keep `press.reason` as `press.user`'s correction of the answer; returns the cleaned text to show in the
        conversation. Raises ValueError for a blank correction, FeedbackError for an unknown answer."""
        text = clean_text(press.reason).strip()
        if is_blank(text):
            raise ValueError("a correction needs the corrected answer's text")
        if self.store is None:
            raise FeedbackError("corrections need the feedback store")
        await asyncio.to_thread(self.store.record_correction, interaction_id=press.interaction_id, user=press.user,
                                text=text, platform=press.platform)
        return text

    async def another(self, interaction_id: str, *, user: str, on_text: OnText | None = None) -> Reply | None:
        """A sibling answer to `interaction_id`; `user` ("platform:id") counts against the rate limit like a
        question. None when the first answer is unknown."""
        previous = self._recent.get(interaction_id) or await load_reply(self.store, interaction_id)
        if previous is None:
            return None
        if not await self.limiter.allow(user):
            return self._canned_turn(previous.turn, RATE_LIMITED, "rate_limited")
        try:
            reply = await self.engine.another(previous, on_text=on_text)
        except Exception:
            logger.exception("another answer failed")
            self._count_error("engine")
            return self._canned_turn(previous.turn, APOLOGY, "error")
        self._remember(reply)
        return reply

    # -- shutdown ----------------------------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> int:
        """Stop taking new events and wait up to `timeout_s` for the answers in flight; returns how many did not
        finish (the caller cancels them: each then shows an apology instead of half an answer)."""
        for stop_receiving in self.on_drain:
            try:
                await stop_receiving()
            except Exception:
                logger.exception("a front end failed to stop receiving events")
        self.draining = True
        pending = {t for t in self.in_flight if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout_s)
        return len(pending)

    # -- helpers -----------------------------------------------------------------------------------------

    def _invalid_choice(self, msg: IncomingMessage) -> str:
        presets = self.engine.settings.presets
        if msg.preset is not None and msg.preset not in presets:
            return f"unknown preset {msg.preset!r}; valid presets: {', '.join(sorted(presets))}"
        if msg.mode is not None and msg.mode not in MODES:
            return f"unknown mode {msg.mode!r}; valid modes: {', '.join(MODES)}"
        return ""

    def _count_error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.error(kind)

    def _remember(self, reply: Reply) -> None:
        self._recent[reply.id] = reply
        while len(self._recent) > 1000:
            self._recent.popitem(last=False)

    def _canned(self, msg: IncomingMessage, text: str, kind: str) -> Reply:
        turn = Turn(text=clean_text(msg.text), platform=msg.platform, workspace=msg.workspace, channel=msg.channel,
                    channel_name=msg.channel_name, thread=msg.thread, user=msg.user)
        return self._canned_turn(turn, text, kind)

    @staticmethod
    def _canned_turn(turn: Turn, text: str, kind: str) -> Reply:
        return Reply(answer=text, turn=turn, called_model=False, mode="none", trace=[TraceStep(kind, {})])


async def _quietly(work: Any) -> None:
    try:
        await work
    except Exception:
        logger.exception("could not replace a partial answer with an apology")
