"""Slack interactivity: the 👍/👎/"Try another answer" buttons, the reason and correction dialogs, and `/ask`.

Each listener acknowledges within Slack's 3 seconds (opening a dialog first where one is due, as its trigger
expires), translates the payload (`bot.slack.translate`) and leaves the work to a tracked task of the front end:
votes and corrections go to the dispatcher, "Try another answer" and `/ask` through its one flow with a Slack outlet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bot.events import IncomingMessage
from bot.slack.dialogs import (
    ASK_USAGE,
    correct_modal,
    correction_from_view,
    parse_ask,
    reason_from_view,
    reason_modal,
)
from bot.slack.format import ACTION_ANOTHER, ACTION_DOWN, ACTION_UP, PLACEHOLDER, SlackMessage, from_slack, to_mrkdwn
from bot.slack.stream import CALL_ERRORS, ChannelOutlet, EphemeralOutlet, why
from bot.slack.translate import button_press, command_message
from bot.slack.web import QUESTION_EVENT
from core.text import clean_text, is_blank

if TYPE_CHECKING:
    from bot.slack.app import SlackFrontEnd

__all__ = ["ANOTHER_NOTE", "NOT_IN_CHANNEL", "SlackInteractivity"]

logger = logging.getLogger(__name__)

ANOTHER_NOTE = "_Another answer to the same question — 👍/👎 the better one._"
NOT_IN_CHANNEL = (
    "I can't post in this channel (I'm not a member) — here is a private answer. "
    "Invite me with `/invite @Kaizen` to answer in public."
)
VOTE_FAILED = "Sorry — I couldn't record that just now. Please try again in a moment."
CORRECTION_FAILED = "Sorry — I couldn't keep that correction (the answer may be gone). Please try again later."


class SlackInteractivity:
    """The button, dialog and `/ask` listeners of one front end (registered on its bolt app by the front end)."""

    def __init__(self, front: SlackFrontEnd) -> None:
        self.front = front

    async def on_button(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        await ack()
        kind = {ACTION_UP: "up", ACTION_DOWN: "down", ACTION_ANOTHER: "another"}[action["action_id"]]
        self.front._spawn(self._press(button_press(body, kind, action.get("value", "")), body))

    async def on_reason(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        await ack()  # closes the dialog
        press = button_press(body, "reason", view.get("private_metadata", ""), reason=reason_from_view(view))
        if press.reason:
            self.front._spawn(self._press(press, body))

    async def on_correct_button(
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
            await self.front.client.views_open(trigger_id=body.get("trigger_id", ""), view=view)
        except CALL_ERRORS as e:
            logger.warning("could not open the correction dialog: %s", why(e))

    async def on_correction(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        where, text = correction_from_view(view)
        if is_blank(clean_text(text)):
            await ack(response_action="errors", errors={"correction": "Write what the answer should say."})
            return
        await ack()
        press = button_press(body, "correct", where.get("id", ""), reason=text)
        self.front._spawn(self._correct(press, where.get("channel", ""), where.get("thread", "")))

    async def _correct(self, press: Any, channel: str, thread: str) -> None:
        """Store the correction, then show the corrected answer in the thread."""
        try:
            text = await self.front.dispatcher.correct(press)
        except Exception as e:
            logger.info("correction of %s not kept: %s", press.interaction_id, e)
            await self.front._ephemeral(channel, press.user, thread, CORRECTION_FAILED)
            return
        shown = f"✏️ Corrected by <@{press.user}>:\n{to_mrkdwn(text)}"[:3000]
        await self.front.post(channel, thread, SlackMessage(shown))

    async def on_ask(self, ack: Callable[..., Awaitable[Any]], command: dict[str, Any]) -> None:
        try:
            options = parse_ask(
                clean_text(from_slack(clean_text(command.get("text", "")), bot_user_id=self.front.bot_user_id)),
                presets=tuple(self.front.settings.presets),
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
        self.front._spawn(self._ask(msg, command.get("response_url", "")))

    async def _ask(self, msg: IncomingMessage, response_url: str) -> None:
        """/ask: in public, the question is posted as a new thread and answered in it; privately, only the
        asker sees the answer (ephemeral, through the command's response_url)."""
        if not msg.private:
            question = SlackMessage(f"<@{msg.user}> asked: {msg.text}"[:3000])
            metadata = {"event_type": QUESTION_EVENT, "event_payload": {"user": msg.user, "text": msg.text[:2000]}}

            async def post_root() -> str | None:
                return await self.front.post(msg.channel, "", question, metadata=metadata, quiet=True)

            outlet = ChannelOutlet(self.front, msg.channel, "", root=post_root)
            await self.front.dispatcher.handle(msg, outlet)
            if outlet.posted_root is not False:
                return
            # Not a member of this channel: answer privately rather than not at all.
            await self.front.respond(response_url, SlackMessage(NOT_IN_CHANNEL), replace_original=False)
        # A private answer replaces the "Thinking…" the command's ack showed; a fallback one adds to the note.
        outlet = EphemeralOutlet(self.front, response_url, replace_original=msg.private)
        await self.front.dispatcher.handle(replace(msg, private=True), outlet)

    async def _press(self, press: Any, body: dict[str, Any]) -> None:
        container = body.get("container") or {}
        message = body.get("message") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id", "")
        thread = message.get("thread_ts") or container.get("thread_ts") or message.get("ts") or ""
        if press.action == "down" and body.get("trigger_id"):
            # The trigger expires 3 s after the click: open the (optional) reason dialog before anything else.
            try:
                await self.front.client.views_open(trigger_id=body["trigger_id"],
                                                   view=reason_modal(press.interaction_id))
            except CALL_ERRORS as e:
                logger.warning("could not open the reason dialog: %s", why(e))
        if press.action == "another":
            # "Try another answer" runs the model again: the same flow (and rate limit) as a question.
            if container.get("is_ephemeral"):
                outlet: Any = EphemeralOutlet(self.front, body.get("response_url", ""), replace_original=False,
                                              note=ANOTHER_NOTE)
            else:
                outlet = ChannelOutlet(self.front, channel, thread, note=ANOTHER_NOTE)
            await self.front.dispatcher.handle_another(press, outlet)
            return
        try:
            await self.front.dispatcher.button(press)
        except Exception:
            logger.exception("recording button %s on %s failed", press.action, press.interaction_id)
            await self.front._ephemeral(channel, press.user, thread, VOTE_FAILED)
            return
        if press.action == "up":
            await self.front._ephemeral(channel, press.user, thread, "Thanks — your 👍 is recorded.")
