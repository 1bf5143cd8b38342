"""Discord front end (discord.py): mentions, DMs, threads, `/ask`, reactions and buttons as feedback.

    await run_discord(settings, dispatcher, ready=event)   # runs until cancelled

Discord payloads become `bot.events` values here; nothing of discord.py goes further. Intents used (see
`discord_intents`): guilds, guild_messages, dm_messages, message_content (privileged: switch it on in the
Developer Portal), guild_reactions, dm_reactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator
from dataclasses import replace
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.discord.format import strip_mentions, thread_title
from bot.discord.stream import AnswerPoster, channel_sender, interaction_sender, typing
from bot.dispatcher import Dispatcher
from bot.events import ButtonPress, IncomingMessage, Reaction
from core.config import ConfigError, Settings
from core.text import clean_text, is_blank
from core.types import Message, Reply, Source

__all__ = ["DiscordFrontEnd", "discord_endpoints", "discord_intents", "run_discord", "sources_embed"]

logger = logging.getLogger(__name__)

PLATFORM = "discord"
MODES = ("chat", "rag", "agent", "auto")
VOTE_THANKS = "Thanks — your feedback helps me improve."
VOTE_FAILED = "Sorry — I could not record that just now. Please try again in a moment."
CORRECTION_FAILED = "Sorry — I couldn't keep that correction (the answer may be gone). Please try again later."
# Messages people write (and the bot's own /ask answers, for thread history); system messages are skipped.
_CONVERSATION_TYPES = (discord.MessageType.default, discord.MessageType.reply,
                       discord.MessageType.chat_input_command)


def discord_intents() -> discord.Intents:
    """The gateway intents Kaizen needs, and nothing more (no members or presences)."""
    intents = discord.Intents.none()
    intents.guilds = True  # channels and threads (THREAD_CREATE) in the cache
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True  # privileged: the text of messages that do not mention the bot
    intents.guild_reactions = True  # 👍/👎 votes
    intents.dm_reactions = True
    return intents


@contextlib.contextmanager
def discord_endpoints(settings: Settings) -> Iterator[None]:
    """Point discord.py at `discord_api_url` / `discord_gateway_url` (a proxy, a local fake) while inside."""
    api, gateway = settings.discord_api_url.strip(), settings.discord_gateway_url.strip()
    if api and not api.startswith(("http://", "https://")):
        raise ConfigError(f"discord_api_url must be an http(s) URL like https://discord.com/api/v10, "
                          f"got {api!r}")
    if gateway and not gateway.startswith(("ws://", "wss://")):
        raise ConfigError(f"discord_gateway_url must be a ws(s) URL like wss://gateway.discord.gg, "
                          f"got {gateway!r}")
    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    # Both are class attributes read on every request / connect; overriding them is all it takes.
    if api:
        Route.BASE = api.rstrip("/")
    if gateway:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


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


async def run_discord(settings: Settings, dispatcher: Dispatcher, *, ready: asyncio.Event | None = None,
                      edit_interval: float = 1.0, guild_ready_timeout: float = 2.0) -> None:
    """Connect to Discord with `settings.discord_token` and answer until cancelled. `ready` is set once
    connected (and `/ask` synced). Raises ConfigError for a rejected token or a missing privileged intent."""
    token = settings.discord_token.get_secret_value().strip()
    if not token:
        raise ConfigError("DISCORD_TOKEN is not set: create a bot in the Discord Developer Portal "
                          "and export its token")
    front = DiscordFrontEnd(settings, dispatcher, ready=ready, edit_interval=edit_interval,
                            guild_ready_timeout=guild_ready_timeout)
    with discord_endpoints(settings):
        try:
            async with front.client:
                await front.client.start(token)
        except discord.LoginFailure:
            raise ConfigError("Discord rejected DISCORD_TOKEN (401): copy the bot token again from the "
                              "Developer Portal (Bot → Reset Token)") from None
        except discord.PrivilegedIntentsRequired:
            raise ConfigError("Discord refused the Message Content intent: enable it in the Developer Portal "
                              "(Bot → Privileged Gateway Intents → Message Content Intent)") from None


class DiscordFrontEnd:
    """Owns the discord.py client; its handlers translate events and hand them to the dispatcher."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher, *, ready: asyncio.Event | None = None,
                 edit_interval: float = 1.0, guild_ready_timeout: float = 2.0) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.ready = ready
        self.edit_interval = edit_interval
        # Kaizen has no voice: no warnings about voice libraries at start.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        client_class = discord.AutoShardedClient if settings.discord_sharded else discord.Client
        self.client: discord.Client = client_class(
            intents=discord_intents(),
            chunk_guilds_at_startup=False,  # no members intent: nothing to chunk
            guild_ready_timeout=guild_ready_timeout,
            # An answer never pings anyone, @everyone included.
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.tree = app_commands.CommandTree(self.client)
        self.tree.add_command(self._ask_command())
        self.client.setup_hook = self._setup_hook  # type: ignore[method-assign]
        handlers = (self.on_ready, self.on_message, self.on_raw_reaction_add, self.on_raw_reaction_remove)
        for handler in handlers:
            self.client.event(handler)
        self._button = _feedback_button(self)
        self.client.add_dynamic_items(self._button)
        # Reactions are applied one at a time, in the order Discord sent them (add + remove stays removed).
        self._reactions = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def _setup_hook(self) -> None:
        # /ask is an extra: whatever stops its registration is logged, and mentions and DMs are answered anyway.
        try:
            await self.tree.sync()
        except Exception as e:
            logger.warning("could not register /ask (%s); mentions and DMs still work. Invite the bot with the "
                           "applications.commands scope", e)

    async def on_ready(self) -> None:
        logger.info("connected to Discord as %s in %d guild(s)", self.client.user, len(self.client.guilds))
        if self.ready is not None:
            self.ready.set()

    # -- messages ------------------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        await _guarded(self._on_message(message), f"message {message.id}")

    async def _on_message(self, message: discord.Message) -> None:
        channel = message.channel
        if isinstance(channel, discord.PartialMessageable) and message.guild and not message.author.bot:
            # A thread that is not cached (e.g. unarchived by this message): look it up once.
            with contextlib.suppress(discord.HTTPException):
                channel = await self.client.fetch_channel(channel.id)  # type: ignore[assignment]
        msg = self._incoming(message, channel)
        if msg is not None:
            await self.dispatcher.handle(msg, _MessageOutlet(self, message, channel))

    def _incoming(self, message: discord.Message, channel: Any) -> IncomingMessage | None:
        """The neutral form of a message, or None for system messages (joins, pins, thread notices)."""
        me = self.client.user
        if me is None or message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return None
        guild = message.guild
        own_role = guild.self_role if guild is not None else None
        ids = {me.id} | ({own_role.id} if own_role is not None else set())
        in_thread = isinstance(channel, discord.Thread)
        parent = channel.parent if in_thread else None
        channel_id = str(channel.parent_id if in_thread else channel.id)
        channel_name = getattr(parent if in_thread else channel, "name", "") or ""
        return IncomingMessage(
            platform=PLATFORM,
            text=clean_text(strip_mentions(clean_text(message.content), ids)),
            user=str(message.author.id),
            channel=channel_id,
            thread=str(channel.id) if in_thread else "",
            workspace=str(guild.id) if guild is not None else "",
            channel_name=self._profile_name(channel_id, clean_text(channel_name), guild),
            message_ref=str(message.id),
            is_dm=guild is None,
            mentioned=any(u.id == me.id for u in message.mentions)
            or (own_role is not None and own_role in message.role_mentions),
            in_bot_thread=in_thread and channel.owner_id == me.id,
            from_bot=message.author.bot or message.author.id == me.id or message.webhook_id is not None,
            event_id=f"{PLATFORM}:message:{message.id}",
            has_attachments=bool(message.attachments or message.stickers),
        )

    def _profile_name(self, channel_id: str, channel_name: str, guild: discord.Guild | None) -> str:
        """The channel's name, unless only its guild has a profile: then the guild's key, so the engine
        (which looks profiles up by channel id and name) applies the guild profile."""
        def configured(key: str) -> bool:
            return bool(key) and (key in self.settings.channels or key.lstrip("#") in self.settings.channels)

        if guild is None or configured(channel_id) or configured(channel_name):
            return channel_name
        return next((key for key in (str(guild.id), guild.name) if configured(key)), channel_name)

    async def _destination(self, message: discord.Message, channel: Any,
                           msg: IncomingMessage) -> tuple[Any, discord.MessageReference | None, str]:
        """(where to post, what the first message replies to, the conversation's thread id); where is None
        when the question was deleted before the thread could be made."""
        reply_to = message.to_reference(fail_if_not_exists=False)  # a deleted question: post without the link
        if msg.is_dm:
            return channel, None, msg.thread
        if isinstance(channel, discord.Thread) or not isinstance(channel, discord.TextChannel):
            return channel, reply_to, msg.thread
        # A greeting or a file without text gets a short inline answer, not a thread of its own.
        if not self.settings.discord_threads or is_blank(msg.text):
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

    async def _history(self, message: discord.Message | None, channel: Any, *,
                       in_thread: bool) -> tuple[Message, ...] | None:
        """The conversation so far as read from Discord: the thread's messages, or the chain of replies
        this message answers. () for a fresh question in a channel; None in a DM (the engine's memory)."""
        limit = max(2, 2 * self.settings.history_turns)
        try:
            if in_thread:
                found = await self._thread_messages(channel, message, limit)
            elif message is not None and message.reference is not None:
                found = await self._reply_chain(message, limit)
            else:
                return None if message is not None and message.guild is None else ()
        except discord.HTTPException as e:
            logger.info("could not read the conversation so far (%s); answering without it", e)
            return ()
        return self._as_history(found)

    async def _thread_messages(self, thread: discord.Thread, before: discord.Message | None,
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

    async def _reply_chain(self, message: discord.Message, limit: int) -> list[discord.Message]:
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

    def _as_history(self, found: list[discord.Message]) -> tuple[Message, ...]:
        me = self.client.user
        history: list[Message] = []
        for m in found:
            if m.type not in _CONVERSATION_TYPES:
                continue
            text = clean_text(strip_mentions(clean_text(m.content), {me.id} if me else set()))
            if is_blank(text):
                continue
            role = "assistant" if me is not None and m.author.id == me.id else "user"
            if history and history[-1].role == role:  # the parts of a split answer are one turn
                history[-1] = Message(role, history[-1].content + "\n" + text)
            else:
                history.append(Message(role, text))
        return tuple(history)

    # -- posting -------------------------------------------------------------------------------------------

    def _buttons(self, reply: Reply, *, private: bool) -> discord.ui.View | None:
        """"Try another answer" under every model answer; 👍/👎 buttons too when private (ephemeral messages
        cannot get reactions)."""
        if not reply.called_model:
            return None
        button = self._button
        view = discord.ui.View(timeout=None)
        if private:
            view.add_item(button("up", reply.id))
            view.add_item(button("down", reply.id))
        view.add_item(button("another", reply.id))
        view.add_item(button("correct", reply.id))
        return view

    # -- /ask ----------------------------------------------------------------------------------------------

    def _ask_command(self) -> app_commands.Command:
        front = self

        async def ask(interaction: discord.Interaction, question: str, preset: str | None = None,
                      mode: str | None = None, private: bool = False) -> None:
            await _guarded(front._ask(interaction, question, preset=preset, mode=mode, private=private),
                           f"/ask {interaction.id}")

        presets = sorted(self.settings.presets)[:25]  # Discord allows 25 choices
        ask = app_commands.choices(preset=[app_commands.Choice(name=p, value=p) for p in presets],
                                   mode=[app_commands.Choice(name=m, value=m) for m in MODES])(ask)
        ask = app_commands.describe(question="What you want to know",
                                    preset="How to decode (default: the channel's preset)",
                                    mode="chat, rag (from the docs), agent (with tools) or auto",
                                    private="Only you see the answer")(ask)
        return app_commands.Command(name="ask", description="Ask Kaizen a question", callback=ask)

    async def _ask(self, interaction: discord.Interaction, question: str, *, preset: str | None,
                   mode: str | None, private: bool) -> None:
        # Discord wants an acknowledgement within 3 s: show "thinking…" first, then do the work.
        await interaction.response.defer(thinking=True, ephemeral=private)
        channel = interaction.channel
        in_thread = isinstance(channel, discord.Thread)
        channel_id = str(channel.parent_id if in_thread else interaction.channel_id)
        parent = channel.parent if in_thread else channel
        history = await self._history(None, channel, in_thread=True) if in_thread else \
            (None if interaction.guild_id is None else ())
        msg = IncomingMessage(
            platform=PLATFORM, text=clean_text(question), user=str(interaction.user.id), channel=channel_id,
            thread=str(channel.id) if in_thread else "",
            workspace=str(interaction.guild_id or ""),
            channel_name=self._profile_name(channel_id, clean_text(getattr(parent, "name", "")), interaction.guild),
            message_ref=str(interaction.id), is_dm=interaction.guild_id is None, mentioned=True,
            in_bot_thread=in_thread and channel.owner_id == getattr(self.client.user, "id", None),
            event_id=f"{PLATFORM}:interaction:{interaction.id}", history=history, preset=preset, mode=mode,
            private=private,
        )
        await self.dispatcher.handle(msg, _InteractionOutlet(self, interaction, ephemeral=private))

    # -- feedback ------------------------------------------------------------------------------------------

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await _guarded(self._reaction(payload, added=True), f"reaction on {payload.message_id}")

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await _guarded(self._reaction(payload, added=False), f"reaction on {payload.message_id}")

    async def _reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        me = self.client.user
        if me is not None and payload.user_id == me.id:
            return
        if payload.member is not None and payload.member.bot:
            return
        async with self._reactions:
            await self.dispatcher.reaction(Reaction(
                platform=PLATFORM, user=str(payload.user_id), emoji=payload.emoji.name or str(payload.emoji),
                message_ref=str(payload.message_id), added=added, channel=str(payload.channel_id),
            ))

    async def on_button(self, interaction: discord.Interaction, action: str, interaction_id: str) -> None:
        user = str(interaction.user.id)
        if action in ("up", "down"):
            answer = VOTE_THANKS
            try:
                await self.dispatcher.button(ButtonPress(PLATFORM, user, action, interaction_id))
            except Exception:  # the press must still be acknowledged, or Discord shows "interaction failed"
                logger.exception("could not record a %s vote on %s", action, interaction_id)
                answer = VOTE_FAILED
            await interaction.response.send_message(answer, ephemeral=True)
            return
        if action == "correct":  # a dialog with the answer's text to edit; its submission is the correction
            answer = interaction.message.content if interaction.message is not None else ""
            await interaction.response.send_modal(_CorrectionModal(self, interaction_id, clean_text(answer)))
            return
        # "Try another answer": the dispatcher's flow, rate-limited like a question (it runs the model again).
        ephemeral = interaction.message is not None and interaction.message.flags.ephemeral
        await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        await self.dispatcher.handle_another(ButtonPress(PLATFORM, user, "another", interaction_id),
                                             _InteractionOutlet(self, interaction, ephemeral=ephemeral))


class _CorrectionModal(discord.ui.Modal, title="Correct this answer"):
    """"Correct this answer": the answer's text to edit; on submit the correction is stored and shown."""

    def __init__(self, front: DiscordFrontEnd, interaction_id: str, answer: str) -> None:
        super().__init__(timeout=900)
        self.front, self.interaction_id = front, interaction_id
        self.text: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="What the answer should say", style=discord.TextStyle.paragraph, max_length=1900,
            default=answer[:1900] or None)
        self.add_item(self.text)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        user = str(interaction.user.id)
        press = ButtonPress(PLATFORM, user, "correct", self.interaction_id, reason=clean_text(self.text.value))
        try:
            text = await self.front.dispatcher.correct(press)
        except Exception as e:
            logger.info("correction of %s not kept: %s", self.interaction_id, e)
            await interaction.response.send_message(CORRECTION_FAILED, ephemeral=True)
            return
        await interaction.response.send_message(f"✏️ Corrected by <@{user}>:\n{text}"[:2000])


class _MessageOutlet:
    """The dispatcher's outlet for a message: a thread of its own for a question in a channel (else right there),
    the conversation so far read from Discord, the typing indicator while the answer streams."""

    def __init__(self, front: DiscordFrontEnd, message: discord.Message, channel: Any) -> None:
        self.front, self.message, self.channel = front, message, channel
        self.poster: AnswerPoster | None = None
        self._typing = contextlib.AsyncExitStack()

    async def prepare(self, msg: IncomingMessage) -> IncomingMessage:
        return msg

    async def open(self, msg: IncomingMessage) -> IncomingMessage | None:
        front = self.front
        target, reference, thread = await front._destination(self.message, self.channel, msg)
        if target is None:
            return None
        history = await front._history(self.message, self.channel, in_thread=isinstance(self.channel, discord.Thread))
        self.poster = AnswerPoster(channel_sender(target, reference), interval=front.edit_interval)
        await self._typing.enter_async_context(typing(target))
        return replace(msg, thread=thread, history=history)

    def feed(self, text: str) -> None:
        if self.poster is not None:
            self.poster.feed(text)

    async def deliver(self, reply: Reply) -> list[str]:
        await self._typing.aclose()
        assert self.poster is not None
        messages = await self.poster.finish(reply.answer, embed=sources_embed(reply.sources),
                                            view=self.front._buttons(reply, private=False))
        return [str(m.id) for m in messages]

    async def fail(self, text: str) -> None:
        await self._typing.aclose()
        if self.poster is not None:
            await self.poster.finish(text)


class _InteractionOutlet:
    """The dispatcher's outlet for an interaction (/ask, "Try another answer"), already deferred: the answer
    replaces "thinking…", later parts follow up; ephemeral ones get vote buttons (they cannot get reactions)."""

    def __init__(self, front: DiscordFrontEnd, interaction: discord.Interaction, *, ephemeral: bool) -> None:
        self.front, self.ephemeral = front, ephemeral
        self.poster = AnswerPoster(interaction_sender(interaction, ephemeral=ephemeral), interval=front.edit_interval)

    async def prepare(self, msg: IncomingMessage) -> IncomingMessage:
        return msg

    async def open(self, msg: IncomingMessage) -> IncomingMessage | None:
        return msg

    def feed(self, text: str) -> None:
        self.poster.feed(text)

    async def deliver(self, reply: Reply) -> list[str]:
        messages = await self.poster.finish(reply.answer, embed=sources_embed(reply.sources),
                                            view=self.front._buttons(reply, private=self.ephemeral))
        return [str(m.id) for m in messages]

    async def fail(self, text: str) -> None:
        await self.poster.finish(text)


def _feedback_button(front: DiscordFrontEnd) -> type[discord.ui.DynamicItem[discord.ui.Button]]:
    """The class of Kaizen's buttons for this front end. The reply id lives in the custom id, so buttons keep
    working after a restart (discord.py routes them by the template, not by a stored view)."""
    class FeedbackButton(discord.ui.DynamicItem[discord.ui.Button],
                         template=r"kaizen:(?P<action>up|down|another|correct):(?P<id>[0-9a-f]{32})"):
        LOOKS = {"up": ("Helpful", "👍"), "down": ("Not helpful", "👎"),
                 "another": ("Try another answer", "🔄"), "correct": ("Correct this answer", "✏️")}

        def __init__(self, action: str, interaction_id: str) -> None:
            label, emoji = self.LOOKS[action]
            super().__init__(discord.ui.Button(label=label, emoji=emoji, style=discord.ButtonStyle.secondary,
                                               custom_id=f"kaizen:{action}:{interaction_id}"))
            self.action = action
            self.interaction_id = interaction_id

        @classmethod
        async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                                 match: Any) -> FeedbackButton:
            return cls(match["action"], match["id"])

        async def callback(self, interaction: discord.Interaction) -> None:
            await _guarded(front.on_button(interaction, self.action, self.interaction_id),
                           f"button {self.action} on {self.interaction_id}")

    return FeedbackButton


async def _guarded(work: Awaitable[None], what: str) -> None:
    """Run one event's handling; a failure is logged with its event and never reaches discord.py's loop."""
    try:
        await work
    except Exception:
        logger.exception("Discord front end failed on %s", what)
