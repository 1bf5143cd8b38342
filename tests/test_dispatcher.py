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
    again = await d.another(first.id, user="slack:U3")
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


# -- state shared by replicas (issue 13): two dispatchers on one database, with the scripted model -------------

class _Outlet:
    """An in-memory outlet: parts of `size` characters, refs "C1:<n>"."""

    refs = iter(range(1, 10**6))

    def __init__(self, size: int = 400) -> None:
        self.size, self.posted, self.fed, self.failed = size, [], [], []

    async def prepare(self, m):
        return m

    async def open(self, m):
        return m

    def feed(self, text):
        self.fed.append(text)

    async def deliver(self, reply):
        parts = [reply.answer[i:i + self.size] for i in range(0, len(reply.answer), self.size)]
        self.posted.append(parts)
        self.delivered = [f"C1:{next(self.refs)}" for _ in parts]
        return self.delivered

    async def fail(self, text):
        self.failed.append(text)


@pytest.fixture(scope="module")
def pg_cluster():
    from kaizen_testing.pg import PgCluster, unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    cluster = PgCluster()
    yield cluster
    cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def replicas(request, isolated_env):
    """A factory of dispatchers ("replicas", or one after a restart), each with its own store, all on one
    database (SQLite or a throwaway PostgreSQL), answering with the scripted model."""
    from kaizen_testing.scripted import ScriptedModel

    if request.param == "sqlite":
        url = f"sqlite:///{isolated_env / 'shared.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").create_database()
    settings = load_settings(data_dir=isolated_env, presets={"short": {"strategy": "greedy", "max_new_tokens": 8}},
                             default={"preset": "short"})
    stores = []

    def replica(answer="Paris is the capital of France. " * 40):
        store = FeedbackStore.from_url(url, spool_dir=isolated_env / f"spool{len(stores)}")
        stores.append(store)
        model = ScriptedModel(answer=answer)
        return Dispatcher(Engine(settings, model, on_reply=store.on_reply), store, rate_limit_per_minute=5)

    yield replica
    for s in stores:
        s.close()


async def test_replicas_share_deduplication_parts_and_held_votes(replicas):
    a, b = replicas(), replicas()
    first = msg(event_id="Ev1", message_ref="C1:100.1")
    out_a, out_b = _Outlet(), _Outlet()
    reply = await a.handle(first, out_a)
    assert reply is not None and reply.called_model and len(out_a.posted[0]) >= 3
    # Slack's retry reaches the other replica; an edit re-delivers the same message under a new event id.
    assert await b.handle(first, out_b) is None
    assert await b.handle(msg(event_id="Ev2-edited", message_ref="C1:100.1"), out_b) is None
    assert out_b.posted == [] and b.engine.model.calls == 0
    # After a restart, a vote on part 3 counts for the answer.
    c = replicas()
    part3 = out_a.delivered[2]
    assert await c.reaction(Reaction(platform="slack", user="U2", emoji="+1", message_ref=part3, added=True,
                                     event_id="EvR1")) == reply.id
    assert [(v.user_id, v.value) for v in c.store.get_votes(interaction_id=reply.id)] == [("U2", 1)]
    # The same reaction event delivered again to another replica changes nothing (even after a retraction).
    await c.reaction(Reaction(platform="slack", user="U2", emoji="+1", message_ref=part3, added=False,
                              event_id="EvR2"))
    assert await a.reaction(Reaction(platform="slack", user="U2", emoji="+1", message_ref=part3, added=True,
                                     event_id="EvR1")) is None
    assert c.store.get_votes(interaction_id=reply.id) == []


async def test_vote_while_streaming_is_held_then_counted(replicas):
    a, b = replicas(), replicas()

    class Streaming(_Outlet):
        async def open(self, m):
            # The placeholder is up ("C1:900"); a 👍 on it reaches the other replica before the answer is recorded.
            self.early = await b.reaction(Reaction(platform="slack", user="U7", emoji="thumbsup", message_ref="C1:900",
                                                   added=True, event_id="EvEarly"))
            return m

        async def deliver(self, reply):
            return ["C1:900", "C1:901"]

    outlet = Streaming()
    reply = await a.handle(msg(event_id="Ev9", message_ref="C1:800.1"), outlet)
    assert outlet.early is None  # not known yet: held
    assert [(v.user_id, v.value) for v in a.store.get_votes(interaction_id=reply.id)] == [("U7", 1)]


async def test_invisible_text_gets_the_greeting_and_records_nothing(replicas):
    a = replicas()
    for text in ("\u200b", "\u200d\ufeff", " \u200b\n\u2060 "):
        outlet = _Outlet()
        reply = await a.handle(msg(text=text), outlet)
        assert reply is not None and not reply.called_model and reply.mode == "none"
        assert "Ask me a question" in reply.answer
    assert a.engine.model.calls == 0
    with a.store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM interactions").scalar() == 0


async def test_every_model_call_is_rate_limited_and_errors_stay_private(replicas, monkeypatch):
    a = replicas()
    reply = await a.handle(msg(user="U5"), _Outlet())
    # "Try another answer" runs the model again: it counts against the same per-minute limit as questions.
    results = [await a.handle_another(ButtonPress("slack", "U5", "another", reply.id), _Outlet()) for _ in range(5)]
    assert [r.answer == RATE_LIMITED for r in results] == [False, False, False, False, True]
    assert a.engine.model.calls == 5

    async def codec_error(*args, **kw):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(a.engine, "answer", codec_error)
    failed = await a.answer(msg(user="U6"))
    assert failed.answer == APOLOGY and "utf-8" not in failed.answer


async def test_the_rate_limit_holds_across_replicas(replicas):
    # Behind a load balancer a user's questions land on either replica: the limit (5) counts them together.
    a, b = replicas(), replicas()
    replies = [await (a, b)[i % 2].handle(msg(user="U9", event_id=f"EvL{i}", message_ref=f"C1:{i}.9"), _Outlet())
               for i in range(6)]
    assert [r.answer == RATE_LIMITED for r in replies] == [False] * 5 + [True]
    assert a.engine.model.calls + b.engine.model.calls == 5
    # ...and after a restart the count is still there; another user has a limit of their own.
    c = replicas()
    assert (await c.answer(msg(user="U9"))).answer == RATE_LIMITED
    assert (await c.answer(msg(user="U10"))).answer != RATE_LIMITED


async def test_the_limit_still_holds_while_the_database_is_down(tmp_path):
    import sqlalchemy as sa

    from bot.ratelimit import Limiter

    # A database that cannot be opened (its folder does not exist): this process's own count decides.
    limiter = Limiter(2, engine=sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'kaizen.db'}"))
    assert [await limiter.allow("slack:U1") for _ in range(3)] == [True, True, False]
    assert await limiter.allow("slack:U2")


def test_event_rows_and_held_votes_expire(isolated_env):
    from datetime import UTC, datetime, timedelta

    from feedback.frontend import EVENT_TTL, HELD_VOTE_TTL, FrontendState

    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    store = FeedbackStore.from_url(f"sqlite:///{isolated_env / 'fb.db'}", spool_dir=isolated_env / "spool")
    state = FrontendState(store.engine, clock=lambda: now[0])
    assert state.claim(platform="slack", keys=["event:Ev1", "message:C1:1.1"])
    assert state.hold_vote(platform="slack", ref="C1:2.2", user="U1", value=1) is None
    now[0] += HELD_VOTE_TTL + timedelta(seconds=1)
    assert state.purge() == 1  # the held vote; the events are kept longer
    assert not state.claim(platform="slack", keys=["event:Ev1"])
    now[0] += EVENT_TTL
    assert state.purge() == 2
    assert state.claim(platform="slack", keys=["event:Ev1"])  # forgotten: a very late retry is new again
    store.close()
