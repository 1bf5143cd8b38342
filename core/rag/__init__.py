"""Retrieval-augmented generation over company documents.

`ingest` syncs a named source (files and folders) into the configured vector store; a `Retriever`
answers `await retriever.retrieve(question, channel=..., k=...)` with `core.types.Source` excerpts the
channel may read; `format_context` turns them into numbered, delimited prompt excerpts.
"""

from core.rag.eval import EvalItem, EvalResult, evaluate, load_eval_set
from core.rag.ingest import SyncReport, ingest, remove_source
from core.rag.retrieval import Retriever, format_context, open_retriever
from core.rag.sources import RagError, SourceRecord, SourceRegistry
from core.rag.stores import ChunkStore, access_filters, open_store

__all__ = [
    "ChunkStore",
    "EvalItem",
    "EvalResult",
    "RagError",
    "Retriever",
    "SourceRecord",
    "SourceRegistry",
    "SyncReport",
    "access_filters",
    "evaluate",
    "format_context",
    "ingest",
    "load_eval_set",
    "open_retriever",
    "open_store",
    "remove_source",
]
