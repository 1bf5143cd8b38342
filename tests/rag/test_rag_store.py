"""The embedded store past the ANN threshold: an IVF index is built and filtered search stays exact enough."""

from __future__ import annotations

import numpy as np
from llama_index.core.vector_stores.types import FilterCondition, MetadataFilter, MetadataFilters

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


def test_filtered_dense_search_is_exact_whether_few_or_most_chunks_are_readable(settings):
    """Most chunks readable: the over-fetched unfiltered search, filtered after, must still give the exact
    filtered top-k; few readable (fewer than k among the over-fetched): the store's prefilter takes over."""
    rng = np.random.default_rng(1)
    count = 400
    vectors = rng.standard_normal((count, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    source = np.where(rng.random(count) < 0.6, "pub", np.where(rng.random(count) < 0.5, "hr", "legal"))
    source[:6] = "ops"  # a source with only six chunks
    store = open_store(settings)
    store.add([
        chunk_node(f"chunk {i}", {
            "title": "t", "section": "", "file": f"/d/{i}.md", "path": f"{i}.md", "page": 0, "source": source[i],
            "channels": "", "access": "public" if source[i] == "pub" else "restricted",
        }, id_=str(i), embedding=vectors[i].tolist())
        for i in range(count)
    ])  # fmt: skip
    store.optimize()
    only_ops = MetadataFilters(filters=[MetadataFilter(key="source", value="ops")], condition=FilterCondition.OR)
    cases = [(access_filters(["hr"]), (source == "pub") | (source == "hr")), (only_ops, source == "ops")]
    for q in rng.standard_normal((5, 384)).astype(np.float32):
        q /= np.linalg.norm(q)
        for flt, readable in cases:
            hits = store.dense(q.tolist(), k=10, filters=flt)
            exact = [i for i in np.argsort(-(vectors @ q)) if readable[i]][:10]
            assert [int(h.node.node_id) for h in hits] == exact
