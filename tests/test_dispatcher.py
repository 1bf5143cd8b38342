"""The platform-neutral front-end layer: real engine (default model), real SQLite feedback store."""

import pytest

from bot.dispatcher import APOLOGY, RATE_LIMITED, Dispatcher, RateLimiter
from bot.events import ButtonPress, IncomingMessage, Reaction, vote_value
from core.config import load_settings
from core.engine import Engine
from feedback import FeedbackStore


@pytest.fixture
def setup(default_model, isolated_env):
    settings = load_settings(data_dir=isolated_env, default={"preset": "short"},
                             presets={"short": {"strategy": "greedy", "max_new_tokens": 12}},
                             channels={"quiet": {"follow_threads": False, "preset": "short"}})
    store = FeedbackStore.open(settings)
    engine = Engine(settings, default_model, on_reply=store.on_reply)
    yield Dispatcher(engine, store, rate_limit_per_minute=3), store
    store.close()


def msg(text="What is the capital of France?", **kw):
    base = dict(platform="slack", text=text, user="U1", channel="C1", thread="100.1", mentioned=True)
    return IncomingMessage(**{**base, **kw})


def test_vote_values():
    assert vote_value("+1") == vote_value("thumbsup") == vote_value("👍") == vote_value("+1::skin-tone-3") == 1
    assert vote_value("-1") == vote_value("👎🏽") == -1
    assert vote_value("tada") is None


def test_who_gets_an_answer(setup):
    d, _ = setup
    assert d.should_answer(msg()) and d.should_answer(msg(mentioned=False, is_dm=True))
    assert not d.should_answer(msg(from_bot=True))
    assert not d.should_answer(msg(mentioned=False))  # a channel message that is not for us
    assert d.should_answer(msg(mentioned=False, in_bot_thread=True))
    assert not d.should_answer(msg(mentioned=False, in_bot_thread=True, channel_name="quiet"))


async def test_answer_record_react_retract(setup):
    d, store = setup
    reply = await d.answer(msg())
    assert reply.called_model and "Paris" in reply.answer
    assert store.get_interaction(interaction_id=reply.id) is not None  # recorded before we got it
    await d.posted(reply, "C1:200.2")
    assert (msg(mentioned=False).platform, "C1", "100.1") in d.bot_threads
    iid = await d.reaction(Reaction(platform="slack", user="U2", emoji="+1", message_ref="C1:200.2", added=True,
                                    event_id="Ev1"))
    assert iid == reply.id
    assert [(v.user_id, v.value) for v in store.get_votes(interaction_id=reply.id)] == [("U2", 1)]
    # A retried delivery of the same event changes nothing; 👎 replaces 👍; removing 👍 then keeps the 👎.
    assert await d.reaction(Reaction(platform="slack", user="U2", emoji="+1", message_ref="C1:200.2", added=True,
                                     event_id="Ev1")) is None
    await d.reaction(Reaction(platform="slack", user="U2", emoji="thumbsdown", message_ref="C1:200.2", added=True))
    await d.reaction(Reaction(platform="slack", user="U2", emoji="+1", message_ref="C1:200.2", added=False))
    assert [(v.user_id, v.value) for v in store.get_votes(interaction_id=reply.id)] == [("U2", -1)]
    await d.reaction(Reaction(platform="slack", user="U2", emoji="-1", message_ref="C1:200.2", added=False))
    assert store.get_votes(interaction_id=reply.id) == []
    # Reactions on messages that are not ours, or other emoji, are ignored.
    assert await d.reaction(Reaction(platform="slack", user="U2", emoji="+1", message_ref="C1:999", added=True)) \
        is None
    assert await d.reaction(Reaction(platform="slack", user="U2", emoji="tada", message_ref="C1:200.2",
                                     added=True)) is None


async def test_buttons_and_another(setup):
    d, store = setup
    first = await d.answer(msg(thread="t-btn"))
    await d.button(ButtonPress(platform="slack", user="U3", action="down", interaction_id=first.id))
    await d.button(ButtonPress(platform="slack", user="U3", action="reason", interaction_id=first.id,
                               reason="too vague"))
    [vote] = store.get_votes(interaction_id=first.id)
    assert vote.value == -1 and vote.reason == "too vague"
    # A reason from someone who has not voted has nothing to attach to: ignored, no error.
    assert await d.button(ButtonPress(platform="slack", user="U4", action="reason", interaction_id=first.id,
                                      reason="hm")) is None
    assert len(store.get_votes(interaction_id=first.id)) == 1
    sibling = await d.button(ButtonPress(platform="slack", user="U3", action="another", interaction_id=first.id))
    assert sibling.sibling_of == first.id and sibling.prompt == first.prompt
    assert store.get_interaction(interaction_id=sibling.id).sibling_of == first.id
    d._recent.clear()  # after a restart: the first answer is rebuilt from the store
    again = await d.another(first.id)
    assert again.sibling_of == first.id and [m.content for m in again.prompt] == [m.content for m in first.prompt]


async def test_rate_limit_and_failures(setup, monkeypatch):
    d, _ = setup
    for _ in range(3):
        assert (await d.answer(msg(text="", has_attachments=True))).called_model is False
    limited = await d.answer(msg(user="U1"))
    assert limited.answer == RATE_LIMITED and not limited.called_model
    bad = await d.answer(msg(user="U9", preset="spicy"))
    assert "valid presets" in bad.answer

    async def broken(*a, **k):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(d.engine, "answer", broken)
    failed = await d.answer(msg(user="U8"))
    assert failed.answer == APOLOGY


def test_rate_limiter_window():
    now = [0.0]
    rl = RateLimiter(2, clock=lambda: now[0])
    assert rl.allow("a") and rl.allow("a") and not rl.allow("a") and rl.allow("b")
    now[0] = 61
    assert rl.allow("a")
