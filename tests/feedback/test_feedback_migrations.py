"""Upgrading a database that has the first schema and data in it keeps the data."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from feedback import FeedbackStore
from feedback.db import HEAD, current_revision, make_engine, migrate

WHEN = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def _fill_first_schema(engine: sa.Engine) -> None:
    """Rows written the way revision 0001 stored them (reflected tables: no model classes involved)."""
    meta = sa.MetaData()
    meta.reflect(engine, only=["conversations", "interactions", "votes"])
    votes = meta.tables["votes"]
    assert "reason" not in votes.c  # really the first schema
    with engine.begin() as conn:
        conn.execute(
            meta.tables["conversations"].insert(),
            [
                dict(
                    id="c1",
                    platform="slack",
                    workspace="T1",
                    channel="C1",
                    channel_name="general",
                    thread="t",
                    created_at=WHEN,
                )
            ],
        )
        conn.execute(
            meta.tables["interactions"].insert(),
            [
                dict(
                    id=f"i{n}",
                    conversation_id="c1",
                    sibling_of="i1" if n == 2 else None,
                    platform="slack",
                    user_id="U9",
                    question="Where is the VPN guide?",
                    prompt=[{"role": "user", "content": "Where is the VPN guide?"}],
                    sources=[{"id": "wiki/vpn", "title": "", "uri": "", "channels": []}],
                    restricted=False,
                    answer=f"answer {n}",
                    model="smollm2",
                    adapter="",
                    preset="balanced",
                    mode="rag",
                    decoding={"strategy": "greedy"},
                    called_model=True,
                    latency_ms=10.0,
                    first_token_ms=None,
                    prompt_tokens=5,
                    completion_tokens=3,
                    message_ref=f"C1:{n}",
                    created_at=WHEN,
                )
                for n in (1, 2)
            ],
        )
        conn.execute(
            votes.insert(),
            [
                dict(interaction_id="i1", user_id="U1", value=1, created_at=WHEN, updated_at=WHEN),
                dict(interaction_id="i2", user_id="U1", value=-1, created_at=WHEN, updated_at=WHEN),
            ],
        )


def test_upgrade_from_first_schema_keeps_data(db_url, tmp_path):
    engine = make_engine(sa.make_url(db_url))
    migrate(engine, revision="0001")
    assert current_revision(engine) == "0001"
    _fill_first_schema(engine)
    engine.dispose()

    # Opening the store upgrades to head.
    with FeedbackStore.from_url(db_url, spool_dir=tmp_path / "spool") as store:
        assert current_revision(store.engine) == HEAD != "0001"
        first = store.get_interaction(interaction_id="i1")
        assert (first.answer, first.prompt, first.created_at) == (
            "answer 1",
            [{"role": "user", "content": "Where is the VPN guide?"}],
            WHEN,
        )
        assert store.find_by_message_ref(platform="slack", ref="C1:2") == "i2"
        assert [s.id for s in store.siblings(interaction_id="i1")] == ["i2"]
        old = store.get_votes(interaction_id="i1")
        assert [(v.user_id, v.value, v.reason, v.created_at) for v in old] == [("U1", 1, None, WHEN)]

        # The new column works on old rows and new ones.
        store.set_reason(interaction_id="i1", user="U1", reason="found it")
        store.vote(interaction_id="i2", user="U2", value=-1, reason="outdated link")
        assert [(v.user_id, v.value, v.reason) for v in store.get_votes(interaction_id="i2")] == [
            ("U1", -1, None),
            ("U2", -1, "outdated link"),
        ]
        assert store.get_votes(interaction_id="i1")[0].reason == "found it"
        assert store.examples(kind="pairs") == [
            {
                "prompt": [{"role": "user", "content": "Where is the VPN guide?"}],
                "chosen": [{"role": "assistant", "content": "answer 1"}],
                "rejected": [{"role": "assistant", "content": "answer 2"}],
            }
        ]


def test_opening_twice_is_a_no_op(db_url, tmp_path):
    with FeedbackStore.from_url(db_url, spool_dir=tmp_path / "spool") as store:
        assert current_revision(store.engine) == HEAD
    with FeedbackStore.from_url(db_url, spool_dir=tmp_path / "spool") as store:
        assert current_revision(store.engine) == HEAD
