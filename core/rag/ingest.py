"""Ingest and sync a named source: read, chunk, embed and store only what changed since last time."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import Document

from core.config import Settings
from core.rag.chunking import doc_key, splitters
from core.rag.embeddings import load_embedder, model_name, token_counter
from core.rag.readers import Found, UnreadableFile, discover, read_file
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
            digest = _sha256(item.path)
        except OSError as e:
            _skip(report, kept, old_files, item, f"cannot read ({e.strerror or e})", access_changed)
            continue
        previous = old_files.get(key)
        if previous and previous.sha256 == digest and not access_changed:
            kept[key] = previous
            report.unchanged.append(item.display)
        else:
            todo.append((item, digest))

    # 2. Read them; a bad file is skipped with its reason, and its previous chunks stay searchable.
    docs: list[Document] = []
    readable: list[tuple[Found, str]] = []
    for item, digest in todo:
        try:
            file_docs = read_file(item.path)
        except UnreadableFile as e:
            _skip(report, kept, old_files, item, str(e), access_changed)
            continue
        except OSError as e:
            _skip(report, kept, old_files, item, f"cannot read ({e.strerror or e})", access_changed)
            continue
        for doc in file_docs:
            doc.metadata.update(
                file=str(item.path),
                path=item.display,
                source=name,
                channels=",".join(allowed),
                access="restricted" if allowed else "public",
            )
        docs.extend(file_docs)
        readable.append((item, digest))

    # 3. Chunk and embed (batched, with a progress bar) before touching the store.
    nodes = []
    if docs:
        embedder = embedder or load_embedder(settings)
        pipeline = IngestionPipeline(
            transformations=[*splitters(settings.rag, token_counter(embedder)), embedder], disable_cache=True
        )
        nodes = pipeline.run(documents=docs, show_progress=show_progress)
    per_file = Counter(node.metadata["file"] for node in nodes)
    written: list[str] = []
    for item, digest in readable:
        key = str(item.path)
        if not per_file[key]:
            _skip(report, kept, old_files, item, "no text to index", access_changed)
            continue
        (report.updated if key in old_files else report.added).append(item.display)
        kept[key] = FileRecord(sha256=digest, chunks=per_file[key], path=item.display)
        written.append(key)
    found_keys = {str(item.path) for item in found}
    gone = [key for key in old_files if key not in found_keys]
    report.removed = [old_files[key].path for key in gone]
    dropped = [key for key in old_files if key not in kept and key not in gone]

    # 4. Replace the chunks of changed files, drop those of deleted ones, then refresh indexes.
    store = store or open_store(settings)
    written_set = set(written)
    store.delete_files(doc_key(name, key) for key in [*written, *gone, *dropped] if key in old_files)
    store.add([n for n in nodes if n.metadata["file"] in written_set])
    report.chunks = sum(per_file[key] for key in written)
    if written or gone or dropped:
        store.optimize()

    registry.save(
        SourceRecord(name=name, paths=[str(Path(p).resolve()) for p in paths], channels=allowed, files=kept),
        embedding_model=embedding_model,
    )
    report.seconds = time.perf_counter() - started
    logger.info("%s", report.summary())
    return report


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
