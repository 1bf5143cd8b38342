"""An in-process copy of one Lance table version's hit columns and vectors, for dense search without Lance.

A search that reads its hits' columns back adds Lance's take stage (I/O scheduling and decoding on its own
threads) to each query: ~1 ms at 100k chunks on a busy 2-core machine, where the whole search takes 5-7 ms
(bench/retrieval.py). `HitCache` holds `id` and `metadata._node_content` of every row of one dataset version,
keyed by row address, and every row's vector in one contiguous float32 matrix ordered by access group (the
`metadata.access` and `metadata.source` pair of the row): public rows first, then each restricted source, so the
rows a channel may read are a few contiguous blocks that `core.rag.flat_search` scans exactly, skipping the rest.
A row address is only meaningful within its version (compaction moves rows), so the store keeps one cache per
version and a search of another version never uses it.

Memory: per chunk 4 bytes per dimension (the vector, once), the node's JSON and its id as Python strings (~50
bytes each beside the text: JSON from json.dumps is ASCII, one byte a character), and 28 bytes of index (address,
two permutation entries, inverse norm): ~2.3 KB for 384-d vectors and short chunks (230 MB at 100k). Loading
briefly holds the vectors twice (Lance's copy in address order while the grouped matrix is built). A table whose
copy would pass MAX_BYTES is not cached; its searches go to Lance and read the hits from it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["MAX_BYTES", "Group", "HitCache", "load_hit_cache"]

logger = logging.getLogger(__name__)

MAX_BYTES = 512 * 2**20
_SAMPLE_ROWS = 256
_PYTHON_STRING_BYTES = 2 * (49 + 8)  # a row's id and JSON as Python str objects, beside their Arrow size
_HIT_COLUMNS = ["id", "metadata._node_content"]
_GROUP_COLUMNS = ["metadata.access", "metadata.source"]

Group = tuple[str | None, str | None]  # (access, source) of a block of rows


def _group_order(group: Group) -> tuple:
    # Public rows first, so a channel's visible rows (public, plus its sources) are as few runs as possible.
    access, source = group
    return (access != "public", access is None, access or "", source is None, source or "")


class HitCache:
    """Rows of dataset version `version`: `id`, `metadata._node_content` and vector, found by row address.

    `vectors` (rows x dim, float32, C-contiguous) holds the rows in group order: the rows of `groups[g]` are
    `vectors[bounds[g]:bounds[g + 1]]`; `inverse_norms` (rows, float32) is 1 / |vector| (0 for a zero vector).
    A "position" is a row's index in that order."""

    def __init__(self, version: int, addresses: np.ndarray, table: pa.Table) -> None:
        """`table`: the rows at `addresses` (any order), with `_HIT_COLUMNS`, `vector` and `_GROUP_COLUMNS`."""
        self.version = version
        if len(addresses) > 1 and not np.all(addresses[:-1] < addresses[1:]):  # a scan returns them sorted
            order = np.argsort(addresses)
            addresses, table = addresses[order], table.take(pa.array(order))
        self._addresses = addresses
        rows = len(addresses)
        keys = list(zip(table.column(_GROUP_COLUMNS[0]).to_pylist(), table.column(_GROUP_COLUMNS[1]).to_pylist(),
                        strict=True))  # fmt: skip
        self.groups: list[Group] = sorted(set(keys), key=_group_order)
        number = {group: g for g, group in enumerate(self.groups)}
        group_of = np.fromiter((number[key] for key in keys), dtype=np.int64, count=rows)
        # Row (in address order) of each position, and the reverse; rows of a group stay in address order.
        self._row_of = np.argsort(group_of, kind="stable")
        self._position_of = np.empty(rows, dtype=np.int64)
        self._position_of[self._row_of] = np.arange(rows)
        self.bounds = np.searchsorted(group_of[self._row_of], np.arange(len(self.groups) + 1))
        column = table.column("vector").combine_chunks()
        self.dim: int = column.type.list_size
        flat = column.flatten().to_numpy(zero_copy_only=False)
        self.vectors = np.ascontiguousarray(flat.reshape(rows, self.dim)[self._row_of], dtype=np.float32)
        norms = np.linalg.norm(self.vectors, axis=1)
        self.inverse_norms = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
        # Python strings: ten hits read from them in ~30 us, from Arrow arrays ~200 us (a take per column).
        self._ids: list[str] = table.column("id").to_pylist()
        self._contents: list[str] = table.column("metadata._node_content").to_pylist()
        self._string_bytes = sum(sys.getsizeof(text) + 8 for column in (self._ids, self._contents) for text in column)

    @property
    def nbytes(self) -> int:
        """Bytes held: the arrays, and the ids' and JSON strings as Python objects (with the lists' pointers)."""
        arrays = (self._addresses, self._row_of, self._position_of, self.vectors, self.inverse_norms)
        return int(sum(a.nbytes for a in arrays) + self._string_bytes)

    def __len__(self) -> int:
        return len(self._addresses)

    def runs(self, visible: set[int]) -> list[tuple[int, int]]:
        """The position ranges [start, stop) of the groups numbered in `visible`, adjacent ones merged."""
        runs: list[tuple[int, int]] = []
        for g in sorted(visible):
            start, stop = int(self.bounds[g]), int(self.bounds[g + 1])
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], stop)
            elif stop > start:
                runs.append((start, stop))
        return runs

    def columns(self, positions: np.ndarray) -> tuple[list[str], list[str], list[list[float]]]:
        """`id`, `metadata._node_content` and vector of the rows at `positions` (group order), in that order."""
        rows = self._row_of[positions].tolist()
        return [self._ids[r] for r in rows], [self._contents[r] for r in rows], self.vectors[positions].tolist()

    def positions(self, addresses: np.ndarray) -> np.ndarray | None:
        """The positions of the rows at row `addresses`, in that order (None if one is not cached)."""
        found = np.searchsorted(self._addresses, addresses)
        found = np.minimum(found, len(self._addresses) - 1)
        if len(addresses) and (len(self._addresses) == 0 or not np.array_equal(self._addresses[found], addresses)):
            return None
        return self._position_of[found]


def load_hit_cache(dataset: Any, *, max_bytes: int | None = None) -> HitCache | None:
    """The hit columns and vectors of every row of `dataset` (a LanceDataset at one version), or None when they
    would take more than `max_bytes` (default MAX_BYTES; estimated from the first rows). Blocking: ~1 s at 100k
    chunks."""
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    columns = [*_HIT_COLUMNS, "vector", *_GROUP_COLUMNS]
    rows = dataset.count_rows()
    if rows:
        sample = dataset.head(min(rows, _SAMPLE_ROWS), columns=columns)
        estimate = (sample.nbytes / sample.num_rows + _PYTHON_STRING_BYTES) * rows
        if estimate > max_bytes:
            logger.info("not caching %d chunks' hit columns (~%.0f MB > %.0f MB)", rows, estimate / 2**20,
                        max_bytes / 2**20)
            return None
    table = dataset.to_table(columns=columns, with_row_address=True)
    addresses = table.column("_rowaddr").to_numpy()
    cache = HitCache(dataset.version, addresses, table.drop_columns(["_rowaddr"]))
    logger.debug("cached %d chunks' hit columns (%.0f MB) in %d access groups, version %d", len(cache),
                 cache.nbytes / 2**20, len(cache.groups), cache.version)
    return cache
