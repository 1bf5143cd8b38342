"""What every chunk store offers ingest and retrieval, and the channel access filter they all translate.

The filter is an OR of equality filters, `access == "public" OR source == S` for each source the channel may
read: a form every store translates natively and applies inside its own query, so a search never returns a
chunk the channel may not see.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

__all__ = ["ChunkStore", "access_filters", "scored"]


def access_filters(sources: Iterable[str]) -> MetadataFilters:
    """Public chunks, or chunks of one of `sources` (the restricted sources a channel may read)."""
    filters = [MetadataFilter(key="access", value="public", operator=FilterOperator.EQ)]
    filters += [
        MetadataFilter(key="source", value=s, operator=FilterOperator.EQ) for s in sorted(set(sources))
    ]
    return MetadataFilters(filters=filters, condition=FilterCondition.OR)


class ChunkStore:
    """What ingest and retrieval need from a store; `vector_store` is the llama-index store underneath."""

    kind: str
    vector_store: BasePydanticVectorStore

    def add(self, nodes: Sequence[BaseNode]) -> None:
        if nodes:
            self.vector_store.add(list(nodes))

    def delete_files(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.vector_store.delete(key)

    def dense(
        self, embedding: list[float], *, k: int, filters: MetadataFilters | None
    ) -> list[NodeWithScore]:
        """The k chunks nearest `embedding` (cosine) that `filters` lets through, nearest first; score = cosine."""
        raise NotImplementedError

    def lexical(self, text: str, *, k: int, filters: MetadataFilters | None) -> list[NodeWithScore]:
        """The k chunks best matching `text` by BM25 that `filters` lets through, best first; score = BM25."""
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def optimize(self) -> None:
        """Bring indexes up to date after a batch of writes."""

    def close(self) -> None:
        """Release connections."""


def scored(nodes: list[BaseNode], similarities: list[float] | None) -> list[NodeWithScore]:
    """`nodes` paired with `similarities` (0.0 each when the store gave none)."""
    scores = similarities or [0.0] * len(nodes)
    return [NodeWithScore(node=n, score=float(s)) for n, s in zip(nodes, scores, strict=True)]
