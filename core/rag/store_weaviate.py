"""Chunk store on a Weaviate server (`vector_store = "weaviate"`), through llama-index's Weaviate store.

Weaviate runs every search as a hybrid query: alpha 1 is pure vector search, alpha 0 pure BM25 on the chunk text.
The access filter (`core.rag.store_base.access_filters`) runs inside Weaviate's query.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from llama_index.core.schema import NodeWithScore
from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQuery

from core.config import Settings
from core.rag.sources import RagError
from core.rag.store_base import ChunkStore, scored

__all__ = ["WeaviateStore"]


class WeaviateStore(ChunkStore):
    kind = "weaviate"

    def __init__(self, settings: Settings) -> None:
        import weaviate
        from llama_index.vector_stores.weaviate import WeaviateVectorStore

        if not settings.weaviate_url:
            raise RagError("vector_store = 'weaviate' needs weaviate_url (KAIZEN_WEAVIATE_URL)")
        url = urlparse(settings.weaviate_url)
        secure = url.scheme == "https"
        key = settings.weaviate_api_key.get_secret_value()
        try:
            self._client = weaviate.connect_to_custom(
                http_host=url.hostname or "localhost",
                http_port=url.port or (443 if secure else 80),
                http_secure=secure,
                grpc_host=url.hostname or "localhost",
                grpc_port=settings.rag.weaviate_grpc_port,
                grpc_secure=secure,
                auth_credentials=weaviate.classes.init.Auth.api_key(key) if key else None,
            )
        except weaviate.exceptions.WeaviateBaseError as e:
            raise RagError(f"cannot reach Weaviate at {settings.weaviate_url}: {e}") from e
        self._collection = settings.rag.weaviate_collection
        try:
            _ensure_collection(self._client, self._collection)
            self.vector_store = WeaviateVectorStore(weaviate_client=self._client, index_name=self._collection)
        except Exception:
            self._client.close()
            raise

    def _query(self, query: VectorStoreQuery, alpha: float) -> list[NodeWithScore]:
        # Weaviate always runs a hybrid query: alpha 1 is pure vector search, alpha 0 pure BM25 on the text.
        result = self.vector_store.query(query, alpha=alpha, query_properties=["text"])
        return scored(result.nodes, result.similarities)

    def dense(
        self, embedding: list[float], *, k: int, filters: MetadataFilters | None
    ) -> list[NodeWithScore]:
        return self._query(
            VectorStoreQuery(query_embedding=embedding, similarity_top_k=k, filters=filters), 1.0
        )

    def lexical(self, text: str, *, k: int, filters: MetadataFilters | None) -> list[NodeWithScore]:
        return self._query(VectorStoreQuery(query_str=text, similarity_top_k=k, filters=filters), 0.0)

    def count(self) -> int:
        collection = self._client.collections.get(self._collection)
        return collection.aggregate.over_all(total_count=True).total_count or 0

    def close(self) -> None:
        self._client.close()


def _ensure_collection(client: Any, name: str) -> None:
    """Create the collection with exact-match (field) tokenization on the properties filters compare.

    Auto-schema would make them word-tokenized text, where `source == "hr"` also matches "hr-archive"
    and deleting one file's chunks could hit another's.
    """
    from weaviate.classes.config import Configure, DataType, Property, Tokenization

    if client.collections.exists(name):
        return
    exact = {"ref_doc_id", "doc_id", "document_id", "file", "path", "source", "channels", "access"}
    words = {"text", "title", "section"}
    properties = [
        Property(name=p, data_type=DataType.TEXT, tokenization=Tokenization.FIELD) for p in sorted(exact)
    ]
    properties += [Property(name=p, data_type=DataType.TEXT) for p in sorted(words)]
    properties += [
        Property(name="page", data_type=DataType.INT),
        # The serialised node is for rebuilding it, not for searching.
        Property(
            name="_node_content", data_type=DataType.TEXT, index_searchable=False, index_filterable=False
        ),
        Property(name="_node_type", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
    ]
    client.collections.create(
        name,
        description="Kaizen document chunks",
        vectorizer_config=Configure.Vectorizer.none(),
        properties=properties,
    )
