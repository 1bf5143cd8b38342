"""Fixtures for the Discord front end: a fake Discord on loopback, and the real discord.py client, engine
(with the real default model, answers kept short) and SQLite feedback store behind it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Where this folder would pass for a package, the repository root comes first.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.discord.app import run_discord  # noqa: E402
from bot.discord.stream import CURSOR  # noqa: E402
from bot.dispatcher import Dispatcher  # noqa: E402
from core.config import Settings, load_settings  # noqa: E402
from core.engine import Engine  # noqa: E402
from feedback import FeedbackStore  # noqa: E402
from kaizen_testing.discord import FakeDiscord  # noqa: E402


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord().start()
    yield server
    await server.close()


@dataclass
class Bot:
    settings: Settings
    store: FeedbackStore
    dispatcher: Dispatcher
    task: asyncio.Task[None]


@pytest.fixture
async def start_bot(fake: FakeDiscord, default_model: Any, isolated_env: Path
                    ) -> AsyncIterator[Callable[..., Awaitable[Bot]]]:
    """`await start_bot(**settings)`: Kaizen connected to the fake Discord, ready (and /ask synced)."""
    started: list[Bot] = []

    async def start(*, model: Any = None, **overrides: Any) -> Bot:
        values: dict[str, Any] = {
            "data_dir": isolated_env / "data",
            "default": {"preset": "precise"},
            # Short greedy answers: the real model on a shared CPU.
            "presets": {"precise": {"strategy": "greedy", "max_new_tokens": 4}},
            "discord_token": "fake-token",
            "discord_api_url": fake.api_url,
            "discord_gateway_url": fake.gateway_url,
            **overrides,
        }
        settings = load_settings(**values)
        store = FeedbackStore.open(settings)
        engine = Engine(settings, model or default_model, on_reply=store.on_reply)
        dispatcher = Dispatcher(engine, store, rate_limit_per_minute=settings.rate_limit_per_minute)
        ready = asyncio.Event()
        task = asyncio.create_task(run_discord(settings, dispatcher, ready=ready, edit_interval=0.05,
                                               guild_ready_timeout=0.05))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            task.cancel()
            store.close()
            if task.done() and not task.cancelled():
                task.result()  # raises what stopped the client
            raise RuntimeError("the Discord client never became ready")
        bot = Bot(settings, store, dispatcher, task)
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bot.task
        bot.store.close()


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Callable[[], None]:
    """Call at the end of a test: nothing was logged at ERROR (discord.py logs handler exceptions there)."""
    caplog.set_level("INFO")

    def check() -> None:
        errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
        assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]

    return check


@pytest.fixture
def answers(fake: FakeDiscord) -> Callable[..., Awaitable[list[dict[str, Any]]]]:
    """`await answers(bot, channel_id, n)`: the bot's messages there once `n` of them are final (streaming
    over) and every model answer among them has its message reference in the store (so reactions map back)."""

    async def wait(bot: Bot, channel_id: int | str, n: int = 1, *,
                   timeout: float = 120.0) -> list[dict[str, Any]]:
        def settled() -> list[dict[str, Any]] | None:
            messages = fake.bot_messages(channel_id)
            if len(messages) < n or any(m["content"].endswith(CURSOR) or m["flags"] & 128 for m in messages):
                return None
            for m in messages:
                if m["components"]:
                    custom_id = m["components"][0]["components"][-1]["custom_id"]
                    row = bot.store.get_interaction(interaction_id=custom_id.rsplit(":", 1)[1])
                    if row is None or row.message_ref is None:
                        return None
            return messages

        return await fake.wait_for(settled, timeout=timeout)

    return wait
