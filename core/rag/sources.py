"""The sources registry: what was ingested under which name, who may read it, and each file's hash.

One JSON file under `data_dir` per vector store kind, rewritten atomically. It also records the
embedding model, because vectors from two models cannot be searched together.

Who may read a source: its *audiences*, each the stable identity of one channel, never a name.

    platform:workspace:channel        ids as the platform gives them, e.g.
    slack:T0123ABCD:C0456EFGH         Slack: team (workspace) id, channel id
    discord:81234567890:99887766554   Discord: guild (server) id, channel id
    slack::D0123ABCD                  a DM: empty workspace, the DM channel's id

Front ends fill `Turn.platform`, `Turn.workspace` (Slack team id / Discord guild id, "" for DMs) and
`Turn.channel` (the channel whose access applies: for a thread, its parent channel); `Turn.audience`
(core.types.audience_of) joins them into the identity above, and retrieval receives exactly that. A channel
renamed, or a same-named channel in another workspace/server, is a different identity: names never grant access.

A *bare name* (`finance`, as written by `--channels finance` before identities) matches no Slack or Discord
channel: only the operator console asking `--channel finance` reads it. `kaizen sources list` warns about each
one and `kaizen sources qualify NAME --channels slack:T…:C…` replaces them (nothing is ever widened silently).
The operator console may also ask as any identity: `kaizen ask "…" --channel slack:T0123ABCD:C0456EFGH`.
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
from core.types import is_qualified, utcnow

__all__ = ["PLATFORMS", "FileRecord", "RagError", "SourceRecord", "SourceRegistry", "describe_audience",
           "normalize_channel"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RagError(ValueError):
    """A user mistake in a RAG command (bad path, unknown source, ...); the message says what to do."""


PLATFORMS = ("slack", "discord")


def normalize_channel(channel: str) -> str:
    """An audience as stored and compared: an identity `platform:workspace:channel` (platform lower-cased, ids
    as given) or a bare name without a leading '#' and surrounding spaces. Raises RagError for a string that
    looks like an identity but is not one (e.g. `slack:acme/#finance`: names are not identities)."""
    text = channel.strip()
    if is_qualified(text):
        platform, workspace, ident = text.split(":")
        if platform.lower() not in PLATFORMS:
            raise RagError(f"audience {channel!r}: unknown platform {platform!r}; use {' or '.join(PLATFORMS)}")
        return f"{platform.lower()}:{workspace}:{ident}"
    if ":" in text or "/" in text:
        raise RagError(
            f"audience {channel!r} is not platform:workspace:channel with ids, e.g. slack:T0123ABCD:C0456EFGH or "
            "discord:<server id>:<channel id> (Slack: channel details > About; Discord: Copy ID in developer mode)"
        )
    return text.lstrip("#").strip()


def describe_audience(audience: str) -> str:
    """One audience resolved for people: which platform, workspace/server and channel it names."""
    if is_qualified(audience):
        platform, workspace, channel = audience.split(":")
        where = {"slack": "workspace", "discord": "server"}.get(platform, "workspace")
        space = f"{where} {workspace}" if workspace else "direct messages"
        return f"{audience}\t{platform.capitalize()} {space}, channel {channel}"
    return (f"{audience}\tbare name: no Slack or Discord channel can read it, only `--channel {audience}` on the "
            "operator console; qualify it with an id (`kaizen sources qualify`)")


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

    @property
    def bare_audiences(self) -> list[str]:
        """Audiences that are names rather than identities (readable only from the operator console)."""
        return [c for c in self.channels if not is_qualified(c)]

    def readable_in(self, channel: str | Sequence[str]) -> bool:
        """True when the asking identity (`Turn.audience`; several allowed for the operator's tools) may read it."""
        names = [channel] if isinstance(channel, str) else list(channel)
        if self.public:
            return True
        for name in names:
            try:
                if normalize_channel(name) in self.channels:
                    return True
            except RagError:
                continue  # not an identity nor a name: reads nothing restricted
        return False


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
            self._warn_bare(self._cache[1])
        return self._cache[1]

    @staticmethod
    def _warn_bare(data: dict) -> None:
        for name, raw in sorted(data.get("sources", {}).items()):
            bare = [c for c in raw.get("channels", []) if not is_qualified(c)]
            if bare:
                logger.warning(
                    "source %s: audience %s is a bare name, so no Slack or Discord channel can read it; qualify it "
                    "with `kaizen sources qualify %s --channels platform:workspace:channel`",
                    name, ",".join(bare), name,
                )

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
