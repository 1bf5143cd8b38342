"""Text rules of the Discord front end, free of the SDK: splitting, mention stripping, thread titles."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_MESSAGE", "split_message", "strip_mentions", "thread_title"]

MAX_MESSAGE = 2000  # Discord's limit on a message's content
MAX_THREAD_NAME = 100
_FENCE = "```"


def split_message(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Cut `text` into messages of at most `limit` characters, at line breaks where possible. A code block
    cut in two is closed at the end of one message and reopened (with its language) at the start of the next,
    so every message renders on its own. Blank text gives no messages."""
    text = text.strip()
    if not text:
        return []
    if limit < 64:
        raise ValueError("limit must leave room for code fences (at least 64 characters)")
    # Step 1: lines longer than half a message are cut into pieces, so a piece always fits within fences.
    pieces = [(piece, first) for line in text.split("\n") for piece, first in _cut_line(line, limit // 2)]
    chunks: list[str] = []
    current = ""
    fence = ""  # the opening fence line while inside a code block, else ""
    for piece, starts_line in pieces:
        is_fence = starts_line and piece.lstrip().startswith(_FENCE) and piece.count(_FENCE) % 2 == 1
        closes = is_fence and bool(fence)
        open_after = bool(fence) != is_fence  # inside a block once this piece is added
        joined = current + ("\n" if starts_line else "") + piece if current else piece
        # Step 2: a piece that does not fit (with room to close an open block) ends this message.
        if current and len(joined) + (len(_FENCE) + 1 if open_after else 0) > limit:
            chunks.append(current.rstrip() + ("\n" + _FENCE if fence else ""))
            if closes:  # the block just got closed by the cut: nothing of it is left to reopen
                current, fence = "", ""
                continue
            # The next message reopens the block, with its language, before going on.
            current = f"{fence}\n{piece}" if fence else piece.lstrip(" ")
        else:
            current = joined
        # Step 3: track whether the text so far ends inside a code block.
        if is_fence:
            fence = "" if fence else piece.strip()[:20]
    if current.strip() and current.strip() != fence:
        chunks.append(current.rstrip() + ("\n" + _FENCE if fence else ""))
    return chunks


def _cut_line(line: str, size: int) -> list[tuple[str, bool]]:
    """A line as pieces of at most `size` characters, cut after whitespace where there is some; the flag
    marks the piece that starts the line (the others continue it without a line break)."""
    pieces: list[str] = []
    while len(line) > size:
        cut = line.rfind(" ", size // 2, size)
        cut = size if cut < 0 else cut + 1
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return [(p, i == 0) for i, p in enumerate(pieces)]


def strip_mentions(text: str, ids: set[int]) -> str:
    """The message without mentions of the bot (user `<@id>`/`<@!id>` or its role `<@&id>`), trimmed."""
    if not ids:
        return text.strip()
    alternatives = "|".join(str(i) for i in sorted(ids))
    return re.sub(rf"<@[!&]?(?:{alternatives})>", " ", text).strip()


def thread_title(text: str, limit: int = MAX_THREAD_NAME) -> str:
    """A thread name from the question: its first line, without markdown noise, at most `limit` characters."""
    # Zero-width and other format characters show nothing: a title is never made of them.
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    first = next((line for line in text.splitlines() if line.strip()), "")
    first = re.sub(r"[`*_~>|#]+", "", first)
    first = re.sub(r"<[@#][!&]?\d+>", "", first)
    first = " ".join(first.split())
    if len(first) > limit:
        first = first[: limit - 1].rstrip() + "…"
    return first or "Kaizen"
