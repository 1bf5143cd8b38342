"""A recorded answer rebuilt from the feedback store (after a restart, or on another replica), e.g. for "Try another
answer" on an answer this process never saw."""

from __future__ import annotations

import asyncio
from typing import Any

from core.types import Message, Reply, Source, Turn

__all__ = ["load_reply"]


async def load_reply(store: Any, interaction_id: str) -> Reply | None:
    """Rebuild a reply from the store (after a restart, or on another replica)."""
    if store is None:
        return None
    row = await asyncio.to_thread(store.get_interaction, interaction_id=interaction_id)
    if row is None:
        return None
    conv = await asyncio.to_thread(store.get_conversation, conversation_id=row.conversation_id)
    turn = Turn(text=row.question, platform=row.platform, user=row.user_id,
                channel=getattr(conv, "channel", ""), workspace=getattr(conv, "workspace", ""),
                channel_name=getattr(conv, "channel_name", ""), thread=getattr(conv, "thread", ""))
    return Reply(answer=row.answer, turn=turn, id=row.id,
                 prompt=[Message(m["role"], m["content"]) for m in row.prompt],
                 sources=[Source(id=s.get("id", ""), text="", title=s.get("title", ""), uri=s.get("uri", ""),
                                 channels=tuple(s.get("channels") or ())) for s in row.sources],
                 model=row.model, adapter=row.adapter, preset=row.preset, mode=row.mode,
                 decoding=dict(row.decoding))
