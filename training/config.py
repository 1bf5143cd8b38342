"""The nightly job's recipes: which stages run on how much data, and each stage's own recipe.

`Recipes.load()` reads training/recipes/<stage>.toml (or a folder of your own), then `--set stage.key=value`
overrides (`parse_sets`); `plan_stages` picks tonight's stages from the example counts.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.common import RecipeError, load_recipe
from training.dpo import DPORecipe
from training.gate import GateConfig
from training.kto import KTORecipe
from training.pullback import group_alphas
from training.reward import RewardRecipe
from training.rl import RLRecipe
from training.sft import SFTRecipe

__all__ = ["STAGES", "NightlyConfig", "Recipes", "parse_sets", "plan_stages"]

STAGES = ("sft", "reward", "rl", "dpo", "kto")


@dataclass
class NightlyConfig:
    # "auto" = sft, then reward + rl with enough pairs, else kto; or an explicit list such as ["sft", "dpo"].
    pipeline: str | list[str] = "auto"
    # New examples a stage needs before it runs (fewer: the stage is left out, none left: the night is skipped).
    min_sft: int = 8
    min_pairs: int = 8
    min_kto: int = 8
    # Who may talk to the trained model ("public": answers drawn from restricted sources are left out).
    audience: str = "public"
    scrub: bool = True  # e-mails, phone numbers, mentions replaced before training
    eval_fraction: float = 0.2  # share of prompts held out for the gate (stratified: see training.data.holdout_split)
    # ... and more prompts with pairs, up to half of them, until this many pairs are held out: the gate's interval
    # needs them (16 pairs: 12 moved passes at 95 %; 6 pairs: only 6 of 6 does).
    min_held_out_pairs: int = 16
    curated_sft: str = ""  # optional JSONL of hand-written examples added to every SFT stage
    # Against forgetting: up to this many of the serving policy's own good answers to general prompts are added to
    # the SFT data (see `training.replay`); 0 = off. `replay_file` "" = the packaged training/recipes/replay.jsonl.
    replay: int = 48
    replay_file: str = ""
    replay_max_new_tokens: int = 96
    # A person's correction ("origin": "correction" in the SFT export) is this many SFT rows: the best data there is.
    correction_repeats: int = 1
    # A liked answer whose prompt got no disliked answer is "settled": serving already does what people want there.
    # "keep": SFT trains on it; "skip": it is left out; "retry": kept, and if the gate rejects that candidate at every
    # pull-back alpha, a second candidate is trained without the settled answers and judged the same way. Either
    # needs something besides settled answers: with only those, SFT trains on them.
    settled: str = "retry"
    # A candidate the gate rejects for a lost must-still-answer fact is tried again at these weights between serving
    # (0) and it (1), in order (training/pullback.py: WiSE-FT); an entry is one alpha or one per module group,
    # {"attention": a, "mlp": m}; [] = off.
    pull_back: list[float | dict[str, float]] = field(default_factory=lambda: [
        {"attention": 0.0, "mlp": 1.0}, 0.7, {"attention": 0.0, "mlp": 0.7}, 0.5, 0.3, 0.15])
    # The gate's judge when tonight's stages train no reward model: one trained on every preference pair so far (the
    # most recent `judge_max_pairs`), tonight's held-out prompts left out; its win rate on sampled answers is a second
    # measure of better beside the held-out pairs (training/gate.py). False: the pairs alone (or an earlier reward
    # model) judge.
    judge: bool = True
    judge_max_pairs: int = 512
    max_attempts: int = 3  # a run that keeps failing is abandoned after this many tries
    # "inprocess": every stage runs in this process (CPU or one GPU). "accelerate": each stage is started with
    # `accelerate launch` (several GPUs), configured by `accelerate_config` (e.g. deploy/accelerate.yaml).
    launcher: str = "inprocess"
    accelerate_config: str = ""
    gate: GateConfig = field(default_factory=GateConfig)

    def check(self) -> None:
        if isinstance(self.pipeline, list):
            unknown = [s for s in self.pipeline if s not in STAGES]
            if unknown or not self.pipeline:
                raise RecipeError(f"pipeline: unknown stage(s) {unknown}; valid: {', '.join(STAGES)} or 'auto'")
        elif self.pipeline != "auto":
            raise RecipeError(f"pipeline must be 'auto' or a list of stages, got {self.pipeline!r}")
        if not 0 <= self.eval_fraction < 1:
            raise RecipeError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.min_held_out_pairs < 0:
            raise RecipeError(f"min_held_out_pairs must be >= 0, got {self.min_held_out_pairs}")
        if self.launcher not in ("inprocess", "accelerate"):
            raise RecipeError(f"launcher must be 'inprocess' or 'accelerate', got {self.launcher!r}")
        if self.settled not in ("keep", "skip", "retry"):
            raise RecipeError(f"settled must be 'keep', 'skip' or 'retry', got {self.settled!r}")
        if self.replay < 0 or self.replay_max_new_tokens < 1:
            raise RecipeError("replay must be >= 0 and replay_max_new_tokens >= 1")
        for alpha in self.pull_back:
            try:
                weights = group_alphas(alpha)
            except (ValueError, TypeError) as e:
                raise RecipeError(f"pull_back: {e}") from None
            if min(weights.values()) == 1:
                raise RecipeError(f"pull_back: {alpha} is the candidate itself; each entry needs an alpha below 1")
        if self.judge_max_pairs < 1:
            raise RecipeError(f"judge_max_pairs must be at least 1, got {self.judge_max_pairs}")
        if self.correction_repeats < 1:
            raise RecipeError(f"correction_repeats must be at least 1, got {self.correction_repeats}")
        if min(self.min_sft, self.min_pairs, self.min_kto) < 1 or self.max_attempts < 1:
            raise RecipeError("min_sft, min_pairs, min_kto and max_attempts must be at least 1")
        self.gate.check()


@dataclass
class Recipes:
    nightly: NightlyConfig
    sft: SFTRecipe
    reward: RewardRecipe
    rl: RLRecipe
    dpo: DPORecipe
    kto: KTORecipe

    @classmethod
    def load(cls, folder: Path | str | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Recipes:
        """Each recipe from `folder/<stage>.toml` if there, else the packaged one; then `overrides[stage]`."""
        overrides = overrides or {}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise RecipeError(f"unknown recipe(s) {', '.join(sorted(unknown))}; valid: nightly, {', '.join(STAGES)}")
        types = {"nightly": NightlyConfig, "sft": SFTRecipe, "reward": RewardRecipe, "rl": RLRecipe,
                 "dpo": DPORecipe, "kto": KTORecipe}
        if folder is not None and not Path(folder).is_dir():
            raise RecipeError(f"recipes folder not found: {folder}; give a folder holding <stage>.toml files "
                              f"({', '.join(types)}) or leave --recipes out to use the packaged recipes")
        loaded = {}
        for name in types:
            own = Path(folder) / f"{name}.toml" if folder else None
            path = own if own is not None and own.is_file() else None
            loaded[name] = load_recipe(types[name], path, overrides.get(name), stage=name)
        return cls(**loaded)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """`stage.key=value` (value in TOML syntax, else a string) -> {"stage": {"key": value}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2:
            raise RecipeError(f"--set {item!r}: expected stage.key=value, e.g. sft.max_steps=10")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        node = out.setdefault(parts[0], {})
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def plan_stages(cfg: NightlyConfig, counts: dict[str, int], *, have_reward: bool) -> tuple[list[str], list[str]]:
    """(stages to run, why others were left out) from the example counts."""
    enough = {"sft": counts["sft"] >= cfg.min_sft, "pairs": counts["pairs"] >= cfg.min_pairs,
              "kto": counts["kto"] >= cfg.min_kto}
    needs = {"sft": "sft", "reward": "pairs", "dpo": "pairs", "kto": "kto", "rl": "pairs"}
    minimum = {"sft": cfg.min_sft, "pairs": cfg.min_pairs, "kto": cfg.min_kto}
    stages, notes = [], []
    if cfg.pipeline == "auto":
        wanted = ["sft"] + (["reward", "rl"] if enough["pairs"] else ["kto"])
        if not enough["pairs"]:
            notes.append(f"reward + rl: {counts['pairs']} new pairs example(s), needs {cfg.min_pairs}")
    else:
        wanted = list(cfg.pipeline)
    for stage in wanted:
        data = needs[stage]
        if stage == "rl" and "reward" not in stages and not have_reward:
            notes.append("rl: no reward model (train one: add 'reward' before 'rl')")
        elif not enough[data]:
            notes.append(f"{stage}: {counts[data]} new {data} example(s), needs {minimum[data]}")
        else:
            stages.append(stage)
    return stages, notes
