"""The chat-model protocol every backend implements, its result type and its errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.decoding import DecodingConfig

__all__ = ["BackendError", "ChatModel", "Generation", "ModelNotFoundError", "OnText"]

OnText = Callable[[str], None]
"""Streaming callback: receives the whole answer so far (stripped) after each new token."""


class ModelNotFoundError(RuntimeError):
    """No model could be found or loaded; the message says how to install or configure one."""


class BackendError(RuntimeError):
    """The model backend failed (HTTP error, bad response)."""


@dataclass
class Generation:
    """One returned sequence. Token counts are in the model's tokens; `first_token_s` is seconds from the
    request being submitted to its first new token (None when not streamed/measured)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    first_token_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ChatModel(Protocol):
    name: str
    context_window: int

    @property
    def adapter(self) -> str: ...

    def count_tokens(self, messages: list[dict[str, str]]) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...

    async def generate(
        self,
        messages: list[dict[str, str]],
        decoding: DecodingConfig,
        *,
        adapter: str | None = None,
        on_text: OnText | None = None,
    ) -> list[Generation]: ...

    async def set_adapter(self, name: str, path: str | None = None) -> None: ...

    async def load_adapter(self, name: str, path: str) -> None:
        """Make adapter `name` (a PEFT folder at `path`) available to `generate(adapter=name)` without
        changing what is served by default (a canary runs next to the incumbent)."""
        ...

    async def aclose(self) -> None: ...
