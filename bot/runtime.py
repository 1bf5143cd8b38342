"""Wiring shared by every front end: settings -> model, documents, feedback store -> engine."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from core.config import Settings
from core.engine import Engine

__all__ = ["build_engine", "open_retriever_if_any", "open_store"]

logger = logging.getLogger(__name__)


def open_store(settings: Settings) -> Any:
    """The feedback store (SQLite under the data dir, or KAIZEN_DATABASE_URL)."""
    from feedback import FeedbackStore

    return FeedbackStore.open(settings)


def open_retriever_if_any(settings: Settings) -> Any:
    """A retriever when documents have been ingested; None otherwise (no embedding model is loaded then)."""
    from core.rag import SourceRegistry, open_retriever

    if not SourceRegistry.for_settings(settings).sources():
        return None
    return open_retriever(settings)


def build_engine(settings: Settings, *, store: Any = None, retriever: Any = None) -> Engine:
    """Load the configured model and return an engine around it. Heavy imports happen here, not at CLI start.
    Answers are recorded in `store` (if given) before they are returned."""
    from core.models import load_model
    from core.rag import format_context

    model = load_model(settings)
    _serve_promoted_adapter(settings, model)
    return Engine(settings, model, retriever=retriever, on_reply=store.on_reply if store is not None else None,
                  format_context=format_context)


def _serve_promoted_adapter(settings: Settings, model: Any) -> None:
    """Start on the adapter the nightly job promoted (unless the config pins one); a broken one is logged and the
    base model served instead."""
    from core.adapters import AdapterError, current_adapter

    if settings.model.adapter:
        return
    try:
        found = current_adapter(settings.data_dir)
        if found is not None:
            asyncio.run(model.set_adapter(found[0], str(found[1])))
            logger.info("serving promoted adapter %s", found[0])
    except (AdapterError, OSError, ValueError) as e:
        logger.error("not serving the promoted adapter: %s; using the base model", e)
