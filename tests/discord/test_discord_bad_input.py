"""Bad input end to end: empty mentions, attachments only, very long messages, questions deleted before the
answer — each handled without an error."""

from __future__ import annotations

from bot.dispatcher import ATTACHMENTS_ONLY
from core.engine import EMPTY_MESSAGE_REPLY
from kaizen_testing.discord import CHANNEL_ID, attachment_payload


async def test_bad_input_is_handled_without_errors(fake, start_bot, answers, no_errors):
    bot = await start_bot()
    # An empty mention and a file without text get a short hint inline, not a thread.
    empty = await fake.say("", mention_bot=True)
    files = await fake.say("", mention_bot=True, attachments=(attachment_payload(fake.new_id()),))
    # A question deleted before its thread could be started: the bot lets it go.
    gone = await fake.say("Where is the handbook?", mention_bot=True, deleted=True)
    hints = await answers(bot, CHANNEL_ID, 2)
    assert {m["referenced_message"]["id"]: m["content"] for m in hints} == {
        empty["id"]: EMPTY_MESSAGE_REPLY, files["id"]: ATTACHMENTS_ONLY}
    assert fake.threads() == []

    # A very long question: a thread with a short name, and an answer.
    long = await fake.say("Please summarise this: " + "lorem ipsum dolor sit amet " * 140, mention_bot=True)
    assert len(long["content"]) > 3500
    [answer] = await answers(bot, long["id"])
    name = fake.channels[long["id"]]["name"]
    assert len(name) <= 100 and name.endswith("…")
    assert answer["content"]

    # A follow-up deleted before the answer: answered, without a link to the vanished message.
    await fake.say("And where do I find the VPN guide?", channel_id=long["id"], deleted=True)
    _, second = await answers(bot, long["id"], 2)
    assert "referenced_message" not in second
    assert fake.requests("POST", f"/channels/{CHANNEL_ID}/messages/{gone['id']}/threads")  # it got a 404
    assert gone["id"] not in fake.channels
    assert len(fake.bot_messages(CHANNEL_ID)) == 2
    no_errors()
