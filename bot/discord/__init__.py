"""Discord: `app` (the discord.py client, its handlers and outlets), `stream` (posting and streaming one answer),
`format` (splitting, mentions, thread titles; free of the SDK)."""
