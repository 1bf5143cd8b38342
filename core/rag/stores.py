"""Chunk stores behind llama-index's vector-store interface: embedded LanceDB or Weaviate, picked by name.

One module per backend (`core.rag.store_lancedb`, `core.rag.store_weaviate`), imported only when chosen.
Both answer the same two searches, dense (cosine) and lexical (BM25), with the access filter
(`access_filters`) applied inside the store's query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.config import Settings
from core.rag.lancedb_indexes import ANN_MIN_ROWS
from core.rag.sources import RagError
from core.rag.store_base import ChunkStore, access_filters

if TYPE_CHECKING:
    from core.rag.store_lancedb import LanceStore
    from core.rag.store_weaviate import WeaviateStore

__all__ = ["ANN_MIN_ROWS", "ChunkStore", "LanceStore", "WeaviateStore", "access_filters", "open_store"]


def open_store(settings: Settings, *, follow_writes: bool = False) -> ChunkStore:
    """The store `settings.vector_store` names. `follow_writes`: see other processes' ingests (servers).

    Raises RagError for an unknown name or a store that cannot be reached.
    """
    match settings.vector_store:
        case "lancedb":
            from core.rag.store_lancedb import LanceStore

            return LanceStore(settings, follow_writes=follow_writes)
        case "weaviate":
            from core.rag.store_weaviate import WeaviateStore

            return WeaviateStore(settings)
    raise RagError(f"unknown vector_store {settings.vector_store!r}; valid: lancedb, weaviate")


def __getattr__(name: str) -> object:
    # The backend classes stay importable from here without importing every backend with this module.
    if name == "LanceStore":
        from core.rag.store_lancedb import LanceStore

        return LanceStore
    if name == "WeaviateStore":
        from core.rag.store_weaviate import WeaviateStore

        return WeaviateStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
