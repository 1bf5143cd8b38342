"""Preference data and permission-safe export, loaded back with the real datasets/trl utilities."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from datasets import load_dataset
from trl.data_utils import (
    is_conversational,
    maybe_apply_chat_template,
    maybe_extract_prompt,
    maybe_unpair_preference_dataset,
)

from core.types import Message, Source
from feedback import FeedbackStore, scrub_text

HR_DOC = Source(id="hr/salaries.md#1", text="salary bands", title="Salaries", channels=("C-hr",))
WIKI = Source(id="wiki/vpn.md#1", text="VPN guide", title="VPN")
VPN = [Message("system", "You are Kaizen."), Message("user", "How do I reset my VPN token?")]
PRINTER = [Message("system", "You are Kaizen."), Message("user", "Where is the printer?")]


def _msgs(prompt: list[Message]) -> list[dict[str, str]]:
    return [m.as_dict() for m in prompt]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _vote(store: FeedbackStore, reply_id: str, *values: int) -> None:
    for n, value in enumerate(values):
        store.vote(interaction_id=reply_id, user=f"U{n}", value=value)


@pytest.fixture
def voted(store, make_reply):
    """A small history covering each rule; returns the store."""
    r = {}

    def rec(name: str, **kw) -> str:
        r[name] = make_reply(**kw)
        store.record(reply=r[name])
        return r[name].id

    # (a) siblings voted differently; conflicting voters on the first resolve to net +1.
    _vote(store, rec("a1", answer="Use the self-service portal.", prompt=VPN, sources=(WIKI,)), 1, 1, -1)
    _vote(store, rec("a2", answer="Call IT.", prompt=VPN, sources=(WIKI,), sibling_of=r["a1"].id), -1)
    # (b) the same prompt in other threads: opposite net votes; the liked answer twice (merged, not duplicated).
    _vote(store, rec("b1", answer="It is on floor 3.", prompt=PRINTER, thread="t-b1"), -1)
    _vote(store, rec("b2", answer="Next to the kitchen.", prompt=PRINTER, thread="t-b2"), 1, 1)
    _vote(store, rec("b3", answer="Next to the kitchen.", prompt=PRINTER, thread="t-b3", channel="C-ops"), 1)
    # Net 0 (a tie) is no label at all; its disliked sibling is labelled but has nobody to pair with.
    q = [Message("user", "Lunch?")]
    _vote(store, rec("c1", answer="Pizza.", prompt=q, thread="t-c"), 1, -1)
    _vote(store, rec("c2", answer="Salad.", prompt=q, thread="t-c", sibling_of=r["c1"].id), -1)
    # Restricted: drew on an HR-only document; its public sibling was disliked.
    hr = [Message("user", "What is the salary band for L3?")]
    _vote(store, rec("d1", answer="L3 is 70-80k.", prompt=hr, sources=(HR_DOC,), thread="t-d"), 1)
    _vote(store, rec("d2", answer="I don't know.", prompt=hr, sources=(WIKI,), thread="t-d", sibling_of=r["d1"].id), -1)
    # Not a model answer (e.g. a command reply), and an old answer for --since.
    _vote(store, rec("e", answer="Voted.", prompt=q, thread="t-e", called_model=False), 1)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    _vote(store, rec("f", answer="Old but liked.", prompt=[Message("user", "old?")], thread="t-f", created_at=old), 1)
    return store


def test_pairs_from_siblings_and_same_prompt_public_only(voted):
    pairs = voted.examples(kind="pairs")
    assert sorted(pairs, key=lambda p: p["chosen"][0]["content"]) == [
        {
            "prompt": _msgs(PRINTER),
            "chosen": _assistant("Next to the kitchen."),
            "rejected": _assistant("It is on floor 3."),
        },
        {
            "prompt": _msgs(VPN),
            "chosen": _assistant("Use the self-service portal."),
            "rejected": _assistant("Call IT."),
        },
    ]


def test_audience_channel_includes_what_it_may_read(voted):
    pairs = voted.examples(kind="pairs", audience="C-hr")
    salary = [p for p in pairs if "salary" in p["prompt"][0]["content"]]
    assert salary == [
        {
            "prompt": [{"role": "user", "content": "What is the salary band for L3?"}],
            "chosen": _assistant("L3 is 70-80k."),
            "rejected": _assistant("I don't know."),
        }
    ]
    # "#C-hr" names the same channel; another channel still may not read the HR document.
    assert voted.examples(kind="pairs", audience="#C-hr") == pairs
    assert all("70-80k" not in json.dumps(e) for e in voted.examples(kind="sft", audience="C-ops"))


def test_sft_and_kto_labels_since_and_dedup(voted):
    sft = voted.examples(kind="sft")
    # Oldest first.
    assert [e["messages"][-1]["content"] for e in sft] == [
        "Old but liked.",
        "Use the self-service portal.",
        "Next to the kitchen.",
    ]
    assert sft[1]["messages"][:-1] == _msgs(VPN)

    kto = voted.examples(kind="kto")
    labels = {(e["completion"][0]["content"], e["label"]) for e in kto}
    assert labels == {
        ("Use the self-service portal.", True),
        ("Call IT.", False),
        ("It is on floor 3.", False),
        ("Next to the kitchen.", True),
        ("Salad.", False),
        ("I don't know.", False),
        ("Old but liked.", True),
    }
    assert len(kto) == len(labels)  # nothing twice

    # Windows follow vote time: the 2020 answer was voted on just now, so it is in a window starting in 2024.
    since = datetime(2024, 1, 1, tzinfo=UTC)
    assert "Old but liked." in json.dumps(voted.examples(kind="sft", since=since))
    assert voted.examples(kind="sft", since=datetime.now(UTC)) == []


def test_stats_per_channel_and_model(voted, make_reply):
    voted.record(reply=make_reply(adapter="2025-11-20", channel="C-ops", channel_name="ops", thread="t-x"))
    stats = voted.stats()
    assert (stats.total.interactions, stats.total.votes, stats.total.up, stats.total.down) == (12, 15, 9, 6)
    by_channel = {row.key: row for row in stats.by_channel}
    assert set(by_channel) == {"slack:general", "slack:ops"}
    ops = by_channel["slack:ops"]
    assert (ops.interactions, ops.voted, ops.up, ops.down, ops.like_rate) == (2, 1, 1, 0, 1.0)
    by_model = {row.key: row for row in stats.by_model}
    assert by_model["smollm2-135m + 2025-11-20"].like_rate is None
    assert by_model["smollm2-135m + base"].interactions == 11
    assert (stats.pairs, stats.sft, stats.kto) == (2, 3, 7)
    assert voted.stats(audience="C-hr").pairs == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe+kz@corp.example.com now", "mail [email] now"),
        ("ask <@U024BE7LH> or <@U12|bob> or <@!81234>", "ask @user or @user or @user"),
        ("ping @alice.smith, not an@email.org", "ping @user, not [email]"),
        ("call +1 (555) 123-4567 or 030 1234 5678", "call [phone] or [phone]"),
        ("on 2024-05-01 10:30, version 1.2.3, ticket 123456789, 3.14", None),
    ],
)
def test_scrub_text(text, expected):
    assert scrub_text(text) == (text if expected is None else expected)


def test_scrubbed_export(store, make_reply):
    reply = make_reply(
        question="Who owns billing?",
        prompt=[Message("user", "Who owns billing? cc <@U0G9QF9C6>")],
        answer="Mail jane@corp.example.com or call +44 20 7946 0958.",
    )
    store.record(reply=reply)
    store.vote(interaction_id=reply.id, user="U1", value=1)
    (example,) = store.examples(kind="sft", scrub=True)
    assert example["messages"] == [
        {"role": "user", "content": "Who owns billing? cc @user"},
        {"role": "assistant", "content": "Mail [email] or call [phone]."},
    ]
    assert "jane@" in store.examples(kind="sft")[0]["messages"][1]["content"]


def test_export_files_load_with_datasets_and_trl(voted, tmp_path, chat_tokenizer):
    files = {kind: tmp_path / f"{kind}.jsonl" for kind in ("sft", "pairs", "kto")}
    counts = {kind: voted.export(kind=kind, out=path) for kind, path in files.items()}
    assert counts == {"sft": 3, "pairs": 2, "kto": 7}
    ds = {kind: load_dataset("json", data_files=str(path), split="train") for kind, path in files.items()}

    # The column sets trl's trainers look for: SFT `messages`, DPO/Reward prompt+chosen+rejected, KTO +label.
    assert ds["sft"].column_names == ["messages"]
    assert sorted(ds["pairs"].column_names) == ["chosen", "prompt", "rejected"]
    assert sorted(ds["kto"].column_names) == ["completion", "label", "prompt"]
    for kind in files:
        assert len(ds[kind]) == counts[kind]
        assert all(is_conversational(row) for row in ds[kind])

    text = maybe_apply_chat_template(ds["sft"][1], chat_tokenizer)["text"]
    assert "<|im_start|>assistant\nUse the self-service portal.<|im_end|>" in text

    vpn = next(row for row in ds["pairs"] if "VPN" in row["prompt"][-1]["content"])
    pair = maybe_apply_chat_template(maybe_extract_prompt(vpn), chat_tokenizer)
    assert pair["prompt"].endswith("How do I reset my VPN token?<|im_end|>\n<|im_start|>assistant\n")
    assert pair["chosen"].startswith("Use the self-service portal.") and pair["rejected"].startswith("Call IT.")

    kto = maybe_apply_chat_template(ds["kto"][0], chat_tokenizer)
    assert set(kto) == {"prompt", "completion", "label"} and isinstance(kto["label"], bool)

    # KTO can also train on the pairs, unpaired by trl itself.
    unpaired = maybe_unpair_preference_dataset(ds["pairs"])
    assert sorted(unpaired.column_names) == ["completion", "label", "prompt"] and len(unpaired) == 4
