"""Slack: `translate` (payloads -> `bot.events`, pure), `stream` (posting and streaming one answer)."""
