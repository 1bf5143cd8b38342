"""The scripted chat model: a stand-in for `core.models.ChatModel` that streams a fixed answer word by word.

    model = ScriptedModel(answer="Paris is the capital.", token_s=0.01, batch=8)

Used where the front end, not the CPU, is under test: replicas, restarts, shutdown, bursts. `generate` streams
the answer word by word (or in `steps` equal pieces), `token_s` seconds a step, at most `batch` answers at a time
(like a batching server); `calls` counts the answers generated.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from core.models import Generation

__all__ = ["DEFAULT_ANSWER", "ENV", "ScriptedModel", "from_env"]

ENV = "KAIZEN_TESTING_MODEL"  # JSON keyword arguments of ScriptedModel, for a `kaizen` process
DEFAULT_ANSWER = (
    "To reset your VPN profile, open **Settings → Network**, remove the `corp` profile, then sign in "
    "again with MFA. See [the handbook](https://wiki.example.com/vpn) for details. "
) * 3


class ScriptedModel:
    """Streams `answer` (cut to `tokens` words when given; in `steps` pieces when given), `token_s` seconds a
    step, `batch` answers at once."""

    name = "scripted"
    context_window = 8192

    def __init__(self, *, answer: str = DEFAULT_ANSWER, tokens: int | None = None, steps: int | None = None,
                 token_s: float = 0.0, batch: int = 64) -> None:
        if steps:
            size = max(1, -(-len(answer) // steps))
            self.pieces = [answer[i:i + size] for i in range(0, len(answer), size)]
        else:
            words = answer.split(" ")
            words = words[:tokens] if tokens else words
            self.pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        self.token_s = token_s
        self.batch = batch
        self.adapter = ""
        self.calls = 0
        self._slots: asyncio.Semaphore | None = None

    def count_tokens(self, messages: list[Any]) -> int:
        return sum(len(_content(m)) // 4 + 4 for m in messages)

    def truncate(self, text: str, max_tokens: int) -> str:
        return text[: max_tokens * 4]

    async def generate(self, messages: list[Any], decoding: Any, *, adapter: str | None = None,
                       on_text: Any = None) -> list[Generation]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.batch)
        async with self._slots:
            self.calls += 1
            t0 = time.perf_counter()
            text = ""
            for piece in self.pieces:
                if self.token_s:
                    await asyncio.sleep(self.token_s)
                text += piece
                if on_text is not None:
                    on_text(text.strip())
            return [Generation(text=text.strip(), prompt_tokens=self.count_tokens(messages),
                               completion_tokens=len(self.pieces), first_token_s=self.token_s,
                               extra={"wall_s": time.perf_counter() - t0})]

    async def set_adapter(self, name: str, path: str | None = None) -> None:
        self.adapter = name

    async def load_adapter(self, name: str, path: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


def from_env() -> ScriptedModel:
    """A ScriptedModel configured by the JSON in $KAIZEN_TESTING_MODEL (empty: the defaults)."""
    return ScriptedModel(**json.loads(os.environ.get(ENV) or "{}"))


def _content(message: Any) -> str:
    return message["content"] if isinstance(message, dict) else getattr(message, "content", "")
