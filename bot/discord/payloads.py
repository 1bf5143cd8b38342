"""discord.py objects -> the gateway payload fields `bot.discord.translate` reads.

discord.py parses the gateway's JSON into objects and keeps no copy of it; the front end needs those objects to
reply (threads, references, interaction responses). These functions copy back, field for field and without any
decision, what translate needs, in the shapes Discord documents (ids as strings, types as integers), so the mapping
itself is written once, in translate, and tested on recorded payloads.
"""

from __future__ import annotations

from typing import Any

import discord

__all__ = ["channel_data", "interaction_data", "message_data", "parent_data", "reaction_data"]


def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def message_data(m: discord.Message) -> dict[str, Any]:
    """A MESSAGE_CREATE payload's fields: id, type, content, author, mentions, mention_roles, webhook_id,
    attachments, sticker_items, channel_id, guild_id."""
    data: dict[str, Any] = {
        "id": str(m.id), "type": m.type.value, "content": m.content, "channel_id": str(m.channel.id),
        "author": {"id": str(m.author.id), "bot": m.author.bot},
        "mentions": [{"id": str(u.id)} for u in m.mentions],
        "mention_roles": [str(r.id) for r in m.role_mentions],
        "webhook_id": _id(m.webhook_id),
        "attachments": [{"id": str(a.id)} for a in m.attachments],
        "sticker_items": [{"id": str(s.id)} for s in m.stickers],
    }
    if m.guild is not None:
        data["guild_id"] = str(m.guild.id)
    return data


def channel_data(channel: Any) -> dict[str, Any] | None:
    """A channel object's fields (id, type, guild_id, name, and parent_id and owner_id for a thread); None for
    none."""
    if channel is None:
        return None
    kind = getattr(channel, "type", None)
    guild = getattr(channel, "guild", None)
    data: dict[str, Any] = {"id": str(channel.id), "type": kind.value if kind is not None else 0,
                            "name": getattr(channel, "name", None) or ""}
    if guild is not None:
        data["guild_id"] = str(guild.id)
    if isinstance(channel, discord.Thread):
        data["parent_id"], data["owner_id"] = _id(channel.parent_id), _id(channel.owner_id)
    return data


def parent_data(channel: Any) -> dict[str, Any] | None:
    """The channel object of a thread's parent channel (None for a channel that is no thread, or not cached)."""
    return channel_data(channel.parent) if isinstance(channel, discord.Thread) else None


def reaction_data(p: discord.RawReactionActionEvent) -> dict[str, Any]:
    """A MESSAGE_REACTION_ADD/REMOVE payload's fields: user_id, message_id, channel_id, guild_id, emoji, member."""
    data: dict[str, Any] = {
        "user_id": str(p.user_id), "message_id": str(p.message_id), "channel_id": str(p.channel_id),
        "guild_id": _id(p.guild_id), "emoji": {"id": _id(p.emoji.id), "name": p.emoji.name},
    }
    if p.member is not None:
        data["member"] = {"user": {"id": str(p.member.id), "bot": p.member.bot}}
    return data


def interaction_data(i: discord.Interaction) -> dict[str, Any]:
    """An INTERACTION_CREATE payload's fields: id, type, guild_id, channel_id, member.user or user, and `data` as
    Discord sent it (command options, custom id, modal components)."""
    who = {"id": str(i.user.id), "bot": i.user.bot}
    data: dict[str, Any] = {"id": str(i.id), "type": i.type.value, "channel_id": _id(i.channel_id),
                            "data": dict(i.data or {})}
    if i.guild_id is not None:
        data["guild_id"], data["member"] = str(i.guild_id), {"user": who}
    else:
        data["user"] = who
    return data
