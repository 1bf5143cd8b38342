"""Slack text in and out: Slack's message markup to plain text, Markdown to Slack mrkdwn, answers to Block Kit
messages within Slack's limits. Pure functions; nothing here talks to Slack (dialogs and `/ask` options:
`bot.slack.dialogs`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, get_args

from core.config import Mode
from core.types import Source

__all__ = [
    "ACTION_ANOTHER",
    "ACTION_CORRECT",
    "CORRECT_CALLBACK",
    "ACTION_DOWN",
    "ACTION_UP",
    "MAX_MESSAGES",
    "PLACEHOLDER",
    "REASON_CALLBACK",
    "SECTION_LIMIT",
    "SlackMessage",
    "answer_messages",
    "from_slack",
    "split_mrkdwn",
    "streaming_message",
    "to_mrkdwn",
]

# Slack's limits: a section block's text holds 3000 characters; a context block 10 elements.
SECTION_LIMIT = 3000
CONTEXT_ELEMENTS = 10
# More than this many messages for one answer is a wall of text, not an answer: the rest is cut with a note.
MAX_MESSAGES = 8
PLACEHOLDER = ":hourglass_flowing_sand: _Thinking…_"

ACTION_UP = "kaizen_up"
ACTION_DOWN = "kaizen_down"
ACTION_ANOTHER = "kaizen_another"
ACTION_CORRECT = "kaizen_correct"
REASON_CALLBACK = "kaizen_reason"
CORRECT_CALLBACK = "kaizen_correct"

MODES = get_args(Mode)


@dataclass(frozen=True)
class SlackMessage:
    """One message to post or update: the notification/fallback text and its blocks."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


# -- Slack markup -> plain text -----------------------------------------------------------------------------

_SLACK_TOKEN = re.compile(r"<([^<>]+)>")


def from_slack(text: str, *, bot_user_id: str = "") -> str:
    """A user's message as plain text for the model: the bot's own mention removed, other mentions, channels
    and links written out, Slack's three HTML escapes undone."""

    def token(m: re.Match[str]) -> str:
        inner = m.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            uid = target[1:]
            return "" if bot_user_id and uid == bot_user_id else f"@{label or uid}"
        if target.startswith("#"):
            return f"#{label or target[1:]}"
        if target.startswith("!"):  # <!here>, <!channel>, <!subteam^S1|@team>
            return label or f"@{target[1:].split('^')[0]}"
        if target.startswith("mailto:"):
            return label or target[len("mailto:") :]
        return target if not label or label == target else f"{label} ({target})"

    plain = _SLACK_TOKEN.sub(token, text or "")
    plain = plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", plain).strip()


# -- Markdown -> mrkdwn -------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^(\s*)(\d{1,9})[.)]\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_INLINE = re.compile(
    r"(?P<code>`[^`\n]+`)"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<url>[^)\s]+)(?:\s+\"[^\"]*\")?\)"
    r"|<(?P<auto>https?://[^>\s]+)>"
)
_BOLD_ITALIC = re.compile(r"\*\*\*(?=\S)(.+?)(?<=\S)\*\*\*")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_BOLD_MARK = "\x00"


def _escape(text: str) -> str:
    # Slack's control characters. Escaping them also means the model can never produce <!channel> or <@U…>.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _emphasis(text: str) -> str:
    # Bold first into a marker, so the single-asterisk italic rule cannot eat its asterisks.
    text = _BOLD_ITALIC.sub(lambda m: f"{_BOLD_MARK}_{m.group(1)}_{_BOLD_MARK}", text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(1) or m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    return text.replace(_BOLD_MARK, "*")


def _inline(text: str) -> str:
    """One line of Markdown prose: code spans kept verbatim, links rewritten, emphasis converted."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(_emphasis(_escape(text[pos : m.start()])))
        if m.group("code"):
            out.append(_escape(m.group("code")))
        elif m.group("auto"):
            out.append(f"<{m.group('auto')}>")
        else:
            label = _escape(m.group("label")).replace("|", "¦")
            url = m.group("url")
            out.append(
                f"<{url}|{label}>" if re.match(r"(https?|mailto):", url) else f"{label} ({_escape(url)})"
            )
        pos = m.end()
    out.append(_emphasis(_escape(text[pos:])))
    return "".join(out)


def to_mrkdwn(markdown: str) -> str:
    """Markdown (what models write) as Slack mrkdwn: **bold** -> *bold*, *italic* -> _italic_, ~~s~~ -> ~s~,
    [text](url) -> <url|text>, headings bold, list bullets as •, code blocks and spans kept."""
    lines, in_code = [], False
    for line in (markdown or "").replace("\r\n", "\n").split("\n"):
        # Inside a code block only the escapes apply; the fence's language tag would show as code text.
        if _FENCE.match(line):
            in_code = not in_code
            lines.append("```")
            continue
        if in_code:
            lines.append(_escape(line))
            continue
        if m := _HEADING.match(line):
            lines.append(f"*{_inline(m.group(1)).replace('*', '')}*")
        elif _RULE.match(line):
            lines.append("──────────")
        elif m := _BULLET.match(line):
            depth = len(m.group(1).expandtabs(4)) // 2
            lines.append(f"{'    ' * depth}{'•' if depth == 0 else '◦'} {_inline(m.group(2))}")
        elif m := _NUMBERED.match(line):
            depth = len(m.group(1).expandtabs(4)) // 2
            lines.append(f"{'    ' * depth}{m.group(2)}. {_inline(m.group(3))}")
        elif m := _QUOTE.match(line):
            lines.append(f">{' ' if m.group(1) else ''}{_inline(m.group(1))}")
        else:
            lines.append(_inline(line))
    if in_code:  # an unclosed fence (a cut-off answer) would swallow everything after it
        lines.append("```")
    return "\n".join(lines).strip("\n")


# -- splitting ----------------------------------------------------------------------------------------------


def _wrap(line: str, width: int) -> list[str]:
    """A line longer than `width` cut at the last space before it (or hard, for a space-less run)."""
    pieces = []
    while len(line) > width:
        cut = line.rfind(" ", width // 2, width)
        cut = cut if cut > 0 else width
        pieces.append(line[:cut])
        line = line[cut:].lstrip(" ")
    pieces.append(line)
    return pieces


def split_mrkdwn(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """mrkdwn cut into pieces of at most `limit` characters, at line breaks (a blank line where one is near
    the end); a code block cut in two is closed at the end of one piece and reopened at the next's start."""
    if limit < 64:
        raise ValueError("limit must be at least 64 characters")
    room = limit - 4  # every piece keeps 4 characters free for a closing "\n```"
    pieces: list[str] = []
    lines: list[tuple[str, bool]] = []  # (line, inside a code block after it)
    in_code = False

    def size(rows: list[tuple[str, bool]]) -> int:
        return sum(len(row) + 1 for row, _ in rows)

    def close(rows: list[tuple[str, bool]]) -> str:
        body = "\n".join(row for row, _ in rows).strip("\n")
        return body + "\n```" if rows and rows[-1][1] else body

    for raw in text.split("\n"):
        for line in _wrap(raw, room - 8):
            if lines and size(lines) + len(line) > room:
                # 1. Cut at the last blank line outside code in the second half, else right here.
                cut = next(
                    (
                        i
                        for i in range(len(lines) - 1, len(lines) // 2, -1)
                        if not lines[i][0].strip() and not lines[i][1]
                    ),
                    len(lines),
                )
                pieces.append(close(lines[:cut]))
                # 2. What was after the cut starts the next piece, reopening a code block cut in two.
                lines = ([("```", True)] if lines[cut - 1][1] else []) + lines[cut:]
                # 3. If that still leaves no room for this line, it goes out as it is.
                if size(lines) + len(line) > room:
                    pieces.append(close(lines))
                    lines = [("```", True)] if lines[-1][1] else []
            if _FENCE.match(line):
                in_code = not in_code
            lines.append((line, in_code))
    pieces.append(close(lines))
    return [p for p in pieces if p.strip("`\n ")]


# -- Block Kit ----------------------------------------------------------------------------------------------


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _sources_block(sources: list[Source]) -> dict[str, Any] | None:
    if not sources:
        return None
    elements = [{"type": "mrkdwn", "text": "*Sources:*"}]
    for i, s in enumerate(sources[: CONTEXT_ELEMENTS - 1], 1):
        title = _escape((s.title or s.uri or s.id or "document")[:150]).replace("|", "¦")
        link = f"<{s.uri}|{title}>" if re.match(r"https?://", s.uri or "") else title
        elements.append({"type": "mrkdwn", "text": f"[{i}] {link}"})
    return {"type": "context", "elements": elements}


def _buttons(interaction_id: str) -> dict[str, Any]:
    def button(action_id: str, label: str) -> dict[str, Any]:
        return {
            "type": "button",
            "action_id": action_id,
            "value": interaction_id,
            "text": {"type": "plain_text", "text": label, "emoji": True},
        }

    return {
        "type": "actions",
        "block_id": "kaizen_feedback",
        "elements": [
            button(ACTION_UP, "👍"),
            button(ACTION_DOWN, "👎"),
            button(ACTION_ANOTHER, "Try another answer"),
            button(ACTION_CORRECT, "Correct this answer"),
        ],
    }


def answer_messages(
    answer: str,
    *,
    sources: list[Source] = (),
    interaction_id: str = "",
    note: str = "",
    limit: int = SECTION_LIMIT,
    max_messages: int = MAX_MESSAGES,
) -> list[SlackMessage]:
    """An answer as one or more Slack messages: the text in sections of at most `limit` characters, then (on
    the last message) an optional note, the sources and — given an `interaction_id` — the feedback buttons."""
    pieces = split_mrkdwn(to_mrkdwn(answer), limit) or ["_(empty answer)_"]
    if len(pieces) > max_messages:
        cut = sum(len(p) for p in pieces[max_messages - 1 :])
        pieces = [
            *pieces[: max_messages - 1],
            f"{pieces[max_messages - 1]}\n_(answer cut: {cut:,} more characters)_",
        ]
        if len(pieces[-1]) > limit:
            pieces[-1] = pieces[-1][-limit:]
    messages = [SlackMessage(text=p, blocks=[_section(p)]) for p in pieces]
    extra = []
    if note:
        extra.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    if block := _sources_block(list(sources)):
        extra.append(block)
    if interaction_id:
        extra.append(_buttons(interaction_id))
    last = messages[-1]
    messages[-1] = SlackMessage(text=last.text, blocks=[*last.blocks, *extra])
    return messages


def streaming_message(partial: str, limit: int = SECTION_LIMIT) -> SlackMessage:
    """The answer so far, while it is generated: what fits in one section, with a trailing ellipsis."""
    text = to_mrkdwn(partial)
    if text.count("```") % 2:
        text += "\n```"
    if len(text) > limit - 2:
        text = text[: limit - 2]
    text = f"{text} …" if text else PLACEHOLDER
    return SlackMessage(text=text, blocks=[_section(text)])
