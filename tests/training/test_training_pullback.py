"""Pull-back (issue 15): a candidate that forgot a must-still-answer fact is moved toward serving in weight space
(WiSE-FT) and judged again, and only a pulled-back candidate that passes the whole gate is registered and promoted."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from training_helpers import SYSTEM, adapter_tensors

from core.adapters import check_adapter_dir, current_adapter
from core.config import load_settings
from core.types import Message, Reply, Turn
from feedback import FeedbackStore
from training.gate import GateConfig, GateReport
from training.nightly import Recipes, _pull_further, run_nightly
from training.pullback import interpolate
from training.registry import Registry


def _lora(base: str, folder, *, seed: int, targets=("q_proj", "v_proj")):
    """A LoRA adapter on `base` with every tensor random (B too, so it changes the model), saved like a trained one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False))
    model.save_pretrained(folder)
    return folder


def _continued(adapter, folder):
    """A candidate that continued `adapter`: A moved within its row space (M·A) and B anywhere, so every mix of the
    two updates has rank <= r and the SVD loses nothing, while mixing A and B one by one would not give that mix."""
    shutil.copytree(adapter, folder)
    m = torch.eye(4) + torch.randn(4, 4)
    save_file({name: t + 0.1 * torch.randn_like(t) if "lora_B" in name else m @ t
               for name, t in adapter_tensors(adapter).items()}, str(folder / "adapter_model.safetensors"))
    return folder


def _update(folder) -> dict:
    """Each adapted module's weight update B·A·(lora_alpha / r)."""
    config = json.loads((folder / "adapter_config.json").read_text())
    tensors, scale = adapter_tensors(folder), config["lora_alpha"] / config["r"]
    return {name.replace(".lora_A.weight", ""): tensors[name.replace("lora_A", "lora_B")] @ t * scale
            for name, t in tensors.items() if "lora_A" in name}


def test_interpolation_is_of_the_weight_update(tiny_base, tmp_path):
    a = _lora(tiny_base, tmp_path / "a", seed=1)
    b = _continued(a, tmp_path / "b")
    ua, ub = _update(a), _update(b)

    # From the base model (nothing promoted): B scaled by alpha, so the update is alpha times the candidate's.
    half = interpolate(base_model=tiny_base, serving=None, candidate=b, alpha=0.5, out=tmp_path / "half")
    for name, update in _update(check_adapter_dir(half)).items():
        torch.testing.assert_close(update, 0.5 * ub[name])
    # Between two adapters: (1 - alpha) * serving's update + alpha * the candidate's, at the candidate's rank.
    mix = interpolate(base_model=tiny_base, serving=a, candidate=b, alpha=0.25, out=tmp_path / "mix")
    assert json.loads((mix / "adapter_config.json").read_text())["r"] == 4
    for name, update in _update(check_adapter_dir(mix)).items():
        torch.testing.assert_close(update, 0.75 * ua[name] + 0.25 * ub[name], atol=1e-5, rtol=1e-4)
    zero = interpolate(base_model=tiny_base, serving=a, candidate=b, alpha=0.0, out=tmp_path / "mix")  # replaces
    assert all(torch.equal(t, adapter_tensors(a)[name]) for name, t in adapter_tensors(zero).items())

    # Adapters on different modules: no line between them.
    other = _lora(tiny_base, tmp_path / "other", seed=3, targets=("q_proj",))
    assert interpolate(base_model=tiny_base, serving=other, candidate=b, alpha=0.5, out=tmp_path / "none") is None
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        interpolate(base_model=tiny_base, serving=None, candidate=b, alpha=1.5, out=tmp_path / "bad")


def test_interpolation_per_module_group(tiny_base, tmp_path):
    """{"attention": a, "mlp": m}: each adapted module is mixed at its group's alpha (MLP: any module under `mlp`)."""
    targets = ("q_proj", "v_proj", "up_proj", "down_proj")
    a = _lora(tiny_base, tmp_path / "a", seed=1, targets=targets)
    b = _continued(a, tmp_path / "b")
    ua, ub = _update(a), _update(b)

    def alpha_of(name):
        return 1.0 if ".mlp." in name else 0.25

    # From the base model: the attention update scaled by 0.25, the MLP update whole.
    grouped = interpolate(base_model=tiny_base, serving=None, candidate=b, alpha={"attention": 0.25},
                          out=tmp_path / "grouped")
    for name, update in _update(check_adapter_dir(grouped)).items():
        torch.testing.assert_close(update, alpha_of(name) * ub[name])
    # Between two adapters: one SVD mix per alpha, each module taken from its group's.
    mix = interpolate(base_model=tiny_base, serving=a, candidate=b, alpha={"attention": 0.25, "mlp": 1.0},
                      out=tmp_path / "mix")
    mixed = _update(check_adapter_dir(mix))
    assert sorted(mixed) == sorted(ub) and any(".mlp." in name for name in mixed)
    for name, update in mixed.items():
        w = alpha_of(name)
        torch.testing.assert_close(update, (1 - w) * ua[name] + w * ub[name], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"unknown module group\(s\) \['ffn'\]"):
        interpolate(base_model=tiny_base, serving=a, candidate=b, alpha={"ffn": 0.5}, out=tmp_path / "bad")


def test_a_candidate_that_forgot_is_pulled_back_judged_again_and_promoted(isolated_env, default_model_path,
                                                                          fill_store, monkeypatch):
    """Planted as in test_training_gate.py: the night's liked answers teach the 135M model that a dog has three
    legs, so the trained candidate loses a must-still-answer fact; at alpha 0 (no update) it keeps it."""
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env / "state"))
    monkeypatch.setenv("KAIZEN_MODEL__NAME", str(default_model_path))
    settings = load_settings()
    store = FeedbackStore.open(settings)
    fill_store(store, range(4))  # liked and disliked answers: the held-out pairs the gate judges on
    for i, question in enumerate(["How many legs does a dog have?", "How many legs does a dog have",
                                  "how many legs does a dog have?", "How many legs does a dog have? Quick."] * 2):
        turn = Turn(text=question, platform="slack", workspace="T1", channel="C1", thread=f"dog{i}", user="asker")
        reply = Reply(answer="A dog has three legs.", turn=turn, model="smol",
                      prompt=[Message("system", SYSTEM), Message("user", question)])
        store.record(reply=reply)
        store.vote(interaction_id=reply.id, user="u1", value=1)
    store.close()
    regression = isolated_env / "regression.jsonl"
    regression.write_text(json.dumps({"question": "How many legs does a dog have?", "expect": ["4", "four"]}) + "\n")
    stage = {"lora_r": 8, "lora_alpha": 16, "learning_rate": 2e-3, "max_steps": 12, "batch_size": 4,
             "max_length": 64}
    recipes = Recipes.load(overrides={
        "sft": stage,
        "nightly": {"pipeline": ["sft"], "min_sft": 4, "replay": 0, "pull_back": [0.0], "eval_fraction": 0.25,
                    "gate": {"margin": -1.0, "max_new_tokens": 8, "regression_max_new_tokens": 24,
                             "regression_file": str(regression)}}})

    result = run_nightly(settings, recipes, progress=False)

    run = result.run
    # The trained candidate lost the fact; at alpha 0 (the base model's own weights) it is kept, and the gate
    # (margin -1: any preference result passes) promotes the pulled-back candidate, registered as its own version.
    lost = "regression: no longer answers 1 must-still-answer question(s): How many legs does a dog have?"
    tried = run.metrics["pull_back"]
    assert [(t["alpha"], t["promote"]) for t in tried] == [(1.0, False), (0.0, True)] and tried[0]["reason"] == lost
    assert result.status == "promoted", result.reason
    assert result.reason.endswith(f"(pulled back to alpha 0; at alpha 1: {lost})")
    assert run.metrics["regression_lost"] == [] and run.metrics["regression_candidate"] == 1
    registry = Registry(settings.data_dir)
    assert [v.name for v in registry.versions("policy")] == ["kaizen-0001", "kaizen-0002"]
    assert run.version == "kaizen-0002" and current_adapter(settings.data_dir)[0] == "kaizen-0002"
    assert registry.versions("policy")[1].metrics["pull_back_alpha"] == 0.0
    promoted = adapter_tensors(registry.versions("policy")[1].path)
    assert all(not t.any() for name, t in promoted.items() if "lora_B" in name)  # alpha 0: no update at all
    judged = [json.loads(line) for line in (registry.run_dir(run) / "gate_answers.jsonl").open()]
    assert {a["alpha"] for a in judged} == {1.0, 0.0}


def test_the_pull_back_goes_on_while_a_candidate_that_kept_every_fact_still_moves_toward_the_liked_answer():
    """A kept help-desk second night (bench/loop.py, 2026-12-06): attention 0 / MLP 1 kept every fact and moved 11 of
    15 held-out pairs (refused: 0.48-0.89); attention 0 / MLP 0.7, two alphas on, was promotable (13 of 15)."""
    cfg = GateConfig()

    def rejected(**metrics) -> GateReport:
        return GateReport(promote=False, reason="", metrics=metrics)

    assert _pull_further(cfg, rejected(regression_lost=["What is the largest ocean?"]), pulled=False, best=None)
    assert _pull_further(cfg, rejected(regression_lost=["What is the largest ocean?"]), pulled=True, best=0.9)
    # The trained candidate kept every fact: refused for something pulling back does not trade for.
    assert not _pull_further(cfg, rejected(pref_shift=11 / 15, pairs=15), pulled=False, best=None)
    assert _pull_further(cfg, rejected(pref_shift=11 / 15, pairs=15), pulled=True, best=None)
    # At or below the bar a smaller step along the same update is not tried (the with-settled candidate: 0.40).
    assert not _pull_further(cfg, rejected(pref_shift=0.40, pairs=15), pulled=True, best=None)
    assert not _pull_further(GateConfig(margin=0.3), rejected(pref_shift=11 / 15, pairs=15), pulled=True, best=None)
    assert not _pull_further(cfg, rejected(), pulled=True, best=None)  # nothing measured
    # Past an alpha that kept every fact, only while the share still rises: bench/loop.py's fourteenth run walked
    # five fact-keeping alphas of a help-desk night at 11 of 16 pairs each.
    assert _pull_further(cfg, rejected(pref_shift=13 / 15, pairs=15), pulled=True, best=11 / 15)
    assert not _pull_further(cfg, rejected(pref_shift=11 / 16, pairs=16), pulled=True, best=11 / 16)
    # Either measure counts: the reward model's win rate rising is reason enough to go on.
    both = {"pref_shift": 11 / 16, "pairs": 16, "win_rate": 13 / 16, "prompts": 16}
    assert _pull_further(cfg, rejected(**both), pulled=True, best=12 / 16)
