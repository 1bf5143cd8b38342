"""Discord front end (discord.py): mentions, DMs, threads, `/ask`, reactions and buttons as feedback.

    await run_discord(settings, dispatcher, ready=event)   # runs until cancelled

Discord payloads become `bot.events` values in `bot.discord.translate` (pure functions on gateway payloads, read off
discord.py's objects by `bot.discord.payloads`); nothing of discord.py goes past the package. Intents used (see
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

from bot.discord.outlets import InteractionOutlet, MessageOutlet, Posting, read_history, sources_embed
from bot.discord.payloads import channel_data, interaction_data, message_data, parent_data, reaction_data
from bot.discord.translate import (
    BUTTON_ID,
    ask_message,
    button_press,
    correction,
    custom_id,
    message_event,
    reaction_event,
)
from bot.dispatcher import Dispatcher
from core.config import ConfigError, Settings
from core.text import clean_text
from core.types import Reply

__all__ = ["DiscordFrontEnd", "discord_endpoints", "discord_intents", "run_discord", "sources_embed"]

logger = logging.getLogger(__name__)

MODES = ("chat", "rag", "agent", "auto")
VOTE_THANKS = "Thanks — your feedback helps me improve."
VOTE_FAILED = "Sorry — I could not record that just now. Please try again in a moment."
CORRECTION_FAILED = "Sorry — I couldn't keep that correction (the answer may be gone). Please try again later."

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
        self.posting = Posting(settings, self.client, edit_interval=edit_interval, buttons=self._buttons)
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
        me = self.client.user
        if me is None:
            return
        role = message.guild.self_role if message.guild is not None else None
        msg = message_event(message_data(message), channel=channel_data(channel) or {}, parent=parent_data(channel),
                            bot_user_id=str(me.id), bot_role_id=str(role.id) if role is not None else "")
        if msg is not None:
            msg = replace(msg, channel_name=self._profile_name(msg.channel, msg.channel_name, message.guild))
            await self.dispatcher.handle(msg, MessageOutlet(self.posting, message, channel))

    def _profile_name(self, channel_id: str, channel_name: str, guild: discord.Guild | None) -> str:
        """The channel's name, unless only its guild has a profile: then the guild's key, so the engine
        (which looks profiles up by channel id and name) applies the guild profile."""
        def configured(key: str) -> bool:
            return bool(key) and (key in self.settings.channels or key.lstrip("#") in self.settings.channels)

        if guild is None or configured(channel_id) or configured(channel_name):
            return channel_name
        return next((key for key in (str(guild.id), guild.name) if configured(key)), channel_name)

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
        # Discord wants an acknowledgement within 3 s: show "thinking…" first, then do the work. The options
        # themselves are read from the payload by translate (discord.py's parsed arguments only pick `private`).
        await interaction.response.defer(thinking=True, ephemeral=private)
        channel = interaction.channel
        in_thread = isinstance(channel, discord.Thread)
        history = await read_history(self.posting, None, channel, in_thread=True) if in_thread else \
            (None if interaction.guild_id is None else ())
        msg = ask_message(interaction_data(interaction),
                          channel=channel_data(channel) or {"id": str(interaction.channel_id or "")},
                          parent=parent_data(channel), bot_user_id=self.posting.bot_user_id)
        msg = replace(msg, history=history, private=private,
                      channel_name=self._profile_name(msg.channel, msg.channel_name, interaction.guild))
        await self.dispatcher.handle(msg, InteractionOutlet(self.posting, interaction, ephemeral=private))

    # -- feedback ------------------------------------------------------------------------------------------

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await _guarded(self._reaction(payload, added=True), f"reaction on {payload.message_id}")

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await _guarded(self._reaction(payload, added=False), f"reaction on {payload.message_id}")

    async def _reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        reaction = reaction_event(reaction_data(payload), added=added, bot_user_id=self.posting.bot_user_id)
        if reaction is None:
            return
        async with self._reactions:
            await self.dispatcher.reaction(reaction)

    async def on_button(self, interaction: discord.Interaction) -> None:
        """One of Kaizen's buttons (see `_feedback_button`): 👍/👎 votes, "Correct this answer", "Try another"."""
        press = button_press(interaction_data(interaction))
        if press is None:
            return
        if press.action in ("up", "down"):
            answer = VOTE_THANKS
            try:
                await self.dispatcher.button(press)
            except Exception:  # the press must still be acknowledged, or Discord shows "interaction failed"
                logger.exception("could not record a %s vote on %s", press.action, press.interaction_id)
                answer = VOTE_FAILED
            await interaction.response.send_message(answer, ephemeral=True)
            return
        if press.action == "correct":  # a dialog with the answer's text to edit; its submission is the correction
            answer = interaction.message.content if interaction.message is not None else ""
            await interaction.response.send_modal(_CorrectionModal(self, press.interaction_id, clean_text(answer)))
            return
        # "Try another answer": the dispatcher's flow, rate-limited like a question (it runs the model again).
        ephemeral = interaction.message is not None and interaction.message.flags.ephemeral
        await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        await self.dispatcher.handle_another(press, InteractionOutlet(self.posting, interaction, ephemeral=ephemeral))


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
        press = correction(interaction_data(interaction), self.interaction_id)
        try:
            text = await self.front.dispatcher.correct(press)
        except Exception as e:
            logger.info("correction of %s not kept: %s", self.interaction_id, e)
            await interaction.response.send_message(CORRECTION_FAILED, ephemeral=True)
            return
        await interaction.response.send_message(f"✏️ Corrected by <@{press.user}>:\n{text}"[:2000])


def _feedback_button(front: DiscordFrontEnd) -> type[discord.ui.DynamicItem[discord.ui.Button]]:
    """The class of Kaizen's buttons for this front end. The reply id lives in the custom id, so buttons keep
    working after a restart (discord.py routes them by the template, not by a stored view)."""
    class FeedbackButton(discord.ui.DynamicItem[discord.ui.Button],
                         template=BUTTON_ID.pattern):
        LOOKS = {"up": ("Helpful", "👍"), "down": ("Not helpful", "👎"),
                 "another": ("Try another answer", "🔄"), "correct": ("Correct this answer", "✏️")}

        def __init__(self, action: str, interaction_id: str) -> None:
            label, emoji = self.LOOKS[action]
            super().__init__(discord.ui.Button(label=label, emoji=emoji, style=discord.ButtonStyle.secondary,
                                               custom_id=custom_id(action, interaction_id)))
            self.action = action
            self.interaction_id = interaction_id

        @classmethod
        async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                                 match: Any) -> FeedbackButton:
            return cls(match["action"], match["id"])

        async def callback(self, interaction: discord.Interaction) -> None:
            await _guarded(front.on_button(interaction),
                           f"button {self.action} on {self.interaction_id}")

    return FeedbackButton


async def _guarded(work: Awaitable[None], what: str) -> None:
    """Run one event's handling; a failure is logged with its event and never reaches discord.py's loop."""
    try:
        await work
    except Exception:
        logger.exception("Discord front end failed on %s", what)
