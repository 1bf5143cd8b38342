"""The Slack front end end to end over loopback in HTTP mode: signed Events API, interactivity and slash
command requests into the real bolt app, answers from the real model, posted to a fake Slack Web API."""

from __future__ import annotations

import json
import time

from slack_sim import SlackSim, payload

from bot.dispatcher import APOLOGY, ATTACHMENTS_ONLY, RATE_LIMITED
from bot.slack.format import (
    ACTION_ANOTHER,
    ACTION_CORRECT,
    ACTION_DOWN,
    ACTION_UP,
    CORRECT_CALLBACK,
    PLACEHOLDER,
    to_mrkdwn,
)
from core.engine import EMPTY_MESSAGE_REPLY


def _buttons(msg: dict) -> list[str]:
    return [e["action_id"] for b in msg.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


def _interaction_id(msg: dict) -> str:
    return next(e["value"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"])


async def _mention_answered(slack: SlackSim, text: str, **kw) -> tuple[dict, dict]:
    """Send an @-mention, wait for the answer; returns (the event, the bot's final answer message)."""
    body = slack.mention(text, **kw)
    status, _ = await slack.event(body)
    assert status == 200
    await slack.front.idle()
    ev = body["event"]
    answers = slack.answers(ev["channel"], ev.get("thread_ts") or ev["ts"])
    assert answers, "no answer was posted"
    return body, answers[-1]


async def test_mention_is_answered_in_its_thread_with_buttons(slack, store):
    body, answer = await _mention_answered(slack, "What is the capital of France?")
    ev = body["event"]
    posts = slack.fake.calls_to("chat.postMessage")
    # A placeholder in the question's thread first, then the answer streamed into it and finished there.
    assert len(posts) == 1 and posts[0]["thread_ts"] == ev["ts"] and posts[0]["text"] == PLACEHOLDER
    updates = [c for c in slack.fake.calls_to("chat.update") if c["ts"] == answer["ts"]]
    assert len(updates) >= 2, "the answer should stream in before the final update"
    assert _buttons(updates[-1]) == [ACTION_UP, ACTION_DOWN, ACTION_ANOTHER, ACTION_CORRECT]
    # The posted text is the recorded answer, as mrkdwn; the message maps back to the interaction.
    interaction_id = store.find_by_message_ref(platform="slack", ref=f"C0GENERAL:{answer['ts']}")
    row = store.get_interaction(interaction_id=interaction_id)
    assert row is not None and row.question == "What is the capital of France?"
    assert "Paris" in row.answer
    assert answer["text"] == to_mrkdwn(row.answer)
    assert _interaction_id(answer) == interaction_id


async def test_http_ack_is_immediate_and_bad_signatures_are_refused(slack):
    body = slack.mention("Hello there")
    t0 = time.perf_counter()
    status, _ = await slack.event(body)
    ack_s = time.perf_counter() - t0
    assert status == 200 and ack_s < 2.0, f"ack took {ack_s:.2f}s"  # the answer itself runs in the background
    await slack.front.idle()
    calls = len(slack.fake.calls)
    assert (await slack.event(slack.mention("hi"), secret="wrong-secret"))[0] == 401
    assert (await slack.event(slack.mention("hi"), timestamp=int(time.time()) - 3600))[0] == 401  # replayed
    await slack.front.idle()
    assert len(slack.fake.calls) == calls  # nothing was answered


async def test_malformed_or_unsigned_requests_get_4xx_without_a_traceback(slack, caplog):
    caplog.set_level("DEBUG")
    form = "application/x-www-form-urlencoded"
    cases = [
        ("{not json", "application/json", {}, 400),  # signed, but not JSON
        ("[1, 2]", "application/json", {}, 400),  # JSON, but not an object
        ("payload=%7Bnot+json", form, {}, 400),  # interactivity whose payload= is not JSON
        ("payload=%5B%5D", form, {}, 400),
        ('{"type": "event_callback"}', "application/json", {"secret": "wrong"}, 401),  # bad signature
        ('{"type": "event_callback"}', "application/json", {"timestamp": "soon"}, 401),  # non-numeric
    ]
    for body, content_type, kw, expected in cases:
        status, _ = await slack.send(body, content_type, **kw)
        assert status == expected, (body, kw)
    async with slack.session.post(slack.url, data=b'{"type": "event_callback"}') as resp:  # no headers at all
        assert resp.status == 401
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def test_url_verification(slack):
    status, text = await slack.event(
        {
            "token": "x",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    )
    assert status == 200 and "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in text


async def test_retry_is_acknowledged_but_not_answered_twice(slack):
    body = slack.mention("What is 2 plus 2?")
    assert (await slack.event(body))[0] == 200
    # Slack retries with the same event_id and X-Slack-Retry-Num when it thinks we were too slow.
    assert (await slack.event(body, retry_num=1))[0] == 200
    assert (await slack.event(body, retry_num=2))[0] == 200
    await slack.front.idle()
    assert len(slack.fake.calls_to("chat.postMessage")) == 1
    assert len(slack.answers("C0GENERAL", body["event"]["ts"])) == 1


async def test_direct_message_answered_in_thread(slack, store):
    body = slack.dm("What is the capital of Italy?")
    assert (await slack.event(body))[0] == 200
    await slack.front.idle()
    ev = body["event"]
    (answer,) = slack.answers("D0ALICE", ev["ts"])
    assert answer["thread_ts"] == ev["ts"] and _buttons(answer)
    iid = store.find_by_message_ref(platform="slack", ref=f"D0ALICE:{answer['ts']}")
    assert store.get_interaction(interaction_id=iid).question == "What is the capital of Italy?"


async def test_follow_up_in_thread_without_mention_reads_the_thread(slack, store):
    first, answer = await _mention_answered(slack, "What is the capital of France?")
    root = first["event"]["ts"]
    follow = slack.reply("And of Germany?", thread_ts=root)
    assert (await slack.event(follow))[0] == 200
    await slack.front.idle()
    answers = slack.answers("C0GENERAL", root)
    assert len(answers) == 2 and answers[1]["ts"] > answer["ts"]
    # The thread read from Slack is the conversation the model saw.
    assert slack.fake.calls_to("conversations.replies")[-1]["ts"] == root
    iid = store.find_by_message_ref(platform="slack", ref=f"C0GENERAL:{answers[1]['ts']}")
    prompt = store.get_interaction(interaction_id=iid).prompt
    contents = [m["content"] for m in prompt]
    assert contents[1] == "What is the capital of France?" and prompt[2]["role"] == "assistant"
    assert contents[2] == answer["text"] and contents[-1] == "And of Germany?"
    # A reply in a thread the bot has no part in is left alone.
    other_root = slack.fake.add_message("C0GENERAL", user="U0CAROL", text="lunch?")
    await slack.event(slack.reply("pizza!", thread_ts=other_root, user="U0DAVE"))
    await slack.front.idle()
    assert slack.answers("C0GENERAL", other_root) == []


async def test_summoned_mid_thread_reads_the_thread_so_far(slack, store):
    root = slack.fake.add_message("C0GENERAL", user="U0CAROL", text="Our VPN is called *Tunnelbear Pro*.")
    slack.fake.add_message(
        "C0GENERAL", user="U0DAVE", text="It needs the `corp` profile &amp; MFA.", thread_ts=root
    )
    body, answer = await _mention_answered(slack, "What is our VPN called?", thread_ts=root)
    assert answer["thread_ts"] == root
    iid = store.find_by_message_ref(platform="slack", ref=f"C0GENERAL:{answer['ts']}")
    prompt = store.get_interaction(interaction_id=iid).prompt
    # Two human messages before the mention become one user turn, Slack's escapes undone.
    assert prompt[1] == {
        "role": "user",
        "content": "Our VPN is called *Tunnelbear Pro*.\nIt needs the `corp` profile & MFA.",
    }
    assert prompt[-1]["content"] == "What is our VPN called?"


async def test_follow_threads_off_in_a_channel_profile(make_settings, start_front):
    slack = await start_front(
        make_settings(channels={"quiet": {"preset": "precise", "follow_threads": False}})
    )
    slack.fake.channel_names["C0QUIET"] = "quiet"
    first, _ = await _mention_answered(slack, "What is the capital of France?", channel="C0QUIET")
    await slack.event(slack.reply("And of Spain?", thread_ts=first["event"]["ts"], channel="C0QUIET"))
    await slack.front.idle()
    assert len(slack.answers("C0QUIET", first["event"]["ts"])) == 1
    # A new mention in the same thread is still answered.
    await _mention_answered(slack, "And of Spain?", channel="C0QUIET", thread_ts=first["event"]["ts"])
    assert len(slack.answers("C0QUIET", first["event"]["ts"])) == 2


async def test_reactions_vote_and_retract(slack, store):
    _, answer = await _mention_answered(slack, "What is the capital of France?")
    iid = _interaction_id(answer)
    assert (await slack.event(slack.reaction(ts=answer["ts"], emoji="+1::skin-tone-3")))[0] == 200
    await slack.front.idle()
    assert [(v.user_id, v.value) for v in store.get_votes(interaction_id=iid)] == [("U0BOB", 1)]
    # Another user's 👎, a retry of it, and an unrelated emoji.
    down = slack.reaction(ts=answer["ts"], emoji="thumbsdown", user="U0CAROL")
    await slack.event(down)
    await slack.event(down, retry_num=1)
    await slack.event(slack.reaction(ts=answer["ts"], emoji="tada", user="U0DAVE"))
    await slack.front.idle()
    assert [(v.user_id, v.value) for v in store.get_votes(interaction_id=iid)] == [
        ("U0BOB", 1),
        ("U0CAROL", -1),
    ]
    # Removing the reaction retracts the vote.
    await slack.event(slack.reaction(ts=answer["ts"], emoji="+1", added=False))
    await slack.front.idle()
    assert [(v.user_id, v.value) for v in store.get_votes(interaction_id=iid)] == [("U0CAROL", -1)]
    # A thumbs-up on a message that is not an answer of ours changes nothing.
    human = slack.fake.add_message("C0GENERAL", user="U0ALICE", text="thanks")
    await slack.event(slack.reaction(ts=human, user="U0ERIN"))
    await slack.front.idle()
    assert len(store.get_votes(interaction_id=iid)) == 1


async def test_buttons_vote_reason_and_another_answer(slack, store):
    body, answer = await _mention_answered(slack, "What is the capital of France?")
    root, iid = body["event"]["ts"], _interaction_id(answer)
    where = dict(channel="C0GENERAL", message_ts=answer["ts"], thread_ts=root)
    # 👍 button: a vote, and a private thank-you.
    assert (await slack.interaction(slack.button(ACTION_UP, iid, **where)))[0] == 200
    await slack.front.idle()
    assert [(v.user_id, v.value) for v in store.get_votes(interaction_id=iid)] == [("U0BOB", 1)]
    assert slack.fake.calls_to("chat.postEphemeral")[-1]["user"] == "U0BOB"
    # 👎 button: the vote changes and the optional reason dialog opens with the click's trigger.
    down = slack.button(ACTION_DOWN, iid, user="U0CAROL", **where)
    await slack.interaction(down)
    await slack.front.idle()
    (opened,) = slack.fake.calls_to("views.open")
    assert opened["trigger_id"] == down["trigger_id"] and opened["view"]["private_metadata"] == iid
    view = payload("view_submission")
    view["view"]["private_metadata"] = iid
    view["user"]["id"] = "U0CAROL"
    assert (await slack.interaction(view))[0] == 200
    await slack.front.idle()
    votes = {v.user_id: (v.value, v.reason) for v in store.get_votes(interaction_id=iid)}
    assert votes == {"U0BOB": (1, None), "U0CAROL": (-1, "It named the wrong city.")}
    # "Try another answer": a sibling in the same thread, linked to the first, with its own buttons.
    await slack.interaction(slack.button(ACTION_ANOTHER, iid, **where))
    await slack.front.idle()
    answers = slack.answers("C0GENERAL", root)
    assert len(answers) == 2
    sibling_id = _interaction_id(answers[1])
    assert sibling_id != iid
    assert store.get_interaction(interaction_id=sibling_id).sibling_of == iid
    assert store.find_by_message_ref(platform="slack", ref=f"C0GENERAL:{answers[1]['ts']}") == sibling_id
    assert "Another answer" in json.dumps(answers[1]["blocks"])
    # "Correct this answer": a dialog with the answer to edit; the correction is kept and shown in the thread.
    fix = slack.button(ACTION_CORRECT, iid, user="U0DAVE", **where)
    await slack.interaction(fix)
    await slack.front.idle()
    opened = slack.fake.calls_to("views.open")[-1]
    assert opened["trigger_id"] == fix["trigger_id"] and opened["view"]["callback_id"] == CORRECT_CALLBACK
    submitted = payload("view_submission")
    submitted["user"]["id"] = "U0DAVE"
    submitted["view"] |= {"callback_id": CORRECT_CALLBACK, "private_metadata": opened["view"]["private_metadata"],
                          "state": {"values": {"correction": {"text": {"type": "plain_text_input",
                                                                       "value": "Paris\u200b is the capital."}}}}}
    assert (await slack.interaction(submitted))[0] == 200
    await slack.front.idle()
    [kept] = store.get_corrections(interaction_id=iid)
    assert (kept.user_id, kept.text) == ("U0DAVE", "Paris\u200b is the capital.")
    assert "Corrected by <@U0DAVE>" in slack.answers("C0GENERAL", root)[-1]["text"]


async def test_slash_command_public_and_private(slack, store):
    status, text = await slack.command(slack.ask("preset=precise What is the capital of France?"))
    assert status == 200 and text == ""
    await slack.front.idle()
    # In public the question becomes a thread (posted for the asker) and is answered in it.
    root = slack.fake.calls_to("chat.postMessage")[0]
    assert root["text"].startswith("<@U0ALICE> asked:") and not root.get("thread_ts")
    (answer,) = [m for m in slack.fake.bot_messages("C0GENERAL") if m.get("thread_ts")]
    iid = _interaction_id(answer)
    row = store.get_interaction(interaction_id=iid)
    assert row.question == "What is the capital of France?" and row.preset == "precise"
    # Privately: an ephemeral "thinking" ack, then the answer replaces it through the response_url.
    fields = slack.ask("private What is the capital of Spain?")
    status, text = await slack.command(fields)
    assert status == 200 and json.loads(text)["response_type"] == "ephemeral"
    await slack.front.idle()
    (resp,) = [r for r in slack.fake.responses if fields["response_url"].endswith(r["hook"])]
    assert resp["response_type"] == "ephemeral" and resp["replace_original"] is True
    assert ACTION_UP in json.dumps(resp["blocks"])
    # A follow-up in the public /ask thread sees the question as the user's turn.
    await slack.event(slack.reply("And of Italy?", thread_ts=root_ts(slack)))
    await slack.front.idle()
    follow = slack.answers("C0GENERAL", root_ts(slack))[-1]
    prompt = store.get_interaction(interaction_id=_interaction_id(follow)).prompt
    assert prompt[1] == {"role": "user", "content": "What is the capital of France?"}


def root_ts(slack: SlackSim) -> str:
    return next(m["ts"] for m in slack.fake.bot_messages("C0GENERAL") if not m.get("thread_ts"))


async def test_slash_command_bad_options_and_empty(slack):
    status, text = await slack.command(slack.ask("preset=spicy why?"))
    assert status == 200 and "valid presets" in text and "precise" in text
    status, text = await slack.command(slack.ask("mode=telepathy why?"))
    assert "valid modes" in text
    status, text = await slack.command(slack.ask(""))
    assert "Usage" in text
    await slack.front.idle()
    assert slack.fake.calls_to("chat.postMessage") == []


async def test_bots_own_messages_edits_and_deletes_are_ignored(slack):
    fake = slack.fake
    own = slack.dm("I am Kaizen", user=fake.bot_user_id, bot_id=fake.bot_id)
    edited = payload("message_changed")
    deleted = payload("message_deleted")
    other_bot = payload("bot_message")
    for body in (own, edited, deleted, other_bot):
        assert (await slack.event(body))[0] == 200
    await slack.front.idle()
    assert fake.calls_to("chat.postMessage") == [] and fake.calls_to("chat.update") == []


async def test_bad_input_is_answered_politely(slack):
    # A bare mention: a hint, no model call, no buttons.
    body, answer = await _mention_answered(slack, "")
    assert answer["text"] == to_mrkdwn(EMPTY_MESSAGE_REPLY) and not _buttons(answer)
    # A file without text.
    files = payload("file_share")
    files["event"]["ts"] = slack.fake.add_message("D0ALICE", user="U0ALICE", text="")
    await slack.event(files)
    await slack.front.idle()
    (answer,) = slack.answers("D0ALICE", files["event"]["ts"])
    assert answer["text"] == to_mrkdwn(ATTACHMENTS_ONLY)
    # A huge paste (Slack's 40,000-character maximum) is answered, the model seeing its beginning.
    huge = "Summarise this log: " + "ERROR disk full on /var/lib/data; retrying in 5s. " * 800
    body, answer = await _mention_answered(slack, huge[:40_000])
    assert _buttons(answer) and answer["text"] not in (PLACEHOLDER, to_mrkdwn(APOLOGY))


async def test_removed_from_channel_is_handled_quietly(slack):
    slack.fake.missing_channels.add("C0GONE")
    body = slack.mention("Are you there?", channel="C0GONE")
    assert (await slack.event(body))[0] == 200
    await slack.front.idle()
    assert slack.fake.calls_to("chat.postMessage")[-1]["channel"] == "C0GONE"  # tried, failed, moved on
    # /ask in a channel we are not in: the answer comes privately, with a note saying why.
    fields = slack.ask("What is the capital of France?", channel="C0GONE")
    await slack.command(fields)
    await slack.front.idle()
    texts = [r["text"] for r in slack.fake.responses]
    assert "not a member" in texts[0] and len(texts) == 2
    # And the app keeps answering elsewhere.
    await _mention_answered(slack, "Still there?")


async def test_slack_rate_limits_delay_but_never_lose_the_answer(slack, store):
    # Slack answers 429 to the next chat.update calls: streaming pauses, the final update is retried.
    slack.fake.rate_limited["chat.update"] = 2
    _, answer = await _mention_answered(slack, "What is the capital of France?")
    assert slack.fake.rate_limited["chat.update"] == 0
    assert (
        _buttons(answer) and "Paris" in store.get_interaction(interaction_id=_interaction_id(answer)).answer
    )


async def test_rate_limited_user_gets_a_polite_reply(make_settings, start_front):
    slack = await start_front(make_settings(rate_limit_per_minute=1))
    await _mention_answered(slack, "What is the capital of France?")
    _, second = await _mention_answered(slack, "And of Spain?")
    assert second["text"] == to_mrkdwn(RATE_LIMITED) and not _buttons(second)
    _, other_user = await _mention_answered(slack, "And of Spain?", user="U0BOB")
    assert _buttons(other_user)


async def test_engine_failure_gives_an_apology(make_settings, start_front):
    from core.config import ModelSettings
    from core.models import OpenAIChatModel

    # A model server that is down: the engine raises, the user gets an apology instead of silence.
    dead = OpenAIChatModel(ModelSettings(backend="openai", base_url="http://127.0.0.1:9/v1", timeout_s=2))
    slack = await start_front(make_settings(), model=dead)
    _, answer = await _mention_answered(slack, "What is the capital of France?")
    assert answer["text"] == to_mrkdwn(APOLOGY) and not _buttons(answer)
    await dead.aclose()
