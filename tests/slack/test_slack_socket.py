"""`run_slack`, the entry point `kaizen serve` calls: Socket Mode over a local websocket speaking Slack's
envelope protocol, HTTP mode on the configured port, and clear start-up errors for bad credentials."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from slack_sim import SECRET, SlackSim

from bot.dispatcher import Dispatcher
from bot.slack.app import run_slack
from bot.slack.format import ACTION_UP
from core.config import ConfigError
from core.engine import Engine
from kaizen_testing.slack import signed_headers


def _buttons(msg: dict) -> list[dict]:
    return [e for b in msg.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


@pytest.fixture
def dispatcher(make_settings, default_model, store):
    def make(settings):
        return Dispatcher(Engine(settings, default_model, on_reply=store.on_reply), store)

    return make


async def _running(settings, dispatcher):
    ready = asyncio.Event()
    task = asyncio.create_task(run_slack(settings, dispatcher, ready=ready))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    # A start-up that fails leaves the waiter pending: cancel it, or the loop's end destroys it pending
    # ("Task was destroyed but it is pending!" logged into whichever later test is running).
    waiter.cancel()
    if task in done:
        task.result()  # start-up failed: raise its error
    return task


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_socket_mode_envelopes_acks_and_retries(fake, make_settings, dispatcher, store):
    settings = make_settings(slack_app_token=fake.app_token, slack_signing_secret="")
    task = await _running(settings, dispatcher(settings))
    sim = SlackSim(fake, None, None)
    try:
        await fake.wait_connected(1)
        body = sim.mention("What is the capital of France?")
        envelope = await fake.send_envelope("events_api", body)
        ack, seconds = await fake.wait_ack(envelope)
        assert ack == {"envelope_id": envelope} and seconds < 2.0
        # Slack re-sends an envelope it got no ack for in time: same event_id, retry_attempt 1.
        retry = await fake.send_envelope("events_api", body, retry_attempt=1, retry_reason="timeout")
        assert (await fake.wait_ack(retry))[0] == {"envelope_id": retry}
        root = body["event"]["ts"]
        (answer,) = await fake.wait_for(
            lambda: [m for m in fake.bot_messages("C0GENERAL", root) if _buttons(m)]
        )
        iid = _buttons(answer)[0]["value"]
        assert "Paris" in store.get_interaction(interaction_id=iid).answer
        # An interactive envelope: the 👍 button becomes a vote.
        press = sim.button(ACTION_UP, iid, channel="C0GENERAL", message_ts=answer["ts"], thread_ts=root)
        await fake.wait_ack(await fake.send_envelope("interactive", press))
        await fake.wait_for(lambda: store.get_votes(interaction_id=iid))
        assert [(v.user_id, v.value) for v in store.get_votes(interaction_id=iid)] == [("U0BOB", 1)]
        # A slash command envelope is acknowledged with its response payload (the private "thinking" note).
        ack, _ = await fake.wait_ack(await fake.send_envelope("slash_commands", sim.ask("private Hi")))
        assert ack["payload"]["response_type"] == "ephemeral"
        await fake.wait_for(lambda: fake.responses)
        # Slack asks clients to reconnect now and then; answers keep coming after it.
        await fake.send_disconnect()
        await fake.wait_connected(2)
        dm = sim.dm("What is the capital of Italy?")
        await fake.wait_ack(await fake.send_envelope("events_api", dm), 15)
        await fake.wait_for(
            lambda: [m for m in fake.bot_messages("D0ALICE", dm["event"]["ts"]) if _buttons(m)]
        )
    finally:
        await _stop(task)
    assert len(fake.bot_messages("C0GENERAL", root)) == 1  # the retry was not answered again


async def test_http_mode_on_the_configured_port(fake, make_settings, dispatcher):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(slack_port=port)
    task = await _running(settings, dispatcher(settings))
    sim = SlackSim(fake, None, None)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["bot_user_id"] == fake.bot_user_id
            body = sim.dm("Hello!")
            raw = json.dumps(body)
            async with session.post(
                f"http://127.0.0.1:{port}/slack/events", data=raw, headers=signed_headers(SECRET, raw)
            ) as resp:
                assert resp.status == 200
        ts = body["event"]["ts"]
        await fake.wait_for(lambda: [m for m in fake.bot_messages("D0ALICE", ts) if _buttons(m)])
    finally:
        await _stop(task)


async def test_start_up_errors_are_clear(fake, make_settings, dispatcher):
    settings = make_settings(slack_signing_secret="", slack_port=1)
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        await _running(settings, dispatcher(settings))
    settings = make_settings(slack_bot_token="xoxb-revoked")
    with pytest.raises(ConfigError, match="invalid_auth"):
        await _running(settings, dispatcher(settings))
    settings = make_settings(slack_app_token="xapp-wrong")
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN.*invalid_auth"):
        await _running(settings, dispatcher(settings))
    settings = make_settings(slack_bot_token="")
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN is not set"):
        await _running(settings, dispatcher(settings))
