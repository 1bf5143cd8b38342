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
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

__all__ = ["interpolate"]

logger = logging.getLogger(__name__)

WEIGHTS = "adapter_model.safetensors"


def interpolate(*, base_model: str, serving: Path | None, candidate: Path, alpha: float, out: Path) -> Path | None:
    """An adapter folder at `out` whose weight update is (1 - alpha) * serving's + alpha * the candidate's;
    `serving` None = the base model (lora_B scaled by alpha). None when the two adapters adapt different modules
    (e.g. a recipe changed the LoRA targets since serving was trained). Raises ValueError for alpha outside [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if out.exists():
        shutil.rmtree(out)
    if serving is None:
        from safetensors.torch import load_file, save_file

        tuned = load_file(str(Path(candidate) / WEIGHTS))
        shutil.copytree(candidate, out, ignore=shutil.ignore_patterns(WEIGHTS, "*.bin", "kaizen.json"))
        save_file({name: (t * alpha if "lora_B" in name else t).contiguous() for name, t in tuned.items()},
                  str(out / WEIGHTS))
        return out
    return _mix(base_model, Path(serving), Path(candidate), alpha, out)


def _mix(base_model: str, serving: Path, candidate: Path, alpha: float, out: Path) -> Path | None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32),
                                      str(candidate), adapter_name="candidate")
    model.load_adapter(str(serving), adapter_name="serving")
    configs = model.peft_config
    if set(configs["serving"].target_modules) != set(configs["candidate"].target_modules) or (
            configs["serving"].layers_to_transform != configs["candidate"].layers_to_transform):
        logger.warning("pull-back: %s and %s adapt different modules; not interpolating", serving, candidate)
        return None
    # Both endpoints exactly, with no SVD round-off: alpha 0 is serving, alpha 1 the candidate.
    if alpha in (0.0, 1.0):
        shutil.copytree(serving if alpha == 0.0 else candidate, out, ignore=shutil.ignore_patterns("kaizen.json"))
        return out
    model.add_weighted_adapter(["serving", "candidate"], [1.0 - alpha, alpha], "mixed", combination_type="svd",
                               svd_rank=configs["candidate"].r)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        model.save_pretrained(tmp, selected_adapters=["mixed"])
        shutil.copytree(Path(tmp) / "mixed", out)
    for extra in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):  # as the stages save them
        if (candidate / extra).is_file():
            shutil.copy2(candidate / extra, out / extra)
    return out
