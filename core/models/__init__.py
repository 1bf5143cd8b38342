"""Chat models: one interface, two backends (in-process transformers, OpenAI-compatible HTTP).

Modules: base (protocol, result, errors), weights (GGUF conversion, weight resolution, device/dtype),
transformers_backend (the in-process model and its worker), static_batch and scheduler (its two batchers),
sampling (per-row logits processing), constrained (agent decoding), http (OpenAI-compatible servers).
`load_model(settings)` picks the backend with a `match` and imports the heavy parts lazily.
"""

from __future__ import annotations

from core.config import Settings
from core.decoding import DecodingError

from .base import BackendError, ChatModel, Generation, ModelNotFoundError, OnText
from .http import OpenAIChatModel
from .transformers_backend import TransformersChatModel
from .weights import DEFAULT_GGUF, DEFAULT_NAME, convert_gguf, default_model_dir, resolve_source

__all__ = [
    "DEFAULT_GGUF",
    "DEFAULT_NAME",
    "BackendError",
    "ChatModel",
    "DecodingError",
    "Generation",
    "ModelNotFoundError",
    "OnText",
    "OpenAIChatModel",
    "TransformersChatModel",
    "convert_gguf",
    "default_model_dir",
    "load_model",
    "resolve_source",
]

_resolve_source = resolve_source  # old private name, kept so code written against it keeps working


def load_model(settings: Settings) -> ChatModel:
    """The configured backend, loaded (raises ModelNotFoundError with what to install or set)."""
    m = settings.model
    match m.backend:
        case "transformers":
            return TransformersChatModel.from_settings(m, data_dir=settings.data_dir)
        case "openai":
            return OpenAIChatModel(m)
    raise ValueError(f"unknown model backend {m.backend!r}")  # unreachable: validated by settings
