"""The Slack front end, on slack-bolt's AsyncApp.

    await run_slack(settings, dispatcher)  # Socket Mode with SLACK_APP_TOKEN, else HTTP on KAIZEN_SLACK_PORT

Every Slack request is acknowledged as soon as it is translated into a neutral event (`bot.slack.translate`); the
answer runs in a background task through the dispatcher's one flow (`Dispatcher.handle`) with a Slack outlet
(`bot.slack.stream`): a placeholder in the question's thread, the answer streamed into it, then the final parts,
sources and the 👍/👎/"Try another answer" buttons. Nothing of slack_bolt or slack_sdk goes past these modules.
In HTTP mode the request signature is checked before the body is parsed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.dispatcher import APOLOGY, Dispatcher
from bot.events import IncomingMessage
from bot.slack.format import (
    ACTION_ANOTHER,
    ACTION_CORRECT,
    ACTION_DOWN,
    ACTION_UP,
    ASK_USAGE,
    CORRECT_CALLBACK,
    PLACEHOLDER,
    REASON_CALLBACK,
    SlackMessage,
    correct_modal,
    correction_from_view,
    from_slack,
    parse_ask,
    reason_from_view,
    reason_modal,
    to_mrkdwn,
)
from bot.slack.stream import CALL_ERRORS, ChannelOutlet, EphemeralOutlet, UpdateBudget, why
from bot.slack.translate import PLATFORM, button_press, command_message, message_event, reaction_event
from core.config import ConfigError, Settings
from core.text import clean_text, is_blank
from core.types import Message

__all__ = ["PLATFORM", "SlackFrontEnd", "run_slack"]

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
QUESTION_EVENT = "kaizen_question"  # metadata on a /ask question the bot posted on the asker's behalf
ANOTHER_NOTE = "_Another answer to the same question — 👍/👎 the better one._"
NOT_IN_CHANNEL = (
    "I can't post in this channel (I'm not a member) — here is a private answer. "
    "Invite me with `/invite @Kaizen` to answer in public."
)
VOTE_FAILED = "Sorry — I couldn't record that just now. Please try again in a moment."
CORRECTION_FAILED = "Sorry — I couldn't keep that correction (the answer may be gone). Please try again later."
SHUTDOWN_GRACE_S = 30.0


def _ts_key(ts: str) -> tuple[int, ...]:
    # Slack timestamps are "seconds.micro" strings; a float would lose the last digits.
    return tuple(int(part) for part in ts.split(".") if part.isdigit())


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


class SlackFrontEnd:
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
        token = settings.slack_bot_token.get_secret_value()
        if not token:
            raise ConfigError(
                "SLACK_BOT_TOKEN is not set: create the Slack app from deploy/slack-manifest.yaml "
                "and copy its Bot User OAuth Token (xoxb-…)"
            )
        self.settings = settings
        self.dispatcher = dispatcher
        self.stream_interval_s = stream_interval_s
        base_url = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
        # Slack answers 429 with Retry-After when we post too fast; the client waits and retries (twice),
        # as it does after a dropped connection.
        retries = [*async_default_handlers(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
        self.client = AsyncWebClient(token=token, base_url=base_url, logger=logger, retry_handlers=retries)
        # Partial updates while streaming use a client that does not retry: a 429 pauses streaming instead.
        self.stream_client = AsyncWebClient(token=token, base_url=base_url, logger=logger, retry_handlers=[])
        self.budget = UpdateBudget(stream_updates_per_minute)
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
        self.bot_user_id = self.bot_id = ""
        self.port: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel_names: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._session: aiohttp.ClientSession | None = None
        self._register()

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def _connect(self) -> None:
        # One HTTP session for every Web API call (a new one per call would open a connection per call).
        self._session = aiohttp.ClientSession()
        self.client.session = self.stream_client.session = self._session
        try:
            auth = await self.client.auth_test()
        except SlackApiError as e:
            raise ConfigError(f"Slack rejected SLACK_BOT_TOKEN ({e.response.get('error')})") from None
        self.bot_user_id, self.bot_id = auth.get("user_id", ""), auth.get("bot_id", "")
        logger.info("connected to Slack team %s as %s", auth.get("team_id"), self.bot_user_id)

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
        for action_id in (ACTION_UP, ACTION_DOWN, ACTION_ANOTHER):
            app.action(action_id)(self._on_button)
        app.view(REASON_CALLBACK)(self._on_reason)
        app.action(ACTION_CORRECT)(self._on_correct_button)
        app.view(CORRECT_CALLBACK)(self._on_correction)
        app.command("/ask")(self._on_ask)

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

    async def _on_button(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        await ack()
        kind = {ACTION_UP: "up", ACTION_DOWN: "down", ACTION_ANOTHER: "another"}[action["action_id"]]
        self._spawn(self._press(button_press(body, kind, action.get("value", "")), body))

    async def _on_reason(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        await ack()  # closes the dialog
        press = button_press(body, "reason", view.get("private_metadata", ""), reason=reason_from_view(view))
        if press.reason:
            self._spawn(self._press(press, body))

    async def _on_correct_button(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        """"Correct this answer": a dialog with the answer's text to edit (opened before the trigger expires)."""
        await ack()
        container, message = body.get("container") or {}, body.get("message") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id", "")
        thread = message.get("thread_ts") or container.get("thread_ts") or message.get("ts") or ""
        view = correct_modal(action.get("value", ""), channel=channel, thread=thread,
                             answer=clean_text(message.get("text", "")))
        try:
            await self.client.views_open(trigger_id=body.get("trigger_id", ""), view=view)
        except CALL_ERRORS as e:
            logger.warning("could not open the correction dialog: %s", why(e))

    async def _on_correction(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        where, text = correction_from_view(view)
        if is_blank(clean_text(text)):
            await ack(response_action="errors", errors={"correction": "Write what the answer should say."})
            return
        await ack()
        press = button_press(body, "correct", where.get("id", ""), reason=text)
        self._spawn(self._correct(press, where.get("channel", ""), where.get("thread", "")))

    async def _correct(self, press: Any, channel: str, thread: str) -> None:
        """Store the correction, then show the corrected answer in the thread."""
        try:
            text = await self.dispatcher.correct(press)
        except Exception as e:
            logger.info("correction of %s not kept: %s", press.interaction_id, e)
            await self._ephemeral(channel, press.user, thread, CORRECTION_FAILED)
            return
        shown = f"✏️ Corrected by <@{press.user}>:\n{to_mrkdwn(text)}"[:3000]
        await self.post(channel, thread, SlackMessage(shown))

    async def _on_ask(self, ack: Callable[..., Awaitable[Any]], command: dict[str, Any]) -> None:
        try:
            options = parse_ask(
                clean_text(from_slack(clean_text(command.get("text", "")), bot_user_id=self.bot_user_id)),
                presets=tuple(self.settings.presets),
            )
            if is_blank(options.question):
                raise ValueError("please add a question")
        except ValueError as e:
            await ack(text=f"{str(e)[:1].upper()}{str(e)[1:]}.\n{ASK_USAGE}")
            return
        if options.private:
            await ack(response_type="ephemeral", text=PLACEHOLDER)
        else:
            await ack()
        msg = command_message(command, options.question, preset=options.preset, mode=options.mode,
                              private=options.private)
        self._spawn(self._ask(msg, command.get("response_url", "")))

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

    async def _ask(self, msg: IncomingMessage, response_url: str) -> None:
        """/ask: in public, the question is posted as a new thread and answered in it; privately, only the
        asker sees the answer (ephemeral, through the command's response_url)."""
        if not msg.private:
            question = SlackMessage(f"<@{msg.user}> asked: {msg.text}"[:3000])
            metadata = {"event_type": QUESTION_EVENT, "event_payload": {"user": msg.user, "text": msg.text[:2000]}}

            async def post_root() -> str | None:
                return await self.post(msg.channel, "", question, metadata=metadata, quiet=True)

            outlet = ChannelOutlet(self, msg.channel, "", root=post_root)
            await self.dispatcher.handle(msg, outlet)
            if outlet.posted_root is not False:
                return
            # Not a member of this channel: answer privately rather than not at all.
            await self.respond(response_url, SlackMessage(NOT_IN_CHANNEL), replace_original=False)
        # A private answer replaces the "Thinking…" the command's ack showed; a fallback one adds to the note.
        outlet = EphemeralOutlet(self, response_url, replace_original=msg.private)
        await self.dispatcher.handle(replace(msg, private=True), outlet)

    async def _press(self, press: Any, body: dict[str, Any]) -> None:
        container = body.get("container") or {}
        message = body.get("message") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id", "")
        thread = message.get("thread_ts") or container.get("thread_ts") or message.get("ts") or ""
        if press.action == "down" and body.get("trigger_id"):
            # The trigger expires 3 s after the click: open the (optional) reason dialog before anything else.
            try:
                await self.client.views_open(trigger_id=body["trigger_id"], view=reason_modal(press.interaction_id))
            except CALL_ERRORS as e:
                logger.warning("could not open the reason dialog: %s", why(e))
        if press.action == "another":
            # "Try another answer" runs the model again: the same flow (and rate limit) as a question.
            if container.get("is_ephemeral"):
                outlet: Any = EphemeralOutlet(self, body.get("response_url", ""), replace_original=False,
                                              note=ANOTHER_NOTE)
            else:
                outlet = ChannelOutlet(self, channel, thread, note=ANOTHER_NOTE)
            await self.dispatcher.handle_another(press, outlet)
            return
        try:
            await self.dispatcher.button(press)
        except Exception:
            logger.exception("recording button %s on %s failed", press.action, press.interaction_id)
            await self._ephemeral(channel, press.user, thread, VOTE_FAILED)
            return
        if press.action == "up":
            await self._ephemeral(channel, press.user, thread, "Thanks — your 👍 is recorded.")

    @staticmethod
    async def _guarded(work: Awaitable[Any], what: str) -> None:
        try:
            await work
        except Exception:
            logger.exception("recording %s failed", what)

    # -- Slack reads --------------------------------------------------------------------------------------

    def _is_ours(self, m: dict[str, Any]) -> bool:
        return bool(
            (self.bot_user_id and m.get("user") == self.bot_user_id)
            or (self.bot_id and m.get("bot_id") == self.bot_id)
        )

    async def _thread(self, channel: str, thread: str) -> list[dict[str, Any]] | None:
        """The messages of a thread (oldest first), or None when Slack won't give them."""
        try:
            resp = await self.client.conversations_replies(
                channel=channel, ts=thread, limit=200, include_all_metadata=True
            )
        except CALL_ERRORS as e:
            logger.warning("could not read thread %s:%s (%s)", channel, thread, why(e))
            return None
        return list(resp.get("messages") or [])

    def _history(self, replies: list[dict[str, Any]], *, before: str) -> tuple[Message, ...]:
        """The thread before the question as conversation turns: our messages are the assistant's, everyone
        else's the user's; consecutive messages of one side are joined (a split answer is one turn)."""
        turns: list[Message] = []
        for m in replies:
            if _ts_key(m.get("ts", "0")) >= _ts_key(before):
                continue
            metadata = m.get("metadata") or {}
            if metadata.get("event_type") == QUESTION_EVENT:  # a /ask question we posted for someone
                role, text = "user", str((metadata.get("event_payload") or {}).get("text", ""))
            elif self._is_ours(m):
                role, text = "assistant", m.get("text", "")
                if text in (PLACEHOLDER, APOLOGY):
                    continue
            else:
                role, text = "user", from_slack(m.get("text", ""), bot_user_id=self.bot_user_id)
            text = clean_text(text)
            if is_blank(text):
                continue
            if turns and turns[-1].role == role:
                turns[-1] = Message(role, f"{turns[-1].content}\n{text}")
            else:
                turns.append(Message(role, text))
        keep = self.settings.history_turns * 2
        return tuple(turns[-keep:]) if keep else ()

    async def _channel_name(self, channel: str) -> str:
        """The channel's name (looked up once per channel), for profiles configured by name."""
        if channel not in self._channel_names:
            try:
                info = await self.client.conversations_info(channel=channel)
                self._channel_names[channel] = clean_text((info.get("channel") or {}).get("name", ""))
            except CALL_ERRORS as e:
                logger.info("no name for channel %s (%s)", channel, why(e))
                return ""
        return self._channel_names[channel]

    # -- Slack writes (failures are logged, never raised: a removed or archived channel is not a crash) ---

    async def post(self, channel: str, thread: str, msg: SlackMessage, *, metadata: dict[str, Any] | None = None,
                   quiet: bool = False) -> str | None:
        try:
            resp = await self.client.chat_postMessage(
                channel=channel,
                thread_ts=thread or None,
                text=msg.text,
                blocks=msg.blocks or None,
                metadata=metadata,
                unfurl_links=False,
                unfurl_media=False,
            )
        except CALL_ERRORS as e:
            log = logger.info if quiet else logger.warning
            log("could not post in %s (%s)", channel, why(e))
            return None
        return resp.get("ts")

    async def update(self, channel: str, ts: str, msg: SlackMessage) -> bool:
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=msg.text, blocks=msg.blocks or [])
        except CALL_ERRORS as e:
            logger.warning("could not update %s:%s (%s)", channel, ts, why(e))
            return False
        return True

    async def _ephemeral(self, channel: str, user: str, thread: str, text: str) -> None:
        if not channel or not user:
            return
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread or None)
        except CALL_ERRORS as e:
            logger.info("could not send an ephemeral note in %s (%s)", channel, why(e))

    async def respond(self, response_url: str, msg: SlackMessage, *, replace_original: bool) -> None:
        """An ephemeral message to the user through a command's or button's response_url."""
        if not response_url:
            return
        try:
            hook = AsyncWebhookClient(response_url, session=self._session)
            resp = await hook.send(
                text=msg.text,
                blocks=msg.blocks or None,
                response_type="ephemeral",
                replace_original=replace_original,
            )
            if resp.status_code >= 400:
                logger.warning("response_url answered %s: %s", resp.status_code, resp.body[:200])
        except (aiohttp.ClientError, TimeoutError) as e:
            logger.warning("could not post to the response_url (%s)", e)


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
