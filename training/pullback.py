"""Pull-back: a candidate that forgot is moved part of the way back toward the serving policy, in weight space.

WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): interpolating the weights of a model and
its fine-tuned copy, theta = theta_serving + alpha * (theta_candidate - theta_serving), keeps much of what the
fine-tuning learned while recovering what the original knew. Measured here on a kept bench/loop.py night (help-desk
preference, SFT at lr 5e-4 for 4 epochs, 2026-12-05; 30 held-out questions, 20 must-still-answer facts):

    alpha   1.0    0.9    0.8    0.7    0.5
    liked   25/30  23/30  22/30  12/30  0/30
    facts   17/20  18/20  19/20  20/20  20/20

so a strong night that forgot ("A dog has 45 legs.") still has a candidate between it and serving that keeps every
fact and much of the gain. The nightly job tries `pull_back` alphas only when the gate found a lost fact, and each
pulled-back candidate faces the whole gate again.

On LoRA weights the interpolation is of the weight update B·A, not of A and B one by one (that path is not a line:
bench/loop.py's numbered night 2 lost a fact at alpha 0.5 that neither end lost): with nothing promoted (the base
model serves) B is scaled by alpha, exactly; between two adapters the update (1 - alpha)·ΔW_serving +
alpha·ΔW_candidate is computed and cut back to the candidate's rank by SVD (peft's `add_weighted_adapter`, "svd"),
so nightly adapters do not grow.

Alpha may also be given per module group, {"attention": a, "mlp": m} (a group left out keeps 1): on three kept nights
(2026-12-06; 30 held-out questions, 20 facts) the liked behaviour lived mostly in the MLP update and the forgetting
often in the attention one, so keeping the MLP update whole while pulling attention back kept more than any single
alpha that kept every fact:

    night (trained candidate)          attention 0, mlp 1     attention 0, mlp 0.8   best single alpha, all facts
    help desk, strong (lr 5e-4 x 4)    16/30 liked, 20/20     -                      0.7: 12/30
    help desk, bench night 1           7/30, 20/20            2/30, 20/20            0.3: 0/30 (0.5 lost the heart)
    numbered, bench night 1            lost 2 facts           5/30, 20/20            0.3 (0.5 lost a dog's legs)
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["GROUPS", "Alpha", "describe", "group_alphas", "interpolate"]

logger = logging.getLogger(__name__)

WEIGHTS = "adapter_model.safetensors"
# Module groups a per-group alpha names: a LoRA module whose path has one of these parts is in the MLP group (Llama's
# mlp.gate_proj, GPT-2's mlp.c_fc, Falcon's ffn ...); every other adapted module is in the attention group.
GROUPS = ("attention", "mlp")
_MLP_PARTS = ("mlp", "ffn", "feed_forward")

Alpha = float | Mapping[str, float]


def group_alphas(alpha: Alpha) -> dict[str, float]:
    """{"attention": a, "mlp": m} for a single alpha or a per-group mapping (a group left out keeps 1.0).
    Raises ValueError for an unknown group or an alpha outside [0, 1]."""
    if isinstance(alpha, Mapping):
        unknown = sorted(set(alpha) - set(GROUPS))
        if unknown:
            raise ValueError(f"unknown module group(s) {unknown}; valid: {', '.join(GROUPS)}")
        weights = {group: float(alpha.get(group, 1.0)) for group in GROUPS}
    else:
        weights = dict.fromkeys(GROUPS, float(alpha))
    if any(not 0.0 <= a <= 1.0 for a in weights.values()):
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return weights


def describe(alpha: Alpha) -> str:
    """How reasons and folder names show an alpha: "0.7", or "attention 0, mlp 1"."""
    weights = group_alphas(alpha)
    if len(set(weights.values())) == 1:
        return f"{weights['attention']:g}"
    return ", ".join(f"{group} {a:g}" for group, a in weights.items())


def _group(name: str) -> str:
    return "mlp" if any(part in name.split(".") for part in _MLP_PARTS) else "attention"


def interpolate(*, base_model: str, serving: Path | None, candidate: Path, alpha: Alpha, out: Path) -> Path | None:
    """An adapter folder at `out` whose weight update is (1 - alpha) * serving's + alpha * the candidate's, module by
    module (alpha a number, or per group: {"attention": a, "mlp": m}); `serving` None = the base model (lora_B
    scaled by alpha). None when the two adapters adapt different modules (e.g. a recipe changed the LoRA targets
    since serving was trained). Raises ValueError for an alpha outside [0, 1] or an unknown group."""
    weights = group_alphas(alpha)
    if out.exists():
        shutil.rmtree(out)
    if serving is None:
        from safetensors.torch import load_file, save_file

        tuned = load_file(str(Path(candidate) / WEIGHTS))
        shutil.copytree(candidate, out, ignore=shutil.ignore_patterns(WEIGHTS, "*.bin", "kaizen.json"))
        save_file({name: (t * weights[_group(name)] if "lora_B" in name else t).contiguous()
                   for name, t in tuned.items()}, str(out / WEIGHTS))
        return out
    return _mix(base_model, Path(serving), Path(candidate), weights, out)


def _mix(base_model: str, serving: Path, candidate: Path, weights: dict[str, float], out: Path) -> Path | None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32),
                                      str(candidate), adapter_name="candidate")
    model.load_adapter(str(serving), adapter_name="serving")
    configs = model.peft_config
    if set(configs["serving"].target_modules) != set(configs["candidate"].target_modules) or (
            configs["serving"].layers_to_transform != configs["candidate"].layers_to_transform):
        logger.warning("pull-back: %s and %s adapt different modules; not interpolating", serving, candidate)
        return None
    alphas = sorted(set(weights.values()))
    # Both endpoints exactly, with no SVD round-off: alpha 0 is serving, alpha 1 the candidate.
    if alphas in ([0.0], [1.0]):
        shutil.copytree(serving if alphas == [0.0] else candidate, out, ignore=shutil.ignore_patterns("kaizen.json"))
        return out
    # One SVD mix per distinct alpha, all at the candidate's rank (so one adapter config fits them all); each module
    # then takes its A and B from the mix of its group's alpha.
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        for i, a in enumerate(alphas):
            model.add_weighted_adapter(["serving", "candidate"], [1.0 - a, a], f"mixed{i}", combination_type="svd",
                                       svd_rank=configs["candidate"].r)
            model.save_pretrained(tmp, selected_adapters=[f"mixed{i}"])
        shutil.copytree(Path(tmp) / "mixed0", out)
        if len(alphas) > 1:
            mixes = {a: load_file(str(Path(tmp) / f"mixed{i}" / WEIGHTS)) for i, a in enumerate(alphas)}
            save_file({name: mixes[weights[_group(name)]][name].contiguous() for name in mixes[alphas[0]]},
                      str(out / WEIGHTS))
    for extra in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):  # as the stages save them
        if (candidate / extra).is_file():
            shutil.copy2(candidate / extra, out / extra)
    return out
