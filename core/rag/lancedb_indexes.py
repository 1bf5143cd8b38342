"""The embedded LanceDB table's upkeep after writes: compaction, and its full-text, bitmap and vector indexes.

Below ANN_MIN_ROWS chunks a flat scan is already fast (a few ms); above it the table gets an IVF index: about
sqrt(rows) k-means partitions of exact vectors, of which a query scans the nearest 5 % (at least MIN_PROBES:
16 of 316 at 100k chunks gave recall@10 1.000 against exact on text-like vectors, 8 gave 0.994). IVF rather
than HNSW because the access prefilter is cheap on it: HNSW with a filter mask searched 15x slower at 100k
chunks, while IVF only reads the probed partitions' rows (bench/retrieval.py).
"""

from __future__ import annotations

import logging
import math
from typing import Any

__all__ = [
    "ANN_MIN_ROWS",
    "MIN_PROBES",
    "build_indexes",
    "partitions_built",
    "partitions_for",
    "partitions_of",
    "probes_for",
]

logger = logging.getLogger(__name__)

ANN_MIN_ROWS = 4096
MIN_PROBES = 16
_PROBE_SHARE = 0.05
_FILTER_COLUMNS = ("metadata.access", "metadata.source")
_INDEX_PREFIX = "vector_ivf"


def build_indexes(table: Any) -> None:
    """Compact `table` (a lancedb Table) and bring its indexes up to date with its rows. Blocking; seconds.

    Compaction runs after every batch of writes, the first included: an ingest writes a file per batch, and a
    search pays per file (at 100k chunks in 20 files a filtered search with its chunks read back took ~2 ms
    more than in one, bench/retrieval.py). Then: BM25 over chunk text, bitmap indexes on the access filter's
    columns, and the IVF vector index, (re)built when the table is big enough, again each time it outgrew its
    partitions fourfold, and when compaction re-partitioned it: Lance's compaction turned a 316-partition index
    at 100k chunks into 7, so a search compared all 100k vectors instead of ~5k.
    """
    from lancedb.index import FTS, Bitmap, IvfFlat

    indexes = {tuple(index.columns): index.name for index in table.list_indices()}
    # The bitmap indexes on nested columns break Lance's compaction when a table was emptied and refilled, so
    # they are dropped first and rebuilt below (milliseconds at 100k rows).
    for column in _FILTER_COLUMNS:
        if (column,) in indexes:
            table.drop_index(indexes.pop((column,)))
    # Compacts small files and folds rows added since into the text and vector indexes.
    table.optimize()
    # BM25 over chunk text; stemmed English, stop words dropped.
    if ("text",) not in indexes:
        table.create_index("text", config=FTS())
    for column in _FILTER_COLUMNS:
        table.create_index(column, config=Bitmap(), replace=True)
    rows = table.count_rows()
    partitions = partitions_for(rows)
    current = indexes.get(("vector",))
    if rows >= ANN_MIN_ROWS and (
        current is None
        or partitions_of(current) * 2 <= partitions
        or partitions_built(table, current) != partitions_of(current)
    ):
        if current is not None:
            table.drop_index(current)
        logger.info("building the vector index: %d partitions over %d chunks", partitions, rows)
        table.create_index(
            "vector",
            config=IvfFlat(distance_type="cosine", num_partitions=partitions),
            name=f"{_INDEX_PREFIX}{partitions}",
        )


def partitions_for(rows: int) -> int:
    """IVF partitions for a table of `rows` chunks: about sqrt(rows), 16 to 1024."""
    return max(16, min(1024, round(math.sqrt(rows))))


def probes_for(rows: int) -> int:
    """How many IVF partitions a search of a table of `rows` chunks scans at least."""
    return max(MIN_PROBES, math.ceil(_PROBE_SHARE * partitions_for(rows)))


def partitions_built(table: Any, index_name: str) -> int:
    """How many IVF partitions the index `index_name` has on disk (0 when Lance does not say)."""
    try:
        return int(table.to_lance().stats.index_stats(index_name)["indices"][0]["num_partitions"])
    except (LookupError, TypeError, ValueError):
        return 0


def partitions_of(index_name: str) -> int:
    """The partition count an index was built with, from its name (`vector_ivf316` -> 316; 0 if not ours)."""
    digits = index_name.removeprefix(_INDEX_PREFIX)
    return int(digits) if digits.isdigit() else 0
