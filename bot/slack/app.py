"""The Slack front end, on slack-bolt's AsyncApp.

    await run_slack(settings, dispatcher)  # Socket Mode with SLACK_APP_TOKEN, else HTTP on KAIZEN_SLACK_PORT

Every Slack request is acknowledged as soon as it is translated into a neutral event (`bot.slack.translate`); the
answer runs in a background task through the dispatcher's one flow (`Dispatcher.handle`) with a Slack outlet
(`bot.slack.stream`): a placeholder in the question's thread, the answer streamed into it, then the final parts,
sources and the 👍/👎/"Try another answer" buttons. Buttons, dialogs and `/ask` are `bot.slack.interactive`'s; the Web
API reads and writes `bot.slack.web`'s. Nothing of slack_bolt or slack_sdk goes past this package.
In HTTP mode the request signature is checked before the body is parsed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Coroutine
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from bot.dispatcher import Dispatcher
from bot.events import IncomingMessage
from bot.slack.format import ACTION_ANOTHER, ACTION_CORRECT, ACTION_DOWN, ACTION_UP, CORRECT_CALLBACK, REASON_CALLBACK
from bot.slack.interactive import SlackInteractivity
from bot.slack.stream import ChannelOutlet
from bot.slack.translate import PLATFORM, message_event, reaction_event
from bot.slack.web import SlackWeb
from core.config import ConfigError, Settings

__all__ = ["PLATFORM", "SlackFrontEnd", "run_slack"]

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SHUTDOWN_GRACE_S = 30.0


def _malformed(content_type: str, body: str) -> str:
    """Why a signed request body cannot be a Slack payload ("" when it can)."""
    try:
        if content_type.startswith("application/json"):
            return "" if isinstance(json.loads(body), dict) else "the JSON body is not an object"
        form = parse_qs(body, keep_blank_values=True)
        if "payload" in form and not isinstance(json.loads(form["payload"][0]), dict):
            return "payload= is not a JSON object"
    except ValueError:
        return "the body is not valid JSON" if content_type.startswith("application/json") else \
            "payload= is not valid JSON"
    return ""


class SlackFrontEnd(SlackWeb):
    """One Slack app: call `start_http()` or `start_socket_mode()`, then `close()`. `idle()` waits for the
    answers in progress (tests and the benchmark use it)."""

    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        *,
        stream_interval_s: float = 1.0,
        stream_updates_per_minute: float = 50.0,
    ) -> None:
        super().__init__(settings, stream_interval_s=stream_interval_s,
                         stream_updates_per_minute=stream_updates_per_minute)
        self.dispatcher = dispatcher
        secret = settings.slack_signing_secret.get_secret_value()
        self._verifier = SignatureVerifier(secret) if secret else None
        # process_before_response: bolt acknowledges when our listener returns. Listeners only translate the
        # payload and start a tracked task, so the ack goes out within milliseconds in both transports, and no
        # answer runs in an untracked task that shutdown (or garbage collection) could drop.
        self.app = AsyncApp(
            client=self.client,
            signing_secret=secret,
            process_before_response=True,
            name="kaizen",
            logger=logging.getLogger("slack_bolt"),
        )
        self.port: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self.interactivity = SlackInteractivity(self)
        self._register()

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start_http(self, *, host: str = "0.0.0.0", port: int | None = None) -> int:
        """Serve the Events API, interactivity and /ask at POST /slack/events (GET /healthz for load
        balancers); returns the port (pass port=0 for a free one)."""
        if self._verifier is None:
            raise ConfigError(
                "HTTP mode needs SLACK_SIGNING_SECRET (Basic Information → Signing Secret), "
                "or set SLACK_APP_TOKEN to use Socket Mode"
            )
        await self._connect()
        web_app = web.Application()
        web_app.router.add_post(EVENTS_PATH, self._http)
        web_app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, self.settings.slack_port if port is None else port).start()
        self.port = self._runner.addresses[0][1]
        logger.info("Slack HTTP mode listening on %s:%s%s", host, self.port, EVENTS_PATH)
        return self.port

    async def start_socket_mode(self) -> None:
        """Connect over Socket Mode (no public URL needed)."""
        app_token = self.settings.slack_app_token.get_secret_value()
        if not app_token:
            raise ConfigError(
                "Socket Mode needs SLACK_APP_TOKEN (an app-level token, xapp-…, "
                "with the connections:write scope)"
            )
        await self._connect()
        try:
            # Asked here, not inside the SDK's reconnect loop, so a bad app token fails start-up clearly.
            url = (await self.client.apps_connections_open(app_token=app_token))["url"]
        except SlackApiError as e:
            raise ConfigError(f"Slack rejected SLACK_APP_TOKEN ({e.response.get('error')})") from None
        self._socket = AsyncSocketModeHandler(self.app, app_token, logger=logger, web_client=self.client)
        self._socket.client.wss_uri = url
        await self._socket.connect_async()
        # On shutdown the connection closes first: Slack then sends events to the other connections (replicas).
        self.dispatcher.on_drain.append(self._socket.close_async)
        logger.info("Slack Socket Mode connected")

    async def idle(self) -> None:
        """Wait until every answer in progress has been posted."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def close(self, *, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop taking events (Socket Mode disconnects; HTTP answers 503 so Slack retries on another replica),
        give the answers in progress `grace_s` to be posted and recorded, then cancel the rest: each of those
        replaces its placeholder with an apology."""
        self.dispatcher.draining = True
        if self._socket is not None:
            await self._socket.close_async()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _http(self, request: web.Request) -> web.Response:
        """One Slack request: signature first (401), then the body's shape (400), then bolt."""
        raw = await request.read()
        headers = request.headers
        timestamp, signature = headers.get("X-Slack-Request-Timestamp", ""), headers.get("X-Slack-Signature", "")
        if not (timestamp.isdigit() and signature and self._verifier is not None
                and self._verifier.is_valid(body=raw, timestamp=timestamp, signature=signature)):
            logger.info("refused a Slack request without a valid signature")
            return web.json_response({"error": "invalid signature"}, status=401)
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return web.json_response({"error": "the body is not UTF-8"}, status=400)
        if problem := _malformed(request.content_type, body):
            logger.info("refused a signed Slack request: %s", problem)
            return web.json_response({"error": problem}, status=400)
        if self.dispatcher.draining:
            # Shutting down: Slack retries events answered with an error, and the retry reaches another replica.
            return web.json_response({"error": "shutting down"}, status=503)
        bolt_request = AsyncBoltRequest(body=body, query=request.query_string, headers=dict(headers))
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    async def _health(self, request: web.Request) -> web.Response:
        draining = self.dispatcher.draining
        return web.json_response({"ok": not draining, "bot_user_id": self.bot_user_id,
                                  "in_progress": len(self._tasks)}, status=503 if draining else 200)

    def _register(self) -> None:
        app = self.app
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.event("reaction_added")(self._on_reaction)
        app.event("reaction_removed")(self._on_reaction)
        ui = self.interactivity
        for action_id in (ACTION_UP, ACTION_DOWN, ACTION_ANOTHER):
            app.action(action_id)(ui.on_button)
        app.view(REASON_CALLBACK)(ui.on_reason)
        app.action(ACTION_CORRECT)(ui.on_correct_button)
        app.view(CORRECT_CALLBACK)(ui.on_correction)
        app.command("/ask")(ui.on_ask)

    # -- listeners: translate, start the work, return (bolt then acknowledges) -----------------------------

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        self._converse(message_event(body, event, bot_user_id=self.bot_user_id, mentioned=True), event)

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        self._converse(message_event(body, event, bot_user_id=self.bot_user_id, mentioned=False), event)

    def _converse(self, msg: IncomingMessage | None, event: dict[str, Any]) -> None:
        if msg is None or self.dispatcher.draining:
            return
        question_ts = event.get("ts", "")

        async def prepare(m: IncomingMessage) -> IncomingMessage:
            return await self._prepare(m, question_ts)

        outlet = ChannelOutlet(self, msg.channel, msg.thread, prepare=prepare)
        self._spawn(self.dispatcher.handle(msg, outlet))

    async def _on_reaction(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if reaction := reaction_event(body, event, bot_user_id=self.bot_user_id):
            self._spawn(self._guarded(self.dispatcher.reaction(reaction), f"reaction on {reaction.message_ref}"))

    # -- background work ------------------------------------------------------------------------------------

    async def _prepare(self, msg: IncomingMessage, question_ts: str) -> IncomingMessage:
        """Slack reads before the dispatcher decides: the channel's name, whether an unmentioned follow-up is in
        one of our threads, and the thread so far."""
        in_thread = msg.thread != question_ts
        if not msg.is_dm:
            msg = replace(msg, channel_name=await self._channel_name(msg.channel))
        replies: list[dict[str, Any]] | None = None
        known = (PLATFORM, msg.channel, msg.thread) in self.dispatcher.bot_threads
        if in_thread and not (msg.is_dm or msg.mentioned or msg.from_bot or known):
            # A follow-up without a mention: is this a thread we answer in? (Also after a restart or on
            # another replica: the thread itself says so.) Only asked where the channel follows threads.
            if not self.settings.profile_for(msg.channel, msg.channel_name, msg.workspace).follow_threads:
                return msg
            replies = await self._thread(msg.channel, msg.thread)
            msg = replace(msg, in_bot_thread=any(self._is_ours(m) for m in replies or ()))
        if in_thread and self.dispatcher.should_answer(msg):
            # Summoned mid-thread, or a follow-up: the thread so far is the conversation.
            replies = replies if replies is not None else await self._thread(msg.channel, msg.thread)
            if replies is not None:
                msg = replace(msg, history=self._history(replies, before=question_ts))
        return msg

    @staticmethod
    async def _guarded(work: Awaitable[Any], what: str) -> None:
        try:
            await work
        except Exception:
            logger.exception("recording %s failed", what)


async def run_slack(
    settings: Settings, dispatcher: Dispatcher, *, ready: asyncio.Event | None = None
) -> None:
    """Run the Slack front end until cancelled: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode on
    KAIZEN_SLACK_PORT (signatures checked with SLACK_SIGNING_SECRET). Raises ConfigError for missing or
    rejected credentials before `ready` is set. When cancelled, answers in progress get the shutdown grace."""
    front = SlackFrontEnd(settings, dispatcher)
    try:
        if settings.slack_app_token.get_secret_value():
            await front.start_socket_mode()
        else:
            await front.start_http()
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(front.close())
