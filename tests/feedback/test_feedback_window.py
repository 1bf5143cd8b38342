"""Export windows follow when feedback was given, so consecutive windows use every vote exactly once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from core.types import Message


def _now() -> datetime:
    # Vote timestamps are taken by the store; a tick apart keeps the boundaries unambiguous on every clock.
    time.sleep(0.01)
    at = datetime.now(UTC)
    time.sleep(0.01)
    return at


def _texts(rows: list[dict], key: str = "messages") -> list[str]:
    return [r[key][-1]["content"] for r in rows]


def test_a_late_vote_on_an_old_answer_is_in_the_next_window_and_no_later_one(store, make_reply):
    q = [Message("user", "Where is the printer?")]
    month_ago = datetime.now(UTC) - timedelta(days=30)
    old = make_reply(answer="Floor 3, next to the kitchen.", prompt=q, thread="t-old", created_at=month_ago)
    old_sibling = make_reply(answer="Ask someone.", prompt=q, thread="t-old", sibling_of=old.id,
                             created_at=month_ago)
    fresh = make_reply(answer="Use the portal.", prompt=[Message("user", "VPN?")], thread="t-new")
    for reply in (old, old_sibling, fresh):
        store.record(reply=reply)
    start = _now()
    store.vote(interaction_id=fresh.id, user="U1", value=1)
    run1 = _now()  # night 1 ends here: the old answers have no vote yet
    assert _texts(store.examples(kind="sft", since=start, until=run1)) == ["Use the portal."]

    # After night 1: votes on the month-old answer and its sibling (an alternative answer).
    store.vote(interaction_id=old.id, user="U2", value=1)
    store.vote(interaction_id=old_sibling.id, user="U2", value=-1)
    run2 = _now()
    assert _texts(store.examples(kind="sft", since=run1, until=run2)) == ["Floor 3, next to the kitchen."]
    pairs = store.examples(kind="pairs", since=run1, until=run2)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("Floor 3, next to the kitchen.", "Ask someone.")
    ]

    # Night 3: nothing new, so nothing is used again — neither the late votes nor night 1's.
    run3 = _now()
    for kind in ("sft", "pairs", "kto"):
        assert store.examples(kind=kind, since=run2, until=run3) == []

    # A changed vote is a new opinion: it counts in the window it was changed in, with its new value.
    store.vote(interaction_id=fresh.id, user="U1", value=-1)
    kto = store.examples(kind="kto", since=run3, until=_now())
    assert [(k["completion"][0]["content"], k["label"]) for k in kto] == [("Use the portal.", False)]
    # Across all windows so far each vote is counted once, by its latest value.
    assert sorted(_texts(store.examples(kind="sft"))) == ["Floor 3, next to the kitchen."]
