"""Slack dialogs and `/ask` options, as pure functions: the "what was wrong?" reason dialog and the "Correct this
answer" dialog (the views to open and the text read back from their submissions), and the `/ask` option syntax."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.slack.format import CORRECT_CALLBACK, MODES, REASON_CALLBACK

__all__ = ["ASK_USAGE", "AskOptions", "correct_modal", "correction_from_view", "parse_ask", "reason_from_view",
           "reason_modal"]


def reason_modal(interaction_id: str) -> dict[str, Any]:
    """The optional "what was wrong?" dialog opened by the 👎 button."""
    return {
        "type": "modal",
        "callback_id": REASON_CALLBACK,
        "private_metadata": interaction_id,
        "title": {"type": "plain_text", "text": "What was wrong?"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Skip"},
        "blocks": [
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": "Your 👎 is recorded. A reason helps Kaizen learn (optional)."}
                ],
            },
            {
                "type": "input",
                "block_id": "reason",
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "text",
                    "multiline": True,
                    "max_length": 1000,
                },
            },
        ],
    }


def reason_from_view(view: dict[str, Any]) -> str:
    value = (((view.get("state") or {}).get("values") or {}).get("reason") or {}).get("text") or {}
    return (value.get("value") or "").strip()


# -- /ask ---------------------------------------------------------------------------------------------------

ASK_USAGE = (
    "Usage: `/ask [preset=NAME] [mode=chat|rag|agent|auto] [private] your question`\n"
    "`private` answers only to you. Example: `/ask preset=precise mode=rag How do I set up the VPN?`"
)


@dataclass(frozen=True)
class AskOptions:
    question: str
    preset: str | None = None
    mode: str | None = None
    private: bool = False


def parse_ask(text: str, *, presets: list[str] | tuple[str, ...]) -> AskOptions:
    """Leading options, then the question: `preset=NAME`, `mode=NAME`, `private`, or the same written as
    `--preset NAME`, `--mode=NAME`, `--private`. Raises ValueError naming the valid choices for a bad value,
    or for an empty question."""
    words = (text or "").strip().split()
    preset = mode = None
    private = False
    i = 0
    while i < len(words):
        word = words[i]
        key, eq, value = word.lstrip("-").partition("=")
        key = key.lower()
        if key == "private" and not eq:
            private, i = True, i + 1
            continue
        if key not in ("preset", "mode") or not (eq or word.startswith("--")):
            break
        if not eq:  # `--preset NAME`
            if i + 1 >= len(words):
                raise ValueError(f"`{word}` needs a value")
            value, i = words[i + 1], i + 1
        i += 1
        if key == "preset":
            if value not in presets:
                raise ValueError(f"unknown preset `{value}`; valid presets: {', '.join(sorted(presets))}")
            preset = value
        else:
            if value not in MODES:
                raise ValueError(f"unknown mode `{value}`; valid modes: {', '.join(MODES)}")
            mode = value
    question = " ".join(words[i:])
    if not question:
        raise ValueError("please add a question")
    return AskOptions(question=question, preset=preset, mode=mode, private=private)


def correct_modal(interaction_id: str, *, channel: str, thread: str, answer: str = "") -> dict[str, Any]:
    """The "Correct this answer" dialog: the answer as it was, to edit into what it should have said."""
    return {
        "type": "modal",
        "callback_id": CORRECT_CALLBACK,
        "private_metadata": json.dumps({"id": interaction_id, "channel": channel, "thread": thread}),
        "title": {"type": "plain_text", "text": "Correct this answer"},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "correction",
                "label": {"type": "plain_text", "text": "What the answer should say"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "text",
                    "multiline": True,
                    "max_length": 3000,
                    **({"initial_value": answer[:3000]} if answer else {}),
                },
            },
        ],
    }


def correction_from_view(view: dict[str, Any]) -> tuple[dict[str, str], str]:
    """(the dialog's {"id", "channel", "thread"}, the corrected text) from a submitted `correct_modal`."""
    try:
        where = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        where = {}
    value = (((view.get("state") or {}).get("values") or {}).get("correction") or {}).get("text") or {}
    where = {k: str(where.get(k, "")) for k in ("id", "channel", "thread")} if isinstance(where, dict) else {}
    return where, (value.get("value") or "").strip()
