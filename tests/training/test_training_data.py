"""Bad input is skipped or rejected with a clear message; splits and recipes behave."""

from __future__ import annotations

import re

import pytest
from training_helpers import assistant, prompt

from training.common import RecipeError, load_recipe
from training.data import DatasetError, check, holdout_split, prompts_from, read_jsonl
from training.gate import GateConfig, decide, load_regression
from training.nightly import NightlyConfig, Recipes, parse_sets, plan_stages
from training.sft import SFTRecipe


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from training.common import load_tokenizer

    return load_tokenizer(tiny_base)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"messages": []}\n\n{"broken": \n')
    with pytest.raises(DatasetError, match=r"x\.jsonl:3: not valid JSON"):
        read_jsonl(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(DatasetError, match=r"x\.jsonl:1: expected a JSON object, got list"):
        read_jsonl(path)
    with pytest.raises(DatasetError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(("kind", "row", "message"), [
    ("sft", {"messages": [{"role": "user", "content": "hi"}]}, "last message must be the assistant's answer"),
    ("sft", {"text": "hi"}, "needs prompt, completion; missing prompt, completion"),
    ("pairs", {"prompt": [{"role": "user", "content": "q"}], "chosen": assistant("a")}, "missing rejected"),
    ("pairs", {"prompt": [{"role": "boss", "content": "q"}], "chosen": assistant("a"), "rejected": assistant("b")},
     "not {role: assistant|system|tool|user"),
    ("pairs", {"prompt": "q", "chosen": assistant("a"), "rejected": assistant("b")}, "must be a non-empty list"),
    ("kto", {"prompt": prompt(0), "completion": [{"role": "user", "content": "x"}], "label": True},
     "exactly one assistant message"),
    ("prompts", {"prompt": []}, "must be a non-empty list"),
])
def test_malformed_rows_reject_the_dataset(kind, row, message):
    with pytest.raises(DatasetError, match="data row 1: .*" + re.escape(message)):
        check([row], kind, source="data")


def test_unusable_rows_are_skipped_and_counted(tokenizer):
    good = {"prompt": prompt(0), "chosen": assistant("short"), "rejected": assistant("long one")}
    same = {"prompt": prompt(1), "chosen": assistant("same"), "rejected": assistant("same")}
    empty = {"prompt": prompt(2), "chosen": assistant("  "), "rejected": assistant("x")}
    huge = {"prompt": prompt(3) + [{"role": "user", "content": "word " * 400}], "chosen": assistant("a"),
            "rejected": assistant("b")}
    out = check([good, same, empty, huge], "pairs", tokenizer=tokenizer, max_length=128, source="pairs")
    assert out.rows == [good]
    assert out.describe() == ("1 pairs example(s) (3 skipped: 1 chosen equals rejected, 1 empty answer, "
                              "1 longer than max_length 128)")
    with pytest.raises(DatasetError, match="no usable pairs examples: 0 pairs example.*1 chosen equals rejected"):
        check([same], "pairs")
    with pytest.raises(DatasetError, match="no usable sft examples"):
        check([], "sft")
    # RL prompts that leave no room for an answer are skipped too.
    long_prompt = {"prompt": [{"role": "user", "content": "word " * 400}]}
    assert check([long_prompt, {"prompt": prompt(0)}], "prompts", tokenizer=tokenizer, max_length=64).skipped


def test_holdout_is_deterministic_and_the_same_prompts_in_every_dataset(datasets):
    data = {k: datasets[k] for k in ("sft", "pairs", "kto")}
    train, held = holdout_split(data, 0.25)
    assert (train, held) == holdout_split(data, 0.25)
    held_prompts = {str(r["prompt"]) for r in held["pairs"]}
    assert len(held_prompts) == 3  # ceil(12 x 0.25)
    assert {str(r["messages"][:-1]) for r in held["sft"]} == held_prompts == {str(r["prompt"]) for r in held["kto"]}
    assert not held_prompts & {str(r["prompt"]) for r in train["pairs"]}
    assert holdout_split({"sft": datasets["sft"][:1]}, 0.5)[1]["sft"] == []  # one prompt: nothing to hold out
    assert len(prompts_from(datasets["pairs"], datasets["sft"], datasets["kto"])) == 12


def test_holdout_takes_its_share_of_the_prompts_with_pairs_and_enough_pairs_for_the_gate():
    # A first night's shape (bench/loop.py, numbered): 40 prompts, every answer disliked, 15 corrected (each correction
    # chosen over both answers: 2 pairs); the other 25 have labelled answers only.
    data: dict[str, list] = {"sft": [], "pairs": [], "kto": []}

    def ask(i):
        return [{"role": "user", "content": f"Question {i}?"}]

    for i in range(40):
        data["kto"] += [{"prompt": ask(i), "completion": assistant(f"answer {i}{k}"), "label": False} for k in "ab"]
        if i < 15:
            data["sft"].append({"messages": ask(i) + assistant(f"1. fixed {i}")})
            data["pairs"] += [{"prompt": ask(i), "chosen": assistant(f"1. fixed {i}"),
                               "rejected": assistant(f"answer {i}{k}")} for k in "ab"]

    def count(split):
        return len(prompts_from(*split.values())), len({str(r["prompt"]) for r in split["pairs"]}), len(split["pairs"])

    train, held = holdout_split(data, 0.25)
    assert count(held) == (10, 4, 8)  # ceil(40 x 0.25) prompts; 15 x 0.25 -> 4 of them with pairs, whatever the draw
    assert count(train) == (30, 11, 22)
    train, held = holdout_split(data, 0.25, min_pairs=12)
    assert count(held) == (12, 6, 12) and len(train["sft"]) == 9
    # Never more than half of the prompts with pairs: training keeps the rest.
    train, held = holdout_split(data, 0.25, min_pairs=100)
    assert count(held) == (13, 7, 14) and count(train)[1] == 8
    assert holdout_split(data, 0.25, min_pairs=100) == (train, held)
    assert holdout_split(data, 0, min_pairs=12)[1] == {"sft": [], "pairs": [], "kto": []}  # nothing held out asked
    assert not {str(r["prompt"]) for r in held["kto"]} & {str(r["prompt"]) for r in train["kto"]}
    # Pairs alone (the reward stage's split) split as before: the stratum is the whole.
    assert count(holdout_split({"pairs": data["pairs"]}, 0.2)[1])[1] == 3
    # Each kind of prompt gives its share: with 5 more prompts that have liked answers only (settled), 45 in all.
    data["sft"] += [{"messages": ask(i) + assistant(f"liked {i}")} for i in range(40, 45)]
    liked_only = {str(ask(i)) for i in range(40, 45)}
    for fraction, shares in ((0.2, (3, 1, 5)), (0.4, (6, 2, 10)), (0.6, (9, 3, 15))):
        held = holdout_split(data, fraction)[1]
        with_pairs = {str(r["prompt"]) for r in held["pairs"]}
        liked = {str(r["messages"][:-1]) for r in held["sft"]} & liked_only
        rest = {str(r["prompt"]) for r in held["kto"]} - with_pairs
        assert (len(with_pairs), len(liked), len(rest)) == shares


def test_recipes_reject_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(RecipeError, match="unknown key.*lora_rank; valid: .*lora_r"):
        load_recipe(SFTRecipe, overrides={"lora_rank": 8}, stage="sft")
    with pytest.raises(RecipeError, match="learning_rate"):
        load_recipe(SFTRecipe, overrides={"learning_rate": "fast"}, stage="sft")
    bad = tmp_path / "sft.toml"
    bad.write_text("lora_r = [")
    with pytest.raises(RecipeError, match="sft.toml: not valid TOML"):
        load_recipe(SFTRecipe, bad)
    bad.write_text("batch_size = 0\n")
    with pytest.raises(RecipeError, match="batch_size must be at least 1"):
        Recipes.load(tmp_path)
    with pytest.raises(RecipeError, match=r"unknown recipe\(s\) ppo"):
        Recipes.load(overrides={"ppo": {}})
    with pytest.raises(RecipeError, match="pipeline: unknown stage"):
        Recipes.load(overrides={"nightly": {"pipeline": ["sft", "ppo"]}})
    with pytest.raises(RecipeError, match="judge_max_pairs must be at least 1, got 0"):
        Recipes.load(overrides={"nightly": {"judge_max_pairs": 0}})
    with pytest.raises(RecipeError, match="gate.judge_samples must be >= 0, got -1"):
        Recipes.load(overrides={"nightly": {"gate": {"judge_samples": -1}}})
    assert parse_sets(["sft.max_steps=3", "nightly.gate.margin=0.1", "nightly.audience=C-hr"]) == {
        "sft": {"max_steps": 3}, "nightly": {"gate": {"margin": 0.1}, "audience": "C-hr"}}
    with pytest.raises(RecipeError, match="expected stage.key=value"):
        parse_sets(["max_steps=3"])


def test_plan_follows_the_data():
    cfg = NightlyConfig(min_sft=4, min_pairs=4, min_kto=4)
    assert plan_stages(cfg, {"sft": 9, "pairs": 9, "kto": 9}, have_reward=False)[0] == ["sft", "reward", "rl"]
    assert plan_stages(cfg, {"sft": 9, "pairs": 1, "kto": 9}, have_reward=False)[0] == ["sft", "kto"]
    explicit = NightlyConfig(pipeline=["dpo", "rl"], min_pairs=4)
    stages, notes = plan_stages(explicit, {"sft": 0, "pairs": 9, "kto": 0}, have_reward=False)
    assert stages == ["dpo"] and notes == ["rl: no reward model (train one: add 'reward' before 'rl')"]
    assert plan_stages(explicit, {"sft": 0, "pairs": 9, "kto": 0}, have_reward=True)[0] == ["dpo", "rl"]


def test_gate_decision_rule():
    cfg = GateConfig(margin=0.1, max_pref_drop=0.05)
    assert decide(cfg, {"win_rate": 0.7, "pref_acc_candidate": 0.5, "pref_acc_serving": 0.5})[0] is True
    assert decide(cfg, {"win_rate": 0.55})[1] == "reward-model win rate 0.55 is below 0.60"
    assert "fell from 0.80 to 0.60" in decide(cfg, {"win_rate": 0.9, "pref_acc_candidate": 0.6,
                                                    "pref_acc_serving": 0.8})[1]
    lost = decide(cfg, {"win_rate": 1.0, "regression_lost": ["What is the capital of France?"]})
    assert lost == (False, "regression: no longer answers 1 must-still-answer question(s): "
                           "What is the capital of France?")
    assert decide(cfg, {"pref_shift": 0.8, "pref_acc_candidate": 0.6, "pref_acc_serving": 0.6})[0] is True
    assert "on 0.55 of held-out pairs, below 0.60" in decide(cfg, {"pref_shift": 0.55})[1]
    assert decide(cfg, {"kto_agreement": 0.55})[0] is False
    assert decide(cfg, {})[1].startswith("nothing held out to judge on")


def test_preference_accuracy_may_fall_within_chance_not_beyond_it():
    """A help-desk second night (bench/loop.py, 2026-12-06): the candidate moved 13 of 15 held-out pairs toward the
    liked answer and flipped one of them from ranked right to ranked wrong (1.00 -> 0.93, over the 0.05 allowance)."""
    cfg = GateConfig()
    night = {"pref_shift": 13 / 15, "pairs": 15, "pref_acc_serving": 1.0, "pref_acc_candidate": 14 / 15}
    promote, reason = decide(cfg, night | {"pref_now_wrong": 1, "pref_now_right": 0})
    assert promote, reason
    assert reason.endswith("; preference accuracy fell from 1.00 to 0.93 (1 held-out pair(s) now ranked wrong, 0 now "
                           "right, McNemar p 0.50): within chance")
    # Without the flips (metrics of an older run) the allowance alone decides, as before.
    assert decide(cfg, night) == (False, "preference accuracy fell from 1.00 to 0.93")
    # Five pairs flipped to wrong and none back is beyond chance (one-sided binomial 1/32), whoever decides.
    many = {"win_rate": 0.9, "prompts": 32, "pairs": 15, "pref_acc_serving": 1.0, "pref_acc_candidate": 10 / 15,
            "pref_now_wrong": 5, "pref_now_right": 0}
    assert decide(cfg, many) == (False, "preference accuracy fell from 1.00 to 0.67 (5 held-out pair(s) now ranked "
                                        "wrong, 0 now right, McNemar p 0.03)")
    # Four and none back is not (p 0.06); six wrong and two back is not either (p 0.14): the net fall is what counts.
    assert decide(cfg, many | {"pref_now_wrong": 4, "pref_acc_candidate": 11 / 15})[0] is True
    assert decide(cfg, many | {"pref_now_wrong": 6, "pref_now_right": 2, "pref_acc_candidate": 11 / 15})[0] is True
    # Within the allowance the flips are not looked at.
    assert decide(cfg, many | {"pref_acc_candidate": 0.96})[1] == ("reward-model win rate 0.90 (95% interval "
                                                                   "0.75-0.96 on 32) >= 0.50")


def test_regression_file(tmp_path):
    rows = load_regression()
    assert rows and all(r["question"] and r["expect"] for r in rows)
    bad = tmp_path / "r.jsonl"
    bad.write_text('{"question": "hi", "expect": 3}\n')
    with pytest.raises(DatasetError, match="'expect' must be a string or a list"):
        load_regression(bad)
