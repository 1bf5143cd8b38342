"""BM25's first hit leads the fused ranking when it stands far above every other document's best chunk (issue 17:
dense's first pick won the rank-1 tie of reciprocal-rank fusion though BM25 was right; bench/quality.py)."""

import shutil
from pathlib import Path

from core.rag import Retriever, ingest

ARTICLES = Path(__file__).resolve().parents[2] / "bench" / "data" / "sqlite_docs" / "articles"
QUESTION = ("How often should I gather statistics for the query planner, and is there a cheaper option than a full "
            "pass on a huge database?")  # from bench/data/retrieval_sqlite_dev.jsonl


def test_a_decisive_bm25_first_hit_leads_the_fused_ranking(settings, embedder, tmp_path):
    docs = tmp_path / "articles"
    docs.mkdir()
    for path in sorted(ARTICLES.glob("*.md")):  # all 59: BM25's statistics are the whole set's
        shutil.copy(path, docs / path.name)
    ingest(settings, [docs], source="sqlite", public=True, embedder=embedder)
    retriever = Retriever(settings, embedder=embedder)
    retriever.warm()
    try:
        dense_first = retriever._store.dense(embedder.get_query_embedding(QUESTION), k=1, filters=None)[0]
        assert dense_first.node.metadata["file"].endswith("queryplanner.md")  # the case: the embedding prefers it
        hits = retriever.search(QUESTION, channel=None, k=5)
        assert hits[0].uri.endswith("lang_analyze.md")
        assert any(h.uri.endswith("queryplanner.md") for h in hits)  # still found, just second
    finally:
        retriever.close()

