"""Slack: `translate` (payloads -> `bot.events`, pure), `stream` (posting and streaming one answer), `format`
(mrkdwn, blocks, dialogs; free of the SDK), `app` (the bolt app: HTTP and Socket Mode)."""
