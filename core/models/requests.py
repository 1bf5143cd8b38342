"""A generation request as the in-process backend's worker sees it, and the thread-safe way results reach the
awaiting coroutine."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from core.decoding import DecodingConfig

from .base import OnText

__all__ = ["Request", "call_in_loop", "deliver", "fail"]


@dataclass(eq=False)
class Request:
    """`prompt_ids`: the chat-templated prompt (token ids); `submitted`: perf_counter() seconds at submission.
    `mask` (bool [vocab]) and `stop` are set by constrained decoding: only allowed tokens, cut at a stop string."""

    prompt_ids: list[int]
    decoding: DecodingConfig
    adapter: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    on_text: OnText | None
    submitted: float = field(default_factory=time.perf_counter)
    mask: Any = None
    stop: tuple[str, ...] = ()

    def key(self) -> tuple:
        """Requests with equal keys can share one static `generate` call."""
        return (self.adapter, self.decoding.batch_key())


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def call_in_loop(req: Request, fn, *args: Any) -> None:
    """Run `fn(*args)` on the request's event loop, from the worker thread; a loop that has closed meanwhile
    (its caller is gone) is ignored, so the worker goes on serving the others."""
    try:
        req.loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # event loop is closed
        pass


def deliver(req: Request, value: Any) -> None:
    """Resolve the request's future from the worker thread."""
    call_in_loop(req, _set_result, req.future, value)


def fail(req: Request, exc: BaseException) -> None:
    """Fail the request's future from the worker thread."""
    call_in_loop(req, _set_exception, req.future, exc)
