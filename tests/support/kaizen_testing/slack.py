"""A Slack stand-in on 127.0.0.1 for tests, benchmarks and local demos (`KAIZEN_SLACK_API_URL=<fake>/api/`).

It serves the Web API methods Kaizen calls (recording every call and answering as Slack does, errors
included), the `response_url` hooks of slash commands and buttons, and the Socket Mode websocket (hello,
envelopes with `envelope_id` and `retry_attempt`, acknowledgements). `signed_headers` signs an HTTP request
the way Slack does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

__all__ = ["ApiCall", "FakeSlack", "signed_headers"]

logger = logging.getLogger(__name__)


def signed_headers(
    secret: str,
    body: str,
    *,
    timestamp: int | None = None,
    retry_num: int | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """The headers Slack sends with an Events API / interactivity / slash command request (v0 signature)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return headers


@dataclass
class ApiCall:
    method: str
    args: dict[str, Any]
    token: str
    at: float = field(default_factory=time.monotonic)


class FakeSlack:
    """Start with `await fake.start()`; point the bot at `fake.api_url`. `calls` lists every Web API call."""

    def __init__(
        self,
        *,
        team_id: str = "T0TEST",
        bot_user_id: str = "U0KAIZEN",
        bot_id: str = "B0KAIZEN",
        bot_token: str = "xoxb-test-token",
        app_token: str = "xapp-test-token",
    ) -> None:
        self.team_id, self.bot_user_id, self.bot_id = team_id, bot_user_id, bot_id
        self.bot_token, self.app_token = bot_token, app_token
        self.calls: list[ApiCall] = []
        self.responses: list[dict[str, Any]] = []  # what was POSTed to response_url hooks
        self.messages: dict[
            str, list[dict[str, Any]]
        ] = {}  # channel -> messages, as conversations.* return them
        self.channel_names: dict[str, str] = {}
        self.missing_channels: set[str] = set()  # the bot was removed: every call about them fails
        self.errors: dict[str, str] = {}  # method -> error every call to it returns
        self.rate_limited: dict[
            str, int
        ] = {}  # method -> how many of its next calls get 429 (Retry-After: 1)
        self.acks: dict[str, dict[str, Any]] = {}  # envelope_id -> the client's acknowledgement
        self.ack_times: dict[str, float] = {}
        self.port = 0
        self.connections = 0  # Socket Mode connections accepted so far
        self._sent_at: dict[str, float] = {}
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._ws: web.WebSocketResponse | None = None
        self._changed = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{hook}", self._response)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def response_url(self, name: str = "hook") -> str:
        return f"{self.base_url}/response/{name}"

    # -- state helpers for tests ----------------------------------------------------------------------------

    def next_ts(self) -> str:
        """A fresh message timestamp, later than every earlier one (Slack's ts order is time order)."""
        n = next(self._ts)
        return f"{1_800_000_000 + n // 1000}.{n % 1000:06d}"

    def add_message(
        self,
        channel: str,
        *,
        user: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> str:
        """A message someone posted (so conversations.replies returns it); returns its ts."""
        ts = ts or self.next_ts()
        msg = {"type": "message", "user": user, "text": text, "ts": ts, **extra}
        if thread_ts and thread_ts != ts:
            msg["thread_ts"] = thread_ts
        self.messages.setdefault(channel, []).append(msg)
        return ts

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        return [c.args for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    def bot_messages(self, channel: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages.get(channel, [])
            if m.get("bot_id") == self.bot_id and (thread_ts is None or m.get("thread_ts") == thread_ts)
        ]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Wait until `predicate()` is truthy (checked after each call the fake gets); returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"condition not met within {timeout}s; last calls: {[c.method for c in self.calls[-10:]]}"
                )
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    # -- Socket Mode ----------------------------------------------------------------------------------------

    async def send_envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        envelope_id: str | None = None,
    ) -> str:
        """Send a Socket Mode envelope (events_api, interactive, slash_commands); returns its envelope_id."""
        if self._ws is None or self._ws.closed:
            raise RuntimeError("no Socket Mode client is connected")
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type_,
            "payload": payload,
            "accepts_response_payload": type_ != "events_api",
        }
        if type_ == "events_api":
            envelope |= {"retry_attempt": retry_attempt, "retry_reason": retry_reason}
        self._sent_at[envelope_id] = time.monotonic()
        await self._ws.send_str(json.dumps(envelope))
        return envelope_id

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect, as Slack does every few hours."""
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_str(
                json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}})
            )

    async def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> tuple[dict[str, Any], float]:
        """The client's acknowledgement of an envelope and the seconds it took."""
        ack = await self.wait_for(lambda: self.acks.get(envelope_id), timeout)
        return ack, self.ack_times[envelope_id] - self._sent_at[envelope_id]

    async def wait_connected(self, connections: int = 1, timeout: float = 15.0) -> None:
        """Wait until the `connections`-th Socket Mode connection is open."""
        await self.wait_for(
            lambda: self.connections >= connections and self._ws is not None and not self._ws.closed, timeout
        )

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._ws = ws
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": "A0KAIZEN"},
                }
            )
        )
        self.connections += 1
        self._changed.set()
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "envelope_id" in data:
                self.acks[data["envelope_id"]] = data
                self.ack_times[data["envelope_id"]] = time.monotonic()
                self._changed.set()
        return ws

    # -- HTTP ----------------------------------------------------------------------------------------------

    async def _response(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append({"hook": request.match_info["hook"], **body})
        self._changed.set()
        return web.json_response({"ok": True})

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        raw = await request.text()
        if raw:
            if request.content_type == "application/json":
                args |= json.loads(raw)
            else:
                args |= dict(parse_qsl(raw, keep_blank_values=True))
        for key in ("blocks", "metadata", "view"):  # form-encoded calls send these as JSON strings
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or args.get(
            "token", ""
        )
        self.calls.append(ApiCall(method, args, token))
        self._changed.set()
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if self.rate_limited.get(method, 0) > 0:
            self.rate_limited[method] -= 1
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
            )
        if method in self.errors:
            error = self.errors[method]
            return web.json_response({"ok": False, "error": error})
        channel = args.get("channel", "")
        if channel and channel in self.missing_channels:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        return web.json_response(handler(args))

    # -- Web API methods (only what Kaizen uses) ------------------------------------------------------------

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://kaizen-test.slack.com/",
            "team": "Kaizen Test",
            "user": "kaizen",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self.next_ts()
        msg = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": "A0KAIZEN",
            "text": args.get("text", ""),
            "ts": ts,
            "team": self.team_id,
        }
        for key in ("blocks", "metadata"):
            if args.get(key):
                msg[key] = args[key]
        if args.get("thread_ts"):
            msg["thread_ts"] = args["thread_ts"]
        self.messages.setdefault(args["channel"], []).append(msg)
        return {"ok": True, "channel": args["channel"], "ts": ts, "message": msg}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self.message(args["channel"], args.get("ts", ""))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if len(args.get("text", "")) > 40_000:
            return {"ok": False, "error": "msg_too_long"}
        msg["text"] = args.get("text", msg["text"])
        if "blocks" in args:
            msg["blocks"] = args["blocks"]
        msg["edited"] = {"user": self.bot_user_id, "ts": self.next_ts()}
        return {"ok": True, "channel": args["channel"], "ts": msg["ts"], "text": msg["text"], "message": msg}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "message_ts": self.next_ts()}

    def _m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        root = args.get("ts", "")
        thread = [
            m for m in self.messages.get(args["channel"], []) if m["ts"] == root or m.get("thread_ts") == root
        ]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        thread = sorted(thread, key=lambda m: tuple(int(p) for p in m["ts"].split(".")))
        include_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        out = [
            m if include_metadata else {k: v for k, v in m.items() if k != "metadata"}
            for m in thread[: int(args.get("limit", 1000))]
        ]
        return {"ok": True, "messages": out, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def _m_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args["channel"]
        return {
            "ok": True,
            "channel": {
                "id": channel,
                "name": self.channel_names.get(channel, channel.lower()),
                "is_channel": channel.startswith("C"),
                "is_im": channel.startswith("D"),
            },
        }

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        return {"ok": True, "view": {"id": "V" + uuid.uuid4().hex[:10].upper(), **(args.get("view") or {})}}

    def _m_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}
