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

On LoRA weights: with nothing promoted (the base model serves) only B is scaled, so the weight update B·A is
scaled by exactly alpha. When the candidate continued the serving adapter (same tensors), each tensor is
interpolated; the update is then exact at alpha 0 and 1 and a smooth path between them.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

__all__ = ["interpolate"]

logger = logging.getLogger(__name__)

WEIGHTS = "adapter_model.safetensors"


def interpolate(*, serving: Path | None, candidate: Path, alpha: float, out: Path) -> Path | None:
    """An adapter folder at `out` with weights serving + alpha * (candidate - serving); `serving` None = the base
    model (lora_B scaled by alpha). None when the two adapters' tensors differ in names or shapes (e.g. a recipe
    changed the LoRA targets since serving was trained): then no path between them is defined here.
    Raises ValueError for alpha outside [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    from safetensors.torch import load_file, save_file

    tuned = load_file(str(Path(candidate) / WEIGHTS))
    if serving is None:
        mixed = {name: t * alpha if "lora_B" in name else t for name, t in tuned.items()}
    else:
        start = load_file(str(Path(serving) / WEIGHTS))
        if start.keys() != tuned.keys() or any(start[k].shape != tuned[k].shape for k in tuned):
            logger.warning("pull-back: %s and %s hold different tensors; not interpolating", serving, candidate)
            return None
        mixed = {name: start[name] + alpha * (t - start[name]) for name, t in tuned.items()}
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(candidate, out, ignore=shutil.ignore_patterns(WEIGHTS, "*.bin", "kaizen.json"))
    save_file({k: v.contiguous() for k, v in mixed.items()}, str(out / WEIGHTS))
    return out
