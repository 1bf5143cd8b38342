"""Logs, metrics and the health endpoint of `kaizen serve`.

Logs can be JSON lines; every handler redacts the configured secrets, so a token never reaches a log line.
Metrics are Prometheus' text format from a private registry; /healthz answers 503 until the model and stores are
ready.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core.config import Settings
from core.types import Reply

__all__ = ["HealthServer", "Metrics", "secret_values", "setup_logging"]

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


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
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
        self.set_adapter(reply.adapter)

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
