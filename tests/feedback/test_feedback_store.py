"""Recording, message references, votes and siblings on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from core.config import Settings
from core.types import Source
from feedback import FeedbackError, FeedbackStore, UnknownInteraction
from feedback.db import HEAD, current_revision
from feedback.models import TABLES, Conversation, Interaction, SQLModel, Vote


def count(store: FeedbackStore, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_record_keeps_the_exact_reply(store, make_reply):
    restricted = Source(id="hr/policy.md#2", text="secret", title="HR policy", uri="file://hr", channels=("C-hr",))
    public = Source(id="wiki/vpn.md#1", text="VPN", title="VPN", uri="file://vpn")
    reply = make_reply(sources=(restricted, public), adapter="2025-11-20")

    assert store.record(reply=reply) == "stored"
    got = store.get_interaction(interaction_id=reply.id)

    assert got.prompt == [m.as_dict() for m in reply.prompt]
    assert got.sources == [
        {"id": "hr/policy.md#2", "title": "HR policy", "uri": "file://hr", "channels": ["C-hr"]},
        {"id": "wiki/vpn.md#1", "title": "VPN", "uri": "file://vpn", "channels": []},
    ]
    assert got.restricted is True
    assert (got.answer, got.question, got.user_id, got.platform) == (
        reply.answer,
        reply.turn.text,
        "U-asker",
        "slack",
    )
    assert (got.model, got.adapter, got.preset, got.mode) == ("smollm2-135m", "2025-11-20", "balanced", "rag")
    assert got.decoding == reply.decoding
    assert (got.prompt_tokens, got.completion_tokens, got.latency_ms, got.first_token_ms) == (42, 17, 123.5, 40.25)
    assert got.created_at == reply.created_at and got.created_at.tzinfo == UTC
    assert got.message_ref is None and got.sibling_of is None


def test_same_thread_is_one_conversation_and_recording_twice_keeps_one_row(store, make_reply):
    first, second = make_reply(), make_reply(question="And on a Mac?")
    other_thread = make_reply(thread="1700000000.000999")
    for reply in (first, second, other_thread, first):
        store.record(reply=reply)

    assert count(store, Interaction.__table__) == 3
    assert count(store, Conversation.__table__) == 2
    a, b = (store.get_interaction(interaction_id=r.id) for r in (first, second))
    assert a.conversation_id == b.conversation_id
    conv = store.get_conversation(conversation_id=a.conversation_id)
    assert (conv.platform, conv.workspace, conv.channel, conv.channel_name, conv.thread) == (
        "slack",
        "T1",
        "C-general",
        "general",
        "1700000000.000100",
    )


def test_message_reference_maps_reactions_back(store, make_reply):
    reply, other = make_reply(), make_reply()
    store.record(reply=reply)
    store.record(reply=other)

    store.attach_message_ref(interaction_id=reply.id, platform="slack", ref="C-general:1700000001.1")
    store.attach_message_ref(interaction_id=reply.id, platform="slack", ref="C-general:1700000001.1")  # idempotent

    assert store.find_by_message_ref(platform="slack", ref="C-general:1700000001.1") == reply.id
    assert store.find_by_message_ref(platform="discord", ref="C-general:1700000001.1") is None
    assert store.find_by_message_ref(platform="slack", ref="nothing") is None
    with pytest.raises(FeedbackError, match="already belongs to another interaction"):
        store.attach_message_ref(interaction_id=other.id, platform="slack", ref="C-general:1700000001.1")
    with pytest.raises(FeedbackError, match="answered on 'slack', not 'discord'"):
        store.attach_message_ref(interaction_id=other.id, platform="discord", ref="123")
    with pytest.raises(UnknownInteraction):
        store.attach_message_ref(interaction_id="0" * 32, platform="slack", ref="x")
    assert store.get_interaction(interaction_id=other.id).message_ref is None


def test_one_vote_per_user_updated_and_retracted(store, make_reply):
    reply = make_reply()
    store.record(reply=reply)

    def votes() -> list[tuple[str, int, str | None]]:
        return [(v.user_id, v.value, v.reason) for v in store.get_votes(interaction_id=reply.id)]

    store.vote(interaction_id=reply.id, user="U1", value=1, reason="clear steps")
    store.vote(interaction_id=reply.id, user="U2", value=-1)
    first_time = store.get_votes(interaction_id=reply.id)[0].created_at
    # The same vote again keeps its reason; a changed vote drops the reason that was about the old one.
    store.vote(interaction_id=reply.id, user="U1", value=1)
    assert votes() == [("U1", 1, "clear steps"), ("U2", -1, None)]
    store.vote(interaction_id=reply.id, user="U1", value=-1)
    assert votes() == [("U1", -1, None), ("U2", -1, None)]
    changed = store.get_votes(interaction_id=reply.id)[0]
    assert changed.created_at == first_time and changed.updated_at >= first_time

    store.set_reason(interaction_id=reply.id, user="U1", reason="the portal link is dead")
    assert votes()[0] == ("U1", -1, "the portal link is dead")
    store.retract_vote(interaction_id=reply.id, user="U1")
    store.retract_vote(interaction_id=reply.id, user="U1")  # reaction removed twice: still fine
    assert votes() == [("U2", -1, None)]
    with pytest.raises(FeedbackError, match="has not voted"):
        store.set_reason(interaction_id=reply.id, user="U1", reason="late")
    assert count(store, Vote.__table__) == 1


def test_vote_on_unknown_interaction_is_a_clear_error_and_writes_nothing(store, make_reply):
    store.record(reply=make_reply())
    for call in (
        lambda: store.vote(interaction_id="deadbeef", user="U1", value=1, reason="x"),
        lambda: store.retract_vote(interaction_id="deadbeef", user="U1"),
        lambda: store.set_reason(interaction_id="deadbeef", user="U1", reason="x"),
    ):
        with pytest.raises(UnknownInteraction, match="unknown interaction 'deadbeef'"):
            call()
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        store.vote(interaction_id="deadbeef", user="U1", value=0)
    assert count(store, Vote.__table__) == 0
    assert store.spool_pending() == 0


def test_alternative_answers_point_at_their_sibling(store, make_reply):
    first = make_reply()
    second = make_reply(answer="Ask IT on #help.", sibling_of=first.id)
    store.record(reply=first)
    store.record(reply=second)
    assert [s.id for s in store.siblings(interaction_id=first.id)] == [second.id]

    orphan = make_reply(sibling_of="f" * 32)
    with pytest.raises(UnknownInteraction, match="f" * 32):
        store.record(reply=orphan)
    assert store.get_interaction(interaction_id=orphan.id) is None
    assert store.spool_pending() == 0


def test_schema_is_the_models_at_head(store):
    names = {t.name for t in TABLES}
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": lambda o, n, t, r, c: t != "table" or n in names}
        )
        assert compare_metadata(ctx, SQLModel.metadata) == []
    assert current_revision(store.engine) == HEAD == "0005"


def test_sqlite_default_location_wal_and_foreign_keys(tmp_path, make_reply):
    settings = Settings(data_dir=tmp_path / "state")
    with FeedbackStore.open(settings) as store:
        store.record(reply=make_reply())
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert (tmp_path / "state" / "kaizen.db").is_file()


def test_database_url_selects_postgresql(pg_cluster, tmp_path, make_reply):
    url = pg_cluster.create_database()
    # A plain postgresql:// URL (as people write it) means psycopg 3.
    settings = Settings(data_dir=tmp_path, database_url=url.replace("postgresql+psycopg://", "postgresql://"))
    with FeedbackStore.open(settings) as store:
        assert store.engine.dialect.name == "postgresql"
        reply = make_reply()
        store.record(reply=reply)
        assert store.get_interaction(interaction_id=reply.id).answer == reply.answer
    assert not (tmp_path / "kaizen.db").exists()


async def test_on_reply_does_not_block_the_event_loop(tmp_path, make_reply):
    db = tmp_path / "kaizen.db"
    store = FeedbackStore.from_url(f"sqlite:///{db}", spool_dir=tmp_path / "spool", busy_timeout_s=10)
    # Another writer holds the database, so recording has to wait for it.
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    reply = make_reply()
    task = asyncio.create_task(store.on_reply(reply))
    ticks = 0
    for _ in range(20):
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 20 and not task.done()  # the loop kept running while the record waited
    holder.execute("ROLLBACK")
    await task
    holder.close()
    assert store.get_interaction(interaction_id=reply.id) is not None
    assert store.spool_pending() == 0
    store.close()


def test_naive_timestamps_are_refused(store, make_reply):
    reply = make_reply(created_at=datetime(2025, 1, 1, 12, 0))
    with pytest.raises(ValueError, match="naive datetime"):
        store.record(reply=reply)
    assert not Path(store.spool.pending_path).exists()
