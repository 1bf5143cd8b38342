"""Corrections: kept with who made them and where, and exported as the best data there is — an SFT example and a
pair (correction chosen over the model's answer) — under the same permission and scrubbing rules as votes."""

from __future__ import annotations

import pytest

from core.types import Message, Source
from feedback import FeedbackStore, UnknownInteraction

HR_DOC = Source(id="hr/salaries.md#1", text="salary bands", title="Salaries", channels=("C-hr",))
Q = [Message("system", "You are Kaizen."), Message("user", "How many legs does a spider have?")]


def _last(rows: list[dict], key: str) -> list[str]:
    return [r[key][-1]["content"] for r in rows]


def test_a_correction_becomes_an_sft_example_a_pair_and_a_liked_kto_row(store: FeedbackStore, make_reply):
    wrong = make_reply(answer="A spider has six legs.", prompt=Q)
    store.record(reply=wrong)
    assert store.record_correction(interaction_id=wrong.id, user="U-ana", text=" A spider has eight legs. ",
                                   platform="slack") == "stored"

    [fix] = store.get_corrections(interaction_id=wrong.id)
    assert (fix.user_id, fix.platform, fix.text) == ("U-ana", "slack", "A spider has eight legs.")
    assert fix.created_at.tzinfo is not None
    prompt = [m.as_dict() for m in Q]
    # "kept": the model's own words the person left as they were ("A spider has"), which SFT leaves out of the loss.
    fixed = [{"role": "assistant", "content": "A spider has eight legs."}]
    assert store.examples(kind="sft") == [{"messages": prompt + fixed, "origin": "correction",
                                           "kept": len("A spider has")}]
    assert store.examples(kind="pairs") == [{
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": "A spider has eight legs."}],
        "rejected": [{"role": "assistant", "content": "A spider has six legs."}],
    }]
    kto = {(r["completion"][0]["content"], r["label"]) for r in store.examples(kind="kto")}
    assert kto == {("A spider has eight legs.", True), ("A spider has six legs.", False)}

    # Correcting again replaces the text; the person's earlier 👍 on the model's answer is overruled by it.
    store.vote(interaction_id=wrong.id, user="U-ana", value=1)
    store.record_correction(interaction_id=wrong.id, user="U-ana", text="Eight.", platform="console")
    [fix] = store.get_corrections(interaction_id=wrong.id)
    assert (fix.text, fix.platform) == ("Eight.", "console")
    assert _last(store.examples(kind="sft"), "messages") == ["Eight."]
    assert "kept" not in store.examples(kind="sft")[0]  # nothing of the model's answer kept


def test_corrections_follow_permission_and_scrubbing(store: FeedbackStore, make_reply):
    secret = make_reply(answer="L3 is 60k.", prompt=[Message("user", "Salary band for L3?")], sources=(HR_DOC,),
                        thread="t-hr")
    public = make_reply(answer="Ask HR.", prompt=[Message("user", "Who runs payroll?")], thread="t-pay")
    for reply in (secret, public):
        store.record(reply=reply)
    store.record_correction(interaction_id=secret.id, user="U1", text="L3 is 70-80k.", platform="discord")
    store.record_correction(interaction_id=public.id, user="U1", text="Mail payroll@example.com.", platform="cli")

    assert _last(store.examples(kind="sft", scrub=True), "messages") == ["Mail [email]."]
    assert _last(store.examples(kind="pairs", scrub=True), "chosen") == ["Mail [email]."]
    hr = store.examples(kind="pairs", audience="C-hr")
    assert ("L3 is 70-80k.", "L3 is 60k.") in {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in hr}


def test_bad_corrections_are_refused_with_a_reason(store: FeedbackStore, make_reply):
    reply = make_reply()
    store.record(reply=reply)
    with pytest.raises(ValueError, match="corrected answer's text"):
        store.record_correction(interaction_id=reply.id, user="U1", text=" \u200b ", platform="cli")
    with pytest.raises(UnknownInteraction):
        store.record_correction(interaction_id="nope", user="U1", text="Better.", platform="cli")
    assert store.get_corrections(interaction_id=reply.id) == []


def test_nightly_sft_data_weighs_each_correction_as_its_recipe_says(store: FeedbackStore, make_reply):
    from training.nightly import _weighted

    liked = make_reply(answer="Eight legs.", prompt=[Message("user", "Legs of a spider?")], thread="t-liked")
    wrong = make_reply(answer="Six.", prompt=Q)
    for reply in (liked, wrong):
        store.record(reply=reply)
    store.vote(interaction_id=liked.id, user="U1", value=1)
    store.record_correction(interaction_id=wrong.id, user="U-ana", text="Eight.", platform="slack")

    rows = store.examples(kind="sft")
    assert [(r["messages"][-1]["content"], r.get("origin")) for r in rows] == [("Eight legs.", None),
                                                                               ("Eight.", "correction")]
    assert [r["messages"][-1]["content"] for r in _weighted(rows, 3)] == ["Eight legs.", "Eight.", "Eight.", "Eight."]
    assert _weighted(rows, 1) == rows
