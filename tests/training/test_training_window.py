"""Nightly windows follow when votes were cast: a late vote on an old answer is trained on by the next run, once."""

from __future__ import annotations

import json

import pytest
from training_helpers import SYSTEM, tiny_overrides

from core.config import load_settings
from core.types import Message, Reply, Turn
from feedback import FeedbackStore
from training.nightly import Recipes, run_nightly
from training.registry import Registry


@pytest.fixture
def env(isolated_env, tiny_base, monkeypatch):
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env / "state"))
    monkeypatch.setenv("KAIZEN_MODEL__NAME", tiny_base)
    settings = load_settings()
    store = FeedbackStore.open(settings)
    yield settings, store
    store.close()


def _sft_only() -> Recipes:
    return Recipes.load(overrides={"sft": tiny_overrides(), "nightly": {
        "pipeline": ["sft"], "min_sft": 1, "min_pairs": 1, "min_kto": 1,
        "gate": {"margin": -1.0, "max_new_tokens": 4, "regression_file": "", "regression_max_new_tokens": 4}}})


def _sft_answers(settings, run) -> list[str]:
    path = Registry(settings.data_dir).run_dir(run) / "data" / "sft.jsonl"
    return [json.loads(line)["messages"][-1]["content"] for line in path.read_text().splitlines()]


def test_a_vote_after_a_run_on_an_older_answer_is_in_the_next_run_only(env, fill_store):
    settings, store = env
    turn = Turn(text="Where is the printer?", platform="slack", workspace="T1", channel="C1", thread="old", user="a")
    old = Reply(answer="Floor 3, next to the kitchen.", turn=turn, model="tiny",
                prompt=[Message("system", SYSTEM), Message("user", turn.text)])
    store.record(reply=old)  # answered before night 1, voted on only after it
    fill_store(store, range(2))

    first = run_nightly(settings, _sft_only(), progress=False)
    assert first.run.finished and "Floor 3, next to the kitchen." not in _sft_answers(settings, first.run)

    store.vote(interaction_id=old.id, user="u2", value=1)
    second = run_nightly(settings, _sft_only(), progress=False)
    assert second.run.finished, second.reason
    assert second.run.window["since"] == first.run.window["until"]
    assert _sft_answers(settings, second.run) == ["Floor 3, next to the kitchen."]

    third = run_nightly(settings, _sft_only(), progress=False)
    assert third.status == "skipped" and third.run.window["counts"] == {"sft": 0, "pairs": 0, "kto": 0}
