"""After --scrub, two answers that differed only in an e-mail address are one answer: a pair of them and a KTO row
labelled both ways teach nothing, so they are dropped (and counted) before anything is written or counted toward
the nightly thresholds. Through `kaizen feedback export` (bot.cli.main) on a real SQLite store."""

from __future__ import annotations

import json

import pytest

from bot.cli import main
from core.config import load_settings
from core.types import Message
from feedback import FeedbackStore
from training.data import check

PROMPT = [Message("user", "Who do I ask about invoices?")]


@pytest.fixture
def store_with_email_twins(isolated_env, monkeypatch, make_reply):
    """One liked and one disliked answer that differ only in the e-mail address; and an ordinary liked/disliked
    couple that survives scrubbing."""
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env / "state"))
    store = FeedbackStore.open(load_settings())
    good = make_reply(answer="Write to ana@corp.example.com.", prompt=PROMPT, thread="t1")
    bad = make_reply(answer="Write to bo@corp.example.com.", prompt=PROMPT, thread="t2")
    other_q = [Message("user", "Where is the printer?")]
    liked = make_reply(answer="Next to the kitchen.", prompt=other_q, thread="t3")
    disliked = make_reply(answer="On floor 9.", prompt=other_q, thread="t4")
    for reply, value in ((good, 1), (bad, -1), (liked, 1), (disliked, -1)):
        store.record(reply=reply)
        store.vote(interaction_id=reply.id, user="U1", value=value)
    yield store
    store.close()


@pytest.mark.parametrize(("kind", "without", "scrubbed", "dropped"), [
    ("pairs", 2, 1, "dropped 1 pair(s) whose chosen equals rejected"),
    ("kto", 4, 2, "dropped 2 kto row(s) labelled both true and false"),
    ("sft", 2, 2, None),
])
def test_scrubbed_export_drops_degenerate_examples(store_with_email_twins, isolated_env, capsys, kind, without,
                                                   scrubbed, dropped):
    store = store_with_email_twins
    assert len(store.examples(kind=kind)) == without
    # What the nightly job counts toward its thresholds is what it writes.
    assert len(store.examples(kind=kind, scrub=True)) == scrubbed
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_:
        main(["feedback", "export", "--format", kind, "--scrub", "--out", str(isolated_env / f"{kind}.jsonl")])
    assert exit_.value.code == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in (isolated_env / f"{kind}.jsonl").read_text().splitlines()]
    assert len(rows) == scrubbed and f"wrote {scrubbed} {kind} example(s)" in out
    if dropped:
        assert dropped in err
    else:
        assert "dropped" not in err
    if kind == "pairs":
        assert all(r["chosen"] != r["rejected"] for r in rows)
    if kind == "kto":
        assert {(r["completion"][0]["content"], r["label"]) for r in rows} == {("Next to the kitchen.", True),
                                                                              ("On floor 9.", False)}


def test_curated_kto_rows_labelled_both_ways_are_skipped_and_counted():
    prompt = [{"role": "user", "content": "Lunch?"}]
    rows = [{"prompt": prompt, "completion": [{"role": "assistant", "content": a}], "label": label}
            for a, label in (("Pizza.", True), ("Pizza. ", False), ("Salad.", True))]
    checked = check(rows, "kto")
    assert [r["completion"][0]["content"] for r in checked.rows] == ["Salad."]
    assert checked.skipped == {"labelled both true and false": 2}
