"""Discord gateway payloads -> `bot.events` values: pure functions on the JSON Discord sends (the `d` of
MESSAGE_CREATE, MESSAGE_REACTION_ADD/REMOVE and INTERACTION_CREATE, and channel objects), tested on recorded payloads
(tests/data/discord). Nothing here imports discord.py; `bot.discord.payloads` reads the same fields off discord.py's
objects.

Every event carries the same identity: platform "discord", workspace = the guild id ("" in a DM), channel = the
channel id (a thread's messages belong to its parent channel, the thread id is the conversation), so document access
is decided the same way for a mention, a follow-up in a thread and `/ask`. Every user string passes
`core.text.clean_text` here.
"""

from __future__ import annotations

import re
from typing import Any

from bot.conversation import merge_turns
from bot.discord.format import strip_mentions
from bot.events import ButtonPress, IncomingMessage, Reaction
from core.text import clean_text
from core.types import Message

__all__ = ["BUTTON_ID", "PLATFORM", "THREAD_TYPES", "ask_message", "button_press", "conversation",
           "correction", "custom_id", "message_event", "modal_text", "reaction_event"]

PLATFORM = "discord"
# Channel types: 1 = DM, 3 = group DM; 10, 11, 12 = announcement, public and private threads.
THREAD_TYPES = frozenset({10, 11, 12})
# Message types people write: 0 = default, 19 = reply. Joins, pins and thread notices are not questions.
QUESTION_TYPES = frozenset({0, 19})
# In a conversation's history the bot's own /ask answers (20 = chat input command) count too.
CONVERSATION_TYPES = QUESTION_TYPES | {20}
# The custom id of Kaizen's buttons: the answer's id travels in it, so a button works after a restart.
BUTTON_ID = re.compile(r"kaizen:(?P<action>up|down|another|correct):(?P<id>[0-9a-f]{32})")
ASK_OPTIONS = ("question", "preset", "mode", "private")


def _ids(*values: Any) -> set[int]:
    return {int(v) for v in values if str(v or "").isdigit()}


def _where(channel: dict[str, Any], parent: dict[str, Any] | None) -> tuple[str, str, str, bool]:
    """(channel id, thread id or "", channel name, in a thread) of a channel object (and its parent's, for a
    thread)."""
    parent_id = str(channel.get("parent_id") or (parent or {}).get("id") or "")
    if channel.get("type") in THREAD_TYPES and parent_id:  # a thread whose channel is unknown counts as a channel
        return parent_id, str(channel.get("id", "")), clean_text((parent or {}).get("name") or ""), True
    return str(channel.get("id", "")), "", clean_text(channel.get("name") or ""), False


def message_event(data: dict[str, Any], *, channel: dict[str, Any], parent: dict[str, Any] | None = None,
                  bot_user_id: str, bot_role_id: str = "") -> IncomingMessage | None:
    """A MESSAGE_CREATE payload as a neutral message, or None for system messages (joins, pins, thread notices).
    `channel` is the channel object it was posted in (for a thread, `parent` is the thread's channel);
    `bot_role_id` is the bot's managed role in this guild ("" when none). Bots' messages come back with
    from_bot=True (the dispatcher skips them)."""
    if data.get("type", 0) not in QUESTION_TYPES:
        return None
    author = data.get("author") or {}
    channel_id, thread, channel_name, in_thread = _where(channel, parent)
    guild = str(data.get("guild_id") or channel.get("guild_id") or "")
    mentioned = any(str(u.get("id")) == bot_user_id for u in data.get("mentions") or ()) or (
        bool(bot_role_id) and bot_role_id in {str(r) for r in data.get("mention_roles") or ()})
    return IncomingMessage(
        platform=PLATFORM,
        text=clean_text(strip_mentions(clean_text(data.get("content") or ""), _ids(bot_user_id, bot_role_id))),
        user=str(author.get("id", "")),
        channel=channel_id,
        thread=thread,
        workspace=guild,
        channel_name=channel_name,
        message_ref=str(data.get("id", "")),
        is_dm=not guild,
        mentioned=mentioned,
        in_bot_thread=in_thread and bool(bot_user_id) and str(channel.get("owner_id") or "") == bot_user_id,
        from_bot=bool(author.get("bot")) or str(author.get("id")) == bot_user_id or bool(data.get("webhook_id")),
        event_id=f"{PLATFORM}:message:{data.get('id', '')}",
        has_attachments=bool(data.get("attachments") or data.get("sticker_items")),
    )


def conversation(messages: list[dict[str, Any]], *, bot_user_id: str) -> tuple[Message, ...]:
    """Messages of a thread or reply chain (oldest first, message payloads) as conversation turns: the bot's are
    the assistant's, everyone else's the user's; consecutive messages of one side are one turn (a split answer).
    System messages and text that shows nothing are skipped."""
    said = []
    for m in messages:
        if m.get("type", 0) not in CONVERSATION_TYPES:
            continue
        text = strip_mentions(clean_text(m.get("content") or ""), _ids(bot_user_id))
        mine = bool(bot_user_id) and str((m.get("author") or {}).get("id")) == bot_user_id
        said.append(("assistant" if mine else "user", text))
    return merge_turns(said)


def reaction_event(data: dict[str, Any], *, added: bool, bot_user_id: str) -> Reaction | None:
    """A MESSAGE_REACTION_ADD (added=True) or _REMOVE payload as a neutral reaction, or None for the bot's own
    reactions and other bots' (a member payload, sent with additions in guilds, says who is a bot). Any emoji
    passes: the dispatcher keeps thumbs only."""
    user = str(data.get("user_id", ""))
    if not user or user == bot_user_id or ((data.get("member") or {}).get("user") or {}).get("bot"):
        return None
    emoji = data.get("emoji") or {}
    return Reaction(
        platform=PLATFORM,
        user=user,
        emoji=emoji.get("name") or str(emoji.get("id") or ""),
        message_ref=str(data.get("message_id", "")),
        added=added,
        channel=str(data.get("channel_id", "")),
    )


def _user(data: dict[str, Any]) -> str:
    """Who made an interaction: `member.user` in a guild, `user` in a DM."""
    return str(((data.get("member") or {}).get("user") or data.get("user") or {}).get("id", ""))


def ask_message(data: dict[str, Any], *, channel: dict[str, Any], parent: dict[str, Any] | None = None,
                bot_user_id: str) -> IncomingMessage:
    """An INTERACTION_CREATE of `/ask` (type 2) as a neutral message: the options question, preset, mode and
    private. Raises ValueError when it is not an /ask command."""
    command = data.get("data") or {}
    if data.get("type") != 2 or command.get("name") != "ask":
        raise ValueError(f"not an /ask command: type {data.get('type')!r}, name {command.get('name')!r}")
    options = {o.get("name"): o.get("value") for o in command.get("options") or () if o.get("name") in ASK_OPTIONS}
    channel_id, thread, channel_name, in_thread = _where(channel, parent)
    guild = str(data.get("guild_id") or "")
    preset, mode = options.get("preset"), options.get("mode")
    return IncomingMessage(
        platform=PLATFORM,
        text=clean_text(str(options.get("question") or "")),
        user=_user(data),
        channel=channel_id or str(data.get("channel_id", "")),
        thread=thread,
        workspace=guild,
        channel_name=channel_name,
        message_ref=str(data.get("id", "")),
        is_dm=not guild,
        mentioned=True,
        in_bot_thread=in_thread and bool(bot_user_id) and str(channel.get("owner_id") or "") == bot_user_id,
        event_id=f"{PLATFORM}:interaction:{data.get('id', '')}",
        preset=clean_text(str(preset)) if preset is not None else None,
        mode=clean_text(str(mode)) if mode is not None else None,
        private=options.get("private") is True,
    )


def custom_id(action: str, interaction_id: str) -> str:
    """The custom id of Kaizen's `action` button under answer `interaction_id` (see BUTTON_ID)."""
    made = f"kaizen:{action}:{interaction_id}"
    if not BUTTON_ID.fullmatch(made):
        raise ValueError(f"no button {action!r} for answer id {interaction_id!r}")
    return made


def button_press(data: dict[str, Any]) -> ButtonPress | None:
    """A component INTERACTION_CREATE (type 3) on one of Kaizen's buttons as a press (action up, down, another or
    correct), or None for any other component."""
    component = data.get("data") or {}
    if data.get("type") != 3 or not (found := BUTTON_ID.fullmatch(str(component.get("custom_id", "")))):
        return None
    return ButtonPress(platform=PLATFORM, user=_user(data), action=found["action"], interaction_id=found["id"])


def modal_text(data: dict[str, Any]) -> str:
    """The text typed into a modal submit (INTERACTION_CREATE type 5): the values of its text inputs, joined by
    line breaks, cleaned; "" when there are none."""
    values: list[str] = []

    def walk(components: Any) -> None:
        for c in components or ():
            if c.get("type") == 4 and isinstance(c.get("value"), str):  # a text input
                values.append(c["value"])
            walk(c.get("components"))
            if isinstance(c.get("component"), dict):  # a label wrapping one input
                walk([c["component"]])

    walk((data.get("data") or {}).get("components"))
    return clean_text("\n".join(values)).strip()


def correction(data: dict[str, Any], interaction_id: str) -> ButtonPress:
    """The submit (INTERACTION_CREATE type 5) of the "Correct this answer" dialog of answer `interaction_id`, as a
    "correct" press carrying the corrected text."""
    return ButtonPress(platform=PLATFORM, user=_user(data), action="correct", interaction_id=interaction_id,
                       reason=modal_text(data))
