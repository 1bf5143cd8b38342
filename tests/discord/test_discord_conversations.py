"""Conversations end to end: the real discord.py client against the fake Discord, the real model behind it."""

from __future__ import annotations

import pytest
from discord.http import Route

from bot.dispatcher import RATE_LIMITED
from core.config import ConfigError
from core.engine import EMPTY_MESSAGE_REPLY
from kaizen_testing.discord import BOT_ID, CHANNEL_ID, GUILD_ID, MESSAGE_CONTENT


def _prompt_texts(bot, message) -> list[tuple[str, str]]:
    """(role, content) of what the model saw for the answer `message` (found through its button)."""
    custom_id = message["components"][0]["components"][-1]["custom_id"]
    row = bot.store.get_interaction(interaction_id=custom_id.rsplit(":", 1)[1])
    return [(m["role"], m["content"]) for m in row.prompt]


async def test_mention_is_answered_in_a_thread_that_is_the_conversation(fake, start_bot, answers, no_errors):
    bot = await start_bot()
    assert fake.identified[0]["intents"] & MESSAGE_CONTENT
    assert [c["name"] for c in fake.commands] == ["ask"]  # /ask synced on start
    assert [o["name"] for o in fake.commands[0]["options"]] == ["question", "preset", "mode", "private"]

    question = await fake.say("How do I reset my VPN password?", mention_bot=True)
    [first] = await answers(bot, question["id"])
    thread = fake.channels[question["id"]]
    assert thread["type"] == 11 and thread["owner_id"] == str(BOT_ID)
    assert thread["name"] == "How do I reset my VPN password?"
    assert fake.requests("POST", f"/channels/{thread['id']}/typing")
    # Streamed: posted with the cursor, then edited to the final text with the button.
    assert first["_created_with"]["content"].endswith("▌") and first["_edits"]
    assert first["content"] and not first["content"].endswith("▌")
    interaction_id = bot.store.find_by_message_ref(platform="discord", ref=first["id"])
    row = bot.store.get_interaction(interaction_id=interaction_id)
    assert row.question == "How do I reset my VPN password?"  # the mention is stripped
    assert row.answer == first["content"]
    assert first["components"][0]["components"][0]["custom_id"] == f"kaizen:another:{interaction_id}"

    # Chatter in the channel is not for the bot; a follow-up in its thread needs no mention.
    await fake.say("lunch anyone?")
    follow_up = await fake.say("And on my phone?", channel_id=thread["id"])
    _, second = await answers(bot, thread["id"], 2)
    assert second["referenced_message"]["id"] == follow_up["id"]
    seen = _prompt_texts(bot, second)
    # The thread so far, read back from Discord, is the history: the question, then the first answer.
    assert ("user", "How do I reset my VPN password?") in seen
    assert ("assistant", first["content"]) in seen
    assert seen[-1] == ("user", "And on my phone?")
    assert fake.bot_messages(CHANNEL_ID) == []
    no_errors()


async def test_inline_replies_follow_reply_chains_and_ignore_bots(fake, start_bot, answers, no_errors):
    bot = await start_bot(discord_threads=False)
    await fake.say("hello Kaizen", author=fake.other_bot, mention_bot=True)
    question = await fake.say("What is Kaizen?", mention_bot=True)
    [first] = await answers(bot, CHANNEL_ID)
    assert first["referenced_message"]["id"] == question["id"]
    assert fake.threads() == []

    # Replying to the bot's answer (Discord adds the mention of the replied-to author).
    follow_up = await fake.say("Tell me more", reply_to=first, mention_bot=True)
    _, second = await answers(bot, CHANNEL_ID, 2)
    assert second["referenced_message"]["id"] == follow_up["id"]
    seen = _prompt_texts(bot, second)
    assert ("user", "What is Kaizen?") in seen and ("assistant", first["content"]) in seen
    assert len(fake.bot_messages(CHANNEL_ID)) == 2  # the other bot was not answered
    no_errors()


async def test_rate_limit_and_role_mention(fake, start_bot, answers, no_errors):
    bot = await start_bot(rate_limit_per_minute=1)
    first = await fake.say("What is the leave policy?", mention_bot=True)
    await answers(bot, first["id"])
    # Mentioning the bot's role counts as mentioning it; a second question in a minute is refused politely.
    second = await fake.say("And the travel policy?", mention_role=True)
    [refusal] = await answers(bot, second["id"])
    assert refusal["content"] == RATE_LIMITED
    assert refusal["components"] == []  # nothing to try again
    no_errors()


async def test_guild_profile_applies_where_the_channel_has_none(fake, start_bot, answers, no_errors):
    # The guild's profile turns off follow-ups without a mention.
    bot = await start_bot(channels={str(GUILD_ID): {"preset": "precise", "follow_threads": False}})
    question = await fake.say("Where is the handbook?", mention_bot=True)
    await answers(bot, question["id"])
    await fake.say("thanks!", channel_id=question["id"])
    await fake.say("", channel_id=question["id"], mention_bot=True)  # a mention is still answered
    messages = await answers(bot, question["id"], 2)
    assert len(messages) == 2 and messages[1]["content"] == EMPTY_MESSAGE_REPLY
    no_errors()


async def test_sharded_client_answers_direct_messages(fake, start_bot, answers, no_errors):
    bot = await start_bot(discord_sharded=True)
    assert fake.requests("GET", "/gateway/bot")  # AutoShardedClient asks how many shards to run
    assert fake.identified[0]["shard"] == [0, 1]
    dm = fake.open_dm()
    await fake.say("Hi, what can you do?", channel_id=dm)  # no mention needed in a DM
    [reply] = await answers(bot, dm)
    assert reply["content"] and "referenced_message" not in reply
    assert fake.threads() == []
    no_errors()


async def test_configuration_errors_are_clear(fake, start_bot):
    with pytest.raises(ConfigError, match="rejected DISCORD_TOKEN"):
        await start_bot(discord_token="stale-token")
    fake.allow_message_content = False
    with pytest.raises(ConfigError, match="Message Content intent"):
        await start_bot()
    with pytest.raises(ConfigError, match="DISCORD_TOKEN is not set"):
        await start_bot(discord_token="")
    with pytest.raises(ConfigError, match="must be a ws"):
        await start_bot(discord_gateway_url="http://127.0.0.1:1/gateway")
    assert Route.BASE == "https://discord.com/api/v10"  # the endpoints are put back afterwards
