"""Fixtures for the Slack front end: the real bolt app on loopback, a fake Slack Web API / Socket Mode server,
the real default model (short answers) and a real SQLite feedback store."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

# tests/ is on sys.path (see tests/feedback/conftest.py); the repository root must come first.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from slack_sim import SECRET, SlackSim  # noqa: E402

from bot.dispatcher import Dispatcher  # noqa: E402
from bot.slack.app import SlackFrontEnd  # noqa: E402
from core.config import load_settings  # noqa: E402
from core.engine import Engine  # noqa: E402
from feedback import FeedbackStore  # noqa: E402
from kaizen_testing.slack import FakeSlack  # noqa: E402

SHORT = {"precise": {"strategy": "greedy", "max_new_tokens": 12}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    f = FakeSlack()
    await f.start()
    yield f
    await f.close()


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    s = FeedbackStore.from_url(f"sqlite:///{tmp_path / 'kaizen.db'}", spool_dir=tmp_path / "spool")
    yield s
    s.close()


@pytest.fixture
def make_settings(isolated_env, fake):
    """Settings for a test: short greedy answers, the fake's URL and credentials, plus any overrides."""

    def make(**overrides: Any):
        values: dict[str, Any] = dict(
            data_dir=isolated_env,
            default={"preset": "precise"},
            presets=SHORT,
            slack_bot_token=fake.bot_token,
            slack_app_token="",
            slack_signing_secret=SECRET,
            slack_api_url=fake.api_url,
        )
        values |= overrides
        return load_settings(**values)

    return make


@pytest.fixture
async def start_front(default_model, store, fake):
    """Start a real Slack front end (HTTP mode, free port) on the real engine; returns a SlackSim for it."""
    fronts: list[SlackFrontEnd] = []
    session = aiohttp.ClientSession()

    async def start(settings, *, model=None, stream_interval_s: float = 0.05) -> SlackSim:
        engine = Engine(settings, model or default_model, on_reply=store.on_reply)
        dispatcher = Dispatcher(engine, store, rate_limit_per_minute=settings.rate_limit_per_minute)
        front = SlackFrontEnd(settings, dispatcher, stream_interval_s=stream_interval_s)
        await front.start_http(host="127.0.0.1", port=0)
        fronts.append(front)
        return SlackSim(fake, front, session)

    yield start
    for front in fronts:
        await front.close()
    await session.close()


@pytest.fixture
async def slack(make_settings, start_front) -> SlackSim:
    return await start_front(make_settings())
