"""`kaizen serve`: the model, stores and every configured front end in one process, with /healthz and /metrics.

SIGTERM (what Kubernetes and `docker stop` send) shuts down cleanly: /healthz turns unready first so the load
balancer drains, no new event is taken on, answers in flight get `grace_s` to finish (posted and recorded); an
answer that cannot finish in time is replaced by an apology. Then the front ends close.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from typing import Any

from bot.dispatcher import Dispatcher
from bot.observability import HealthServer, Metrics
from core.config import Settings
from core.types import Reply

__all__ = ["FRONT_ENDS", "SHUTDOWN_GRACE_S", "configured_platforms", "serve"]

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30.0  # within Kubernetes' default terminationGracePeriodSeconds

# The front ends: platform -> (the setting that switches it on, "module:run function"). Each is a package under
# bot/ (translate, stream, app) built on the dispatcher's one flow; a new platform is one package and one line here.
FRONT_ENDS: dict[str, tuple[str, str]] = {
    "slack": ("slack_bot_token", "bot.slack.app:run_slack"),
    "discord": ("discord_token", "bot.discord.app:run_discord"),
}


def configured_platforms(settings: Settings) -> list[str]:
    """The platforms whose token is set, in FRONT_ENDS order."""
    return [name for name, (token, _) in FRONT_ENDS.items() if getattr(settings, token).get_secret_value()]


async def serve(settings: Settings, *, console: bool, started: asyncio.Event | None = None,
                grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Run until cancelled or SIGTERM (or, with the console, until the user quits)."""
    from bot.runtime import build_engine, open_retriever_if_any, open_store

    metrics = Metrics()
    health = HealthServer(settings.http_host, settings.http_port, metrics) if settings.http_port else None
    if health is not None:
        await health.start()  # up at once, unready until the model and stores are
    # 1. Stores and model, loaded off the event loop so the health endpoint answers meanwhile.
    store = await asyncio.to_thread(open_store, settings)
    retriever = await asyncio.to_thread(open_retriever_if_any, settings)
    engine = await asyncio.to_thread(build_engine, settings, store=store, retriever=retriever)
    record = engine.on_reply

    async def on_reply(reply: Reply) -> None:
        if record is not None:
            await record(reply)
        metrics.observe_reply(reply)

    engine.on_reply = on_reply
    dispatcher = Dispatcher(engine, store, rate_limit_per_minute=settings.rate_limit_per_minute, metrics=metrics)
    metrics.set_adapter(engine.model.adapter)
    metrics.router = engine.canary
    platforms = configured_platforms(settings)
    if health is not None:
        health.detail = {"status": "ok", "model": engine.model.name, "adapter": engine.model.adapter or "base",
                         "documents": retriever is not None, "platforms": platforms}
        health.ready = True
    if started is not None:
        started.set()
    # 2. Front ends and the adapter watcher run side by side; one failing stops the process loudly.
    tasks: list[asyncio.Task[Any]] = []  # every task started here, the SIGTERM waiter too: all cancelled at the end
    terminate = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not on the main thread: no signal handling
        loop.add_signal_handler(signal.SIGTERM, terminate.set)
    try:
        for name in platforms:
            module, _, function = FRONT_ENDS[name][1].partition(":")
            run = getattr(importlib.import_module(module), function)
            tasks.append(asyncio.create_task(run(settings, dispatcher), name=name))
        if settings.adapter_poll_s and not settings.model.adapter:  # a pinned adapter stays pinned
            from core.adapters import watch_adapter

            tasks.append(asyncio.create_task(
                watch_adapter(settings.data_dir, engine.model, settings.adapter_poll_s, router=engine.canary),
                name="adapters"))
        if store is not None and settings.canary.check_s:  # live votes per adapter; canary decisions
            from bot.observability import watch_canary

            tasks.append(asyncio.create_task(watch_canary(settings, store, metrics), name="canary"))
        if not platforms and console:
            from bot.console import ConsoleChat

            await ConsoleChat(engine, store=store).run()
            return
        if not platforms:
            logger.warning("no Slack or Discord tokens configured: serving only /healthz and /metrics")
        stop = asyncio.create_task(terminate.wait(), name="sigterm")
        tasks.append(stop)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if stop in done:
            await _drain(dispatcher, health, grace_s)
        for t in done:
            if t is not stop and not t.cancelled():
                t.result()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if health is not None:
            health.ready = False
            await health.stop()
        await engine.aclose()
        if store is not None:
            store.close()


async def _drain(dispatcher: Dispatcher, health: Any, grace_s: float) -> None:
    """SIGTERM: unready first, then stop taking events and let the answers in flight finish (or be apologised
    for when the front ends are cancelled)."""
    logger.info("SIGTERM: draining (answers in flight get %.0f s)", grace_s)
    if health is not None:
        health.ready = False
        health.detail = {**health.detail, "status": "draining"}
    left = await dispatcher.drain(grace_s)
    if left:
        logger.warning("%d answer(s) did not finish within %.0f s: closing them with an apology", left, grace_s)
    for task in list(dispatcher.in_flight):
        task.cancel()
    if dispatcher.in_flight:
        await asyncio.wait(list(dispatcher.in_flight), timeout=10)
