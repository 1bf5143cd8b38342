"""Posting one answer on Slack: a placeholder, the answer streamed into it with throttled `chat.update`, then the
final text (mrkdwn, split within Slack's limits) with sources and buttons. `ChannelOutlet` and `EphemeralOutlet`
are the dispatcher's outlets (`bot.dispatcher.Outlet`) for a message in a channel and for a private answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.events import IncomingMessage
from bot.slack.format import PLACEHOLDER, SlackMessage, answer_messages, streaming_message
from core.types import Reply

__all__ = ["CALL_ERRORS", "ChannelOutlet", "EphemeralOutlet", "SlackPoster", "UpdateBudget", "why"]

logger = logging.getLogger(__name__)

# What a Web API call can fail with: Slack's error answer, or the network after the client's retries.
CALL_ERRORS = (SlackApiError, aiohttp.ClientError, TimeoutError)
MAX_EPHEMERAL = 4  # a response_url takes 5 posts; one is kept in reserve for an apology


def why(e: BaseException) -> str:
    return str(e.response.get("error")) if isinstance(e, SlackApiError) else repr(e)


class SlackPoster(Protocol):
    """What the outlets need from the front end: its Web API writes (which log failures and never raise)."""

    stream_client: AsyncWebClient
    budget: UpdateBudget
    stream_interval_s: float

    async def post(self, channel: str, thread: str, msg: SlackMessage, **kw: Any) -> str | None: ...

    async def update(self, channel: str, ts: str, msg: SlackMessage) -> bool: ...

    async def respond(self, response_url: str, msg: SlackMessage, *, replace_original: bool) -> None: ...


class UpdateBudget:
    """Streaming updates for the whole app share Slack's chat.update rate limit (Tier 3, about 50 a minute per
    workspace): a token bucket that partial updates draw from, paused when Slack answers 429. Final updates
    do not draw from it; they must go out, and the client retries them after Retry-After."""

    def __init__(self, per_minute: float, burst: int = 10) -> None:
        self.rate, self.capacity = per_minute / 60.0, float(burst)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.paused_until = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if now < self.paused_until or self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class _Stream:
    """The answer so far, shown by `chat.update` at most once per `interval` (and when the shared budget
    allows); never after `stop()` returns, so a late partial update cannot overwrite the final message."""

    def __init__(self, client: AsyncWebClient, channel: str, ts: str, interval: float, budget: UpdateBudget) -> None:
        self.client, self.channel, self.ts, self.interval, self.budget = client, channel, ts, interval, budget
        self.latest = self.shown = ""
        self._wake = asyncio.Event()
        self._stopped = self._updating = False
        self._task = asyncio.create_task(self._run())

    def push(self, text: str) -> None:
        """The engine's on_text callback (runs on the event loop): remember the text, wake the updater."""
        self.latest = text
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopped:
            await self._wake.wait()
            if self._stopped or self.latest == self.shown:
                self._wake.clear()
                continue
            if not self.budget.take():
                await asyncio.sleep(self.interval)  # over the budget: skip this step, the text keeps growing
                continue
            self._wake.clear()
            self.shown = self.latest
            msg = streaming_message(self.shown)
            self._updating = True
            try:
                await self.client.chat_update(channel=self.channel, ts=self.ts, text=msg.text, blocks=msg.blocks)
            except CALL_ERRORS as e:  # a partial update is best effort: the final one is what matters
                if isinstance(e, SlackApiError) and e.response.status_code == 429:
                    self.budget.pause(float(e.response.headers.get("Retry-After", 30)))
                logger.debug("streaming update of %s:%s failed: %s", self.channel, self.ts, why(e))
            finally:
                self._updating = False
            if not self._stopped:
                await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if not self._updating:
            self._task.cancel()
        await asyncio.wait([self._task])  # an update in flight finishes first


class ChannelOutlet:
    """An answer in a channel or DM thread: placeholder first, streamed, then the final parts.

    `prepare` is the front end's (channel name, thread reading); `root` (for /ask) posts the question the thread
    hangs from first and returns its ts, or None when the bot cannot post there."""

    def __init__(self, poster: SlackPoster, channel: str, thread: str, *, note: str = "",
                 prepare: Callable[[IncomingMessage], Awaitable[IncomingMessage]] | None = None,
                 root: Callable[[], Awaitable[str | None]] | None = None) -> None:
        self.poster, self.channel, self.thread, self.note = poster, channel, thread, note
        self._prepare, self._root = prepare, root
        self.placeholder = ""
        self.posted_root: bool | None = None  # for /ask: whether the question could be posted
        self._stream: _Stream | None = None

    async def prepare(self, msg: IncomingMessage) -> IncomingMessage:
        return await self._prepare(msg) if self._prepare is not None else msg

    async def open(self, msg: IncomingMessage) -> IncomingMessage | None:
        if self._root is not None:
            # /ask: the question is posted first and the answer's thread hangs from it.
            root = await self._root()
            self.posted_root = root is not None
            if root is None:
                return None
            self.thread = root
            msg = replace(msg, thread=root, message_ref=f"{self.channel}:{root}")
        ts = await self.poster.post(self.channel, self.thread, SlackMessage(PLACEHOLDER))
        if ts is None:
            return None  # we cannot post here (removed from the channel, archived): nothing more to do
        self.placeholder = ts
        p = self.poster
        self._stream = _Stream(p.stream_client, self.channel, ts, p.stream_interval_s, p.budget)
        return msg

    def feed(self, text: str) -> None:
        if self._stream is not None:
            self._stream.push(text)

    async def _stop(self) -> None:
        if self._stream is not None:
            await self._stream.stop()

    async def deliver(self, reply: Reply) -> list[str]:
        await self._stop()
        messages = answer_messages(reply.answer, sources=reply.sources, note=self.note if reply.called_model else "",
                                   interaction_id=reply.id if reply.called_model else "")
        refs = []
        if await self.poster.update(self.channel, self.placeholder, messages[0]):
            refs.append(f"{self.channel}:{self.placeholder}")
        for more in messages[1:]:
            if ts := await self.poster.post(self.channel, self.thread, more):
                refs.append(f"{self.channel}:{ts}")
        return refs

    async def fail(self, text: str) -> None:
        await self._stop()
        if self.placeholder:
            await self.poster.update(self.channel, self.placeholder, SlackMessage(text))


class EphemeralOutlet:
    """A private answer through a command's or button's response_url: no streaming, no message refs (ephemeral
    messages cannot get reactions; their buttons carry the interaction id)."""

    def __init__(self, poster: SlackPoster, response_url: str, *, replace_original: bool, note: str = "",
                 prepare: Callable[[IncomingMessage], Awaitable[IncomingMessage]] | None = None) -> None:
        self.poster, self.response_url, self.replace_original, self.note = poster, response_url, replace_original, note
        self._prepare = prepare

    async def prepare(self, msg: IncomingMessage) -> IncomingMessage:
        return await self._prepare(msg) if self._prepare is not None else msg

    async def open(self, msg: IncomingMessage) -> IncomingMessage | None:
        return msg

    def feed(self, text: str) -> None:
        return None  # ephemeral answers are posted whole

    async def deliver(self, reply: Reply) -> list[str]:
        messages = answer_messages(reply.answer, sources=reply.sources, note=self.note if reply.called_model else "",
                                   interaction_id=reply.id if reply.called_model else "", max_messages=MAX_EPHEMERAL)
        for i, msg in enumerate(messages):
            await self.poster.respond(self.response_url, msg, replace_original=self.replace_original and i == 0)
        return []

    async def fail(self, text: str) -> None:
        await self.poster.respond(self.response_url, SlackMessage(text), replace_original=self.replace_original)

