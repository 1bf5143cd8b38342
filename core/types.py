"""Platform-neutral values that cross between front ends, the engine and the feedback store."""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["OPERATOR_PLATFORM", "Message", "Reply", "Source", "TraceStep", "Turn", "audience_of", "is_qualified",
           "new_id", "utcnow"]

Role = Literal["system", "user", "assistant", "tool"]


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


# The platform of the operator's own console (`kaizen ask/chat --channel`): only someone with shell access on
# the server asks from it, so it may ask as any channel, and bare-name audiences are readable from it.
OPERATOR_PLATFORM = "console"
_QUALIFIED = re.compile(r"^([a-z][a-z0-9_-]*):([^:\s]*):([^:\s]+)$")


def is_qualified(audience: str) -> bool:
    """True for an identity `platform:workspace:channel` (e.g. "slack:T0123:C0456"), False for a bare name."""
    return bool(_QUALIFIED.match(audience.strip()))


def audience_of(platform: str, workspace: str, channel: str) -> str:
    """The identity access is decided by (see core/rag/sources.py): `platform:workspace:channel`, ids only.

    On the operator console a channel that is already an identity (`--channel slack:T0123:C0456`) is asked as
    that identity, and a plain name stays a bare name (`--channel finance` reads bare-name audiences)."""
    platform, workspace, channel = platform.strip().lower(), workspace.strip(), channel.strip()
    if platform == OPERATOR_PLATFORM:
        if is_qualified(channel):
            p, w, c = _QUALIFIED.match(channel).groups()
            return f"{p}:{w}:{c}"
        return channel.lstrip("#").strip()
    return f"{platform}:{workspace}:{channel}"


@dataclass(frozen=True)
class Turn:
    """One incoming message, as every front end translates it."""

    text: str
    platform: str = "console"
    workspace: str = ""
    channel: str = ""
    channel_name: str = ""
    thread: str = ""
    user: str = ""
    # Per-message choices; None means the channel profile's.
    preset: str | None = None
    mode: str | None = None
    decoding: dict[str, Any] | None = None
    # A front end that reads the platform's thread passes it here; otherwise the engine's memory is used.
    history: tuple[Message, ...] | None = None

    @property
    def conversation_key(self) -> tuple[str, str, str, str]:
        return (self.platform, self.workspace, self.channel, self.thread)

    @property
    def audience(self) -> str:
        """Where the question was asked, as access is decided: "slack:T0123:C0456", "discord:<guild>:<channel>"
        ("" workspace for DMs); on the operator console the `--channel` as given (see `audience_of`)."""
        return audience_of(self.platform, self.workspace, self.channel)


@dataclass(frozen=True)
class Source:
    """A passage an answer drew on (a document excerpt, a fetched page, a company tool's result), with the
    audiences allowed to read it (empty = public; identities as in core/rag/sources.py)."""

    id: str
    text: str
    title: str = ""
    uri: str = ""
    source: str = ""
    score: float = 0.0
    channels: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TraceStep:
    """One thing the engine did: `kind` is e.g. prompt, trim, reasoning, retrieve, thought, action."""

    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    answer: str
    turn: Turn
    id: str = field(default_factory=new_id)
    sources: list[Source] = field(default_factory=list)
    trace: list[TraceStep] = field(default_factory=list)
    # Exactly what the model saw.
    prompt: list[Message] = field(default_factory=list)
    model: str = ""
    adapter: str = ""
    preset: str = ""
    mode: str = "chat"
    decoding: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    first_token_ms: float | None = None
    # Set when this reply is an alternative ("try another answer") to an earlier one.
    sibling_of: str | None = None
    called_model: bool = True
    created_at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d
