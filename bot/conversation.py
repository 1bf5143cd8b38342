"""A platform thread as conversation turns, for every front end: one rule for who said what, written once.

A front end reads its platform's thread (or reply chain), decides each message's role and text, and hands the pairs
here: text that shows nothing is skipped and consecutive messages of one side become one turn (the parts of a split
answer, or a question typed as several messages).
"""

from __future__ import annotations

from collections.abc import Iterable

from core.text import clean_text, is_blank
from core.types import Message

__all__ = ["merge_turns"]


def merge_turns(said: Iterable[tuple[str, str]], *, keep: int | None = None) -> tuple[Message, ...]:
    """(role, text) pairs, oldest first ("user" or "assistant") -> turns; `keep` = at most that many of the
    latest turns (0 = none, None = all)."""
    turns: list[Message] = []
    for role, text in said:
        text = clean_text(text)
        if is_blank(text):
            continue
        if turns and turns[-1].role == role:
            turns[-1] = Message(role, f"{turns[-1].content}\n{text}")
        else:
            turns.append(Message(role, text))
    if keep is None:
        return tuple(turns)
    return tuple(turns[-keep:]) if keep > 0 else ()
