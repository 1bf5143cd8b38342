"""Slack's Web API as the front end uses it: one client (and one HTTP session) per app, the reads (a thread, a
channel's name, a thread as conversation turns) and the writes (post, update, ephemeral notes, response_url), which
log failures and never raise — a removed or archived channel is not a crash. `SlackFrontEnd` is one of these.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.conversation import merge_turns
from bot.dispatcher import APOLOGY
from bot.slack.format import PLACEHOLDER, SlackMessage, from_slack
from bot.slack.stream import CALL_ERRORS, UpdateBudget, why
from core.config import ConfigError, Settings
from core.text import clean_text
from core.types import Message

__all__ = ["QUESTION_EVENT", "SlackWeb"]

logger = logging.getLogger(__name__)

QUESTION_EVENT = "kaizen_question"  # metadata on a /ask question the bot posted on the asker's behalf


def _ts_key(ts: str) -> tuple[int, ...]:
    # Slack timestamps are "seconds.micro" strings; a float would lose the last digits.
    return tuple(int(part) for part in ts.split(".") if part.isdigit())


class SlackWeb:
    """The Web API side of one Slack app (bot token from `settings`); `_connect()` before use. Implements
    `bot.slack.stream.SlackPoster` for the outlets."""

    def __init__(self, settings: Settings, *, stream_interval_s: float = 1.0,
                 stream_updates_per_minute: float = 50.0) -> None:
        token = settings.slack_bot_token.get_secret_value()
        if not token:
            raise ConfigError(
                "SLACK_BOT_TOKEN is not set: create the Slack app from deploy/slack-manifest.yaml "
                "and copy its Bot User OAuth Token (xoxb-…)"
            )
        self.settings = settings
        self.stream_interval_s = stream_interval_s
        base_url = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
        # Slack answers 429 with Retry-After when we post too fast; the client waits and retries (twice),
        # as it does after a dropped connection.
        retries = [*async_default_handlers(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
        self.client = AsyncWebClient(token=token, base_url=base_url, logger=logger, retry_handlers=retries)
        # Partial updates while streaming use a client that does not retry: a 429 pauses streaming instead.
        self.stream_client = AsyncWebClient(token=token, base_url=base_url, logger=logger, retry_handlers=[])
        self.budget = UpdateBudget(stream_updates_per_minute)
        self.bot_user_id = self.bot_id = ""
        self._channel_names: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None

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
        said: list[tuple[str, str]] = []
        for m in replies:
            if _ts_key(m.get("ts", "0")) >= _ts_key(before):
                continue
            metadata = m.get("metadata") or {}
            if metadata.get("event_type") == QUESTION_EVENT:  # a /ask question we posted for someone
                said.append(("user", str((metadata.get("event_payload") or {}).get("text", ""))))
            elif self._is_ours(m):
                if m.get("text", "") not in (PLACEHOLDER, APOLOGY):
                    said.append(("assistant", m.get("text", "")))
            else:
                said.append(("user", from_slack(m.get("text", ""), bot_user_id=self.bot_user_id)))
        return merge_turns(said, keep=self.settings.history_turns * 2)

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
