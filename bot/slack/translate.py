"""Slack payloads -> `bot.events` values: pure functions, tested on recorded payloads (tests/data/slack).

Every event carries the same identity: platform "slack", workspace = the team id, channel = the channel id (a
thread's messages belong to its channel), so document access is decided the same way for a mention, a DM, a
follow-up and `/ask`. Every user string passes `core.text.clean_text` here.
"""

from __future__ import annotations

from typing import Any

from bot.events import ButtonPress, IncomingMessage, Reaction, vote_value
from bot.slack.format import from_slack
from core.text import clean_text

__all__ = ["ANSWERED_SUBTYPES", "PLATFORM", "button_press", "command_message", "message_event", "reaction_event"]

PLATFORM = "slack"
# Message subtypes that carry something someone wrote; edits, deletions, joins and the like are not questions.
ANSWERED_SUBTYPES = {None, "file_share", "thread_broadcast", "me_message", "bot_message"}


def message_event(body: dict[str, Any], event: dict[str, Any], *, bot_user_id: str,
                  mentioned: bool) -> IncomingMessage | None:
    """An `app_mention` (mentioned=True) or `message` event as a neutral message, or None when it is not one
    the bot may answer (edits, deletions, channel chatter outside threads, a message its app_mention answers)."""
    subtype = event.get("subtype")
    if subtype not in ANSWERED_SUBTYPES:
        return None
    channel, ts, raw = event.get("channel", ""), event.get("ts", ""), clean_text(event.get("text") or "")
    is_dm = event.get("channel_type") == "im" or channel.startswith("D")
    if not mentioned and not is_dm:
        if bot_user_id and f"<@{bot_user_id}" in raw:
            return None  # a channel message that mentions us: its app_mention event answers it
        if not event.get("thread_ts") or event.get("thread_ts") == ts:
            return None  # channel chatter outside threads is never for us
    return IncomingMessage(
        platform=PLATFORM,
        text=clean_text(from_slack(raw, bot_user_id=bot_user_id)),
        user=event.get("user") or event.get("bot_id") or "",
        channel=channel,
        thread=event.get("thread_ts") or ts,
        workspace=body.get("team_id") or event.get("team") or "",
        # The user's message: an edit re-delivers it (same channel and ts) under a new event id.
        message_ref=f"{channel}:{ts}",
        is_dm=is_dm,
        mentioned=mentioned,
        from_bot=bool(event.get("bot_id")) or subtype == "bot_message",
        event_id=body.get("event_id", ""),
        has_attachments=bool(event.get("files")),
    )


def reaction_event(body: dict[str, Any], event: dict[str, Any], *, bot_user_id: str) -> Reaction | None:
    """A thumbs reaction added or removed on a message of the bot's, or None."""
    item = event.get("item") or {}
    if item.get("type") != "message" or vote_value(event.get("reaction", "")) is None:
        return None
    if event.get("item_user") and bot_user_id and event["item_user"] != bot_user_id:
        return None  # a thumbs-up on someone else's message is not feedback for Kaizen
    return Reaction(
        platform=PLATFORM,
        user=event.get("user", ""),
        emoji=event.get("reaction", ""),
        message_ref=f"{item.get('channel', '')}:{item.get('ts', '')}",
        added=event.get("type") == "reaction_added",
        channel=item.get("channel", ""),
        event_id=body.get("event_id", ""),
    )


def button_press(body: dict[str, Any], action: str, interaction_id: str, *, reason: str = "") -> ButtonPress:
    return ButtonPress(platform=PLATFORM, user=(body.get("user") or {}).get("id", ""), action=action,
                       interaction_id=interaction_id, reason=clean_text(reason).strip())


def command_message(command: dict[str, Any], question: str, *, preset: str | None, mode: str | None,
                    private: bool) -> IncomingMessage:
    """A `/ask` command as a neutral message (the question already parsed from its options)."""
    channel = command.get("channel_id", "")
    return IncomingMessage(
        platform=PLATFORM,
        text=clean_text(question),
        user=command.get("user_id", ""),
        channel=channel,
        channel_name=clean_text(command.get("channel_name", "")),
        workspace=command.get("team_id", ""),
        is_dm=channel.startswith("D"),
        mentioned=True,
        preset=preset,
        mode=mode,
        private=private,
        history=(),
    )
