"""Posting one answer on Discord: streamed by editing its message(s) in throttled steps, split at 2000
characters, with sources and buttons on the last message. Works for channel messages and interaction
responses alike."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import discord

from bot.discord.format import MAX_MESSAGE, split_message

__all__ = ["CURSOR", "AnswerPoster", "Send", "channel_sender", "interaction_sender", "typing"]

logger = logging.getLogger(__name__)

CURSOR = " ▌"  # shown at the end of the answer while it is still being written
# send(content, *, embed=..., view=...) -> a message with .id and .edit()
Send = Callable[..., Awaitable[Any]]


def channel_sender(channel: discord.abc.Messageable,
                   reference: discord.MessageReference | None = None) -> Send:
    """Posts into a channel, thread or DM; the first message replies to `reference` (if it still exists)."""
    pending = [reference]

    async def send(content: str, **extra: Any) -> discord.Message:
        ref = pending.pop() if pending else None
        return await channel.send(content, reference=ref, **extra)

    return send


def interaction_sender(interaction: discord.Interaction, *, ephemeral: bool) -> Send:
    """Posts as the response to a deferred interaction: the first message replaces "thinking…", later ones are
    follow-ups (ephemeral like the first)."""
    first = [True]

    async def send(content: str, **extra: Any) -> Any:
        if first:
            first.clear()
            return await interaction.edit_original_response(content=content, **extra)
        return await interaction.followup.send(content, ephemeral=ephemeral, wait=True, **extra)

    return send


@contextlib.asynccontextmanager
async def typing(channel: discord.abc.Messageable) -> AsyncIterator[None]:
    """Shows "Kaizen is typing…" until the block ends. Unlike discord.py's own context manager, a missing
    permission or a vanished channel only ends the indicator."""

    async def keep_typing() -> None:
        while True:
            try:
                await channel.typing()  # one indicator lasts about 10 s
            except discord.HTTPException as e:
                logger.debug("typing indicator stopped: %s", e)
                return
            await asyncio.sleep(8)

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class AnswerPoster:
    """One answer as one or more messages. `feed(text)` (the engine's on_text) gets the answer so far; a
    background task posts and edits at most once per `interval` seconds (Discord allows about 5 edits per
    5 seconds in a channel). `finish()` writes the final text, with the embed and view on the last message."""

    def __init__(self, send: Send, *, interval: float = 1.0, limit: int = MAX_MESSAGE) -> None:
        self._send = send
        self.interval = interval
        self.limit = limit
        self.messages: list[Any] = []
        self._shown: list[str] = []
        self._latest = ""
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._streaming = True

    def feed(self, text: str) -> None:
        if not self._streaming or self._closing.is_set():
            return
        self._latest = text
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._stream())
        self._wake.set()

    async def finish(self, text: str, *, embed: discord.Embed | None = None,
                     view: discord.ui.View | None = None) -> list[Any]:
        """Post the final answer; returns its messages in order (empty if the destination is gone)."""
        # Step 1: let an edit in flight complete (cancelling it could leave an orphan message behind).
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        parts = split_message(text, self.limit) or ["…"]
        extra: dict[str, Any] = {}
        if embed is not None:
            extra["embed"] = embed
        if view is not None:
            extra["view"] = view
        # Step 2: bring every message to its final text; the last one carries the embed and buttons.
        try:
            await self._sync(parts, extra)
        except discord.HTTPException as e:
            logger.warning("could not post an answer on Discord (%s %s): %s", e.status, e.code, e.text)
            return []
        # Step 3: a final text shorter than the streamed one leaves surplus messages: remove them.
        for surplus in self.messages[len(parts):]:
            with contextlib.suppress(discord.HTTPException):
                await surplus.delete()
        del self.messages[len(parts):]
        return list(self.messages)

    async def _stream(self) -> None:
        while not self._closing.is_set():
            await self._wake.wait()
            self._wake.clear()
            if self._closing.is_set():
                return
            try:
                await self._sync(split_message(self._latest + CURSOR, self.limit), {})
            except discord.HTTPException as e:
                # Streaming is a nicety: stop it and let finish() post the answer.
                logger.debug("stopped streaming an answer: %s", e)
                self._streaming = False
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.interval)

    async def _sync(self, parts: list[str], extra: dict[str, Any]) -> None:
        for i, part in enumerate(parts):
            kw = extra if i == len(parts) - 1 else {}
            if i >= len(self.messages):
                self.messages.append(await self._send(part, **kw))
                self._shown.append(part)
            elif self._shown[i] != part or kw:
                try:
                    edited = await self.messages[i].edit(content=part, **kw)
                except discord.NotFound:
                    # Someone deleted this message meanwhile: post the text again instead.
                    edited = await self._send(part, **kw)
                self.messages[i] = edited or self.messages[i]
                self._shown[i] = part
