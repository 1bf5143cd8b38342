"""Platform-neutral events. Each front end translates its payloads into these at the edge; nothing of a
platform SDK goes further. A reaction carries the message it reacts to."""

from __future__ import annotations

from dataclasses import dataclass

from core.types import Message

__all__ = ["ButtonPress", "IncomingMessage", "Reaction", "vote_value"]


@dataclass(frozen=True)
class IncomingMessage:
    platform: str
    text: str
    user: str
    channel: str
    thread: str = ""  # the conversation: a Slack thread ts, a Discord thread id, "" for none yet
    workspace: str = ""
    channel_name: str = ""
    message_ref: str = ""  # the platform's id of this message
    is_dm: bool = False
    mentioned: bool = False  # the bot was @-mentioned
    in_bot_thread: bool = False  # a thread the bot already answers in
    from_bot: bool = False
    event_id: str = ""  # for de-duplicating platform retries
    history: tuple[Message, ...] | None = None  # the platform thread so far, when the front end read it
    preset: str | None = None
    mode: str | None = None
    private: bool = False  # answer only to the asker (Slack ephemeral, Discord ephemeral)
    has_attachments: bool = False


@dataclass(frozen=True)
class Reaction:
    platform: str
    user: str
    emoji: str  # platform name: "+1", "thumbsup", "👍", "-1::skin-tone-2", ...
    message_ref: str  # the message reacted to
    added: bool  # False when the reaction was removed
    channel: str = ""
    event_id: str = ""


@dataclass(frozen=True)
class ButtonPress:
    platform: str
    user: str
    action: str  # "up", "down", "another", "reason"
    interaction_id: str
    reason: str = ""


_UP = {"+1", "thumbsup", "👍", "thumbs_up", "thumbsup_all"}
_DOWN = {"-1", "thumbsdown", "👎", "thumbs_down"}


def vote_value(emoji: str) -> int | None:
    """+1 / -1 for a thumbs reaction (any skin tone), None for any other emoji."""
    base = emoji.split("::")[0].strip(":")
    # Unicode skin-tone modifiers follow the thumb.
    base = "".join(ch for ch in base if not 0x1F3FB <= ord(ch) <= 0x1F3FF)
    if base in _UP:
        return 1
    if base in _DOWN:
        return -1
    return None
