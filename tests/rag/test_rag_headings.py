"""Issue 17 retrieval lever: the heading line (title and section path) reaches both indexes (BM25 and the
embedding) and stays out of the excerpt a prompt quotes."""

from pathlib import Path

import numpy as np

from core.rag import Retriever, ingest
from core.rag.chunking import heading_line, strip_heading

GUIDE = """\
# Harbour handbook

Boats moor at the eastern pier between April and October.

## Lighthouse maintenance

The lamp is cleaned every Thursday and the lens is polished monthly by the keeper.
"""


def test_heading_line_reaches_the_lexical_and_dense_indexes_not_the_excerpt(settings, embedder, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "harbour.md").write_text(GUIDE)
    ingest(settings, [docs], source="docs", public=True, embedder=embedder)
    retriever = Retriever(settings, embedder=embedder)
    retriever.warm()
    # "Harbour" is only in the document's title: the lighthouse section's chunk is found by it all the same.
    hits = retriever._store.lexical("harbour", k=5, filters=None)
    lighthouse = [h.node for h in hits if "lamp is cleaned" in h.node.text]
    assert lighthouse, "the title's words are not in the full-text index of every chunk"
    top = lighthouse[0]
    assert top.metadata["section"] == "Harbour handbook > Lighthouse maintenance"
    assert top.text.startswith("Harbour handbook > Lighthouse maintenance\n\n")
    # The stored vector is the embedding of the heading line and the passage (title and section once).
    vector = np.asarray(top.embedding)
    expected = np.asarray(embedder.get_text_embedding(top.text))
    assert float(vector @ expected / (np.linalg.norm(vector) * np.linalg.norm(expected))) > 0.999
    # The excerpt a prompt quotes has no heading line: title and section are in its header already.
    source = retriever.search("When is the lamp cleaned?", channel=None, k=1)[0]
    assert source.title == "Harbour handbook" and source.metadata["section"].endswith("Lighthouse maintenance")
    assert "The lamp is cleaned every Thursday" in source.text
    assert not source.text.startswith("Harbour handbook")
    retriever.close()


def test_heading_line_and_strip():
    assert heading_line("Atomic Commit", "Introduction > Hardware") == "Atomic Commit > Introduction > Hardware"
    assert heading_line("Guide", "Guide > Setup") == "Guide > Setup"  # '# Guide' already heads the path
    assert heading_line("", "") == ""
    assert strip_heading("Guide > Setup\n\nRun it.", "Guide", "Guide > Setup") == "Run it."
    assert strip_heading("Run it.", "Guide", "Guide > Setup") == "Run it."  # a chunk stored before the prefix
