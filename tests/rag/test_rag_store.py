"""The embedded store past the ANN threshold: an IVF index is built and filtered search stays exact enough."""

from __future__ import annotations

import numpy as np

from core.rag import access_filters, open_store
from core.rag.chunking import chunk_node
from core.rag.stores import ANN_MIN_ROWS


def test_large_store_gets_a_vector_index_and_keeps_filtering_inside_it(settings):
    rng = np.random.default_rng(0)
    count = ANN_MIN_ROWS + 500
    centres = rng.standard_normal((64, 384)).astype(np.float32)
    vectors = centres[rng.integers(0, 64, count)] + 0.8 * rng.standard_normal((count, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    public = rng.random(count) < 0.5
    store = open_store(settings)
    nodes = []
    for i in range(count):
        meta = {
            "title": "t", "section": "", "file": f"/d/{i}.md", "path": f"{i}.md", "page": 0,
            "source": "pub" if public[i] else "hr", "channels": "" if public[i] else "hr",
            "access": "public" if public[i] else "restricted",
        }  # fmt: skip
        nodes.append(chunk_node(f"chunk {i}", meta, id_=str(i), embedding=vectors[i].tolist()))
    store.add(nodes)

    store.optimize()

    names = [index.name for index in store._table.list_indices()]
    assert any(name.startswith("vector_ivf") for name in names)
    queries = vectors[rng.integers(0, count, 20)] + 0.3 * rng.standard_normal((20, 384)).astype(np.float32)
    found = []
    for q in queries:
        hits = store.dense(q.tolist(), k=10, filters=access_filters([]))
        assert all(h.node.metadata["access"] == "public" for h in hits) and len(hits) == 10
        exact = np.argsort(-np.where(public, vectors @ q, -np.inf))[:10]
        found.append(len({int(h.node.node_id) for h in hits} & set(exact.tolist())) / 10)
    assert np.mean(found) >= 0.9
