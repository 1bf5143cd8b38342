"""Ingest and sync a named source: read, chunk, embed and store only what changed since last time."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import BaseNode, Document

from core.config import Settings
from core.rag.chunking import CHUNK_FORMAT, doc_key, splitters
from core.rag.embeddings import embed_nodes, load_embedder, model_name, token_counter
from core.rag.readers import (
    HTML,
    STREAMABLE_SUFFIXES,
    Found,
    UnreadableFile,
    discover,
    read_file,
    stream_text,
    title_from_name,
)
from core.rag.sources import FileRecord, RagError, SourceRecord, SourceRegistry, normalize_channel
from core.rag.stores import ChunkStore, open_store

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

__all__ = ["SyncReport", "ingest", "remove_source"]

logger = logging.getLogger(__name__)


@dataclass
class SyncReport:
    source: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    chunks: int = 0  # chunks embedded and written in this run
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.source}: {len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, {len(self.skipped)} skipped "
            f"({self.chunks} chunks embedded in {self.seconds:.1f}s)"
        )


def ingest(
    settings: Settings,
    paths: Sequence[Path],
    *,
    source: str,
    channels: Sequence[str] = (),
    public: bool = False,
    embedder: BaseEmbedding | None = None,
    store: ChunkStore | None = None,
    show_progress: bool = False,
) -> SyncReport:
    """Make source `source` hold exactly the supported files under `paths`, readable by `channels`.

    Raises RagError before changing anything when an argument is wrong or a path does not exist.
    Files that cannot be read are skipped and reported; the previous version of such a file stays.
    Text files above `rag.stream_above_mb` are chunked and stored block by block (memory bounded by a block;
    they are cut as plain text, without section headings). A file's new chunks replace every chunk the store
    holds for it, so re-running an interrupted ingest stores nothing twice.
    """
    started = time.perf_counter()
    registry = SourceRegistry.for_settings(settings)
    name = registry.check_name(source)
    allowed = sorted({normalize_channel(c) for c in channels} - {""})
    if public == bool(allowed):
        raise RagError("give either the channels allowed to read the source (--channels C1,C2) or --public")
    if not paths:
        raise RagError("give at least one file or folder to ingest")
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise RagError(f"path does not exist: {', '.join(missing)}")
    embedding_model = model_name(settings)
    if registry.sources() and registry.embedding_model() not in ("", embedding_model):
        raise RagError(
            f"the store holds vectors of embedding model {registry.embedding_model()!r}, "
            f"not {embedding_model!r}: "
            "set rag.embedding_model back, or remove every source and ingest again"
        )

    report = SyncReport(source=name)
    found, rejected = discover([Path(p) for p in paths])
    report.skipped.extend(rejected)
    old = registry.get(name)
    old_files = old.files if old else {}
    # Chunks carry their access; when it changes every file is rewritten, even if unchanged on disk.
    access_changed = old is not None and old.channels != allowed

    # 1. Which files are new or changed: compare content hashes with the last run.
    kept: dict[str, FileRecord] = {}
    todo: list[tuple[Found, str]] = []
    for item in found:
        key = str(item.path)
        try:
            # The content's hash and the chunk format: a file chunked the old way is chunked again.
            digest = f"{_sha256(item.path)}+chunks{CHUNK_FORMAT}"
        except OSError as e:
            _skip(report, kept, old_files, item, f"cannot read ({e.strerror or e})", access_changed)
            continue
        previous = old_files.get(key)
        if previous and previous.sha256 == digest and not access_changed:
            kept[key] = previous
            report.unchanged.append(item.display)
        else:
            todo.append((item, digest))

    # 2. Read, chunk, embed and store file by file (small files in batches, large text files as a stream of
    # blocks). Storing a file's chunks first deletes whatever the store holds for that file, registered or not,
    # so a run interrupted before the registry was saved never leaves a chunk twice when it is run again.
    indexer = _Indexer(settings, name, allowed, embedder, store or open_store(settings), show_progress)
    limit = int(settings.rag.stream_above_mb * 2**20)
    batch: list[tuple[Found, str, list[Document]]] = []
    batch_chars = 0
    written: list[str] = []

    def record(item: Found, digest: str, chunks: int) -> None:
        key = str(item.path)
        if not chunks:
            _skip(report, kept, old_files, item, "no text to index", access_changed)
            return
        (report.updated if key in old_files else report.added).append(item.display)
        kept[key] = FileRecord(sha256=digest, chunks=chunks, path=item.display)
        written.append(key)
        report.chunks += chunks

    def flush() -> None:
        nonlocal batch_chars
        counts = indexer.replace([doc for _, _, docs in batch for doc in docs])
        for item, digest, _ in batch:
            record(item, digest, counts[str(item.path)])
        batch.clear()
        batch_chars = 0

    for item, digest in todo:
        try:
            size = item.path.stat().st_size
            if size > limit and item.path.suffix.lower() in STREAMABLE_SUFFIXES:
                blocks = stream_text(item.path, block_chars=min(max(limit, 4096), _BLOCK_CHARS))
                record(item, digest, indexer.stream(item, blocks))
                continue
            if size > limit and item.path.suffix.lower() in HTML:
                raise UnreadableFile(f"HTML file of {size / 2**20:.1f} MB is larger than rag.stream_above_mb "
                                     f"({settings.rag.stream_above_mb:g} MB): save it as text, or raise the limit")
            file_docs = read_file(item.path)
        except UnreadableFile as e:
            _skip(report, kept, old_files, item, str(e), access_changed)
            continue
        except OSError as e:
            _skip(report, kept, old_files, item, f"cannot read ({e.strerror or e})", access_changed)
            continue
        for doc in file_docs:
            doc.metadata.update(indexer.file_metadata(item))
        batch.append((item, digest, file_docs))
        batch_chars += sum(len(d.text) for d in file_docs)
        if batch_chars >= limit:
            flush()
    flush()

    # 3. Drop the chunks of deleted files, and of files that turned bad when their access changed.
    found_keys = {str(item.path) for item in found}
    gone = [key for key in old_files if key not in found_keys]
    report.removed = [old_files[key].path for key in gone]
    dropped = [key for key in old_files if key not in kept and key not in gone]
    indexer.store.delete_files(doc_key(name, key) for key in [*gone, *dropped])
    if written or gone or dropped:
        indexer.store.optimize()

    registry.save(
        SourceRecord(name=name, paths=[str(Path(p).resolve()) for p in paths], channels=allowed, files=kept),
        embedding_model=embedding_model,
    )
    report.seconds = time.perf_counter() - started
    logger.info("%s", report.summary())
    return report


_BLOCK_CHARS = 1 << 20  # characters per block of a streamed file


class _Indexer:
    """Chunks, embeds and stores the documents of one source; each file's chunks replace the stored ones."""

    def __init__(self, settings: Settings, source: str, allowed: list[str], embedder: BaseEmbedding | None,
                 store: ChunkStore, show_progress: bool) -> None:
        self.settings, self.source, self.allowed, self.store = settings, source, allowed, store
        self._embedder, self.show_progress = embedder, show_progress
        self._pipeline: IngestionPipeline | None = None

    @property
    def pipeline(self) -> IngestionPipeline:
        """Splits documents into chunks; `_chunks` embeds them."""
        if self._pipeline is None:  # the embedding model loads only when there is something to embed
            self._embedder = self._embedder or load_embedder(self.settings)
            self._pipeline = IngestionPipeline(
                transformations=splitters(self.settings.rag, token_counter(self._embedder)), disable_cache=True
            )
        return self._pipeline

    def _chunks(self, docs: list[Document], show_progress: bool) -> list[BaseNode]:
        nodes = self.pipeline.run(documents=docs, show_progress=show_progress)
        embed_nodes(self._embedder, nodes, show_progress=show_progress)
        return nodes

    def file_metadata(self, item: Found) -> dict[str, str]:
        return {"file": str(item.path), "path": item.display, "source": self.source,
                "channels": ",".join(self.allowed), "access": "restricted" if self.allowed else "public"}

    def replace(self, docs: list[Document]) -> Counter[str]:
        """Chunk and embed `docs` (before touching the store), then swap in their files' chunks; chunks per file."""
        if not docs:
            return Counter()
        nodes = self._chunks(docs, self.show_progress)
        per_file = Counter(node.metadata["file"] for node in nodes)
        self.store.delete_files(doc_key(self.source, key) for key in per_file)
        self.store.add(nodes)
        return per_file

    def stream(self, item: Found, blocks: Iterator[str]) -> int:
        """Index a large text file block by block (memory bounded by a block); returns its chunk count.
        The file's stored chunks are deleted just before its first chunks are added."""
        title = title_from_name(item.path)
        total = 0
        for number, block in enumerate(blocks, 1):
            doc = Document(text=block, metadata={"title": title, "page": 0, "kind": "plain",
                                                 **self.file_metadata(item)})
            nodes = self._chunks([doc], False)
            if nodes and total == 0:
                self.store.delete_files([doc_key(self.source, str(item.path))])
            self.store.add(nodes)
            total += len(nodes)
            logger.info("%s: block %d, %d chunks so far", item.display, number, total)
        return total


def _skip(
    report: SyncReport,
    kept: dict[str, FileRecord],
    old_files: dict[str, FileRecord],
    item: Found,
    reason: str,
    access_changed: bool,
) -> None:
    key = str(item.path)
    previous = old_files.get(key)
    if previous is not None and not access_changed:
        kept[key] = previous
        reason += "; the previous version stays indexed"
    elif previous is not None:
        # Its old chunks carry the old access: removing them is the only safe choice.
        reason += "; its old chunks were removed because the source's access changed"
    report.skipped.append((item.display, reason))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_source(settings: Settings, name: str, *, store: ChunkStore | None = None) -> SourceRecord:
    """Delete a source's chunks, then its registry entry."""
    registry = SourceRegistry.for_settings(settings)
    record = registry.get(name)
    if record is None:
        known = ", ".join(sorted(registry.sources())) or "none ingested yet"
        raise RagError(f"unknown source {name!r}; sources: {known}")
    store = store or open_store(settings)
    store.delete_files(doc_key(name, key) for key in record.files)
    store.optimize()
    registry.remove(name)
    return record
