"""The Slack front end, on slack-bolt's AsyncApp.

    await run_slack(settings, dispatcher)  # Socket Mode with SLACK_APP_TOKEN, else HTTP on KAIZEN_SLACK_PORT

Every Slack request is acknowledged as soon as it is translated into a neutral event (`bot.events`); the
answer is produced in a background task: a placeholder in the thread of the question at once, the answer
streamed into it with throttled `chat.update`, then the final text (mrkdwn, split within Slack's limits), the
sources and the 👍/👎/"Try another answer" buttons. Platform-neutral decisions (whether to answer, retries,
rate limit, votes) belong to the dispatcher; nothing of slack_bolt or slack_sdk goes past this module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.dispatcher import APOLOGY, Dispatcher
from bot.events import ButtonPress, IncomingMessage, Reaction, vote_value
from bot.slack_format import (
    ACTION_ANOTHER,
    ACTION_DOWN,
    ACTION_UP,
    ASK_USAGE,
    PLACEHOLDER,
    REASON_CALLBACK,
    SlackMessage,
    answer_messages,
    from_slack,
    parse_ask,
    reason_from_view,
    reason_modal,
    streaming_message,
)
from core.config import ConfigError, Settings
from core.types import Message, Reply

__all__ = ["PLATFORM", "SlackFrontEnd", "run_slack"]

logger = logging.getLogger(__name__)

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
# Message subtypes that carry something someone wrote; edits, deletions, joins and the like are not questions.
ANSWERED_SUBTYPES = {None, "file_share", "thread_broadcast", "me_message", "bot_message"}
QUESTION_EVENT = "kaizen_question"  # metadata on a /ask question the bot posted on the asker's behalf
ANOTHER_NOTE = "_Another answer to the same question — 👍/👎 the better one._"
NOT_IN_CHANNEL = (
    "I can't post in this channel (I'm not a member) — here is a private answer. "
    "Invite me with `/invite @Kaizen` to answer in public."
)
UNKNOWN_ANSWER = "Sorry — I can no longer find that answer, so I can't do that. Please ask again."
VOTE_FAILED = "Sorry — I couldn't record that just now. Please try again in a moment."
MAX_EPHEMERAL = 4  # a response_url takes 5 posts; one is kept in reserve for an apology
SHUTDOWN_GRACE_S = 10.0


# What a Web API call can fail with: Slack's error answer, or the network after the client's retries.
_CALL_ERRORS = (SlackApiError, aiohttp.ClientError, TimeoutError)


def _why(e: BaseException) -> str:
    return str(e.response.get("error")) if isinstance(e, SlackApiError) else repr(e)


def _ts_key(ts: str) -> tuple[int, ...]:
    # Slack timestamps are "seconds.micro" strings; a float would lose the last digits.
    return tuple(int(part) for part in ts.split(".") if part.isdigit())


class _UpdateBudget:
    """Streaming updates for the whole app share Slack's chat.update rate limit (Tier 3, about 50 a minute per
    workspace): a token bucket that partial updates draw from, paused when Slack answers 429. Final updates
    do not draw from it; they must go out, and the client retries them after Retry-After."""

    def __init__(self, per_minute: float, burst: int = 10) -> None:
        self.rate, self.capacity = per_minute / 60.0, float(burst)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.paused_until = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if now < self.paused_until or self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class _Stream:
    """The answer so far, shown by `chat.update` at most once per `interval` (and when the shared budget
    allows); never after `stop()` returns, so a late partial update cannot overwrite the final message."""

    def __init__(
        self, client: AsyncWebClient, channel: str, ts: str, interval: float, budget: _UpdateBudget
    ) -> None:
        self.client, self.channel, self.ts, self.interval, self.budget = client, channel, ts, interval, budget
        self.latest = self.shown = ""
        self._wake = asyncio.Event()
        self._stopped = self._updating = False
        self._task = asyncio.create_task(self._run())

    def push(self, text: str) -> None:
        """The engine's on_text callback (runs on the event loop): remember the text, wake the updater."""
        self.latest = text
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopped:
            await self._wake.wait()
            if self._stopped or self.latest == self.shown:
                self._wake.clear()
                continue
            if not self.budget.take():
                await asyncio.sleep(self.interval)  # over the budget: skip this step, the text keeps growing
                continue
            self._wake.clear()
            self.shown = self.latest
            msg = streaming_message(self.shown)
            self._updating = True
            try:
                await self.client.chat_update(
                    channel=self.channel, ts=self.ts, text=msg.text, blocks=msg.blocks
                )
            except _CALL_ERRORS as e:  # a partial update is best effort: the final one is what matters
                if isinstance(e, SlackApiError) and e.response.status_code == 429:
                    self.budget.pause(float(e.response.headers.get("Retry-After", 30)))
                logger.debug("streaming update of %s:%s failed: %s", self.channel, self.ts, _why(e))
            finally:
                self._updating = False
            if not self._stopped:
                await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if not self._updating:
            self._task.cancel()
        await asyncio.wait([self._task])  # an update in flight finishes first


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
        base_url = (
            settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
        )
        # Slack answers 429 with Retry-After when we post too fast; the client waits and retries (twice),
        # as it does after a dropped connection.
        retries = [*async_default_handlers(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
        self.client = AsyncWebClient(token=token, base_url=base_url, logger=logger, retry_handlers=retries)
        # Partial updates while streaming use a client that does not retry: a 429 pauses streaming instead.
        self._stream_client = AsyncWebClient(token=token, base_url=base_url, logger=logger, retry_handlers=[])
        self._budget = _UpdateBudget(stream_updates_per_minute)
        # process_before_response: bolt acknowledges when our listener returns. Listeners only translate the
        # payload and start a tracked task, so the ack goes out within milliseconds in both transports, and no
        # answer runs in an untracked task that shutdown (or garbage collection) could drop.
        self.app = AsyncApp(
            client=self.client,
            signing_secret=settings.slack_signing_secret.get_secret_value(),
            process_before_response=True,
            name="kaizen",
            logger=logging.getLogger("slack_bolt"),
        )
        self.bot_user_id = self.bot_id = ""
        self.port: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # A split answer's later messages -> its first (the one the feedback store knows).
        self._aliases: OrderedDict[str, str] = OrderedDict()
        self._channel_names: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._session: aiohttp.ClientSession | None = None
        self._register()

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def _connect(self) -> None:
        # One HTTP session for every Web API call (a new one per call would open a connection per call).
        self._session = aiohttp.ClientSession()
        self.client.session = self._stream_client.session = self._session
        try:
            auth = await self.client.auth_test()
        except SlackApiError as e:
            raise ConfigError(f"Slack rejected SLACK_BOT_TOKEN ({e.response.get('error')})") from None
        self.bot_user_id, self.bot_id = auth.get("user_id", ""), auth.get("bot_id", "")
        logger.info("connected to Slack team %s as %s", auth.get("team_id"), self.bot_user_id)

    async def start_http(self, *, host: str = "0.0.0.0", port: int | None = None) -> int:
        """Serve the Events API, interactivity and /ask at POST /slack/events (GET /healthz for load
        balancers); returns the port (pass port=0 for a free one)."""
        if not self.settings.slack_signing_secret.get_secret_value():
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
        logger.info("Slack Socket Mode connected")

    async def idle(self) -> None:
        """Wait until every answer in progress has been posted."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tasks:
            # Answers in progress get a grace period to be posted; then they are cancelled.
            _, pending = await asyncio.wait(list(self._tasks), timeout=SHUTDOWN_GRACE_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._session is not None:
            await self._session.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _http(self, request: web.Request) -> web.Response:
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True, "bot_user_id": self.bot_user_id, "in_progress": len(self._tasks)}
        )

    def _register(self) -> None:
        app = self.app
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.event("reaction_added")(self._on_reaction)
        app.event("reaction_removed")(self._on_reaction)
        for action_id in (ACTION_UP, ACTION_DOWN, ACTION_ANOTHER):
            app.action(action_id)(self._on_button)
        app.view(REASON_CALLBACK)(self._on_reason)
        app.command("/ask")(self._on_ask)

    # -- listeners: translate, de-duplicate, start the work, return (bolt then acknowledges) ---------------

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if msg := self._incoming(body, event, mentioned=True):
            self._spawn(self._converse(msg, event))

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if msg := self._incoming(body, event, mentioned=False):
            self._spawn(self._converse(msg, event))

    def _incoming(
        self, body: dict[str, Any], event: dict[str, Any], *, mentioned: bool
    ) -> IncomingMessage | None:
        subtype = event.get("subtype")
        if subtype not in ANSWERED_SUBTYPES:
            logger.debug("ignoring a %s message event", subtype)
            return None
        channel, ts, raw = event.get("channel", ""), event.get("ts", ""), event.get("text") or ""
        is_dm = event.get("channel_type") == "im" or channel.startswith("D")
        if not mentioned and not is_dm:
            if self.bot_user_id and f"<@{self.bot_user_id}" in raw:
                return None  # a channel message that mentions us: its app_mention event answers it
            if not event.get("thread_ts") or event.get("thread_ts") == ts:
                return None  # channel chatter outside threads is never for us
        # 1. Slack's retries repeat the event_id; 2. a DM may also come as app_mention: one answer a message.
        if not self.dispatcher.first_delivery(body.get("event_id", "")):
            logger.info("retry of event %s ignored (already answered)", body.get("event_id"))
            return None
        if not self.dispatcher.first_delivery(f"{PLATFORM}:{channel}:{ts}"):
            return None
        return IncomingMessage(
            platform=PLATFORM,
            text=from_slack(raw, bot_user_id=self.bot_user_id),
            user=event.get("user") or event.get("bot_id") or "",
            channel=channel,
            thread=event.get("thread_ts") or ts,
            workspace=body.get("team_id") or event.get("team") or "",
            message_ref=f"{channel}:{ts}",
            is_dm=is_dm,
            mentioned=mentioned,
            from_bot=bool(event.get("bot_id")) or subtype == "bot_message",
            event_id=body.get("event_id", ""),
            has_attachments=bool(event.get("files")),
        )

    async def _on_reaction(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        item = event.get("item") or {}
        if item.get("type") != "message" or vote_value(event.get("reaction", "")) is None:
            return
        if event.get("item_user") and self.bot_user_id and event["item_user"] != self.bot_user_id:
            return  # a thumbs-up on someone else's message is not feedback for Kaizen
        ref = f"{item.get('channel', '')}:{item.get('ts', '')}"
        reaction = Reaction(
            platform=PLATFORM,
            user=event.get("user", ""),
            emoji=event.get("reaction", ""),
            message_ref=self._aliases.get(ref, ref),
            added=event.get("type") == "reaction_added",
            channel=item.get("channel", ""),
            event_id=body.get("event_id", ""),
        )
        self._spawn(self._react(reaction))

    async def _on_button(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        await ack()
        kind = {ACTION_UP: "up", ACTION_DOWN: "down", ACTION_ANOTHER: "another"}[action["action_id"]]
        press = ButtonPress(
            platform=PLATFORM,
            user=(body.get("user") or {}).get("id", ""),
            action=kind,
            interaction_id=action.get("value", ""),
        )
        self._spawn(self._press(press, body))

    async def _on_reason(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        await ack()  # closes the dialog
        reason = reason_from_view(view)
        if reason:
            press = ButtonPress(
                platform=PLATFORM,
                user=(body.get("user") or {}).get("id", ""),
                action="reason",
                interaction_id=view.get("private_metadata", ""),
                reason=reason,
            )
            self._spawn(self._press(press, body))

    async def _on_ask(self, ack: Callable[..., Awaitable[Any]], command: dict[str, Any]) -> None:
        try:
            options = parse_ask(
                from_slack(command.get("text", ""), bot_user_id=self.bot_user_id),
                presets=tuple(self.settings.presets),
            )
        except ValueError as e:
            await ack(text=f"{str(e)[:1].upper()}{str(e)[1:]}.\n{ASK_USAGE}")
            return
        if options.private:
            await ack(response_type="ephemeral", text=PLACEHOLDER)
        else:
            await ack()
        channel = command.get("channel_id", "")
        msg = IncomingMessage(
            platform=PLATFORM,
            text=options.question,
            user=command.get("user_id", ""),
            channel=channel,
            channel_name=command.get("channel_name", ""),
            workspace=command.get("team_id", ""),
            is_dm=channel.startswith("D"),
            mentioned=True,
            preset=options.preset,
            mode=options.mode,
            private=options.private,
            history=(),
        )
        self._spawn(self._ask(msg, command.get("response_url", "")))

    # -- background work ------------------------------------------------------------------------------------

    async def _converse(self, msg: IncomingMessage, event: dict[str, Any]) -> None:
        """Answer a message in its thread, if the dispatcher says so."""
        question_ts = event.get("ts", "")
        in_thread = bool(event.get("thread_ts")) and event.get("thread_ts") != question_ts
        replies: list[dict[str, Any]] | None = None
        if self.settings.channels:
            msg = replace(msg, channel_name=await self._channel_name(msg.channel))
        known = (PLATFORM, msg.channel, msg.thread) in self.dispatcher.bot_threads
        if in_thread and not (msg.is_dm or msg.mentioned or msg.from_bot or known):
            # A follow-up without a mention: is this a thread we answer in? (Also after a restart or on
            # another replica: the thread itself says so.) Only asked where the channel follows threads.
            if not self.settings.profile_for(msg.channel, msg.channel_name).follow_threads:
                return
            replies = await self._thread(msg.channel, msg.thread)
            msg = replace(msg, in_bot_thread=any(self._is_ours(m) for m in replies or ()))
        if not self.dispatcher.should_answer(msg):
            return
        placeholder = await self._post(msg.channel, msg.thread, SlackMessage(PLACEHOLDER))
        if placeholder is None:
            return  # we cannot post here (removed from the channel, archived): nothing more to do
        try:
            if in_thread:
                # Summoned mid-thread, or a follow-up: the thread so far is the conversation.
                replies = replies if replies is not None else await self._thread(msg.channel, msg.thread)
                if replies is not None:
                    msg = replace(msg, history=self._history(replies, before=question_ts))
            await self._answer_into(
                msg.channel,
                msg.thread,
                placeholder,
                lambda on_text: self.dispatcher.answer(msg, on_text=on_text),
            )
        except Exception:
            logger.exception("answering %s failed", msg.message_ref)
            await self._update(msg.channel, placeholder, SlackMessage(APOLOGY))

    async def _answer_into(
        self,
        channel: str,
        thread: str,
        placeholder: str,
        produce: Callable[[Callable[[str], None]], Awaitable[Reply | None]],
        *,
        note: str = "",
    ) -> Reply | None:
        """Stream an answer into the placeholder message, then post it in full."""
        stream = _Stream(self._stream_client, channel, placeholder, self.stream_interval_s, self._budget)
        try:
            reply = await produce(stream.push)
        finally:
            await stream.stop()
        if reply is None:
            await self._update(channel, placeholder, SlackMessage(UNKNOWN_ANSWER))
            return None
        messages = answer_messages(
            reply.answer,
            sources=reply.sources,
            note=note if reply.called_model else "",
            interaction_id=reply.id if reply.called_model else "",
        )
        refs = [f"{channel}:{placeholder}"] if await self._update(channel, placeholder, messages[0]) else []
        for more in messages[1:]:
            if ts := await self._post(channel, thread, more):
                refs.append(f"{channel}:{ts}")
        if refs and reply.called_model:
            await self.dispatcher.posted(reply, refs[0])
            for ref in refs[1:]:
                self._alias(ref, refs[0])
        return reply

    async def _ask(self, msg: IncomingMessage, response_url: str) -> None:
        """/ask: in public, the question is posted as a new thread and answered in it; privately, only the
        asker sees the answer (ephemeral, through the command's response_url)."""
        if not msg.private:
            question = SlackMessage(f"<@{msg.user}> asked: {msg.text}"[:3000])
            metadata = {
                "event_type": QUESTION_EVENT,
                "event_payload": {"user": msg.user, "text": msg.text[:2000]},
            }
            root = await self._post(msg.channel, "", question, metadata=metadata, quiet=True)
            if root is not None:
                placeholder = await self._post(msg.channel, root, SlackMessage(PLACEHOLDER))
                if placeholder is not None:
                    msg = replace(msg, thread=root, message_ref=f"{msg.channel}:{root}")
                    try:
                        await self._answer_into(
                            msg.channel,
                            root,
                            placeholder,
                            lambda on_text: self.dispatcher.answer(msg, on_text=on_text),
                        )
                    except Exception:
                        logger.exception("answering /ask failed")
                        await self._update(msg.channel, placeholder, SlackMessage(APOLOGY))
                    return
            # Not a member of this channel: answer privately rather than not at all.
            await self._respond(response_url, SlackMessage(NOT_IN_CHANNEL), replace_original=False)
        # A private answer replaces the "Thinking…" the command's ack showed; a fallback one adds to the note.
        try:
            reply = await self.dispatcher.answer(msg)
        except Exception:
            logger.exception("answering a private /ask failed")
            await self._respond(response_url, SlackMessage(APOLOGY), replace_original=msg.private)
            return
        await self._respond_answer(response_url, reply, replace_original=msg.private)

    async def _react(self, reaction: Reaction) -> None:
        try:
            await self.dispatcher.reaction(reaction)
        except Exception:
            logger.exception("recording a reaction on %s failed", reaction.message_ref)

    async def _press(self, press: ButtonPress, body: dict[str, Any]) -> None:
        container = body.get("container") or {}
        message = body.get("message") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id", "")
        thread = message.get("thread_ts") or container.get("thread_ts") or message.get("ts") or ""
        ephemeral = bool(container.get("is_ephemeral"))
        if press.action == "down" and body.get("trigger_id"):
            # The trigger expires 3 s after the click: open the (optional) reason dialog before anything else.
            try:
                await self.client.views_open(
                    trigger_id=body["trigger_id"], view=reason_modal(press.interaction_id)
                )
            except _CALL_ERRORS as e:
                logger.warning("could not open the reason dialog: %s", _why(e))
        if press.action == "another":
            await self._another(press, channel, thread, ephemeral, body.get("response_url", ""))
            return
        try:
            await self.dispatcher.button(press)
        except Exception:
            logger.exception("recording button %s on %s failed", press.action, press.interaction_id)
            await self._ephemeral(channel, press.user, thread, VOTE_FAILED)
            return
        if press.action == "up":
            await self._ephemeral(channel, press.user, thread, "Thanks — your 👍 is recorded.")

    async def _another(
        self, press: ButtonPress, channel: str, thread: str, ephemeral: bool, response_url: str
    ) -> None:
        """The "Try another answer" button: a sibling answer (different decoding) in the same thread."""
        if ephemeral:
            reply = await self.dispatcher.another(press.interaction_id)
            if reply is None:
                await self._respond(response_url, SlackMessage(UNKNOWN_ANSWER), replace_original=False)
            else:
                await self._respond_answer(response_url, reply, note=ANOTHER_NOTE, replace_original=False)
            return
        placeholder = await self._post(channel, thread, SlackMessage(PLACEHOLDER))
        if placeholder is None:
            return
        try:
            await self._answer_into(
                channel,
                thread,
                placeholder,
                lambda on_text: self.dispatcher.another(press.interaction_id, on_text=on_text),
                note=ANOTHER_NOTE,
            )
        except Exception:
            logger.exception("another answer to %s failed", press.interaction_id)
            await self._update(channel, placeholder, SlackMessage(APOLOGY))

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
        except _CALL_ERRORS as e:
            logger.warning("could not read thread %s:%s (%s)", channel, thread, _why(e))
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
            if not text.strip():
                continue
            if turns and turns[-1].role == role:
                turns[-1] = Message(role, f"{turns[-1].content}\n{text}")
            else:
                turns.append(Message(role, text))
        keep = self.settings.history_turns * 2
        return tuple(turns[-keep:]) if keep else ()

    async def _channel_name(self, channel: str) -> str:
        """The channel's name, for profiles configured by name (looked up once per channel)."""
        if channel not in self._channel_names:
            try:
                info = await self.client.conversations_info(channel=channel)
                self._channel_names[channel] = (info.get("channel") or {}).get("name", "")
            except _CALL_ERRORS as e:
                logger.info("no name for channel %s (%s)", channel, _why(e))
                return ""
        return self._channel_names[channel]

    # -- Slack writes (failures are logged, never raised: a removed or archived channel is not a crash) ---

    async def _post(
        self,
        channel: str,
        thread: str,
        msg: SlackMessage,
        *,
        metadata: dict[str, Any] | None = None,
        quiet: bool = False,
    ) -> str | None:
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
        except _CALL_ERRORS as e:
            log = logger.info if quiet else logger.warning
            log("could not post in %s (%s)", channel, _why(e))
            return None
        return resp.get("ts")

    async def _update(self, channel: str, ts: str, msg: SlackMessage) -> bool:
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=msg.text, blocks=msg.blocks or [])
        except _CALL_ERRORS as e:
            logger.warning("could not update %s:%s (%s)", channel, ts, _why(e))
            return False
        return True

    async def _ephemeral(self, channel: str, user: str, thread: str, text: str) -> None:
        if not channel or not user:
            return
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread or None
            )
        except _CALL_ERRORS as e:
            logger.info("could not send an ephemeral note in %s (%s)", channel, _why(e))

    async def _respond(self, response_url: str, msg: SlackMessage, *, replace_original: bool) -> None:
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

    async def _respond_answer(
        self, response_url: str, reply: Reply, *, note: str = "", replace_original: bool
    ) -> None:
        messages = answer_messages(
            reply.answer,
            sources=reply.sources,
            note=note if reply.called_model else "",
            interaction_id=reply.id if reply.called_model else "",
            max_messages=MAX_EPHEMERAL,
        )
        for i, msg in enumerate(messages):
            await self._respond(response_url, msg, replace_original=replace_original and i == 0)

    def _alias(self, ref: str, first: str) -> None:
        # The store keeps one message per answer; a reaction on a later part of a split answer counts for it.
        self._aliases[ref] = first
        while len(self._aliases) > 10_000:
            self._aliases.popitem(last=False)


async def run_slack(
    settings: Settings, dispatcher: Dispatcher, *, ready: asyncio.Event | None = None
) -> None:
    """Run the Slack front end until cancelled: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode on
    KAIZEN_SLACK_PORT (signatures checked with SLACK_SIGNING_SECRET). Raises ConfigError for missing or
    rejected credentials before `ready` is set."""
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
        await front.close()
