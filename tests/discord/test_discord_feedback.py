"""Feedback end to end: 👍/👎 reactions (raw events, so uncached answers count), the "Try another answer"
button and the private /ask with vote buttons, all stored in a real SQLite feedback store."""

from __future__ import annotations

from kaizen_testing.discord import USER_ID, user_payload

ALICE = str(USER_ID)
BOB = user_payload(USER_ID + 1, "bob")


def _votes(bot, interaction_id: str) -> list[tuple[str, int]]:
    return [(v.user_id, v.value) for v in bot.store.get_votes(interaction_id=interaction_id)]


def _final_response(fake, token: str):
    original = fake.response(token)["original"]
    done = original and original["components"] and not original["content"].endswith("▌")
    return original if done else None


async def test_reactions_vote_and_another_answer_is_a_sibling(fake, start_bot, answers, no_errors):
    fake.echo_bot_messages = False  # the client never caches its answers: only raw reaction events see them
    bot = await start_bot()
    question = await fake.say("What VPN do we use?", mention_bot=True)
    [answer] = await answers(bot, question["id"])
    interaction_id = bot.store.find_by_message_ref(platform="discord", ref=answer["id"])
    assert interaction_id

    await fake.react(answer, "👍", user=fake.other_bot)  # bots do not vote
    await fake.react(answer, "🎉")  # not a vote
    await fake.react(answer, "👍")
    await fake.wait_for(lambda: _votes(bot, interaction_id) == [(ALICE, 1)])
    await fake.react(answer, "👍", added=False)  # removal retracts
    await fake.wait_for(lambda: _votes(bot, interaction_id) == [])
    await fake.react(answer, "👎🏽")  # any skin tone
    await fake.wait_for(lambda: _votes(bot, interaction_id) == [(ALICE, -1)])
    await fake.react(answer, "👍", added=False)  # removing a 👍 she no longer has keeps her 👎
    await fake.react(answer, "🎉", added=False)
    await fake.react(answer, "👍", user=BOB)  # reactions are applied in order: once Bob's is in, so are hers
    await fake.wait_for(lambda: _votes(bot, interaction_id) == [(ALICE, -1), (BOB["id"], 1)])

    # "Try another answer": a sibling answer, posted in the same thread and linked to the first.
    token = await fake.click(answer, f"kaizen:another:{interaction_id}")
    sibling_message = await fake.wait_for(lambda: _final_response(fake, token))
    assert sibling_message["channel_id"] == question["id"]
    [sibling] = await fake.wait_for(lambda: bot.store.siblings(interaction_id=interaction_id))
    await fake.wait_for(lambda: bot.store.get_interaction(interaction_id=sibling.id).message_ref)
    assert bot.store.get_interaction(interaction_id=sibling.id).message_ref == sibling_message["id"]
    assert sibling.answer == sibling_message["content"]
    await fake.react(sibling_message, "👍")
    await fake.wait_for(lambda: _votes(bot, sibling.id) == [(ALICE, 1)])
    no_errors()


async def test_private_ask_has_vote_buttons(fake, start_bot, no_errors):
    bot = await start_bot()
    preset_choices = [c["value"] for c in fake.commands[0]["options"][1]["choices"]]
    assert "precise" in preset_choices and "balanced" in preset_choices
    options = {"question": "What is Kaizen?", "preset": "precise", "mode": "chat", "private": True}
    token = await fake.slash(options)
    original = await fake.wait_for(lambda: _final_response(fake, token))
    [deferred] = fake.response(token)["callbacks"]
    assert deferred["type"] == 5 and deferred["data"]["flags"] & 64  # "thinking…", only for the asker
    assert original["flags"] & 64
    ids = [c["custom_id"] for c in original["components"][0]["components"]]
    interaction_id = ids[0].rsplit(":", 1)[1]
    assert ids == [f"kaizen:{action}:{interaction_id}" for action in ("up", "down", "another", "correct")]
    await fake.wait_for(lambda: bot.store.get_interaction(interaction_id=interaction_id).message_ref)
    row = bot.store.get_interaction(interaction_id=interaction_id)
    assert (row.question, row.preset, row.mode, row.answer) == ("What is Kaizen?", "precise", "chat",
                                                                original["content"])
    assert row.message_ref == original["id"]

    vote = await fake.click(original, ids[1])
    await fake.wait_for(lambda: _votes(bot, interaction_id) == [(ALICE, -1)])
    [thanks] = await fake.wait_for(lambda: fake.response(vote)["callbacks"])
    assert thanks["type"] == 4 and thanks["data"]["flags"] & 64
    no_errors()
