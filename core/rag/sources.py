"""The sources registry: what was ingested under which name, who may read it, and each file's hash.

One JSON file under `data_dir` per vector store kind, rewritten atomically. It also records the
embedding model, because vectors from two models cannot be searched together.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.config import Settings
from core.types import utcnow

__all__ = ["FileRecord", "RagError", "SourceRecord", "SourceRegistry", "normalize_channel"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RagError(ValueError):
    """A user mistake in a RAG command (bad path, unknown source, ...); the message says what to do."""


def normalize_channel(channel: str) -> str:
    """Channel names are compared without a leading '#' and surrounding spaces."""
    return channel.strip().lstrip("#").strip()


@dataclass
class FileRecord:
    sha256: str
    chunks: int
    path: str  # shown to users: below the ingested folder


@dataclass
class SourceRecord:
    name: str
    paths: list[str]
    channels: list[str]  # empty = public
    files: dict[str, FileRecord] = field(default_factory=dict)
    updated_at: str = ""

    @property
    def public(self) -> bool:
        return not self.channels

    @property
    def chunks(self) -> int:
        return sum(f.chunks for f in self.files.values())

    def readable_in(self, channel: str | Sequence[str]) -> bool:
        """`channel` may be several names for one channel (its id and its name): any of them counts."""
        names = [channel] if isinstance(channel, str) else list(channel)
        return self.public or any(normalize_channel(n) in self.channels for n in names)


class SourceRegistry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: tuple[tuple[int, int], dict] | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> SourceRegistry:
        return cls(settings.data_dir / f"rag-sources-{settings.vector_store}.json")

    @staticmethod
    def check_name(name: str) -> str:
        if not _NAME.match(name):
            raise RagError(
                f"invalid source name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, "
                "starting with a letter or digit)"
            )
        return name

    def _read(self) -> dict:
        # Re-read only when the file changed: a server checks this on every question.
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {"embedding_model": "", "sources": {}}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, json.loads(self.path.read_text(encoding="utf-8")))
        return self._cache[1]

    def embedding_model(self) -> str:
        return self._read().get("embedding_model", "")

    def sources(self) -> dict[str, SourceRecord]:
        out = {}
        for name, raw in self._read().get("sources", {}).items():
            files = {k: FileRecord(**v) for k, v in raw.get("files", {}).items()}
            out[name] = SourceRecord(
                name=name,
                paths=list(raw["paths"]),
                channels=list(raw["channels"]),
                files=files,
                updated_at=raw.get("updated_at", ""),
            )
        return out

    def get(self, name: str) -> SourceRecord | None:
        return self.sources().get(name)

    def restricted_sources_for(self, channel: str | Sequence[str]) -> list[str]:
        """Names of the restricted sources `channel` may read (public ones need no naming)."""
        return sorted(s.name for s in self.sources().values() if not s.public and s.readable_in(channel))

    def save(self, record: SourceRecord, *, embedding_model: str) -> None:
        data = self._read()
        record.updated_at = utcnow().isoformat()
        sources = dict(data.get("sources", {}))
        sources[record.name] = asdict(record)
        self._write({"embedding_model": embedding_model, "sources": sources})

    def remove(self, name: str) -> None:
        data = self._read()
        sources = {k: v for k, v in data.get("sources", {}).items() if k != name}
        self._write(
            {"embedding_model": data.get("embedding_model", "") if sources else "", "sources": sources}
        )

    def _write(self, data: dict) -> None:
        # Write-then-rename: a crash never leaves half a registry (it also decides who may read what).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".rag-sources-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
        self._cache = None
