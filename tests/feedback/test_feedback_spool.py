"""Database unreachable: the answer is still delivered, writes wait in the spool, and are written when it is back."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

import pytest

from feedback import FeedbackStore, StoreUnavailable


def test_sqlite_locked_writes_spool_then_flush_on_next_write(tmp_path, make_reply, caplog):
    db = tmp_path / "kaizen.db"
    store = FeedbackStore.from_url(f"sqlite:///{db}", spool_dir=tmp_path / "spool", busy_timeout_s=0.2)
    first, second, third = make_reply(), make_reply(question="and then?"), make_reply(question="last")
    store.record(reply=first)

    # Another process holds the database for longer than the busy timeout.
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with caplog.at_level(logging.WARNING, logger="feedback.store"):
        assert store.record(reply=second) == "spooled"
        assert store.attach_message_ref(interaction_id=second.id, platform="slack", ref="C:2") == "spooled"
        assert store.vote(interaction_id=second.id, user="U1", value=1) == "spooled"
        assert store.vote(interaction_id=second.id, user="U1", value=-1, reason="wrong") == "spooled"
    assert [e["op"] for e in store.spool.pending()] == ["record", "message_ref", "vote", "vote"]
    assert sum("kept in the spool" in r.getMessage() for r in caplog.records) == 4
    holder.execute("ROLLBACK")
    holder.close()

    # The next write replays the spool first, in order, then writes itself.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="feedback.store"):
        assert store.record(reply=third) == "stored"
    assert "wrote 4 spooled write(s)" in caplog.text
    assert store.spool_pending() == 0 and not store.spool.pending_path.exists()
    assert store.find_by_message_ref(platform="slack", ref="C:2") == second.id
    assert [(v.value, v.reason) for v in store.get_votes(interaction_id=second.id)] == [(-1, "wrong")]
    assert store.get_interaction(interaction_id=third.id) is not None
    store.close()


def test_postgresql_down_then_back(pg_cluster, tmp_path, make_reply, caplog):
    store = FeedbackStore.from_url(pg_cluster.create_database(), spool_dir=tmp_path / "spool")
    before = make_reply()
    store.record(reply=before)
    alternative = make_reply(answer="another answer", sibling_of=before.id)

    pg_cluster.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="feedback.store"):
            # The engine's hook must not raise: the answer is still delivered.
            asyncio.run(store.on_reply(alternative))
            store.vote(interaction_id=before.id, user="U1", value=-1)
        assert "feedback database unreachable" in caplog.text
        with pytest.raises(StoreUnavailable):
            store.flush_spool()
        with pytest.raises(StoreUnavailable):
            store.find_by_message_ref(platform="slack", ref="x")
        assert store.spool_pending() == 2
    finally:
        pg_cluster.start()

    assert store.flush_spool() == 2
    assert store.spool_pending() == 0
    assert [s.id for s in store.siblings(interaction_id=before.id)] == [alternative.id]
    assert [(v.user_id, v.value) for v in store.get_votes(interaction_id=before.id)] == [("U1", -1)]
    store.close()


def test_spooled_write_the_database_refuses_is_kept_aside_not_lost(tmp_path, make_reply, caplog):
    db = tmp_path / "kaizen.db"
    store = FeedbackStore.from_url(f"sqlite:///{db}", spool_dir=tmp_path / "spool", busy_timeout_s=0.2)
    reply = make_reply()
    store.record(reply=reply)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    # While the database is away nobody can check the id, so the vote is spooled ...
    store.vote(interaction_id="no-such-answer", user="U1", value=1)
    store.vote(interaction_id=reply.id, user="U1", value=1)
    holder.execute("ROLLBACK")
    holder.close()

    # ... and on replay the unknown one goes to rejected.jsonl with the reason, the good one is written.
    with caplog.at_level(logging.ERROR, logger="feedback.spool"):
        assert store.flush_spool() == 1
    assert "rejected" in caplog.text
    rejected = [json.loads(line) for line in store.spool.rejected_path.read_text().splitlines()]
    assert len(rejected) == 1 and "unknown interaction 'no-such-answer'" in rejected[0]["error"]
    assert json.loads(rejected[0]["line"])["payload"]["interaction_id"] == "no-such-answer"
    assert [v.user_id for v in store.get_votes(interaction_id=reply.id)] == ["U1"]
    store.close()


def test_store_opened_while_database_is_down_migrates_when_it_is_back(pg_cluster, tmp_path, make_reply):
    url = pg_cluster.create_database()
    pg_cluster.stop()
    try:
        store = FeedbackStore.from_url(url, spool_dir=tmp_path / "spool")
        reply = make_reply()
        assert store.record(reply=reply) == "spooled"
    finally:
        pg_cluster.start()
    assert store.vote(interaction_id=reply.id, user="U1", value=1) == "stored"
    assert store.get_interaction(interaction_id=reply.id).answer == reply.answer
    store.close()
