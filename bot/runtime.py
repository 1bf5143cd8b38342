"""Wiring shared by every front end: settings -> model -> engine (with retriever and feedback recorder)."""

from __future__ import annotations

import logging

from core.config import Settings
from core.engine import Engine

__all__ = ["build_engine"]

logger = logging.getLogger(__name__)


def build_engine(settings: Settings) -> Engine:
    """Load the configured model and return an engine around it. Heavy imports happen here, not at CLI start."""
    from core.models import load_model

    model = load_model(settings)
    return Engine(settings, model)
