"""Wiring shared by every front end: settings -> model, documents, feedback store -> engine."""

from __future__ import annotations

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
    return Engine(settings, model, retriever=retriever, on_reply=store.on_reply if store is not None else None,
                  format_context=format_context)
