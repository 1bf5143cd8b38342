"""Exact dense search over the rows a channel may read, in the hit cache's vectors, skipping the rest.

The channel access filter (`core.rag.store_base.access_filters`: access == "public" OR source == S, for each
source S the channel may read) selects whole access groups, and the hit cache (`core.rag.lancedb_cache`) keeps
its vectors ordered by access group, so the readable rows are a few contiguous blocks of one float32 matrix. A
filtered search here is a matrix-vector product over those blocks (numpy views, no copies; see `_scan`) and one
argpartition over their scores: exact recall, and less work than exact search over all rows, since the rows the
channel cannot read are never touched. Partitioning by the filter key and scanning flat below a size cutoff is the
usual design for filtered vector search: Weaviate's `flatSearchCutoff`
(https://docs.weaviate.io/weaviate/concepts/filtering, "flat-search cutoff"), Qdrant's `full_scan_threshold`
(https://qdrant.tech/documentation/concepts/indexing/) and Milvus's partition keys
(https://milvus.io/docs/use-partition-key.md).

At 100k chunks and 384 dimensions on a 2-core machine Lance's IVF search with the filter took 0.9-1.25x exact
numpy search over all rows (4.7-6.4 ms, bench/retrieval.py, runs on different days). The scan here reads only the
readable rows, with the same BLAS product as exact search: a search with its hits built took 4.5 ms at 62.5k
readable rows against 5.8 ms for exact numpy over 100k, alternating in one run (2026-12-01). The IVF search reads
about 5 % of the rows plus a fixed cost, so the two break even near 80k readable rows: above MAX_ROWS the store's
IVF search is used instead, and a filter of any other shape (another key, operator or condition) also goes to
Lance.
Memory: one float32 score per readable row per query (250 KB at 62.5k rows), beside the cache itself.
"""

from __future__ import annotations

import logging

import numpy as np
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
) -> tuple[np.ndarray, np.ndarray] | None:
    """The k rows of `cache` nearest `query` (cosine) that `filters` lets through, nearest first: their positions
    in the cache (int64) and cosine similarities (float32); fewer when fewer pass.

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
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    scores = np.empty(total, dtype=np.float32)
    offsets = np.cumsum([0] + [stop - start for start, stop in runs[:-1]])
    _scan(cache, runs, offsets, query, scores)
    top = np.argpartition(scores, total - k)[total - k :] if k < total else np.arange(total)
    top = top[np.argsort(-scores[top], kind="stable")]
    # Index in the concatenated scores -> position in the cache: the run it falls in, then its start.
    run = np.searchsorted(offsets, top, side="right") - 1
    starts = np.asarray([start for start, _ in runs], dtype=np.int64)
    norm = float(np.linalg.norm(query))
    return starts[run] + (top - offsets[run]), scores[top] / norm if norm > 0 else scores[top]


def _scan(cache: HitCache, runs: list[tuple[int, int]], offsets: np.ndarray, query: np.ndarray,
          scores: np.ndarray) -> None:
    """Fill `scores` with the cosine (times |query|) of each row of `runs`, run after run (`offsets`: where each
    run's scores start).

    One BLAS matrix-vector product per run, the primitive exact search uses (`vectors @ q`): the scan is memory
    bound (62.5k x 384 float32 = 96 MB read per query), and BLAS reads it on both cores. A one-thread einsum
    shared with a helper thread in 4096-row pieces, tried first, took 8.1 ms at 62.5k readable rows where BLAS
    took 4.5 ms and exact search over all 100k rows 5.8 ms (bench/retrieval.py's 100k clustered store,
    2026-12-01, quiet machine, alternating after 0.1 s pauses)."""
    for (start, stop), at in zip(runs, offsets.tolist(), strict=True):
        block = scores[at : at + stop - start]
        np.matmul(cache.vectors[start:stop], query, out=block)
        block *= cache.inverse_norms[start:stop]
