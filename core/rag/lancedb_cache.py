"""An in-process copy of one Lance table version's hit columns, so a dense search asks Lance only for row addresses.

A search that reads its hits' columns back adds Lance's take stage (I/O scheduling and decoding on its own
threads) to each query: ~1 ms at 100k chunks on a busy 2-core machine, where the whole search takes 5-7 ms
(bench/retrieval.py). `HitCache` holds `id`, `vector` and `metadata._node_content` of every row of one dataset
version, keyed by row address; a row address is only meaningful within that version (compaction moves rows),
so the store keeps one cache per version and a search of another version never uses it.

Memory: 4 bytes per dimension plus the node's JSON per chunk, ~2.2 KB for 384-d vectors and short chunks (220 MB
at 100k). A table whose copy would pass MAX_BYTES is not cached; its searches read the hits from Lance.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["MAX_BYTES", "HitCache", "load_hit_cache"]

logger = logging.getLogger(__name__)

MAX_BYTES = 512 * 2**20
_SAMPLE_ROWS = 256


class HitCache:
    """`id`, `vector` and `metadata._node_content` of the rows of dataset version `version`, by row address."""

    def __init__(self, version: int, addresses: np.ndarray, table: pa.Table) -> None:
        self.version = version
        if len(addresses) > 1 and not np.all(addresses[:-1] < addresses[1:]):  # a scan returns them sorted
            order = np.argsort(addresses)
            addresses, table = addresses[order], table.take(pa.array(order))
        self._addresses = addresses
        # One chunk per column: a take from a table of many record batches concatenates them on every call.
        self._table = table.combine_chunks()

    @property
    def nbytes(self) -> int:
        return int(self._addresses.nbytes + self._table.nbytes)

    def rows(self, addresses: np.ndarray) -> pa.Table | None:
        """The cached columns of the rows at `addresses`, in that order (None if one is not cached)."""
        positions = np.searchsorted(self._addresses, addresses)
        positions = np.minimum(positions, len(self._addresses) - 1)
        if len(addresses) and (len(self._addresses) == 0 or not np.array_equal(self._addresses[positions], addresses)):
            return None
        return self._table.take(pa.array(positions))


def load_hit_cache(dataset: Any, *, max_bytes: int | None = None) -> HitCache | None:
    """The hit columns of every row of `dataset` (a LanceDataset at one version), or None when they would take
    more than `max_bytes` (default MAX_BYTES; estimated from the first rows). Blocking: ~1 s at 100k chunks."""
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    columns = ["id", "vector", "metadata._node_content"]
    rows = dataset.count_rows()
    if rows:
        sample = dataset.head(min(rows, _SAMPLE_ROWS), columns=columns)
        estimate = sample.nbytes / sample.num_rows * rows
        if estimate > max_bytes:
            logger.info("not caching %d chunks' hit columns (~%.0f MB > %.0f MB)", rows, estimate / 2**20,
                        max_bytes / 2**20)
            return None
    table = dataset.to_table(columns=columns, with_row_address=True)
    addresses = table.column("_rowaddr").to_numpy()
    cache = HitCache(dataset.version, addresses, table.drop_columns(["_rowaddr"]))
    logger.debug("cached %d chunks' hit columns (%.0f MB) of version %d", rows, cache.nbytes / 2**20, cache.version)
    return cache
