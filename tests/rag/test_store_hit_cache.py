"""The LanceDB store's hit cache: dense search through it (the flat scan of its readable access groups) returns
what Lance's search returns, keeps the access filter exact, and follows other handles' writes, deletes and
compaction (row addresses move)."""

from __future__ import annotations

import numpy as np

from core.rag import access_filters, lancedb_cache, open_store
from core.rag.chunking import chunk_node

DIM = 384


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _nodes(vectors: np.ndarray, sources: list[str], first_id: int = 0) -> list:
    return [
        chunk_node(f"chunk {first_id + i} of {source}", {
            "title": f"title {first_id + i}", "section": "s", "file": f"/d/{first_id + i}.md",
            "path": f"{first_id + i}.md", "page": i % 3, "source": source,
            "channels": "" if source == "pub" else source, "access": "public" if source == "pub" else "restricted",
        }, id_=str(first_id + i), embedding=vectors[i].tolist())
        for i, source in enumerate(sources)
    ]  # fmt: skip


def _summary(hits: list) -> list[tuple]:
    return [
        (h.node.node_id, h.node.text, h.node.metadata, h.node.embedding, h.node.ref_doc_id,
         h.node.excluded_llm_metadata_keys)
        for h in hits
    ]  # fmt: skip


def test_cached_hits_equal_hits_read_from_lance_and_follow_writes_deletes_and_compaction(settings, monkeypatch):
    rng = np.random.default_rng(7)
    count = 600
    vectors = _unit(rng.standard_normal((count, DIM)))
    sources = list(rng.choice(["pub", "hr", "legal"], count, p=[0.5, 0.3, 0.2]))
    writer = open_store(settings)
    writer.add(_nodes(vectors, sources))
    writer.optimize()
    cached = open_store(settings, follow_writes=True)
    uncached = open_store(settings, follow_writes=True)
    queries = _unit(rng.standard_normal((6, DIM)))
    readable = np.array([s in ("pub", "hr") for s in sources])

    def check(label: str) -> None:
        for q in queries:
            hits = cached.dense(q.tolist(), k=10, filters=access_filters(["hr"]))
            assert cached._cache is not None and cached._cache.version == cached._snapshot.version, label
            with monkeypatch.context() as m:
                m.setattr(lancedb_cache, "MAX_BYTES", 0)  # too big for a cache: the hits are read from Lance
                uncached._snapshot = None
                reference = uncached.dense(q.tolist(), k=10, filters=access_filters(["hr"]))
                assert uncached._cache is None
            assert _summary(hits) == _summary(reference), label
            assert np.allclose([h.score for h in hits], [h.score for h in reference], atol=1e-5), label
            live = readable & alive
            exact = [str(i) for i in np.argsort(-np.where(live, all_vectors[: len(live)] @ q, -np.inf))[:10]]
            assert [h.node.node_id for h in hits] == exact, label
            assert all(h.node.metadata["access"] == "public" or h.node.metadata["source"] == "hr" for h in hits)

    all_vectors, alive = vectors, np.ones(count, dtype=bool)
    check("first version")

    # Another handle deletes a third of the files and adds chunks near the queries: a new version, new rows.
    gone = [n.ref_doc_id for n in _nodes(vectors, sources)[::3]]
    writer.delete_files(gone)
    alive[::3] = False
    near = _unit(queries + 0.05 * rng.standard_normal(queries.shape))
    writer.add(_nodes(near, ["hr"] * len(near), first_id=count))
    all_vectors = np.vstack([vectors, near])
    alive = np.concatenate([alive, np.ones(len(near), dtype=bool)])
    readable = np.concatenate([readable, np.ones(len(near), dtype=bool)])
    check("after writes and deletes")

    # Compaction rewrites the files: every row address of the previous version is stale.
    writer.optimize()
    check("after compaction")
    assert {h.node.node_id for h in cached.dense(queries[0].tolist(), k=10, filters=access_filters(["hr"]))} >= {
        str(count)
    }
