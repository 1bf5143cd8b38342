"""Slack payloads -> neutral events (bot.slack.translate): pure functions on the recorded payloads in
tests/data/slack. Every kind of event carries the same identity (platform, team id, channel id)."""

from __future__ import annotations

import copy

import pytest
from slack_sim import payload

from bot.slack.translate import button_press, command_message, message_event, reaction_event

BOT = "U0KAIZEN"


def _message(name: str, *, mentioned: bool = False, **event):
    body = payload(name)
    body["event"] |= event
    return message_event(body, body["event"], bot_user_id=BOT, mentioned=mentioned)


def test_every_message_kind_carries_the_same_identity():
    mention = _message("app_mention", mentioned=True)
    follow_up = _message("message_thread_reply")
    ask = command_message(payload("slash_command"), "What is the capital of France?", preset=None, mode=None,
                          private=False)
    for msg in (mention, follow_up, ask):
        assert (msg.platform, msg.workspace, msg.channel) == ("slack", "T0TEST", "C0GENERAL")
    assert mention.text == "What is the capital of France?" and mention.mentioned
    assert (mention.event_id, mention.message_ref, mention.thread) == (
        "Ev0MENTION0001", "C0GENERAL:1715000000.000100", "1715000000.000100")
    assert follow_up.thread == "1715000000.000100" and not follow_up.mentioned
    dm = _message("message_im")
    assert dm.is_dm and (dm.workspace, dm.channel) == ("T0TEST", "D0ALICE")


def test_an_edit_redelivery_is_the_same_user_message():
    original = payload("app_mention")
    edited = copy.deepcopy(original)
    edited["event_id"] = "Ev0MENTION0002"
    edited["event"] |= {"text": original["event"]["text"] + " (edited)", "edited": {"user": "U0ALICE", "ts": "1"}}
    first = message_event(original, original["event"], bot_user_id=BOT, mentioned=True)
    again = message_event(edited, edited["event"], bot_user_id=BOT, mentioned=True)
    assert first.event_id != again.event_id and first.message_ref == again.message_ref


@pytest.mark.parametrize("name", ["message_changed", "message_deleted"])
def test_edits_and_deletions_are_not_questions(name):
    body = payload(name)
    assert message_event(body, body["event"], bot_user_id=BOT, mentioned=False) is None


def test_bots_chatter_and_channel_mentions():
    body = payload("bot_message")
    assert message_event(body, body["event"], bot_user_id=BOT, mentioned=False).from_bot  # the dispatcher skips it
    # Channel chatter outside threads, and a channel message its app_mention answers, are not for us.
    assert _message("message_thread_reply", thread_ts=None) is None
    assert _message("message_thread_reply", text=f"<@{BOT}> hi") is None


def test_text_is_cleaned_where_it_enters():
    msg = _message("app_mention", mentioned=True, text=f"<@{BOT}> caf\x00e\ud800 \r\nok")
    assert msg.text == "cafe\ufffd \nok"
    invisible = _message("app_mention", mentioned=True, text=f"<@{BOT}> \u200b\u200d\ufeff")
    assert invisible.text.strip("\u200b\u200d\ufeff ") == ""  # the dispatcher treats it as empty (is_blank)
    press = button_press({"user": {"id": "U0BOB"}}, "reason", "i" * 32, reason=" too\x00 vague\ud800 ")
    assert press.reason == "too vague\ufffd"


def test_reactions_on_the_bots_messages_only():
    body = payload("reaction_added")
    reaction = reaction_event(body, body["event"], bot_user_id=BOT)
    assert (reaction.message_ref, reaction.user, reaction.added, reaction.event_id) == (
        "C0GENERAL:1715000000.000150", "U0BOB", True, "Ev0REACT00001")
    removed = payload("reaction_removed")
    assert reaction_event(removed, removed["event"], bot_user_id=BOT).added is False
    body["event"]["item_user"] = "U0SOMEONE"
    assert reaction_event(body, body["event"], bot_user_id=BOT) is None
    body["event"] |= {"item_user": BOT, "reaction": "tada"}
    assert reaction_event(body, body["event"], bot_user_id=BOT) is None
