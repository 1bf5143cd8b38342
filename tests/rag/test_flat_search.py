"""Dense search by a flat scan of the readable access groups in the LanceDB store's hit cache: the rows exact
search over the readable rows returns, never a row the filter excludes, and Lance's search for a filter it cannot
evaluate or a channel that reads too many rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from core.rag import access_filters, flat_search, lancedb_cache, open_store
from core.rag.chunking import chunk_node

DIM = 384


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _nodes(vectors: np.ndarray, groups: list[tuple[str, str]]) -> list:
    return [
        chunk_node(f"chunk {i} of {source}", {
            "title": f"title {i}", "section": "s", "file": f"/d/{i}.md", "path": f"{i}.md", "page": i % 3,
            "source": source, "channels": "" if access == "public" else source, "access": access,
        }, id_=str(i), embedding=vectors[i].tolist())
        for i, (access, source) in enumerate(groups)
    ]  # fmt: skip


def _summary(hits: list) -> list[tuple]:
    return [(h.node.node_id, h.node.text, h.node.metadata, h.node.embedding, h.node.ref_doc_id) for h in hits]


class _Spy:
    """Records what the store's flat search returned (None: the search went to Lance)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.served: list[bool] = []
        real = flat_search.flat_search

        def spy(*args, **kwargs):
            found = real(*args, **kwargs)
            self.served.append(found is not None)
            return found

        monkeypatch.setattr("core.rag.store_lancedb.flat_search", spy)


@pytest.fixture
def corpus(settings):
    """600 chunks in public (sources wiki and legal), hr, legal and ops; vectors of varied length (cosine must
    use their norms); restricted legal chunk 0 is each query itself, nearer than any readable chunk."""
    rng = np.random.default_rng(11)
    count = 600
    kinds = [("public", "wiki"), ("public", "legal"), ("restricted", "hr"), ("restricted", "legal"),
             ("restricted", "ops")]  # fmt: skip
    groups = [kinds[i] for i in rng.choice(len(kinds), count, p=[0.35, 0.15, 0.2, 0.2, 0.1])]
    groups[0] = ("restricted", "legal")
    queries = _unit(rng.standard_normal((5, DIM)))
    vectors = _unit(rng.standard_normal((count, DIM))) * rng.uniform(0.5, 2.0, (count, 1)).astype(np.float32)
    vectors[0] = queries[0]
    store = open_store(settings)
    store.add(_nodes(vectors, groups))
    store.optimize()
    return store, vectors, groups, queries


def _exact(vectors: np.ndarray, readable: np.ndarray, q: np.ndarray, k: int) -> list[str]:
    cosine = (vectors @ q) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(q)
    order = [i for i in np.argsort(-cosine, kind="stable") if readable[i]]
    return [str(i) for i in order[:k]]


def test_flat_scan_returns_exact_hits_of_readable_rows_and_what_lance_returns(corpus, settings, monkeypatch):
    store, vectors, groups, queries = corpus
    spy = _Spy(monkeypatch)
    lance = open_store(settings, follow_writes=True)
    readable = np.array([a == "public" or s == "hr" for a, s in groups])

    for q in queries:
        hits = store.dense(q.tolist(), k=10, filters=access_filters(["hr"]))
        assert [h.node.node_id for h in hits] == _exact(vectors, readable, q, 10)
        assert all(h.node.metadata["access"] == "public" or h.node.metadata["source"] == "hr" for h in hits)
        cosine = [float(vectors[int(h.node.node_id)] @ q / np.linalg.norm(vectors[int(h.node.node_id)])) for h in hits]
        assert np.allclose([h.score for h in hits], cosine, atol=1e-5)
        with monkeypatch.context() as m:
            m.setattr(lancedb_cache, "MAX_BYTES", 0)  # no cache: Lance searches and reads the hits
            lance._snapshot = None
            reference = lance.dense(q.tolist(), k=10, filters=access_filters(["hr"]))
            assert lance._cache is None
        assert _summary(hits) == _summary(reference)
        assert np.allclose([h.score for h in hits], [h.score for h in reference], atol=1e-5)
    assert spy.served[: len(queries)] == [True] * len(queries) and not any(spy.served[len(queries) :])

    # The restricted legal chunk equal to the query is never returned, though public legal chunks are.
    hits = store.dense(queries[0].tolist(), k=600, filters=access_filters(["hr"]))
    ids = {h.node.node_id for h in hits}
    assert "0" not in ids and len(hits) == int(readable.sum())
    assert any(h.node.metadata["source"] == "legal" for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # A channel that reads legal finds it first, with cosine 1.
    top = store.dense(queries[0].tolist(), k=3, filters=access_filters(["legal"]))[0]
    assert top.node.node_id == "0" and abs(top.score - 1.0) < 1e-5
    # Public only, and no filter at all.
    public = np.array([a == "public" for a, _ in groups])
    assert [h.node.node_id for h in store.dense(queries[1].tolist(), k=7, filters=access_filters([]))] == _exact(
        vectors, public, queries[1], 7
    )
    everything = np.ones(len(groups), dtype=bool)
    assert [h.node.node_id for h in store.dense(queries[2].tolist(), k=7, filters=None)] == _exact(
        vectors, everything, queries[2], 7
    )
    assert all(spy.served[2 * len(queries) :])


def test_filters_the_flat_scan_cannot_evaluate_go_to_lance(corpus, monkeypatch):
    store, vectors, groups, queries = corpus
    spy = _Spy(monkeypatch)
    q = queries[3]
    cases = [
        # (filter, which rows it lets through)
        (MetadataFilters(filters=[MetadataFilter(key="access", value="restricted"),
                                  MetadataFilter(key="source", value="hr")], condition=FilterCondition.AND),
         [a == "restricted" and s == "hr" for a, s in groups]),
        (MetadataFilters(filters=[MetadataFilter(key="source", value="hr", operator=FilterOperator.NE)]),
         [s != "hr" for _, s in groups]),
        (MetadataFilters(filters=[MetadataFilter(key="path", value="3.md")]), [i == 3 for i in range(len(groups))]),
    ]  # fmt: skip
    for filters, passes in cases:
        hits = store.dense(q.tolist(), k=10, filters=filters)
        assert spy.served.pop() is False
        assert [h.node.node_id for h in hits] == _exact(vectors, np.array(passes), q, 10)

    # A single equality on source, any condition: the flat scan; one that nothing passes: no hits.
    only_ops = MetadataFilters(filters=[MetadataFilter(key="source", value="ops")], condition=FilterCondition.AND)
    ops = np.array([s == "ops" for _, s in groups])
    assert [h.node.node_id for h in store.dense(q.tolist(), k=4, filters=only_ops)] == _exact(vectors, ops, q, 4)
    assert spy.served.pop() is True
    nobody = MetadataFilters(filters=[MetadataFilter(key="source", value="nobody")])
    assert store.dense(q.tolist(), k=4, filters=nobody) == []
    assert spy.served.pop() is True

    # More readable rows than the cutoff: Lance's search, the same hits.
    readable = np.array([a == "public" or s == "ops" for a, s in groups])
    monkeypatch.setattr(flat_search, "MAX_ROWS", int(readable.sum()) - 1)
    hits = store.dense(q.tolist(), k=10, filters=access_filters(["ops"]))
    assert spy.served.pop() is False
    assert [h.node.node_id for h in hits] == _exact(vectors, readable, q, 10)


def test_cache_keeps_vectors_in_contiguous_access_groups_public_first(corpus):
    store, vectors, groups, _ = corpus
    _, cache = store._dataset()
    assert cache is not None and cache.vectors.flags.c_contiguous and cache.vectors.dtype == np.float32
    assert cache.groups[:2] == [("public", "legal"), ("public", "wiki")]
    assert sorted(cache.groups) == sorted(set(groups))
    assert cache.bounds[0] == 0 and cache.bounds[-1] == len(groups)
    ids = cache.columns(np.arange(len(groups)))[0]
    for g, group in enumerate(cache.groups):
        block = range(cache.bounds[g], cache.bounds[g + 1])
        assert {groups[int(ids[p])] for p in block} == {group}
        assert np.array_equal(cache.vectors[block.start : block.stop], vectors[[int(ids[p]) for p in block]])
    # Adjacent groups are one run: public (both sources) and hr one, public and ops two.
    assert cache.groups[2:] == [("restricted", "hr"), ("restricted", "legal"), ("restricted", "ops")]
    assert cache.runs({0, 1, 2}) == [(0, int(cache.bounds[3]))]
    assert cache.runs({0, 1, 4}) == [(0, int(cache.bounds[2])), (int(cache.bounds[4]), len(groups))]
    with pytest.raises(ValueError):
        flat_search.flat_search(cache, np.zeros(DIM + 1), k=3, filters=None)


def test_scan_over_several_runs_is_exact_under_concurrent_searches(corpus):
    store, vectors, groups, queries = corpus
    _, cache = store._dataset()
    readable = np.array([a == "public" or s in ("hr", "ops") for a, s in groups])
    expected = [_exact(vectors, readable, q, 25) for q in queries]

    def search(q: np.ndarray) -> list[str]:
        positions, _ = flat_search.flat_search(cache, q, k=25, filters=access_filters(["hr", "ops"]))
        return cache.columns(positions)[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            assert list(pool.map(search, queries)) == expected
