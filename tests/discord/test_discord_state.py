"""Discord state that survives (issue 13): votes on any part of a split answer after a restart, a vote while the
answer streams, /ask registration failing without stopping start-up, invisible text. The scripted model stands
in where the answer's length or timing matters."""

from __future__ import annotations

import asyncio
import contextlib

from core.engine import EMPTY_MESSAGE_REPLY
from kaizen_testing.discord import CHANNEL_ID, USER_ID, user_payload
from kaizen_testing.scripted import ScriptedModel

# About 4,500 characters: three Discord messages.
LONG = " ".join(f"Step {i}: check the VPN profile and sign in again." for i in range(90))


def _votes(bot, interaction_id: str) -> list[tuple[str, int]]:
    return [(v.user_id, v.value) for v in bot.store.get_votes(interaction_id=interaction_id)]


async def _stop(bot) -> None:
    bot.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await bot.task
    bot.store.close()


async def test_votes_on_any_part_after_a_restart_and_while_streaming(fake, start_bot, no_errors):
    slow = ScriptedModel(answer=LONG, token_s=0.01)  # about 9 s of streaming
    bot = await start_bot(model=slow, discord_threads=False)
    question = await fake.say("How do I reset my VPN profile?", mention_bot=True)
    # 👍 on the answer's first message while it is still being written.
    first = await fake.wait_for(lambda: next(iter(fake.bot_messages(CHANNEL_ID)), None))
    assert first["content"].endswith("▌")
    await fake.react(first, "👍")
    parts = await fake.wait_for(lambda: (m := fake.bot_messages(CHANNEL_ID)) and len(m) == 3
                                and m[-1]["components"] and m)
    iid = await fake.wait_for(lambda: bot.store.find_by_message_ref(platform="discord", ref=parts[0]["id"]))
    await fake.wait_for(lambda: _votes(bot, iid) == [(str(question["author"]["id"]), 1)])

    # Restart (a new process: new dispatcher and store on the same database), then 👎 from Bob on part 3.
    await _stop(bot)
    bob = user_payload(USER_ID + 1, "bob")
    bot = await start_bot(model=slow, discord_threads=False)
    await fake.react(parts[2], "👎", user=bob)
    await fake.wait_for(lambda: len(_votes(bot, iid)) == 2)
    assert sorted(_votes(bot, iid)) == sorted([(str(question["author"]["id"]), 1), (bob["id"], -1)])
    assert slow.calls == 1
    no_errors()


async def test_ask_registration_failure_does_not_stop_start_up(fake, start_bot, answers, caplog):
    fake.break_command_sync = True
    bot = await start_bot()
    assert fake.commands == []
    assert any("could not register /ask" in r.getMessage() for r in caplog.records)
    question = await fake.say("What is Kaizen?", mention_bot=True)
    assert await answers(bot, question["id"])


async def test_invisible_mention_gets_the_greeting_and_no_thread(fake, start_bot, no_errors):
    scripted = ScriptedModel(answer="unused")
    bot = await start_bot(model=scripted)
    await fake.say("\u200b\u200d\ufeff", mention_bot=True)
    [reply] = await fake.wait_for(lambda: fake.bot_messages(CHANNEL_ID))
    assert reply["content"] == EMPTY_MESSAGE_REPLY
    assert fake.threads() == [] and scripted.calls == 0
    with bot.store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM interactions").scalar() == 0
    no_errors()


async def test_correct_this_answer_opens_a_dialog_and_keeps_the_correction(fake, start_bot, answers, no_errors):
    bot = await start_bot(discord_threads=False)
    question = await fake.say("What is the capital of France?", mention_bot=True)
    [answer] = await answers(bot, CHANNEL_ID)
    ids = [c["custom_id"] for c in answer["components"][0]["components"]]
    iid = ids[0].rsplit(":", 1)[1]
    assert ids == [f"kaizen:another:{iid}", f"kaizen:correct:{iid}"]
    token = await fake.click(answer, f"kaizen:correct:{iid}")
    [modal] = await fake.wait_for(lambda: fake.response(token)["callbacks"])
    assert modal["type"] == 9 and modal["data"]["title"] == "Correct this answer"
    field = modal["data"]["components"][0]["components"][0]
    assert field["value"] == answer["content"]  # the answer as it was, to edit
    submit = {"custom_id": modal["data"]["custom_id"], "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": field["custom_id"], "value": "Paris.\x00"}]}]}
    done = await fake._interact(5, submit, CHANNEL_ID, None)
    [shown] = await fake.wait_for(lambda: fake.response(done)["callbacks"])
    assert shown["type"] == 4 and shown["data"]["content"] == f"✏️ Corrected by <@{question['author']['id']}>:\nParis."
    [kept] = bot.store.get_corrections(interaction_id=iid)
    assert (kept.user_id, kept.text, kept.platform) == (str(question["author"]["id"]), "Paris.", "discord")
    no_errors()
