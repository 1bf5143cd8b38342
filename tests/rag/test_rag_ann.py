"""The embedded store's dense search on its IVF index: small channels get k hits, other handles see new writes."""

from __future__ import annotations

import numpy as np

from core.rag import access_filters, flat_search, open_store
from core.rag.chunking import chunk_node
from core.rag.lancedb_indexes import ANN_MIN_ROWS, partitions_built, partitions_of

DIM = 384


def _nodes(vectors: np.ndarray, sources: list[str], first_id: int = 0) -> list:
    return [
        chunk_node(f"chunk {first_id + i}", {
            "title": "t", "section": "", "file": f"/d/{first_id + i}.md", "path": f"{first_id + i}.md", "page": 0,
            "source": source, "channels": "" if source == "pub" else source,
            "access": "public" if source == "pub" else "restricted",
        }, id_=str(first_id + i), embedding=vectors[i].tolist())
        for i, source in enumerate(sources)
    ]  # fmt: skip


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_small_store_searches_without_a_vector_index(settings):
    rng = np.random.default_rng(3)
    vectors = _unit(rng.standard_normal((50, DIM)))
    store = open_store(settings)
    store.add(_nodes(vectors, ["pub"] * 50))
    store.optimize()

    assert not any(index.name.startswith("vector") for index in store._table.list_indices())
    q = vectors[7]
    hits = store.dense(q.tolist(), k=5, filters=access_filters([]))
    assert [int(h.node.node_id) for h in hits] == np.argsort(-(vectors @ q))[:5].tolist()
    assert abs(hits[0].score - 1.0) < 1e-4


def test_indexed_search_fills_k_for_a_small_source_and_follows_other_handles_writes(settings, monkeypatch):
    monkeypatch.setattr(flat_search, "MAX_ROWS", -1)  # Lance's IVF search, not the cache's flat scan
    rng = np.random.default_rng(4)
    count = ANN_MIN_ROWS + 300
    centres = rng.standard_normal((64, DIM))
    vectors = _unit(centres[rng.integers(0, 64, count)] + 0.8 * rng.standard_normal((count, DIM)))
    # 12 chunks of "ops" scattered over the clusters: only a handful fall in any query's nearest partitions.
    sources = ["ops" if i % (count // 12) == 0 else "hr" for i in range(count)]
    writer = open_store(settings)
    writer.add(_nodes(vectors, sources))
    writer.optimize()
    assert any(index.name.startswith("vector_ivf") for index in writer._table.list_indices())
    reader = open_store(settings, follow_writes=True)
    ops = np.array([s == "ops" for s in sources])
    only_ops = access_filters(["ops"])  # public (none here) or source ops

    for q in _unit(rng.standard_normal((5, DIM))):
        # The nearest partitions hold fewer than 10 "ops" chunks: the search probes further until it has 10
        # (a fixed probe count returned 1 to 3 here), scored by their true cosine, nearest first.
        hits = reader.dense(q.tolist(), k=10, filters=only_ops)
        ids = [int(h.node.node_id) for h in hits]
        assert len(ids) == 10 and all(ops[i] for i in ids)
        assert np.allclose([h.score for h in hits], vectors[ids] @ q, atol=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    # A chunk written by another handle after the reader's first search is found by the reader's next one,
    # and a deleted one is gone.
    q = _unit(rng.standard_normal(DIM))
    writer.add(_nodes(q[None, :], ["pub"], first_id=count))
    assert reader.dense(q.tolist(), k=1, filters=access_filters([]))[0].node.node_id == str(count)
    writer.delete_files([_nodes(q[None, :], ["pub"], first_id=count)[0].ref_doc_id])
    hits = reader.dense(q.tolist(), k=3, filters=access_filters([]))
    assert str(count) not in {h.node.node_id for h in hits}
    assert all(h.node.metadata["access"] == "public" for h in hits)

    # The next ingest's optimize compacts the table; the vector index keeps the partitions it was built with.
    writer.optimize()
    name = next(index.name for index in writer._table.list_indices() if index.name.startswith("vector_ivf"))
    assert partitions_built(writer._table, name) == partitions_of(name) == 66
    assert len(reader.dense(q.tolist(), k=10, filters=access_filters(["ops"]))) == 10
