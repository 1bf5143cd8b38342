"""The nightly job on the tiny Llama, with a real SQLite feedback store: plan, train, gate, register, promote —
and every way it must leave serving alone (too little data, a failed gate, a crash, a second job, bad data)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_helpers import tiny_overrides
from typer.testing import CliRunner

from bot.cli_train import model_app
from core.adapters import current_adapter
from core.config import load_settings
from core.types import Message, Reply, Source, Turn
from feedback import FeedbackStore
from training.nightly import Recipes, _contested, nightly_lock, run_nightly
from training.registry import Registry, RegistryError

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def tiny_recipes(**nightly) -> Recipes:
    stage = tiny_overrides()
    return Recipes.load(overrides={
        "sft": stage, "reward": stage, "dpo": stage, "kto": stage,
        "rl": {**stage, "batch_size": 4, "num_generations": 2, "max_completion_length": 8},
        "nightly": {"min_sft": 4, "min_pairs": 4, "min_kto": 4, **nightly,
                    "gate": {"max_new_tokens": 8, "regression_max_new_tokens": 8, **nightly.get("gate", {})}},
    })


@pytest.fixture
def env(isolated_env, tiny_base, monkeypatch):
    """Settings as the CLI would read them: data under a temp KAIZEN_DATA_DIR, the tiny model as base."""
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env / "state"))
    monkeypatch.setenv("KAIZEN_MODEL__NAME", tiny_base)
    settings = load_settings()
    store = FeedbackStore.open(settings)
    yield settings, store
    store.close()


def test_an_sft_night_is_judged_by_a_reward_model_trained_on_every_pair_so_far_but_tonights_held_out_ones(
        env, fill_store):
    """No reward stage tonight: the gate's judge is a reward model trained on the pairs of every night so far, with
    tonight's held-out prompts left out; it scores `judge_samples` sampled answers per held-out prompt and policy."""
    from training.data import holdout_split, prompt_key, prompt_of, read_jsonl

    settings, store = env
    registry = Registry(settings.data_dir)
    recipes = tiny_recipes(pipeline=["sft"], gate={"margin": -1.0})
    fill_store(store, range(8))
    # Without a judge (judge = false), the held-out pairs decide alone.
    first = run_nightly(settings, tiny_recipes(pipeline=["sft"], judge=False, gate={"margin": -1.0}), progress=False)
    assert first.status == "promoted", first.reason
    assert "judge" not in first.run.stages and "win_rate" not in first.run.metrics and "pref_shift" in first.run.metrics
    fill_store(store, range(8, 16))
    second = run_nightly(settings, recipes, progress=False)
    assert second.status == "promoted", second.reason

    def keys(rows: list[dict]) -> set[str]:
        return {prompt_key(prompt_of(r)) for r in rows}

    run, folder = second.run, registry.run_dir(second.run) / "data"
    data = {kind: read_jsonl(folder / f"{kind}.jsonl") for kind in ("sft", "pairs", "kto")}
    _, held = holdout_split(data, recipes.nightly.eval_fraction, min_pairs=recipes.nightly.min_held_out_pairs)
    every = read_jsonl(registry.run_dir(first.run) / "data" / "pairs.jsonl") + data["pairs"]
    judged = read_jsonl(folder / "judge.jsonl")
    assert held["pairs"] and keys(judged) == keys(every) - keys(held["pairs"]) and len(judged) == len(every) - len(
        held["pairs"])
    assert run.window["stages"] == ["sft"] and "judge" in run.stages and run.reward_version is None
    assert run.metrics["prompts"] >= 1 and 0 <= run.metrics["win_rate"] <= 1 and "judge_pair_acc" in run.metrics
    answered = [json.loads(line) for line in (folder.parent / "gate_answers.jsonl").open()]
    sampled = [a for a in answered if a["set"] == "prompts"]
    assert len(sampled) == 2 * recipes.nightly.gate.judge_samples * run.metrics["prompts"]


def test_too_little_data_skips_cleanly_and_bad_curated_data_fails_without_touching_serving(env, fill_store,
                                                                                            tmp_path):
    settings, store = env
    fill_store(store, range(2))
    result = run_nightly(settings, tiny_recipes(min_kto=8), progress=False)
    assert result.status == "skipped" and result.exit_code == 0
    assert result.reason == ("too little new feedback since the beginning: reward + rl: 2 new pairs example(s), "
                             "needs 4; sft: 2 new sft example(s), needs 4; kto: 4 new kto example(s), needs 8")
    assert result.run.window["counts"] == {"sft": 2, "pairs": 2, "kto": 4}
    # A curated file that is not JSONL: the run fails with the file and line named, nothing is promoted.
    bad = tmp_path / "curated.jsonl"
    bad.write_text('{"messages": []}\nnot json\n')
    fill_store(store, range(2, 6))
    result = run_nightly(settings, tiny_recipes(pipeline=["sft"], curated_sft=str(bad)), progress=False)
    assert result.status == "failed" and result.exit_code == 1
    assert f"{bad}:2: not valid JSON" in result.reason
    assert current_adapter(settings.data_dir) is None and Registry(settings.data_dir).versions() == []


def test_nightly_cycle_promotes_records_and_is_idempotent(env, fill_store):
    settings, store = env
    fill_store(store, range(8))
    # An answer drawn from an HR-only document: a model everyone talks to must not learn it.
    turn = Turn(text="What is Bob's salary?", platform="slack", workspace="T1", channel="C-hr", thread="x", user="a")
    secret = Reply(answer="Bob earns 100k.", turn=turn, prompt=[Message("user", turn.text)],
                   sources=[Source(id="s1", text="salaries", channels=("C-hr",))])
    store.record(reply=secret)
    store.vote(interaction_id=secret.id, user="u1", value=1)

    result = run_nightly(settings, tiny_recipes(gate={"margin": -1.0}), progress=False)

    assert result.status == "promoted", result.reason
    run = result.run
    assert list(run.stages) == ["sft", "reward", "rl"] and run.version == "kaizen-0001"
    assert run.reward_version == "reward-0001" and run.window["counts"] == {"sft": 8, "pairs": 8, "kto": 16}
    assert "Bob earns" not in (Registry(settings.data_dir).run_dir(run) / "data" / "sft.jsonl").read_text()
    for key in ("win_rate", "pref_acc_candidate", "pref_acc_serving", "kto_agreement", "regression_total"):
        assert key in run.metrics, key
    # The pairs whose ranking flipped each way (McNemar's test in the gate) fit the two accuracies.
    n, m = run.metrics["pairs"], run.metrics
    net = m["pref_now_right"] - m["pref_now_wrong"]
    assert round(m["pref_acc_candidate"] * n) - round(m["pref_acc_serving"] * n) == net
    assert run.metrics["serving"] == "base model" and run.decision["promote"] is True
    assert current_adapter(settings.data_dir)[0] == "kaizen-0001"
    listed = runner.invoke(model_app, ["list"])
    assert listed.exit_code == 0 and "* kaizen-0001" in listed.output and "promoted" in listed.output
    as_json = json.loads(runner.invoke(model_app, ["list", "--json"]).output)
    assert as_json["current"] == "kaizen-0001" and as_json["runs"][0]["config"]["sft"]["max_steps"] == 2

    # Idempotent: nothing new since the run, nothing to do.
    again = run_nightly(settings, tiny_recipes(gate={"margin": -1.0}), progress=False)
    assert again.status == "skipped" and f"since {run.window['until']}" in again.reason
    assert again.run.window["counts"] == {"sft": 0, "pairs": 0, "kto": 0}

    # New feedback, but a candidate that cannot pass the gate: registered, not served.
    fill_store(store, range(8, 16))
    rejected = run_nightly(settings, tiny_recipes(gate={"margin": 1.0}), progress=False)
    assert rejected.status == "rejected" and "win rate" in rejected.reason
    assert rejected.run.version == "kaizen-0002" and current_adapter(settings.data_dir)[0] == "kaizen-0001"
    assert rejected.run.metrics["serving"].endswith("kaizen-0001")  # judged against the promoted adapter

    # The operator's override, and rollback through the history.
    assert runner.invoke(model_app, ["promote", "kaizen-0002"]).exit_code == 0
    assert current_adapter(settings.data_dir)[0] == "kaizen-0002"
    bad = runner.invoke(model_app, ["promote", "reward-0001"])
    assert bad.exit_code == 2 and "reward model, not an adapter to serve" in bad.output
    assert "serving kaizen-0001" in runner.invoke(model_app, ["rollback"]).output
    assert "serving the base model" in runner.invoke(model_app, ["rollback"]).output
    assert current_adapter(settings.data_dir) is None
    with pytest.raises(RegistryError, match="nothing to roll back"):
        Registry(settings.data_dir).rollback()


def test_settled_prompts_leave_sft_but_corrections_and_contested_likes_stay():
    """`skip_settled`: a liked answer whose prompt got no disliked answer is what serving already does; a liked
    answer beside a disliked one, and every correction, carry what people want changed."""
    def prompt(q):
        return [{"role": "user", "content": q}]

    def answer(q, a, **extra):
        return {"messages": prompt(q) + [{"role": "assistant", "content": a}], **extra}

    data = {"sft": [answer("settled", "1. Yes\n2. Done"), answer("contested", "1. Do it\n2. Check"),
                    answer("corrected", "1. Fixed\n2. Done", origin="correction")],
            "kto": [{"prompt": prompt("settled"), "completion": [{"role": "assistant", "content": a}], "label": True}
                    for a in ("1. Yes\n2. Done", "1. Sure\n2. Done")]
                   + [{"prompt": prompt("contested"), "completion": [{"role": "assistant", "content": a}], "label": ok}
                      for a, ok in (("1. Do it\n2. Check", True), ("Just do it.", False))]}
    kept = [row["messages"][0]["content"] for row in _contested(data)]
    assert kept == ["contested", "corrected"]


def test_a_rejected_candidate_is_trained_again_without_the_settled_answers(env, fill_store):
    """`settled = "retry"` (the default): the first candidate trains on every liked answer; when the gate rejects
    it, a second is trained without the liked answers that had nothing disliked beside them, and judged the same
    way. Both are registered; the reason says why each was refused."""
    settings, store = env
    fill_store(store, range(8))  # each prompt: one liked, one disliked answer
    for i in range(8, 14):  # settled: one liked answer, nothing disliked
        turn = Turn(text=f"Settled question {i}?", platform="slack", workspace="T1", channel="C1", thread=f"s{i}",
                    user="asker")
        liked = Reply(answer=f"Settled answer {i}.", turn=turn, prompt=[Message("user", turn.text)], model="tiny")
        store.record(reply=liked)
        store.vote(interaction_id=liked.id, user="u1", value=1)

    result = run_nightly(settings, tiny_recipes(pipeline=["sft", "reward", "rl"], gate={"margin": 1.0}),
                         progress=False)

    run = result.run
    assert result.status == "rejected" and run.window["settled"] >= 3, run.window
    # Only the SFT data differs: the retry keeps the first reward model (one judge for both candidates).
    assert list(run.stages) == ["sft", "reward", "rl", "sft-without-settled", "rl-without-settled"]
    assert [t["data"] for t in run.metrics["pull_back"]] == ["all", "without settled"]
    assert [v.name for v in Registry(settings.data_dir).versions(kind="policy")] == ["kaizen-0001", "kaizen-0002"]
    folder = Registry(settings.data_dir).run_dir(run)
    assert (folder / "sft").is_dir() and (folder / "without-settled" / "sft").is_dir()
    # "keep": one candidate, trained on everything.
    fill_store(store, range(20, 28))
    once = run_nightly(settings, tiny_recipes(pipeline=["sft"], settled="keep", gate={"margin": 1.0}),
                       progress=False)
    assert once.status == "rejected" and once.run.metrics["pull_back"] == []
    assert list(once.run.stages) == ["judge", "sft"]  # no reward stage: a reward model is trained to judge


def test_two_jobs_never_run_at_once(env):
    settings, _ = env
    with nightly_lock(settings.data_dir):
        result = run_nightly(settings, tiny_recipes(), progress=False)
    assert result.status == "locked" and result.exit_code == 75 and f"pid {os.getpid()}" in result.reason


def test_a_crashed_job_leaves_serving_untouched_and_resumes(env, fill_store, tiny_base, datasets):
    """SIGKILL mid-run: current.json is unchanged; the next run resumes the same run without redoing SFT."""
    from training import sft
    from training.common import load_recipe

    settings, store = env
    registry = Registry(settings.data_dir)
    seed_run = registry.new_run("manual", base_model=tiny_base)
    adapter = sft.run(load_recipe(sft.SFTRecipe, overrides=tiny_overrides(), stage="sft"), base_model=tiny_base,
                      train=datasets["sft"], out_dir=registry.run_dir(seed_run) / "sft", progress=False).adapter
    registry.promote(registry.register(seed_run, adapter).name)
    fill_store(store, range(8))

    # KTO instead of RL: too few pairs for the reward model (min_pairs 100).
    sets = ["nightly.min_sft=4", "nightly.min_kto=4", "nightly.min_pairs=100", "nightly.gate.margin=-1.0",
            "nightly.gate.max_new_tokens=8", "sft.max_steps=2", "sft.batch_size=2", "sft.lora_r=4",
            "kto.max_steps=4", "kto.batch_size=2", "kto.lora_r=4", "sft.max_length=128", "kto.max_length=128"]
    proc = subprocess.Popen([sys.executable, "-m", "training.nightly", *[a for s in sets for a in ("--set", s)]],
                            cwd=Path.cwd(), env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not list(registry.runs_dir.glob("*nightly*/sft/stage.json")):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the nightly job never finished its SFT stage"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    crashed = registry.unfinished("nightly")
    assert crashed is not None and crashed.status == "running" and "kto" not in crashed.stages
    assert current_adapter(settings.data_dir)[0] == "kaizen-0001"
    sft_weights = registry.run_dir(crashed) / "sft" / "adapter" / "adapter_model.safetensors"
    trained_at = sft_weights.stat().st_mtime_ns

    result = run_nightly(settings, Recipes.load(overrides=_parse(sets)), progress=False)
    assert result.status == "promoted", result.reason
    assert result.run.id == crashed.id and result.run.attempts == 2 and list(result.run.stages) == ["sft", "kto"]
    assert sft_weights.stat().st_mtime_ns == trained_at  # SFT was not redone
    assert result.run.version == "kaizen-0002" and current_adapter(settings.data_dir)[0] == "kaizen-0002"
    assert result.run.metrics["serving"].endswith("kaizen-0001") and "kto_agreement" in result.run.metrics


def _parse(sets: list[str]) -> dict:
    from training.nightly import parse_sets

    return parse_sets(sets)


def test_stages_can_run_under_accelerate_launch(env, fill_store, tmp_path):
    """The multi-GPU path (one `accelerate launch` per stage), here with a one-process CPU config."""
    settings, store = env
    fill_store(store, range(6))
    config = tmp_path / "accelerate-cpu.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nuse_cpu: true\n"
                      "num_processes: 1\nnum_machines: 1\nmachine_rank: 0\nmixed_precision: 'no'\n")
    recipes = tiny_recipes(pipeline=["sft"], launcher="accelerate", accelerate_config=str(config),
                           gate={"margin": -1.0})
    result = run_nightly(settings, recipes, progress=False)
    assert result.status == "promoted", result.reason
    out = Registry(settings.data_dir).run_dir(result.run) / "sft"
    assert "max_steps = 2" in (out / "recipe.toml").read_text()
    assert result.run.stages["sft"]["metrics"]["steps"] == 2 and "pref_acc_candidate" in result.run.metrics
