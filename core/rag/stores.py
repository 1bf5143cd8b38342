"""Chunk stores behind llama-index's vector-store interface: embedded LanceDB or Weaviate.

Both answer the same two searches, dense (cosine) and lexical (BM25), with the access filter applied
inside the store's query. The filter is an OR of equality filters, `access == "public" OR source == S`
for each source the channel may read: a form every store translates natively.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from core.config import Settings
from core.rag.chunking import CHUNK_KEYS, chunk_node
from core.rag.sources import RagError

if TYPE_CHECKING:
    from llama_index.vector_stores.lancedb import LanceDBVectorStore

__all__ = ["ANN_MIN_ROWS", "ChunkStore", "access_filters", "open_store"]

logger = logging.getLogger(__name__)

# Below this many chunks a flat scan is already fast (a few ms); above it LanceDB gets an IVF index:
# about sqrt(rows) k-means partitions of exact vectors, of which a query scans the nearest 5 % (at least
# _MIN_PROBES: 16 of 316 at 100k chunks gave recall@10 1.000 against exact on text-like vectors, 8 gave 0.994).
# IVF rather than HNSW because the access prefilter is cheap on it: HNSW with a filter mask searched 15x
# slower at 100k chunks, while IVF only reads the probed partitions' rows (bench/retrieval.py).
ANN_MIN_ROWS = 4096
_MIN_PROBES = 16
_PROBE_SHARE = 0.05
_TABLE = "chunks"
_FILTER_COLUMNS = ("metadata.access", "metadata.source")


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
        raise NotImplementedError

    def lexical(self, text: str, *, k: int, filters: MetadataFilters | None) -> list[NodeWithScore]:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def optimize(self) -> None:
        """Bring indexes up to date after a batch of writes."""

    def close(self) -> None:
        """Release connections."""


def open_store(settings: Settings, *, follow_writes: bool = False) -> ChunkStore:
    """The store `settings.vector_store` names. `follow_writes`: see other processes' ingests (servers)."""
    match settings.vector_store:
        case "lancedb":
            return LanceStore(settings, follow_writes=follow_writes)
        case "weaviate":
            return WeaviateStore(settings)
    raise RagError(f"unknown vector_store {settings.vector_store!r}; valid: lancedb, weaviate")


def _scored(nodes: list[BaseNode], similarities: list[float] | None) -> list[NodeWithScore]:
    scores = similarities or [0.0] * len(nodes)
    return [NodeWithScore(node=n, score=float(s)) for n, s in zip(nodes, scores, strict=True)]


# ---------------------------------------------------------------------------------------------- LanceDB


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
        matches nothing, reads the whole serialised node back and does not quote ids when deleting.
        This keeps its schema and `add`, and fixes those.
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
            table = self._open()
            if table is None:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            text_search = query.mode == VectorStoreQueryMode.TEXT_SEARCH
            if text_search:
                builder = table.search(query.query_str or "", query_type="fts", fts_columns=self.text_key)
                score = "_score"
            else:
                builder = (
                    table.search(query.query_embedding, vector_column_name=self.vector_column_name)
                    .distance_type("cosine")
                    .nprobes(self.nprobes)
                )
                score = "_distance"
            if query.filters is not None:
                # Prefilter: the channel's chunks are searched, not the top-k of everyone's filtered after.
                builder = builder.where(_to_lance_filter(query.filters, None), prefilter=True)
            # Only the schema's fields: skipping the serialised node (`_node_content`) halves the read.
            columns = {"id": "id", "text": self.text_key, "vector": self.vector_column_name, score: score}
            columns |= {key: f"metadata.{key}" for key in CHUNK_KEYS}
            try:
                rows = builder.limit(query.similarity_top_k).select(columns).to_list()
            except ValueError as e:
                if text_search and "INVERTED index" in str(e):
                    logger.warning("no full-text index yet; run ingest to build it")
                    rows = []
                else:
                    raise
            nodes = [
                chunk_node(r["text"], {k: r[k] for k in CHUNK_KEYS}, id_=r["id"], embedding=list(r["vector"]))
                for r in rows
            ]
            sims = [r[score] if text_search else 1.0 - r[score] for r in rows]
            return VectorStoreQueryResult(nodes=nodes, similarities=sims, ids=[r["id"] for r in rows])

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
        # The Lance dataset under the table (opened on the first dense search), its latest version, and how
        # many IVF partitions a search of that version scans at least.
        self._lance: Any = None
        self._snapshot: Any = None
        self._probes = _MIN_PROBES
        self._lock = threading.Lock()
        # Chunk fields read back by a dense search; not the serialised node (`_node_content`): it doubles the read.
        # Nested fields as plain names, not {"title": "metadata.title"}: the renaming form reads them as computed
        # expressions and was 1.8x slower at 100k chunks (paired, bench/retrieval.py's text-like vectors).
        self._columns = ["id", "text", "vector", "_distance", *(f"metadata.{key}" for key in CHUNK_KEYS)]

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

        The filter runs inside the search (prefilter, on the bitmap indexes of access and source): over-fetching
        unfiltered and filtering here was measured slower at 100k chunks. The search goes straight to the Lance
        dataset, a synchronous call into Rust: LanceDB's table API hops six times through its background event
        loop per query, which cost more than the search itself at 100k chunks on a busy 2-core machine
        (bench/retrieval.py).
        """
        from llama_index.vector_stores.lancedb.base import _to_lance_filter

        dataset = self._dataset()
        if dataset is None:
            return []
        query = np.asarray(embedding, dtype=np.float32)
        rows = dataset.to_table(
            columns=self._columns,
            filter=None if filters is None else _to_lance_filter(filters, None),
            prefilter=True,
            limit=k,
            # At least self._probes partitions, more only while fewer than k rows pass the filter (a channel
            # that reads one small source): a fixed count would return fewer than k hits there.
            nearest={"column": "vector", "q": query, "k": k, "metric": "cosine",
                     "minimum_nprobes": self._probes, "search_effort": 0.0},
        ).to_pydict()
        return [
            NodeWithScore(
                node=chunk_node(text, {key: rows[f"metadata.{key}"][i] for key in CHUNK_KEYS}, id_=id_,
                                embedding=vector),
                score=1.0 - float(distance),
            )
            for i, (id_, text, vector, distance) in enumerate(
                zip(rows["id"], rows["text"], rows["vector"], rows["_distance"], strict=True)
            )
        ]

    def _dataset(self) -> Any:
        """The table's Lance dataset at its latest version (None before the first write). Looking up the latest
        version is a manifest listing (~15 us), so every search sees the last ingest, this process's or another's.
        Each version is its own dataset object, never checked out in place under a search in another thread."""
        with self._lock:
            if self._lance is None:
                table = self._table
                if table is None:
                    return None
                self._lance = table.to_lance()
            latest = self._lance.latest_version
            if self._snapshot is None or self._snapshot.version != latest:
                self._snapshot = self._lance.checkout_version(latest)
                partitions = _partitions_for(self._snapshot.count_rows())
                self._probes = max(_MIN_PROBES, math.ceil(_PROBE_SHARE * partitions))
            return self._snapshot

    def lexical(self, text: str, *, k: int, filters: MetadataFilters | None) -> list[NodeWithScore]:
        query = VectorStoreQuery(
            query_str=text, similarity_top_k=k, filters=filters, mode=VectorStoreQueryMode.TEXT_SEARCH
        )
        result = self.vector_store.query(query)
        return _scored(result.nodes, result.similarities)

    def count(self) -> int:
        return 0 if self._table is None else self._table.count_rows()

    def optimize(self) -> None:
        from lancedb.index import FTS, Bitmap, IvfFlat

        table = self._table
        if table is None:
            return
        indexes = {tuple(index.columns): index.name for index in table.list_indices()}
        if ("text",) in indexes or ("vector",) in indexes:
            # Compacts small files and folds rows added since into the text and vector indexes. The
            # bitmap indexes on nested columns break Lance's compaction when a table was emptied and
            # refilled, so they are dropped first and rebuilt below (milliseconds at 100k rows).
            for column in _FILTER_COLUMNS:
                if (column,) in indexes:
                    table.drop_index(indexes.pop((column,)))
            table.optimize()
        # BM25 over chunk text; stemmed English, stop words dropped.
        if ("text",) not in indexes:
            table.create_index("text", config=FTS())
        # Bitmap indexes make the access prefilter cheap at 100k chunks.
        for column in _FILTER_COLUMNS:
            table.create_index(column, config=Bitmap(), replace=True)
        rows = table.count_rows()
        partitions = _partitions_for(rows)
        current = indexes.get(("vector",))
        # (Re)build when big enough, again each time the table outgrew its partitions fourfold, and when
        # `table.optimize()` re-partitioned it: its compaction turned a 316-partition index at 100k chunks into 7,
        # so a search compared all 100k vectors instead of ~5k (1.7x slower on bench/retrieval.py's vectors).
        if rows >= ANN_MIN_ROWS and (
            current is None
            or _partitions_of(current) * 2 <= partitions
            or _partitions_built(table, current) != _partitions_of(current)
        ):
            if current is not None:
                table.drop_index(current)
            table.create_index(
                "vector",
                config=IvfFlat(distance_type="cosine", num_partitions=partitions),
                name=f"vector_ivf{partitions}",
            )


def _partitions_for(rows: int) -> int:
    """IVF partitions for a table of `rows` chunks: about sqrt(rows), 16 to 1024."""
    return max(16, min(1024, round(math.sqrt(rows))))


def _partitions_built(table: Any, index_name: str) -> int:
    """How many IVF partitions the index `index_name` has on disk (0 when Lance does not say)."""
    try:
        return int(table.to_lance().stats.index_stats(index_name)["indices"][0]["num_partitions"])
    except (LookupError, TypeError, ValueError):
        return 0


def _partitions_of(index_name: str) -> int:
    digits = index_name.removeprefix("vector_ivf")
    return int(digits) if digits.isdigit() else 0


# ---------------------------------------------------------------------------------------------- Weaviate


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
        return _scored(result.nodes, result.similarities)

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
