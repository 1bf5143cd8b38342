"""Two `kaizen serve` processes (Slack HTTP mode) on one feedback database, with the fake Slack: retries that reach
the other replica, a vote while an answer streams, a restart, an edit re-delivery, a vote on part 3 of a long
answer, and SIGTERM in the middle of an answer. The replicas run the real CLI with the scripted model
(`kaizen_testing.serve`), so what is tested is the front end and its shared state, not the CPU."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from slack_sim import SECRET, SlackSim

from bot.slack.format import PLACEHOLDER
from feedback import FeedbackStore
from feedback.models import MessagePart
from kaizen_testing.slack import FakeSlack

ROOT = Path(__file__).resolve().parents[2]
# About 7,000 characters: three Slack messages. Streamed over about 3 s.
LONG = " ".join(f"Step {i}: check the VPN profile and sign in again." for i in range(140))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    """One `kaizen serve --no-console` process; `.port` is its Slack HTTP port (what SlackSim posts to)."""

    def __init__(self, fake: FakeSlack, data_dir: Path, db_url: str, *, token_s: float = 0.003) -> None:
        self.port, self.health_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIZEN_", "SLACK_", "DISCORD_"))}
        env.update(KAIZEN_DATA_DIR=str(data_dir), KAIZEN_DATABASE_URL=db_url, SLACK_BOT_TOKEN=fake.bot_token,
                   SLACK_SIGNING_SECRET=SECRET, KAIZEN_SLACK_API_URL=fake.api_url, KAIZEN_SLACK_PORT=str(self.port),
                   KAIZEN_HTTP_PORT=str(self.health_port),
                   KAIZEN_ADAPTER_POLL_S="0", KAIZEN_TESTING_MODEL=json.dumps({"answer": LONG, "token_s": token_s}))
        self.log = data_dir / f"replica-{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "kaizen_testing.serve", "serve", "--no-console"],
                                     env=env, cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    async def ready(self, session: aiohttp.ClientSession, timeout: float = 120) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                async with session.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"replica never became ready:\n{self.log.read_text()}")

    async def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout)


@pytest.fixture
async def cluster(tmp_path):
    """(fake Slack, session, db url, start(), store): replicas started with start() are stopped at the end."""
    fake = FakeSlack()
    await fake.start()
    session = aiohttp.ClientSession()
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = FeedbackStore.from_url(db_url, spool_dir=tmp_path / "spool")
    started: list[Replica] = []

    async def start(**kw) -> SlackSim:
        replica = Replica(fake, tmp_path, db_url, **kw)
        started.append(replica)
        await replica.ready(session)
        return SlackSim(fake, replica, session)  # type: ignore[arg-type]

    yield fake, start, store
    for replica in started:
        if replica.proc.poll() is None:
            replica.proc.kill()
            replica.proc.wait(10)
    store.close()
    await session.close()
    await fake.close()


def _parts(store: FeedbackStore, channel: str, fake: FakeSlack, thread: str) -> list[str]:
    """Refs of the bot's final messages in the thread that the database maps to an answer, oldest first."""
    with store.engine.connect() as conn:
        known = {r for (r,) in conn.execute(MessagePart.__table__.select().with_only_columns(MessagePart.ref))}
    return [f"{channel}:{m['ts']}" for m in fake.bot_messages(channel, thread) if f"{channel}:{m['ts']}" in known]


async def _answered(fake: FakeSlack, store: FeedbackStore, channel: str, thread: str, parts: int = 3) -> list[str]:
    return await fake.wait_for(lambda: (p := _parts(store, channel, fake, thread)) and len(p) >= parts and p,
                               timeout=90)


async def test_two_replicas_one_answer_votes_across_replicas_and_restarts(cluster):
    fake, start, store = cluster
    a, b = await start(), await start()

    # A mention goes to replica A; Slack's retry of it reaches replica B while A is still streaming.
    body = a.mention("How do I reset my VPN profile?")
    thread = body["event"]["ts"]
    assert (await a.event(body))[0] == 200
    placeholder = await fake.wait_for(lambda: next((m["ts"] for m in fake.bot_messages("C0GENERAL", thread)), None))
    assert (await b.event(body, retry_num=1))[0] == 200
    # 👍 on the message being streamed, delivered to the other replica: held, then counted.
    assert (await b.event(b.reaction(ts=placeholder, user="U0BOB")))[0] == 200
    refs = await _answered(fake, store, "C0GENERAL", thread)
    posts = [c for c in fake.calls_to("chat.postMessage") if c.get("thread_ts") == thread]
    assert [p["text"] for p in posts].count(PLACEHOLDER) == 1, "answered twice"
    assert len(refs) == 3 and refs[0] == f"C0GENERAL:{placeholder}"
    iid = store.find_by_message_ref(platform="slack", ref=refs[0])
    await fake.wait_for(lambda: store.get_votes(interaction_id=iid), timeout=30)
    assert [(v.user_id, v.value) for v in store.get_votes(interaction_id=iid)] == [("U0BOB", 1)]

    # Replica A restarts. The user edits the question: Slack re-delivers it under a new event id.
    assert await a.front.stop() == 0
    a = await start()
    edited = copy.deepcopy(body)
    edited["event_id"] = "Ev0EDITED01"
    edited["event"] |= {"text": body["event"]["text"] + " (edited)", "edited": {"user": "U0ALICE", "ts": "1.0"}}
    assert (await a.event(edited))[0] == 200
    # 👎 from Carol on part 3 of the long answer, after the restart, on the restarted replica.
    third_ts = refs[2].split(":", 1)[1]
    assert (await a.event(a.reaction(ts=third_ts, emoji="-1", user="U0CAROL")))[0] == 200
    await fake.wait_for(lambda: len(store.get_votes(interaction_id=iid)) == 2, timeout=30)
    assert [(v.user_id, v.value) for v in store.get_votes(interaction_id=iid)] == [("U0BOB", 1), ("U0CAROL", -1)]
    posts = [c for c in fake.calls_to("chat.postMessage") if c.get("thread_ts") == thread]
    assert [p["text"] for p in posts].count(PLACEHOLDER) == 1, "the edit re-delivery was answered again"
    assert b.front.proc.poll() is None


async def test_sigterm_mid_answer_finishes_and_records_it(cluster):
    fake, start, store = cluster
    slack = await start(token_s=0.01)  # about 10 s of streaming
    body = slack.mention("How do I reset my VPN profile?")
    thread = body["event"]["ts"]
    assert (await slack.event(body))[0] == 200
    await fake.wait_for(lambda: fake.bot_messages("C0GENERAL", thread))
    slack.front.proc.send_signal(signal.SIGTERM)
    # Unready at once (the load balancer drains), and new events are refused so Slack retries them elsewhere.
    async def refused() -> bool:
        try:
            for port in (slack.front.port, slack.front.health_port):
                async with slack.session.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status != 503:
                        return False
            return True
        except aiohttp.ClientError:
            return False

    for _ in range(50):
        if await refused():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("healthz never turned unready")
    assert (await slack.event(slack.mention("Another question?")))[0] == 503
    assert await asyncio.to_thread(slack.front.proc.wait, 60) == 0
    refs = _parts(store, "C0GENERAL", fake, thread)
    assert len(refs) == 3, slack.front.log.read_text()
    row = store.get_interaction(interaction_id=store.find_by_message_ref(platform="slack", ref=refs[0]))
    assert row is not None and row.answer.startswith("Step 0:")
