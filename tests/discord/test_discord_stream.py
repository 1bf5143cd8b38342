"""Posting an answer: split at 2000 characters without breaking code blocks, streamed by throttled edits — the
splitting rules on their own, then the poster with the real discord.py client against the fake REST API."""

from __future__ import annotations

import asyncio

import discord
import pytest

from bot.discord.app import discord_endpoints, discord_intents, sources_embed
from bot.discord.format import split_message, strip_mentions, thread_title
from bot.discord.stream import CURSOR, AnswerPoster, channel_sender
from core.config import load_settings
from core.types import Source
from kaizen_testing.discord import BOT_ID, BOT_ROLE_ID, CHANNEL_ID

STEPS = "\n".join(f"print({i})  # step {i} of the job" for i in range(200))
CODE = f"Here is the script:\n```python\n{STEPS}\n```\nRun it twice."


def _unfenced(parts: list[str]) -> list[str]:
    """The lines of the parts without fence lines (those the splitter adds, and the original ones)."""
    return [line for p in parts for line in p.split("\n") if not line.startswith("```")]


def test_split_keeps_code_blocks_whole_in_every_message():
    parts = split_message(CODE)
    assert len(parts) == 4 and all(len(p) <= 2000 for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)  # every message opens and closes its block
    assert parts[1].startswith("```python\n") and parts[0].endswith("\n```")
    assert _unfenced(parts) == _unfenced([CODE])  # nothing lost, nothing reordered


def test_split_prose_at_spaces_and_leave_short_text_alone():
    assert split_message("  short answer \n") == ["short answer"]
    assert split_message(" \n ") == []
    prose = " ".join(f"word{i}" for i in range(1500))  # one 10 000-character line
    parts = split_message(prose)
    assert all(len(p) <= 2000 for p in parts) and len(parts) >= 5
    assert " ".join(parts).split() == prose.split()  # cut between words only
    with pytest.raises(ValueError):
        split_message(prose, limit=10)


def test_mentions_and_thread_titles():
    assert strip_mentions(f"<@{BOT_ID}> hi <@!{BOT_ID}> there <@&{BOT_ROLE_ID}>", {BOT_ID, BOT_ROLE_ID}) == \
        "hi   there"
    assert strip_mentions("<@123> keep other people", {BOT_ID}) == "<@123> keep other people"
    assert thread_title("\n**How** do I `reset` it?\nmore") == "How do I reset it?"
    title = thread_title("x" * 500)
    assert len(title) == 100 and title.endswith("…")
    assert thread_title("```") == "Kaizen"


async def test_poster_streams_in_throttled_steps_then_splits(fake, isolated_env):
    settings = load_settings(data_dir=isolated_env, discord_api_url=fake.api_url,
                             discord_gateway_url=fake.gateway_url)
    client = discord.Client(intents=discord_intents())
    with discord_endpoints(settings):
        async with client:
            await client.login("fake-token")  # REST only: posting needs no gateway
            channel = await client.fetch_channel(CHANNEL_ID)
            poster = AnswerPoster(channel_sender(channel), interval=0.2)
            text = ""
            for i in range(40):
                text += f"word{i} "
                poster.feed(text)
                await asyncio.sleep(0.01)
            await fake.wait_for(lambda: fake.requests("PATCH"))  # at least one streamed edit
            streamed = fake.bot_messages(CHANNEL_ID)
            assert len(streamed) == 1 and streamed[0]["content"].endswith(CURSOR)
            fake.deleted.add(streamed[0]["id"])  # a moderator deletes it mid-answer
            sources = [Source(id="h", text="", title="Handbook [2026]", uri="https://example.com/handbook"),
                       Source(id="n", text="", title="notes.txt")]
            messages = await poster.finish(CODE, embed=sources_embed(sources))
    edits = fake.requests("PATCH")
    assert 1 <= len(edits) < 20  # 40 updates, throttled to a few edits
    posted = fake.bot_messages(CHANNEL_ID)
    assert [m["id"] for m in posted] == [str(m.id) for m in messages] and len(posted) == 4
    assert [m["content"] for m in posted] == split_message(CODE)  # re-posted in place of the deleted one
    assert [len(m["embeds"]) for m in posted] == [0, 0, 0, 1]  # sources on the last part only
    assert posted[-1]["embeds"][0]["description"] == \
        "1. [Handbook (2026)](https://example.com/handbook)\n2. notes.txt"
