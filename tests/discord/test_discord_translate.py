"""Discord gateway payloads -> neutral events (bot.discord.translate): pure functions on the recorded payloads in
tests/data/discord (MESSAGE_CREATE, MESSAGE_REACTION_ADD/REMOVE, INTERACTION_CREATE and channel objects, as Discord
documents them and the Discord fake sends them). No discord.py object is involved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.discord.translate import (
    ask_message,
    button_press,
    conversation,
    correction,
    custom_id,
    message_event,
    modal_text,
    reaction_event,
)
from core.types import Message

DATA = Path(__file__).resolve().parents[1] / "data" / "discord"
BOT, ROLE = "1000000000000000001", "1000000000000000101"
GUILD, GENERAL, THREAD, DM = "1000000000000000100", "1000000000000000200", "1100000000000000010", \
    "1100000000000000020"
ALICE = "1000000000000000300"


def payload(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


CHANNELS = payload("channels")


def _message(name: str, where: str = "general", **changes: Any):
    data = payload(name) | changes
    parent = CHANNELS["general"] if where == "thread" else None
    return message_event(data, channel=CHANNELS[where], parent=parent, bot_user_id=BOT, bot_role_id=ROLE)


def test_every_message_kind_carries_the_same_identity():
    mention = _message("message_create_mention")
    follow_up = _message("message_create_thread_follow_up", "thread")
    ask = ask_message(payload("interaction_ask"), channel=CHANNELS["general"], bot_user_id=BOT)
    for msg in (mention, follow_up, ask):
        assert (msg.platform, msg.workspace, msg.channel, msg.channel_name) == ("discord", GUILD, GENERAL, "general")
    assert (mention.text, mention.mentioned, mention.thread, mention.is_dm) == (
        "What is the capital of France?", True, "", False)
    assert (mention.user, mention.message_ref, mention.event_id) == (
        ALICE, "1100000000000000101", "discord:message:1100000000000000101")
    # A follow-up in the bot's thread: the thread is the conversation, the channel stays the parent.
    assert (follow_up.thread, follow_up.in_bot_thread, follow_up.mentioned) == (THREAD, True, False)
    dm = _message("message_create_dm", "dm")
    assert (dm.is_dm, dm.workspace, dm.channel, dm.thread) == (True, "", DM, "")


def test_the_bots_role_counts_as_a_mention_and_is_stripped():
    msg = _message("message_create_role_mention")
    assert msg.mentioned and msg.text == "What is the capital of Italy?"
    assert not _message("message_create_role_mention", mention_roles=[]).mentioned
    # Without the role known (a DM, a guild not cached), the role mention is left as text.
    data = payload("message_create_role_mention")
    plain = message_event(data, channel=CHANNELS["general"], bot_user_id=BOT)
    assert not plain.mentioned and plain.text.startswith(f"<@&{ROLE}>")


def test_bots_webhooks_and_system_messages():
    assert _message("message_create_other_bot").from_bot  # the dispatcher skips it
    assert _message("message_create_webhook").from_bot
    assert _message("message_create_bot_answer", "thread").from_bot
    assert _message("message_create_thread_created") is None  # a "thread created" notice is no question
    assert _message("message_create_mention", type=7) is None  # a member joined
    reply = _message("message_create_reply")  # type 19: a reply is a question like any other
    assert reply is not None and reply.mentioned and reply.text == "and Spain?"


def test_a_file_without_text_and_invisible_text():
    files = _message("message_create_attachment")
    assert files.has_attachments and files.text == ""
    data = payload("message_create_mention")
    invisible = _message("message_create_mention", content=f"<@{BOT}> \u200b\u200d\ufeff")
    assert invisible.text.strip("\u200b\u200d\ufeff ") == ""  # the dispatcher treats it as empty (is_blank)
    dirty = _message("message_create_mention", content=f"<@!{BOT}> caf\x00e\ud800 \r\nok")
    assert dirty.text == "cafe\ufffd \nok" and data["content"] != dirty.text


def test_a_thread_whose_channel_is_unknown_counts_as_a_channel():
    orphan = {k: v for k, v in CHANNELS["thread"].items() if k != "parent_id"}
    msg = message_event(payload("message_create_thread_follow_up"), channel=orphan, bot_user_id=BOT)
    assert (msg.channel, msg.thread, msg.in_bot_thread) == (THREAD, "", False)


def test_reactions_from_people_only():
    added = reaction_event(payload("reaction_add"), added=True, bot_user_id=BOT)
    assert (added.platform, added.user, added.emoji, added.message_ref, added.channel, added.added) == (
        "discord", ALICE, "👍", "1100000000000000103", THREAD, True)
    removed = reaction_event(payload("reaction_remove"), added=False, bot_user_id=BOT)
    assert removed.added is False and removed.message_ref == added.message_ref
    assert reaction_event(payload("reaction_add_by_bot"), added=True, bot_user_id=BOT) is None
    mine = payload("reaction_remove") | {"user_id": BOT}
    assert reaction_event(mine, added=False, bot_user_id=BOT) is None
    custom = payload("reaction_add") | {"emoji": {"id": "123", "name": None}}
    assert reaction_event(custom, added=True, bot_user_id=BOT).emoji == "123"


def test_ask_options_and_a_dm():
    ask = ask_message(payload("interaction_ask"), channel=CHANNELS["general"], bot_user_id=BOT)
    assert (ask.text, ask.preset, ask.mode, ask.private, ask.mentioned) == (
        "What is the capital of France?", "precise", None, True, True)
    assert (ask.user, ask.event_id) == (ALICE, "discord:interaction:1100000000000000120")
    dm = ask_message(payload("interaction_ask_dm"), channel=CHANNELS["dm"], bot_user_id=BOT)
    assert (dm.is_dm, dm.user, dm.workspace, dm.private, dm.preset) == (True, ALICE, "", False, None)
    in_thread = ask_message(payload("interaction_ask"), channel=CHANNELS["thread"], parent=CHANNELS["general"],
                            bot_user_id=BOT)
    assert (in_thread.channel, in_thread.thread, in_thread.in_bot_thread) == (GENERAL, THREAD, True)
    with pytest.raises(ValueError, match="not an /ask"):
        ask_message(payload("interaction_button"), channel=CHANNELS["thread"], bot_user_id=BOT)


def test_buttons_and_the_correction_dialog():
    press = button_press(payload("interaction_button"))
    assert (press.platform, press.user, press.action, press.interaction_id) == (
        "discord", ALICE, "another", "0123456789abcdef0123456789abcdef")
    assert custom_id("up", press.interaction_id) == "kaizen:up:0123456789abcdef0123456789abcdef"
    with pytest.raises(ValueError):
        custom_id("delete", press.interaction_id)
    foreign = payload("interaction_button")
    foreign["data"]["custom_id"] = "poll:yes"
    assert button_press(foreign) is None  # another app's component (or a stale format) is not ours
    assert button_press(payload("interaction_ask")) is None
    submit = payload("interaction_modal_submit")
    fixed = correction(submit, press.interaction_id)
    assert (fixed.action, fixed.user, fixed.reason) == ("correct", ALICE, "Paris is the capital of France.")
    # Newer dialogs wrap each input in a label component: the text is found there too.
    submit["data"]["components"] = [{"type": 18, "component": {"type": 4, "custom_id": "x", "value": " Rome\x00 "}}]
    assert modal_text(submit) == "Rome"


def test_history_joins_each_sides_messages_and_skips_notices():
    said = [payload("message_create_mention"), payload("message_create_thread_created"),
            payload("message_create_bot_answer"), payload("message_create_bot_answer") | {"content": "It is big."},
            payload("message_create_thread_follow_up"), payload("message_create_dm") | {"content": "\u200b"}]
    assert conversation(said, bot_user_id=BOT) == (
        Message("user", "What is the capital of France?"),
        Message("assistant", "Paris is the capital of France.\nIt is big."),
        Message("user", "And of Spain?"),
    )
