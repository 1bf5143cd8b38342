"""Chunk store in an embedded LanceDB table (`vector_store = "lancedb"`, under `data_dir/lancedb`).

Writes go through llama-index's LanceDB store (its schema: id, doc_id, vector, text and a `metadata` struct that
holds the chunk keys and `_node_content`, the whole node serialised as JSON). Searches read back only `id`,
`vector` and `metadata._node_content`: Lance reads a search's hits column by column, so the ten separate columns
of text and chunk keys cost more than the search itself at 100k chunks (bench/retrieval.py), while the one JSON
column holds the same text and keys. When the table fits in an in-process copy of its latest version
(`core.rag.lancedb_cache`), a dense search with the channel access filter scans the readable rows' vectors there
exactly (`core.rag.flat_search`); otherwise Lance searches its IVF index and the hits' columns come from the copy
when there is one. Index upkeep is in `core.rag.lancedb_indexes`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from llama_index.core.schema import NodeWithScore
from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQuery, VectorStoreQueryMode

from core.config import Settings
from core.rag.chunking import CHUNK_KEYS, chunk_node
from core.rag.flat_search import flat_search
from core.rag.lancedb_cache import HitCache, load_hit_cache
from core.rag.lancedb_indexes import MIN_PROBES, build_indexes, probes_for
from core.rag.store_base import ChunkStore, scored

if TYPE_CHECKING:
    import pyarrow as pa
    from llama_index.vector_stores.lancedb import LanceDBVectorStore

__all__ = ["LanceStore"]

logger = logging.getLogger(__name__)

_TABLE = "chunks"
# What a search reads back per hit, beside its score. Nested fields as plain names, not {"node":
# "metadata._node_content"}: the renaming form reads them as computed expressions (1.8x slower at 100k chunks).
_HIT_COLUMNS = ["id", "vector", "metadata._node_content"]


def _hit(id_: str, content: str, embedding: list[float], score: float) -> NodeWithScore:
    """A chunk from its id, its node JSON (`metadata._node_content`), its vector and its score."""
    node = json.loads(content)
    metadata = node["metadata"]
    chunk = chunk_node(node["text"], {key: metadata.get(key) for key in CHUNK_KEYS}, id_=id_, embedding=embedding)
    return NodeWithScore(node=chunk, score=score)


def _hits(rows: pa.Table, score: str, *, distance: bool) -> list[NodeWithScore]:
    """Chunks from search results with `_HIT_COLUMNS` and the score column `score`, in their order.

    `distance`: the score is a cosine distance, turned into the cosine similarity."""
    if rows.num_rows == 0:
        return []
    vectors = rows.column("vector").combine_chunks()
    embeddings = vectors.flatten().to_numpy().reshape(rows.num_rows, vectors.type.list_size).tolist()
    return [
        _hit(id_, content, embedding, 1.0 - float(value) if distance else float(value))
        for id_, content, embedding, value in zip(
            rows.column("id").to_pylist(), rows.column("metadata._node_content").to_pylist(), embeddings,
            rows.column(score).to_pylist(), strict=True,
        )
    ]  # fmt: skip


def _cached_hits(cache: HitCache, positions: np.ndarray, scores: np.ndarray) -> list[NodeWithScore]:
    """Chunks from the rows at `positions` of `cache`, with cosine similarities `scores`, in their order."""
    ids, contents, embeddings = cache.columns(positions)
    return [
        _hit(id_, content, embedding, score)
        for id_, content, embedding, score in zip(ids, contents, embeddings, scores.tolist(), strict=True)
    ]


@functools.cache
def _lance_vector_store_class() -> type[LanceDBVectorStore]:
    from llama_index.core.vector_stores.types import VectorStoreQueryResult
    from llama_index.vector_stores.lancedb import LanceDBVectorStore
    from llama_index.vector_stores.lancedb.base import _to_lance_filter

    # Its constructor warns that a table "doesn't exist yet" before the first ingest: expected here.
    logging.getLogger("llama_index.vector_stores.lancedb.base").addFilter(
        lambda record: "doesn't exist yet" not in record.getMessage()
    )

    class KaizenLanceDBVectorStore(LanceDBVectorStore):
        """LanceDB's llama-index store with the query path this project needs.

        The stock query re-creates the full-text index on every new instance, raises when a filter
        matches nothing, reads every column back and does not quote ids when deleting.
        This keeps its schema and `add`, and fixes those. Dense search goes through `LanceStore.dense`.
        """

        def _open(self) -> Any:
            # Another process (`kaizen ingest`) may have created the table since we connected.
            if self._table is None and self._table_exists():
                self._table = self._connection.open_table(self._table_name)
            return self._table

        def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
            if self._open() is not None:
                self._table.delete(f"{self.doc_id_key} = {_sql_string(ref_doc_id)}")

        def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
            """Full-text (BM25) search only; the access filter runs before ranking (prefilter)."""
            if query.mode != VectorStoreQueryMode.TEXT_SEARCH:
                raise ValueError("dense search goes through LanceStore.dense")
            table = self._open()
            if table is None:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            builder = table.search(query.query_str or "", query_type="fts", fts_columns=self.text_key)
            if query.filters is not None:
                builder = builder.where(_to_lance_filter(query.filters, None), prefilter=True)
            try:
                # `_score` named: Lance adds it anyway today, with a deprecation warning on stderr for every search.
                rows = builder.limit(query.similarity_top_k).select([*_HIT_COLUMNS, "_score"]).to_arrow()
            except ValueError as e:
                if "INVERTED index" not in str(e):
                    raise
                logger.warning("no full-text index yet; run ingest to build it")
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            hits = _hits(rows, "_score", distance=False)
            return VectorStoreQueryResult(
                nodes=[h.node for h in hits], similarities=[h.score for h in hits], ids=[h.node.node_id for h in hits]
            )

    return KaizenLanceDBVectorStore


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LanceStore(ChunkStore):
    kind = "lancedb"

    def __init__(self, settings: Settings, *, follow_writes: bool = False) -> None:
        import lancedb

        uri = settings.data_dir / "lancedb"
        uri.mkdir(parents=True, exist_ok=True)
        # A long-lived reader checks for a newer table version on each read (a cheap manifest look-up),
        # so an answer never quotes a chunk that `kaizen ingest` already replaced.
        interval = timedelta(0) if follow_writes else None
        connection = lancedb.connect(str(uri), read_consistency_interval=interval)
        self.vector_store = _lance_vector_store_class()(
            uri=str(uri), connection=connection, table_name=_TABLE, mode="create"
        )
        # The Lance dataset under the table (opened on the first dense search), its latest version, how many
        # IVF partitions a search of that version scans at least, and that version's hit columns.
        self._lance: Any = None
        self._snapshot: Any = None
        self._probes = MIN_PROBES
        self._cache: HitCache | None = None
        self._lock = threading.Lock()

    @property
    def _table(self) -> Any:
        return self.vector_store._open()

    def delete_files(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys or self._table is None:
            return
        for start in range(0, len(keys), 500):
            batch = ", ".join(_sql_string(k) for k in keys[start : start + 500])
            self._table.delete(f"doc_id IN ({batch})")

    def dense(
        self, embedding: list[float], *, k: int, filters: MetadataFilters | None
    ) -> list[NodeWithScore]:
        """The k chunks nearest `embedding` (cosine) that `filters` lets through, nearest first.

        With the table version's hit cache, a search whose filter is the channel access filter (or none) scans
        the readable rows exactly in the cache (`core.rag.flat_search`), unless too many rows pass it. Otherwise
        Lance searches, the filter inside the search (prefilter, on the bitmap indexes of access and source):
        over-fetching unfiltered and filtering here was measured slower at 100k chunks. The search goes straight
        to the Lance dataset, a synchronous call into Rust: LanceDB's table API hops six times through its
        background event loop per query, which cost more than the search itself at 100k chunks on a busy 2-core
        machine (bench/retrieval.py). Lance returns the hits' row addresses; their columns come from the version's hit
        cache, or from Lance when the table is too big for one.
        """
        from llama_index.vector_stores.lancedb.base import _to_lance_filter

        dataset, cache = self._dataset()
        if dataset is None:
            return []
        if cache is not None:
            found = flat_search(cache, np.asarray(embedding, dtype=np.float32), k=k, filters=filters)
            if found is not None:
                return _cached_hits(cache, *found)
        search = {
            "filter": None if filters is None else _to_lance_filter(filters, None),
            "prefilter": True,
            "limit": k,
            # At least self._probes partitions, more only while fewer than k rows pass the filter (a channel
            # that reads one small source): a fixed count would return fewer than k hits there.
            "nearest": {"column": "vector", "q": np.asarray(embedding, dtype=np.float32), "k": k, "metric": "cosine",
                        "minimum_nprobes": self._probes, "search_effort": 0.0},
        }  # fmt: skip
        if cache is not None:
            # Lance finds the hits (row addresses of this version); their columns come from the cache.
            found = dataset.to_table(
                columns=["_distance"], with_row_address=True, disable_scoring_autoprojection=True, **search
            )
            positions = cache.positions(found.column("_rowaddr").to_numpy())
            if positions is not None:
                similarity = 1.0 - found.column("_distance").to_numpy().astype(np.float64)
                return _cached_hits(cache, positions, similarity)
            logger.warning("hit cache of version %d misses a row; reading the hits from Lance", cache.version)
        rows = dataset.to_table(columns=[*_HIT_COLUMNS, "_distance"], **search)
        return _hits(rows, "_distance", distance=True)

    def _dataset(self) -> tuple[Any, HitCache | None]:
        """The table's Lance dataset at its latest version (None before the first write), and that version's hit
        cache (None when the table is too big for one). Looking up the latest version is a manifest listing
        (~15 us), so every search sees the last ingest, this process's or another's. Each version is its own
        dataset object, never checked out in place under a search in another thread. The first search of a new
        version loads its cache (blocking, ~1 s at 100k chunks)."""
        with self._lock:
            if self._lance is None:
                table = self._table
                if table is None:
                    return None, None
                self._lance = table.to_lance()
            latest = self._lance.latest_version
            if self._snapshot is None or self._snapshot.version != latest:
                self._cache = None
                self._snapshot = self._lance.checkout_version(latest)
                self._probes = probes_for(self._snapshot.count_rows())
                self._cache = load_hit_cache(self._snapshot)
            return self._snapshot, self._cache

    def lexical(self, text: str, *, k: int, filters: MetadataFilters | None) -> list[NodeWithScore]:
        query = VectorStoreQuery(
            query_str=text, similarity_top_k=k, filters=filters, mode=VectorStoreQueryMode.TEXT_SEARCH
        )
        result = self.vector_store.query(query)
        return scored(result.nodes, result.similarities)

    def count(self) -> int:
        return 0 if self._table is None else self._table.count_rows()

    def optimize(self) -> None:
        """Compact the table and bring its indexes up to date (`core.rag.lancedb_indexes.build_indexes`)."""
        table = self._table
        if table is not None:
            build_indexes(table)
