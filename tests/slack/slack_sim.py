"""Slack's side of the tests: captured payloads, signed requests to the front end, what the bot posted."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.slack.app import SlackFrontEnd
from bot.slack.format import ACTION_UP
from kaizen_testing.slack import FakeSlack, signed_headers

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "slack"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def payload(name: str) -> dict[str, Any]:
    """A captured Slack payload from tests/data/slack/."""
    return json.loads((DATA / f"{name}.json").read_text())


class SlackSim:
    """Slack's side: builds payloads from the captured ones, signs and sends them to the front end over HTTP,
    and keeps the messages people 'post' in the fake so conversations.replies returns them."""

    _ids = itertools.count(1)

    def __init__(self, fake: FakeSlack, front: SlackFrontEnd, session: aiohttp.ClientSession) -> None:
        self.fake, self.front, self.session = fake, front, session

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.front.port}/slack/events"

    async def send(
        self,
        body: str,
        content_type: str,
        *,
        retry_num: int | None = None,
        secret: str = SECRET,
        timestamp: int | None = None,
    ) -> tuple[int, str]:
        headers = signed_headers(
            secret, body, timestamp=timestamp, retry_num=retry_num, content_type=content_type
        )
        async with self.session.post(self.url, data=body.encode(), headers=headers) as resp:
            return resp.status, await resp.text()

    async def event(self, body: dict[str, Any], **kw: Any) -> tuple[int, str]:
        return await self.send(json.dumps(body), "application/json", **kw)

    async def interaction(self, body: dict[str, Any], **kw: Any) -> tuple[int, str]:
        return await self.send(
            urlencode({"payload": json.dumps(body)}), "application/x-www-form-urlencoded", **kw
        )

    async def command(self, fields: dict[str, str], **kw: Any) -> tuple[int, str]:
        return await self.send(urlencode(fields), "application/x-www-form-urlencoded", **kw)

    # -- payload builders ----------------------------------------------------------------------------------

    def _event(self, name: str, event: dict[str, Any], event_id: str | None) -> dict[str, Any]:
        body = payload(name)
        body["event"] = {**body["event"], **event}
        body["event_id"] = event_id or f"Ev{next(self._ids):08d}"
        return body

    def mention(
        self,
        text: str,
        *,
        channel: str = "C0GENERAL",
        user: str = "U0ALICE",
        thread_ts: str | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """An @-mention someone posts (recorded in the fake's channel history)."""
        full = f"<@{self.fake.bot_user_id}> {text}".strip()
        ts = self.fake.add_message(channel, user=user, text=full, thread_ts=thread_ts)
        event = {"text": full, "user": user, "ts": ts, "event_ts": ts, "channel": channel}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return self._event("app_mention", event, event_id)

    def dm(
        self,
        text: str,
        *,
        channel: str = "D0ALICE",
        user: str = "U0ALICE",
        event_id: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        ts = self.fake.add_message(channel, user=user, text=text)
        return self._event(
            "message_im",
            {"text": text, "user": user, "ts": ts, "event_ts": ts, "channel": channel, **extra},
            event_id,
        )

    def reply(
        self,
        text: str,
        *,
        thread_ts: str,
        channel: str = "C0GENERAL",
        user: str = "U0ALICE",
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """A message in a thread, without a mention."""
        ts = self.fake.add_message(channel, user=user, text=text, thread_ts=thread_ts)
        return self._event(
            "message_thread_reply",
            {
                "text": text,
                "user": user,
                "ts": ts,
                "event_ts": ts,
                "thread_ts": thread_ts,
                "channel": channel,
            },
            event_id,
        )

    def reaction(
        self,
        *,
        ts: str,
        emoji: str = "+1",
        added: bool = True,
        channel: str = "C0GENERAL",
        user: str = "U0BOB",
        event_id: str | None = None,
    ) -> dict[str, Any]:
        body = payload("reaction_added" if added else "reaction_removed")
        body["event"] |= {
            "reaction": emoji,
            "user": user,
            "item": {"type": "message", "channel": channel, "ts": ts},
        }
        body["event_id"] = event_id or f"Ev{next(self._ids):08d}"
        return body

    def button(
        self,
        action_id: str,
        interaction_id: str,
        *,
        channel: str,
        message_ts: str,
        thread_ts: str,
        user: str = "U0BOB",
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        body = copy.deepcopy(payload("block_actions"))
        body["user"]["id"] = user
        body["container"] |= {
            "channel_id": channel,
            "message_ts": message_ts,
            "thread_ts": thread_ts,
            "is_ephemeral": ephemeral,
        }
        body["channel"]["id"] = channel
        body["message"] |= {"ts": message_ts, "thread_ts": thread_ts}
        body["response_url"] = self.fake.response_url(f"action-{next(self._ids)}")
        body["actions"][0] |= {"action_id": action_id, "value": interaction_id}
        if action_id != ACTION_UP:
            body["actions"][0]["text"]["text"] = action_id
        return body

    def ask(self, text: str, *, channel: str = "C0GENERAL", user: str = "U0ALICE") -> dict[str, str]:
        fields = payload("slash_command")
        fields |= {
            "text": text,
            "channel_id": channel,
            "user_id": user,
            "response_url": self.fake.response_url(f"command-{next(self._ids)}"),
        }
        return fields

    # -- reading what the bot did ---------------------------------------------------------------------------

    def answers(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The bot's messages in a thread, oldest first (their final state)."""
        return self.fake.bot_messages(channel, thread_ts)
