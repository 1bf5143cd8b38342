"""Logs, metrics and the health endpoint of `kaizen serve`.

Logs can be JSON lines; every handler redacts the configured secrets, so a token never reaches a log line.
Metrics are Prometheus' text format from a private registry; /healthz answers 503 until the model and stores are
ready. `watch_canary` counts the live votes per adapter every `[canary] check_s`, publishes them as gauges and
applies the canary rule's decision (promote / roll back) through the registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core.canary import Tally, wilson_interval
from core.config import Settings
from core.types import Reply

__all__ = ["HealthServer", "Metrics", "secret_values", "setup_logging", "watch_canary"]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


def secret_values(settings: Settings) -> list[str]:
    """Every secret in the settings tree (tokens, keys, passwords in URLs)."""
    from urllib.parse import urlparse

    values = [settings.slack_bot_token, settings.slack_app_token, settings.slack_signing_secret,
              settings.discord_token, settings.weaviate_api_key, settings.model.api_key]
    out = [v.get_secret_value() for v in values if v.get_secret_value()]
    if settings.database_url and (password := urlparse(settings.database_url).password):
        out.append(password)
    return out


class _Redact(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            for s in self.secrets:
                text = text.replace(s, "***")
                if record.exc_text:
                    record.exc_text = record.exc_text.replace(s, "***")
            record.msg, record.args = text, ()
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info or record.exc_text:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to `sys.stderr` as it is when the record is emitted, like `logging.lastResort`: a
    handler bound to the stream of its set-up time writes into a closed file once that stream is swapped and
    closed (a daemoniser, a test's captured stderr) and prints "--- Logging error ---" instead of the record."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr


def setup_logging(settings: Settings) -> None:
    """One handler on the root logger (earlier ones removed): text or JSON lines to the current stderr, with
    the configured secrets replaced by ***."""
    handler = _StderrHandler()
    handler.setFormatter(_JsonFormatter() if settings.log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redact(secret_values(settings)))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(settings.log_level)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("kaizen_requests", "Answers given", ["platform", "mode"], registry=r)
        self.latency = Histogram("kaizen_request_latency_seconds", "Time to the whole answer", ["platform"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("kaizen_time_to_first_token_seconds", "Time to the first streamed token",
                              ["platform"], buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("kaizen_tokens", "Tokens processed", ["kind"], registry=r)
        self.votes = Counter("kaizen_votes", "Votes received", ["value"], registry=r)
        self.errors = Counter("kaizen_errors", "Failures", ["kind"], registry=r)
        self.adapter = Gauge("kaizen_adapter_info", "The LoRA adapter being served (1 = current)", ["adapter"],
                             registry=r)
        self._adapter_name: str | None = None
        live = ["adapter", "role"]
        self.live_votes = Gauge("kaizen_adapter_votes", "Live votes on the adapter's answers (since the canary "
                                "started, or since its promotion)", [*live, "value"], registry=r)
        self.live_rate = Gauge("kaizen_adapter_like_rate", "Live like rate of the adapter's answers", live,
                               registry=r)
        self.live_low = Gauge("kaizen_adapter_like_rate_lower", "Lower end of the 95% Wilson interval", live,
                              registry=r)
        self.live_high = Gauge("kaizen_adapter_like_rate_upper", "Upper end of the 95% Wilson interval", live,
                               registry=r)
        self.canary_share = Gauge("kaizen_canary_share", "Share of conversations the canary answers (0 = none)",
                                  ["adapter"], registry=r)
        self.canary_p_better = Gauge("kaizen_canary_p_better", "P(canary's like rate > serving's), Beta posteriors",
                                     ["adapter"], registry=r)
        self._live_labels: set[tuple[str, str]] = set()
        self.router: Any = None  # the engine's CanaryRouter, so a canary's answers are told apart

    def observe_reply(self, reply: Reply) -> None:
        platform = reply.turn.platform
        self.requests.labels(platform, reply.mode).inc()
        if not reply.called_model:
            return
        self.latency.labels(platform).observe(reply.latency_ms / 1000)
        if reply.first_token_ms is not None:
            self.ttft.labels(platform).observe(reply.first_token_ms / 1000)
        self.tokens.labels("prompt").inc(reply.prompt_tokens)
        self.tokens.labels("completion").inc(reply.completion_tokens)
        if reply.adapter != (self.router.canary if self.router is not None else ""):
            self.set_adapter(reply.adapter)  # a canary's answers do not make it the current adapter

    def vote(self, value: int) -> None:
        self.votes.labels("up" if value > 0 else "down").inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def set_adapter(self, name: str) -> None:
        name = name or "base"
        if name != self._adapter_name:
            if self._adapter_name is not None:
                self.adapter.labels(self._adapter_name).set(0)
            self.adapter.labels(name).set(1)
            self._adapter_name = name

    def set_live(self, tallies: dict[tuple[str, str], Tally], *, canary: str = "", share: float = 0.0,
                 p_better: float | None = None) -> None:
        """Publish live votes: `tallies` maps (adapter, role) -> Tally, role "serving" or "canary" ("" = base).
        Adapters no longer listed are removed from the gauges (a finished canary leaves no stale series)."""
        for adapter, role in self._live_labels - set(tallies):
            for g in (self.live_rate, self.live_low, self.live_high):
                g.remove(adapter, role)
            for value in ("up", "down"):
                self.live_votes.remove(adapter, role, value)
            if role == "canary":
                self.canary_share.remove(adapter)
                self.canary_p_better.remove(adapter)
        for (adapter, role), t in tallies.items():
            self.live_votes.labels(adapter, role, "up").set(t.likes)
            self.live_votes.labels(adapter, role, "down").set(t.dislikes)
            interval = wilson_interval(t.likes, t.votes)
            nan = float("nan")
            self.live_rate.labels(adapter, role).set(t.rate if t.rate is not None else nan)
            self.live_low.labels(adapter, role).set(interval[0] if interval else nan)
            self.live_high.labels(adapter, role).set(interval[1] if interval else nan)
        if canary:
            self.canary_share.labels(canary).set(share)
            self.canary_p_better.labels(canary).set(p_better if p_better is not None else float("nan"))
        self._live_labels = set(tallies)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """/healthz (503 until ready) and /metrics on a small aiohttp server."""

    def __init__(self, host: str, port: int, metrics: Metrics) -> None:
        self.host, self.port, self.metrics = host, port, metrics
        self.ready = False
        self.detail: dict[str, Any] = {"status": "starting"}
        self._runner = None

    async def start(self) -> None:
        from aiohttp import web

        async def healthz(_request: web.Request) -> web.Response:
            return web.json_response(self.detail, status=200 if self.ready else 503)

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        logger.info("health and metrics on http://%s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _live_once(settings: Settings, store: Any, metrics: Metrics) -> str | None:
    """One check: count live votes, publish them, apply the canary rule. Returns the action taken, if any."""
    from core.adapters import current_adapter
    from training.registry import Registry, canary_rule, tally_votes

    registry = Registry(settings.data_dir)
    vllm = ({"vllm_url": settings.model.base_url, "vllm_api_key": settings.model.api_key.get_secret_value()}
            if settings.model.backend == "openai" else {})
    status = registry.check_canary(store.engine, canary_rule(settings.canary), **vllm) if settings.canary.enabled \
        else registry.canary_status(store.engine, canary_rule(settings.canary))
    if status is not None:
        d = status.decision
        c = status.canary
        metrics.set_live({(c.name, "canary"): d.canary, (c.serving or "base", "serving"): d.serving},
                         canary=c.name, share=0.0 if d.action != "continue" else c.share, p_better=d.p_better)
        return None if d.action == "continue" else d.action
    found = current_adapter(settings.data_dir)
    name = found[0] if found else ""
    since = None
    if found is not None:
        raw = json.loads((settings.data_dir / "adapters" / "current.json").read_text(encoding="utf-8"))
        since = datetime.fromisoformat(raw["promoted_at"]) if raw.get("promoted_at") else None
    tally = tally_votes(store.engine, [name], since=since)[name]
    metrics.set_live({(name or "base", "serving"): tally})
    return None


async def watch_canary(settings: Settings, store: Any, metrics: Metrics) -> None:
    """Every `[canary] check_s`: live votes per adapter to /metrics, and (when `[canary] enabled`) the rule's
    decision applied: the adapter watcher then switches every replica. A failing check is logged, never fatal."""
    interval = settings.canary.check_s
    while True:
        try:
            action = await asyncio.to_thread(_live_once, settings, store, metrics)
            if action:
                logger.warning("canary decided: %s (see adapters/history.jsonl)", action)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - serving must survive a failing check
            logger.error("canary check failed: %s", e)
        await asyncio.sleep(interval)
