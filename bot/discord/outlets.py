"""Where a Discord answer goes, and what it answers: the dispatcher's outlets for a message (a thread of its own for
a question in a channel, else right there) and for an interaction (/ask, "Try another answer"), and the conversation
so far as read from Discord (a thread's messages, or the chain of replies a message answers).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import discord

from bot.discord.format import thread_title
from bot.discord.payloads import message_data
from bot.discord.stream import AnswerPoster, channel_sender, interaction_sender, typing
from bot.discord.translate import conversation
from bot.events import IncomingMessage
from core.config import Settings
from core.text import is_blank
from core.types import Message, Reply, Source

__all__ = ["InteractionOutlet", "MessageOutlet", "Posting", "read_history", "sources_embed"]

logger = logging.getLogger(__name__)


class Posting:
    """What every outlet of one front end shares: settings, the client (for the bot's own id), the streaming
    interval, and `buttons(reply, private=...)` -> the view under an answer (or None)."""

    def __init__(self, settings: Settings, client: discord.Client, *, edit_interval: float,
                 buttons: Callable[..., discord.ui.View | None]) -> None:
        self.settings, self.client, self.edit_interval, self.buttons = settings, client, edit_interval, buttons

    @property
    def bot_user_id(self) -> str:
        return str(self.client.user.id) if self.client.user is not None else ""


def sources_embed(sources: list[Source]) -> discord.Embed | None:
    """The documents an answer drew on, as a numbered list of links (None when there are none)."""
    if not sources:
        return None
    lines = []
    for i, s in enumerate(sources[:10], 1):
        title = (s.title or s.uri or s.id).replace("[", "(").replace("]", ")")[:200]
        link = s.uri.startswith(("http://", "https://"))
        lines.append(f"{i}. [{title}]({s.uri})" if link else f"{i}. {title}")
    return discord.Embed(title="Sources", description="\n".join(lines)[:4096])


async def _destination(posting: Posting, message: discord.Message, channel: Any,
                       msg: IncomingMessage) -> tuple[Any, discord.MessageReference | None, str]:
    """(where to post, what the first message replies to, the conversation's thread id); where is None when the
    question was deleted before the thread could be made."""
    reply_to = message.to_reference(fail_if_not_exists=False)  # a deleted question: post without the link
    if msg.is_dm:
        return channel, None, msg.thread
    if isinstance(channel, discord.Thread) or not isinstance(channel, discord.TextChannel):
        return channel, reply_to, msg.thread
    # A greeting or a file without text gets a short inline answer, not a thread of its own.
    if not posting.settings.discord_threads or is_blank(msg.text):
        return channel, reply_to, msg.thread
    try:
        thread = await message.create_thread(name=thread_title(msg.text), auto_archive_duration=1440)
    except discord.NotFound:
        logger.info("question %s was deleted before it could be answered", message.id)
        return None, None, ""
    except discord.HTTPException as e:
        if e.code == 160004:  # a thread already exists for this message (e.g. made by a person)
            existing = channel.get_thread(message.id)
            if existing is not None:
                return existing, None, str(existing.id)
        logger.warning("could not start a thread in #%s (%s); answering in the channel", channel, e)
        return channel, reply_to, msg.thread
    return thread, None, str(thread.id)


async def read_history(posting: Posting, message: discord.Message | None, channel: Any, *,
                       in_thread: bool) -> tuple[Message, ...] | None:
    """The conversation so far as read from Discord: the thread's messages, or the chain of replies this message
    answers. () for a fresh question in a channel (or when Discord won't say); None in a DM (the engine's
    memory)."""
    limit = max(2, 2 * posting.settings.history_turns)
    try:
        if in_thread:
            found = await _thread_messages(channel, message, limit)
        elif message is not None and message.reference is not None:
            found = await _reply_chain(message, limit)
        else:
            return None if message is not None and message.guild is None else ()
    except discord.HTTPException as e:
        logger.info("could not read the conversation so far (%s); answering without it", e)
        return ()
    return conversation([message_data(m) for m in found], bot_user_id=posting.bot_user_id)


async def _thread_messages(thread: discord.Thread, before: discord.Message | None,
                           limit: int) -> list[discord.Message]:
    found = [m async for m in thread.history(limit=limit, before=before)]
    found.reverse()
    # A thread started from a message: that message (the first question) lives in the parent channel.
    parent = thread.parent
    if isinstance(parent, discord.TextChannel) and not any(m.id == thread.id for m in found):
        starter = thread.starter_message
        if starter is None:
            with contextlib.suppress(discord.NotFound, discord.Forbidden):
                starter = await parent.fetch_message(thread.id)
        if starter is not None:
            found.insert(0, starter)
    return found


async def _reply_chain(message: discord.Message, limit: int) -> list[discord.Message]:
    chain: list[discord.Message] = []
    ref = message.reference
    while ref is not None and ref.message_id is not None and len(chain) < limit:
        if ref.type is not discord.MessageReferenceType.reply or ref.channel_id != message.channel.id:
            break  # a forward or a cross-channel link: not this conversation
        previous = ref.resolved if isinstance(ref.resolved, discord.Message) else ref.cached_message
        if previous is None:
            try:
                previous = await message.channel.fetch_message(ref.message_id)
            except discord.NotFound:
                break  # deleted: the chain ends here
        chain.append(previous)
        ref = previous.reference
    chain.reverse()
    return chain


class MessageOutlet:
    """The dispatcher's outlet for a message: a thread of its own for a question in a channel (else right there),
    the conversation so far read from Discord, the typing indicator while the answer streams."""

    def __init__(self, posting: Posting, message: discord.Message, channel: Any) -> None:
        self.posting, self.message, self.channel = posting, message, channel
        self.poster: AnswerPoster | None = None
        self._typing = contextlib.AsyncExitStack()

    async def prepare(self, msg: IncomingMessage) -> IncomingMessage:
        return msg

    async def open(self, msg: IncomingMessage) -> IncomingMessage | None:
        posting = self.posting
        target, reference, thread = await _destination(posting, self.message, self.channel, msg)
        if target is None:
            return None
        history = await read_history(posting, self.message, self.channel,
                                     in_thread=isinstance(self.channel, discord.Thread))
        self.poster = AnswerPoster(channel_sender(target, reference), interval=posting.edit_interval)
        await self._typing.enter_async_context(typing(target))
        return replace(msg, thread=thread, history=history)

    def feed(self, text: str) -> None:
        if self.poster is not None:
            self.poster.feed(text)

    async def deliver(self, reply: Reply) -> list[str]:
        await self._typing.aclose()
        assert self.poster is not None
        messages = await self.poster.finish(reply.answer, embed=sources_embed(reply.sources),
                                            view=self.posting.buttons(reply, private=False))
        return [str(m.id) for m in messages]

    async def fail(self, text: str) -> None:
        await self._typing.aclose()
        if self.poster is not None:
            await self.poster.finish(text)


class InteractionOutlet:
    """The dispatcher's outlet for an interaction (/ask, "Try another answer"), already deferred: the answer
    replaces "thinking…", later parts follow up; ephemeral ones get vote buttons (they cannot get reactions)."""

    def __init__(self, posting: Posting, interaction: discord.Interaction, *, ephemeral: bool) -> None:
        self.posting, self.ephemeral = posting, ephemeral
        self.poster = AnswerPoster(interaction_sender(interaction, ephemeral=ephemeral),
                                   interval=posting.edit_interval)

    async def prepare(self, msg: IncomingMessage) -> IncomingMessage:
        return msg

    async def open(self, msg: IncomingMessage) -> IncomingMessage | None:
        return msg

    def feed(self, text: str) -> None:
        self.poster.feed(text)

    async def deliver(self, reply: Reply) -> list[str]:
        messages = await self.poster.finish(reply.answer, embed=sources_embed(reply.sources),
                                            view=self.posting.buttons(reply, private=self.ephemeral))
        return [str(m.id) for m in messages]

    async def fail(self, text: str) -> None:
        await self.poster.finish(text)
