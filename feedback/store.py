"""The feedback store: records every reply, maps platform messages back to it, and keeps one vote per user.

Writes are single transactions built from idempotent statements (insert-or-ignore, upsert), so concurrent
writers in threads or processes neither lose nor duplicate rows, and a spooled write can be replayed safely.
When the database is unreachable a write goes to the local spool (see `feedback.spool`) and is replayed, in
order, before the next write or on `flush_spool()`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlmodel import Session, select

from core.types import Message, Reply, new_id
from feedback.db import database_url, dialect_insert, make_engine, migrate
from feedback.models import Conversation, Correction, Interaction, Vote
from feedback.spool import Spool, SpoolEntryRejected

if TYPE_CHECKING:
    from core.config import Settings
    from feedback.preferences import ExportKind, FeedbackStats

__all__ = ["FeedbackError", "FeedbackStore", "StoreUnavailable", "UnknownInteraction", "WriteStatus"]

logger = logging.getLogger(__name__)

WriteStatus = Literal["stored", "spooled"]

# Errors that mean "the database cannot be reached right now", as opposed to "this write is wrong".
_UNREACHABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
_MAX_ID = 32


class FeedbackError(Exception):
    """A feedback operation that cannot be done as asked; the message says why. Nothing was written."""


class UnknownInteraction(FeedbackError, LookupError):
    def __init__(self, interaction_id: str) -> None:
        super().__init__(f"unknown interaction {interaction_id!r}: no answer with this id was recorded")
        self.interaction_id = interaction_id


class StoreUnavailable(FeedbackError):
    """The database cannot be reached for a read (writes go to the spool instead)."""


def _utc_iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: Kaizen records UTC timestamps only")
    return value.astimezone(UTC).isoformat()


def _check_id(name: str, value: str) -> None:
    if not value or len(value) > _MAX_ID:
        raise ValueError(f"{name} must be 1 to {_MAX_ID} characters, got {value!r}")


def _message_dict(message: Message | dict[str, Any]) -> dict[str, str]:
    if isinstance(message, Message):
        return message.as_dict()
    return {"role": str(message["role"]), "content": str(message["content"])}


def _record_payload(reply: Reply) -> dict[str, Any]:
    """Everything kept about one reply, as JSON-ready values (the same dict goes to the DB or the spool)."""
    _check_id("reply.id", reply.id)
    if reply.sibling_of is not None:
        _check_id("reply.sibling_of", reply.sibling_of)
    turn = reply.turn
    sources = [{"id": s.id, "title": s.title, "uri": s.uri, "channels": list(s.channels)} for s in reply.sources]
    return {
        "id": reply.id,
        "sibling_of": reply.sibling_of,
        "conversation": {
            "platform": turn.platform,
            "workspace": turn.workspace,
            "channel": turn.channel,
            "channel_name": turn.channel_name,
            "thread": turn.thread,
        },
        "user_id": turn.user,
        "question": turn.text,
        "prompt": [_message_dict(m) for m in reply.prompt],
        "sources": sources,
        "restricted": any(s["channels"] for s in sources),
        "answer": reply.answer,
        "model": reply.model,
        "adapter": reply.adapter,
        "preset": reply.preset,
        "mode": reply.mode,
        # Round-trip through JSON so the stored settings are exactly what a reload would give.
        "decoding": json.loads(json.dumps(reply.decoding, default=str)),
        "called_model": reply.called_model,
        "latency_ms": float(reply.latency_ms),
        "first_token_ms": None if reply.first_token_ms is None else float(reply.first_token_ms),
        "prompt_tokens": int(reply.prompt_tokens),
        "completion_tokens": int(reply.completion_tokens),
        "created_at": _utc_iso(reply.created_at),
    }


class FeedbackStore:
    """Open with `FeedbackStore.open(settings)`; every method is keyword-only and safe to call from threads."""

    def __init__(self, engine: sa.Engine, *, spool_dir: Path) -> None:
        self.engine = engine
        self.spool = Spool(spool_dir)
        self._migrated = False
        self._insert = dialect_insert(engine)
        try:
            self._ensure_migrated()
        except _UNREACHABLE as e:
            # Answers must still be delivered: writes spool until the database is reachable.
            logger.warning("feedback database unreachable at start (%s); writes go to %s", _short(e), spool_dir)

    @classmethod
    def open(cls, settings: Settings, *, busy_timeout_s: float = 30.0) -> FeedbackStore:
        """SQLite at `data_dir/kaizen.db` unless `database_url` names another database; spool in `data_dir/spool`."""
        url = database_url(data_dir=settings.data_dir, url=settings.database_url)
        return cls(make_engine(url, busy_timeout_s=busy_timeout_s), spool_dir=Path(settings.data_dir) / "spool")

    @classmethod
    def from_url(cls, url: str, *, spool_dir: Path, busy_timeout_s: float = 30.0) -> FeedbackStore:
        """A store on an explicit SQLAlchemy URL (sqlite:///... or postgresql+psycopg://...)."""
        if not url:
            raise ValueError("a database URL is required (FeedbackStore.open(settings) picks the default)")
        engine = make_engine(database_url(data_dir=Path(spool_dir), url=url), busy_timeout_s=busy_timeout_s)
        return cls(engine, spool_dir=spool_dir)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_migrated(self) -> None:
        if not self._migrated:
            migrate(self.engine)
            self._migrated = True

    # ---- writes -------------------------------------------------------------------------------------------

    def record(self, *, reply: Reply) -> WriteStatus:
        """Keep one reply (idempotent: recording the same id twice keeps one row)."""
        return self._write("record", _record_payload(reply))

    def attach_message_ref(self, *, interaction_id: str, platform: str, ref: str) -> WriteStatus:
        """After posting, remember the platform's message reference so reactions map back to the interaction."""
        if not ref:
            raise ValueError("message ref must not be empty")
        return self._write("message_ref", {"interaction_id": interaction_id, "platform": platform, "ref": ref})

    def vote(self, *, interaction_id: str, user: str, value: int, reason: str | None = None) -> WriteStatus:
        """Set `user`'s vote (+1 or -1) on an interaction; a second vote by the same user replaces the first."""
        if value not in (1, -1):
            raise ValueError(f"a vote is +1 or -1, got {value!r}")
        if not user:
            raise ValueError("a vote needs a user")
        at = _utc_iso(datetime.now(UTC))
        payload = {"interaction_id": interaction_id, "user": user, "value": value, "reason": reason, "at": at}
        return self._write("vote", payload)

    def retract_vote(self, *, interaction_id: str, user: str) -> WriteStatus:
        """Remove `user`'s vote (the reaction was removed); retracting a vote that is not there is a no-op."""
        return self._write("retract", {"interaction_id": interaction_id, "user": user})

    def set_reason(self, *, interaction_id: str, user: str, reason: str | None) -> WriteStatus:
        """Give (or clear, with None) the reason for `user`'s existing vote."""
        at = _utc_iso(datetime.now(UTC))
        return self._write("reason", {"interaction_id": interaction_id, "user": user, "reason": reason, "at": at})

    def record_correction(self, *, interaction_id: str, user: str, text: str, platform: str) -> WriteStatus:
        """Keep `user`'s corrected text for an answer, made on `platform` (slack, discord, console, cli).

        Training takes it as a liked answer (SFT) and as chosen over the model's answer (pairs), under the same
        permission and scrubbing rules as votes. Correcting again replaces the text. Raises ValueError for an
        empty text or user, UnknownInteraction (when stored) for an unknown id.
        """
        from core.text import clean_text, is_blank

        text = clean_text(text).strip()
        if is_blank(text):
            raise ValueError("a correction needs the corrected answer's text")
        if not user or not platform:
            raise ValueError("a correction needs a user and the platform it was made on")
        at = _utc_iso(datetime.now(UTC))
        payload = {"interaction_id": interaction_id, "user": user, "text": text, "platform": platform, "at": at}
        return self._write("correct", payload)

    def flush_spool(self) -> int:
        """Write every spooled write now; returns how many. Raises StoreUnavailable if the database is still down."""
        try:
            self._ensure_migrated()
            return self._replay_spool()
        except _UNREACHABLE as e:
            raise StoreUnavailable(f"feedback database still unreachable ({_short(e)})") from e

    def spool_pending(self) -> int:
        return len(self.spool.pending())

    async def on_reply(self, reply: Reply) -> None:
        """The engine's `on_reply` hook: records in a worker thread so the event loop keeps serving."""
        await asyncio.to_thread(self.record, reply=reply)

    async def arecord(self, *, reply: Reply) -> WriteStatus:
        return await asyncio.to_thread(self.record, reply=reply)

    async def aattach_message_ref(self, *, interaction_id: str, platform: str, ref: str) -> WriteStatus:
        return await asyncio.to_thread(
            self.attach_message_ref, interaction_id=interaction_id, platform=platform, ref=ref
        )

    async def avote(self, *, interaction_id: str, user: str, value: int, reason: str | None = None) -> WriteStatus:
        return await asyncio.to_thread(self.vote, interaction_id=interaction_id, user=user, value=value, reason=reason)

    async def arecord_correction(self, *, interaction_id: str, user: str, text: str, platform: str) -> WriteStatus:
        return await asyncio.to_thread(
            self.record_correction, interaction_id=interaction_id, user=user, text=text, platform=platform
        )

    async def aretract_vote(self, *, interaction_id: str, user: str) -> WriteStatus:
        return await asyncio.to_thread(self.retract_vote, interaction_id=interaction_id, user=user)

    async def aset_reason(self, *, interaction_id: str, user: str, reason: str | None) -> WriteStatus:
        return await asyncio.to_thread(self.set_reason, interaction_id=interaction_id, user=user, reason=reason)

    async def afind_by_message_ref(self, *, platform: str, ref: str) -> str | None:
        return await asyncio.to_thread(self.find_by_message_ref, platform=platform, ref=ref)

    def _write(self, op: str, payload: dict[str, Any]) -> WriteStatus:
        try:
            self._ensure_migrated()
            # Older spooled writes go first, so the database sees every write in the order it was made.
            if self.spool.has_pending():
                self._replay_spool()
            self._apply(op, payload)
            return "stored"
        except _UNREACHABLE as e:
            self.spool.append(op=op, payload=payload)
            logger.warning(
                "feedback database unreachable (%s): %s for %s kept in the spool %s until it is back",
                _short(e),
                op,
                payload.get("id") or payload.get("interaction_id"),
                self.spool.pending_path,
            )
            return "spooled"

    def _replay_spool(self) -> int:
        def apply(op: str, payload: dict[str, Any]) -> None:
            try:
                self._apply(op, payload)
            except _UNREACHABLE:
                raise
            except (FeedbackError, sa_exc.DBAPIError) as e:
                # The database is there but refuses this entry: set it aside instead of blocking the rest.
                raise SpoolEntryRejected(_short(e)) from e

        written = self.spool.replay(apply)
        if written:
            logger.warning("feedback database reachable again: wrote %d spooled write(s)", written)
        return written

    def _apply(self, op: str, payload: dict[str, Any]) -> None:
        match op:
            case "record":
                self._insert_interaction(payload)
            case "message_ref":
                self._set_message_ref(**payload)
            case "vote":
                self._upsert_vote(**payload)
            case "retract":
                self._delete_vote(**payload)
            case "reason":
                self._update_reason(**payload)
            case "correct":
                self._upsert_correction(**payload)
            case _:
                raise ValueError(f"unknown feedback write {op!r}")

    def _insert_interaction(self, p: dict[str, Any]) -> None:
        conv = p["conversation"]
        created = datetime.fromisoformat(p["created_at"])
        conversations = Conversation.__table__
        row = {k: v for k, v in p.items() if k != "conversation"} | {
            "platform": conv["platform"],
            "created_at": created,
        }
        try:
            with self.engine.begin() as conn:
                # Get-or-create the conversation without a read-then-write race between writers.
                conn.execute(
                    self._insert(conversations)
                    .values(id=new_id(), created_at=created, **conv)
                    .on_conflict_do_nothing(index_elements=["platform", "workspace", "channel", "thread"])
                )
                key = [conversations.c[name] == value for name, value in conv.items() if name != "channel_name"]
                row["conversation_id"] = conn.execute(sa.select(conversations.c.id).where(*key)).scalar_one()
                conn.execute(
                    self._insert(Interaction.__table__).values(**row).on_conflict_do_nothing(index_elements=["id"])
                )
        except sa_exc.IntegrityError:
            # A missing sibling is bad input with a clear name; anything else is a bug and stays as it is.
            if p["sibling_of"] is not None:
                with self.engine.connect() as conn:
                    self._require_interaction(conn, p["sibling_of"])
            raise

    def _set_message_ref(self, *, interaction_id: str, platform: str, ref: str) -> None:
        table = Interaction.__table__
        with self.engine.begin() as conn:
            try:
                done = conn.execute(
                    sa.update(table)
                    .where(table.c.id == interaction_id, table.c.platform == platform)
                    .values(message_ref=ref)
                ).rowcount
            except sa_exc.IntegrityError as e:
                raise FeedbackError(f"{platform} message {ref!r} already belongs to another interaction") from e
            if not done:
                found = conn.execute(sa.select(table.c.platform).where(table.c.id == interaction_id)).scalar()
                if found is None:
                    raise UnknownInteraction(interaction_id)
                raise FeedbackError(f"interaction {interaction_id!r} was answered on {found!r}, not {platform!r}")

    def _upsert_vote(self, *, interaction_id: str, user: str, value: int, reason: str | None, at: str) -> None:
        votes = Vote.__table__
        when = datetime.fromisoformat(at)
        stmt = self._insert(votes).values(
            interaction_id=interaction_id, user_id=user, value=value, reason=reason, created_at=when, updated_at=when
        )
        new = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["interaction_id", "user_id"],
            set_={
                "value": new.value,
                "updated_at": new.updated_at,
                # A new reason wins; the same vote keeps its reason; a changed vote drops the old one.
                "reason": sa.case(
                    (new.reason.is_not(None), new.reason), (votes.c.value == new.value, votes.c.reason), else_=None
                ),
            },
            # A replayed (older) spooled vote never overwrites a newer one.
            where=votes.c.updated_at <= new.updated_at,
        )
        with self.engine.begin() as conn:
            try:
                conn.execute(stmt)
            except sa_exc.IntegrityError as e:
                raise UnknownInteraction(interaction_id) from e

    def _upsert_correction(self, *, interaction_id: str, user: str, text: str, platform: str, at: str) -> None:
        table = Correction.__table__
        when = datetime.fromisoformat(at)
        stmt = self._insert(table).values(interaction_id=interaction_id, user_id=user, platform=platform, text=text,
                                          created_at=when, updated_at=when)
        new = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["interaction_id", "user_id"],
            set_={"text": new.text, "platform": new.platform, "updated_at": new.updated_at},
            where=table.c.updated_at <= new.updated_at,  # a replayed older correction never wins
        )
        with self.engine.begin() as conn:
            try:
                conn.execute(stmt)
            except sa_exc.IntegrityError as e:
                raise UnknownInteraction(interaction_id) from e

    def _delete_vote(self, *, interaction_id: str, user: str) -> None:
        votes = Vote.__table__
        with self.engine.begin() as conn:
            self._require_interaction(conn, interaction_id)
            conn.execute(sa.delete(votes).where(votes.c.interaction_id == interaction_id, votes.c.user_id == user))

    def _update_reason(self, *, interaction_id: str, user: str, reason: str | None, at: str) -> None:
        votes = Vote.__table__
        with self.engine.begin() as conn:
            done = conn.execute(
                sa.update(votes)
                .where(votes.c.interaction_id == interaction_id, votes.c.user_id == user)
                .values(reason=reason, updated_at=datetime.fromisoformat(at))
            ).rowcount
            if not done:
                self._require_interaction(conn, interaction_id)
                raise FeedbackError(f"{user!r} has not voted on {interaction_id!r}; vote first, then give a reason")

    @staticmethod
    def _require_interaction(conn: sa.Connection, interaction_id: str) -> None:
        table = Interaction.__table__
        if conn.execute(sa.select(table.c.id).where(table.c.id == interaction_id)).scalar() is None:
            raise UnknownInteraction(interaction_id)

    # ---- reads --------------------------------------------------------------------------------------------

    def _read(self, fn: Callable[[Session], Any]) -> Any:
        try:
            self._ensure_migrated()
            if self.spool.has_pending():
                # A reaction may refer to a message whose reference is still in the spool.
                self._replay_spool()
            with Session(self.engine, expire_on_commit=False) as session:
                return fn(session)
        except _UNREACHABLE as e:
            raise StoreUnavailable(f"feedback database unreachable ({_short(e)})") from e

    def find_by_message_ref(self, *, platform: str, ref: str) -> str | None:
        """The interaction a posted platform message belongs to, or None."""
        stmt = select(Interaction.id).where(Interaction.platform == platform, Interaction.message_ref == ref)
        return self._read(lambda s: s.exec(stmt).first())

    def get_interaction(self, *, interaction_id: str) -> Interaction | None:
        return self._read(lambda s: s.get(Interaction, interaction_id))

    def get_conversation(self, *, conversation_id: str) -> Conversation | None:
        return self._read(lambda s: s.get(Conversation, conversation_id))

    def get_votes(self, *, interaction_id: str) -> list[Vote]:
        stmt = select(Vote).where(Vote.interaction_id == interaction_id).order_by(Vote.user_id)
        return self._read(lambda s: list(s.exec(stmt).all()))

    def get_corrections(self, *, interaction_id: str) -> list[Correction]:
        """The corrections made to an answer, oldest first."""
        stmt = select(Correction).where(Correction.interaction_id == interaction_id).order_by(Correction.created_at)
        return self._read(lambda s: list(s.exec(stmt).all()))

    def siblings(self, *, interaction_id: str) -> list[Interaction]:
        """The alternatives recorded for an interaction (oldest first)."""
        stmt = select(Interaction).where(Interaction.sibling_of == interaction_id).order_by(Interaction.created_at)
        return self._read(lambda s: list(s.exec(stmt).all()))

    def examples(
        self,
        *,
        kind: ExportKind,
        since: datetime | None = None,
        until: datetime | None = None,
        audience: str = "public",
        scrub: bool = False,
    ) -> list[dict[str, Any]]:
        """Training examples in trl's conversational format (see `feedback.preferences`) from the feedback given
        in [since, until) (UTC; by when the vote or correction was made, not when the answer was given)."""
        from feedback.preferences import build_examples, load_answers

        answers = self._read(lambda s: load_answers(s.connection(), since=since, until=until))
        return build_examples(answers, kind=kind, audience=audience, scrub=scrub)

    def export(
        self,
        *,
        kind: ExportKind,
        out: Path,
        since: datetime | None = None,
        until: datetime | None = None,
        audience: str = "public",
        scrub: bool = False,
    ) -> int:
        """Write `examples(...)` as JSONL to `out` (atomically); returns the number of examples."""
        from feedback.preferences import write_jsonl

        rows = self.examples(kind=kind, since=since, until=until, audience=audience, scrub=scrub)
        write_jsonl(rows, Path(out))
        return len(rows)

    def stats(self, *, since: datetime | None = None, audience: str = "public") -> FeedbackStats:
        from feedback.preferences import compute_stats

        return self._read(lambda s: compute_stats(s.connection(), since=since, audience=audience))


def _short(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text[0] if text else type(error).__name__
