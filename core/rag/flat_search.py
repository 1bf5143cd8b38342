"""Exact dense search over the rows a channel may read, in the hit cache's vectors, skipping the rest.

The channel access filter (`core.rag.store_base.access_filters`: access == "public" OR source == S, for each
source S the channel may read) selects whole access groups, and the hit cache (`core.rag.lancedb_cache`) keeps
its vectors ordered by access group, so the readable rows are a few contiguous blocks of one float32 matrix. A
filtered search here is one matrix-vector product per block (numpy views, no copies) and one argpartition over
the blocks' scores: exact recall, and less work than exact search over all rows, since the rows the channel
cannot read are never touched. Partitioning by the filter key and scanning flat below a size cutoff is the
usual design for filtered vector search: Weaviate's `flatSearchCutoff`
(https://docs.weaviate.io/weaviate/concepts/filtering, "flat-search cutoff"), Qdrant's `full_scan_threshold`
(https://qdrant.tech/documentation/concepts/indexing/) and Milvus's partition keys
(https://milvus.io/docs/use-partition-key.md).

At 100k chunks and 384 dimensions on a busy 2-core machine Lance's IVF search with the filter took 1.17-1.25x
exact numpy search over all rows (4.7-6.4 ms, bench/retrieval.py), while this scan costs about the readable
rows' share of it: ~0.065 ms of CPU per 1000 rows (4.3 ms at 62.5k readable rows, 6.2 ms at 100k, against
7.3 and 6.5 ms for exact numpy over 100k in the same run). The IVF search reads about 5 % of the rows plus a
fixed cost, so they break even near 80-100k readable rows: above MAX_ROWS the store's IVF search is used
instead, and a filter of any other shape (another key, operator or condition) also goes to Lance.
Memory: one float32 score per readable row per query (250 KB at 62.5k rows), beside the cache itself.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from core.rag.lancedb_cache import HitCache

__all__ = ["MAX_ROWS", "flat_search", "visible_groups"]

logger = logging.getLogger(__name__)

# Readable rows above which a search goes to the IVF index instead (bench/retrieval.py prints both paths).
MAX_ROWS = 80_000
_KEYS = ("access", "source")


def visible_groups(cache: HitCache, filters: MetadataFilters | None) -> set[int] | None:
    """Numbers of the cache's groups that `filters` lets through (all of them for no filter), or None when the
    filter is not an OR of string equalities on `access` and `source` (a single one with any condition)."""
    if filters is None:
        return set(range(len(cache.groups)))
    items = filters.filters
    if not items or (len(items) > 1 and filters.condition != FilterCondition.OR):
        return None
    wanted: dict[str, set[str]] = {key: set() for key in _KEYS}
    for item in items:
        if not (
            isinstance(item, MetadataFilter) and item.operator == FilterOperator.EQ and item.key in _KEYS
            and isinstance(item.value, str)
        ):  # fmt: skip
            return None
        wanted[item.key].add(item.value)
    return {
        g for g, (access, source) in enumerate(cache.groups)
        if access in wanted["access"] or source in wanted["source"]
    }  # fmt: skip


def flat_search(
    cache: HitCache, query: np.ndarray, *, k: int, filters: MetadataFilters | None, max_rows: int | None = None
) -> pa.Table | None:
    """The k rows of `cache` nearest `query` (cosine) that `filters` lets through, nearest first, as a table of
    `id`, `vector`, `metadata._node_content` and `_score` (the cosine similarity); fewer when fewer pass.

    None when the search belongs to the IVF index: the filter's shape is not one `visible_groups` evaluates, or
    more than `max_rows` rows (default MAX_ROWS) pass it. `query`: (dim,) floats. Raises ValueError when its
    length is not the cache's dimension."""
    query = np.asarray(query, dtype=np.float32)
    if query.shape != (cache.dim,):
        raise ValueError(f"query has shape {query.shape}, the store's vectors have {cache.dim} dimensions")
    visible = visible_groups(cache, filters)
    if visible is None:
        return None
    runs = cache.runs(visible)
    total = sum(stop - start for start, stop in runs)
    if total > (MAX_ROWS if max_rows is None else max_rows):
        return None
    if total == 0 or k <= 0:
        return _table(cache, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))
    # One matrix-vector product per run, into one score buffer, scaled by the rows' inverse norms to the cosine
    # (the query's norm does not change the order: it divides the k winners' scores only). einsum, not `@`:
    # OpenBLAS's gemv splits over threads, and on a busy 2-core machine it waited for the second (5-10 ms at
    # 62.5k x 384 against einsum's steady ~3 ms on one thread).
    scores = np.empty(total, dtype=np.float32)
    offsets = np.empty(len(runs), dtype=np.int64)
    offset = 0
    for n, (start, stop) in enumerate(runs):
        block = scores[offset : offset + stop - start]
        np.einsum("ij,j->i", cache.vectors[start:stop], query, out=block)
        block *= cache.inverse_norms[start:stop]
        offsets[n] = offset
        offset += stop - start
    top = np.argpartition(-scores, k - 1)[:k] if k < total else np.arange(total)
    top = top[np.argsort(-scores[top], kind="stable")]
    # Index in the concatenated scores -> position in the cache: the run it falls in, then its start.
    run = np.searchsorted(offsets, top, side="right") - 1
    positions = np.asarray([runs[r][0] for r in run], dtype=np.int64) + (top - offsets[run])
    norm = float(np.linalg.norm(query))
    return _table(cache, positions, scores[top] / norm if norm > 0 else scores[top])


def _table(cache: HitCache, positions: np.ndarray, scores: np.ndarray) -> pa.Table:
    rows = cache.take(positions)
    return rows.append_column("_score", pa.array(np.asarray(scores, dtype=np.float32)))
