"""Slack text in and out: mrkdwn conversion, splitting within Slack's limits, blocks, and the /ask options."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.slack.dialogs import parse_ask, reason_from_view, reason_modal
from bot.slack.format import (
    ACTION_ANOTHER,
    ACTION_CORRECT,
    ACTION_DOWN,
    ACTION_UP,
    PLACEHOLDER,
    SECTION_LIMIT,
    answer_messages,
    from_slack,
    split_mrkdwn,
    streaming_message,
    to_mrkdwn,
)
from core.types import Source


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __also bold__", "*bold* and *also bold*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("***both***", "*_both_*"),
        ("~~gone~~", "~gone~"),
        ("see [the docs](https://example.com/a?b=1&c=2)", "see <https://example.com/a?b=1&c=2|the docs>"),
        ("<https://example.com>", "<https://example.com>"),
        ("[local](docs/vpn.md)", "local (docs/vpn.md)"),
        ("# Setting up\n## Step *one*", "*Setting up*\n*Step _one_*"),
        ("- a\n* b\n  - nested\n1. first\n2) second", "• a\n• b\n    ◦ nested\n1. first\n2. second"),
        ("> quoted **text**", "> quoted *text*"),
        ("`x**2` stays **code**", "`x**2` stays *code*"),
        (
            "```python\nif a < b and c > d:\n    **not bold**\n```",
            "```\nif a &lt; b and c &gt; d:\n    **not bold**\n```",
        ),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
        ("<!channel> and <@U123>", "&lt;!channel&gt; and &lt;@U123&gt;"),  # the model can't mass-mention
        ("2 * 3 * 4 = 24", "2 * 3 * 4 = 24"),
        ("---", "──────────"),
        ("```\nunclosed", "```\nunclosed\n```"),
    ],
)
def test_markdown_to_mrkdwn(markdown, mrkdwn):
    assert to_mrkdwn(markdown) == mrkdwn


def test_from_slack_markup():
    text = "<@U0KAIZEN> ask <@U0BOB|bob> in <#C0SUP|support> about <https://vpn.example.com|the VPN> &amp; "
    text += "<!here>"
    assert (
        from_slack(text, bot_user_id="U0KAIZEN")
        == "ask @bob in #support about the VPN (https://vpn.example.com)"
        " & @here"
    )
    assert from_slack("<@U0KAIZEN>", bot_user_id="U0KAIZEN") == ""
    assert from_slack("mail <mailto:a@b.co|a@b.co>, 1 &lt; 2") == "mail a@b.co, 1 < 2"


def test_split_respects_limits_and_keeps_everything():
    paragraphs = "\n\n".join(f"Paragraph {i}: " + "word " * 120 for i in range(40))
    pieces = split_mrkdwn(paragraphs)
    assert len(pieces) > 1 and all(len(p) <= SECTION_LIMIT for p in pieces)
    assert " ".join(" ".join(pieces).split()) == " ".join(paragraphs.split())
    # Cuts fall on paragraph boundaries when there are any.
    assert all(p.rstrip().endswith("word") for p in pieces)


def test_split_reopens_a_code_block_cut_in_two():
    code = (
        "Here is the script:\n```\n"
        + "\n".join(f"echo line {i} " + "x" * 60 for i in range(200))
        + "\n```\nDone."
    )
    pieces = split_mrkdwn(code, 1000)
    assert len(pieces) > 5 and all(len(p) <= 1000 for p in pieces)
    for p in pieces:
        assert p.count("```") % 2 == 0, "every piece has balanced fences"
    assert pieces[1].startswith("```\n") and pieces[0].endswith("\n```")
    body = [line for p in pieces for line in p.split("\n") if line.startswith("echo")]
    assert len(body) == 200


def test_split_hard_wraps_a_line_without_spaces():
    pieces = split_mrkdwn("A" * 10_000, 500)
    assert all(len(p) <= 500 for p in pieces) and "".join(pieces) == "A" * 10_000


def test_answer_messages_blocks():
    sources = [
        Source(id=f"s{i}", text="", title=f"Doc {i} | draft", uri=f"https://wiki/{i}") for i in range(12)
    ]
    sources[0] = Source(id="local", text="", title="handbook.pdf", uri="/srv/docs/handbook.pdf")
    (msg,) = answer_messages("**Paris** is the capital.", sources=sources, interaction_id="abc123")
    section, context, actions = msg.blocks
    assert (
        section["text"] == {"type": "mrkdwn", "text": "*Paris* is the capital."}
        and msg.text == "*Paris* is the capital."
    )
    assert len(context["elements"]) == 10  # Slack's maximum for a context block
    assert context["elements"][1]["text"] == "[1] handbook.pdf"  # not a web link: shown as text
    assert context["elements"][2]["text"] == "[2] <https://wiki/1|Doc 1 ¦ draft>"
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
        (ACTION_UP, "abc123"),
        (ACTION_DOWN, "abc123"),
        (ACTION_ANOTHER, "abc123"),
        (ACTION_CORRECT, "abc123"),
    ]
    # No interaction (a canned reply): no buttons; no sources: no context.
    (plain,) = answer_messages("Sorry.")
    assert [b["type"] for b in plain.blocks] == ["section"]


def test_long_answer_split_across_messages_with_buttons_on_the_last():
    answer = "\n\n".join(f"Step {i}. " + "Configure the thing carefully. " * 30 for i in range(30))
    messages = answer_messages(answer, interaction_id="abc")
    assert len(messages) > 1
    for m in messages:
        assert len(m.text) <= SECTION_LIMIT and len(m.blocks) <= 50
        assert all(len(b["text"]["text"]) <= SECTION_LIMIT for b in m.blocks if b["type"] == "section")
    assert [b["type"] for b in messages[-1].blocks][-1] == "actions"
    assert all("actions" not in [b["type"] for b in m.blocks] for m in messages[:-1])
    # Far too long: cut at the message cap, saying how much was left out.
    capped = answer_messages("word " * 60_000, max_messages=3)
    assert len(capped) == 3 and "answer cut" in capped[-1].text and len(capped[-1].text) <= SECTION_LIMIT


def test_streaming_message():
    assert streaming_message("").text == PLACEHOLDER
    partial = streaming_message("Paris is **the")
    assert partial.text.endswith(" …")
    assert streaming_message("```\nrunning code").text.count("```") == 2
    assert len(streaming_message("x " * 5000).text) <= SECTION_LIMIT


def test_reason_modal_round_trip():
    modal = reason_modal("abc123")
    assert modal["private_metadata"] == "abc123" and len(modal["title"]["text"]) <= 24
    state = {
        "state": {"values": {"reason": {"text": {"type": "plain_text_input", "value": "  wrong city "}}}}
    }
    assert reason_from_view(state) == "wrong city"
    assert reason_from_view({"state": {"values": {"reason": {"text": {"value": None}}}}}) == ""


@pytest.mark.parametrize(
    ("text", "question", "preset", "mode", "private"),
    [
        ("What is up?", "What is up?", None, None, False),
        (
            "preset=precise mode=rag private How do I set up the VPN?",
            "How do I set up the VPN?",
            "precise",
            "rag",
            True,
        ),
        ("--preset balanced --private --mode=agent 2+2?", "2+2?", "balanced", "agent", True),
        ("private", None, None, None, None),
        ("mode is everything", "mode is everything", None, None, False),
    ],
)
def test_parse_ask(text, question, preset, mode, private):
    presets = ("precise", "balanced", "creative")
    if question is None:
        with pytest.raises(ValueError, match="add a question"):
            parse_ask(text, presets=presets)
        return
    opts = parse_ask(text, presets=presets)
    assert (opts.question, opts.preset, opts.mode, opts.private) == (question, preset, mode, private)


def test_parse_ask_names_valid_choices():
    with pytest.raises(ValueError, match="valid presets: balanced, precise"):
        parse_ask("preset=spicy hi", presets=("precise", "balanced"))
    with pytest.raises(ValueError, match="valid modes: chat, rag, agent, auto"):
        parse_ask("--mode telepathy hi", presets=("precise",))
    with pytest.raises(ValueError, match="needs a value"):
        parse_ask("--preset", presets=("precise",))


def test_manifest_subscribes_to_what_the_app_handles():
    import yaml

    manifest = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "deploy" / "slack-manifest.yaml").read_text()
    )
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {
        "app_mention",
        "message.im",
        "message.channels",
        "message.groups",
        "reaction_added",
        "reaction_removed",
    } <= events
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {
        "app_mentions:read",
        "chat:write",
        "commands",
        "reactions:read",
        "channels:history",
        "im:history",
    } <= scopes
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/ask"]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
