"""Ingest embeds chunks longest first (less padding per batch); each chunk still gets its own vector."""

from __future__ import annotations

import numpy as np
from llama_index.core.schema import MetadataMode, TextNode

from core.rag.embeddings import embed_nodes


def test_embed_nodes_gives_each_node_its_own_texts_vector_whatever_the_order(embedder):
    words = "the quick brown fox jumps over the lazy dog while the cat sleeps".split()
    texts = [" ".join(words[: 1 + (i * 7) % len(words)]) + f" number {i}" for i in range(40)]
    nodes = [TextNode(text=t, metadata={"title": f"Doc {i}"}) for i, t in enumerate(texts)]

    embed_nodes(embedder, nodes)

    for node in nodes[:: 7]:
        alone = embedder.get_text_embedding(node.get_content(metadata_mode=MetadataMode.EMBED))
        assert np.allclose(node.embedding, alone, atol=1e-4)
    assert len({tuple(np.round(n.embedding, 4)) for n in nodes}) == len(nodes)
