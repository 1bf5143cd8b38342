"""Direct preference optimisation on 👍/👎 pairs (trl DPOTrainer) with LoRA; the reference is the policy as the
stage starts (the adapter disabled, or a frozen copy of the adapter it continues).

    python -m training.dpo --base data/models/SmolLM2-135M-Instruct --data pairs.jsonl --out runs/x/dpo
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common import RecipeError, StageResult, TrainRecipe, completed_stage, load_recipe, stage_cli

__all__ = ["DPORecipe", "main", "run"]


@dataclass
class DPORecipe(TrainRecipe):
    learning_rate: float = 5e-5
    beta: float = 0.1  # how far from the reference the policy may move (higher = closer)
    loss_type: str = "sigmoid"
    # The reference's log-probabilities computed once before training instead of at every step (the reference is
    # fixed: the policy as the stage starts); a DPO step then costs one policy forward + backward.
    precompute_ref: bool = True

    def check(self) -> None:
        super().check()
        if self.beta <= 0:
            raise RecipeError(f"beta must be positive, got {self.beta}")


def run(recipe: DPORecipe, *, base_model: str, train: list[dict[str, Any]], out_dir: Path,
        init_adapter: Path | None = None, progress: bool = True) -> StageResult:
    """Train the policy adapter on preference pairs into out_dir/adapter."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from training.common import load_policy, load_tokenizer, train_and_save
    from training.data import check

    if (done := completed_stage(out_dir)) is not None:
        return done
    started = time.perf_counter()
    tokenizer = load_tokenizer(base_model)
    checked = check(train, "pairs", tokenizer=tokenizer, max_length=recipe.max_length, source="dpo pairs")
    model, peft_config = load_policy(base_model, recipe, init_adapter)
    args = DPOConfig(**recipe.trainer_args(out_dir, progress=progress), max_length=recipe.max_length,
                     beta=recipe.beta, loss_type=[recipe.loss_type],
                     precompute_ref_log_probs=recipe.precompute_ref)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(checked.rows),
                         processing_class=tokenizer, peft_config=peft_config)
    return train_and_save(trainer, "dpo", out_dir, started=started,
                          extra={"examples": len(checked.rows), "skipped": sum(checked.skipped.values())})


def main(argv: list[str] | None = None) -> StageResult:
    from training.data import read_jsonl

    args = stage_cli(__doc__.splitlines()[0], argv)
    recipe = load_recipe(DPORecipe, args.recipe, stage="dpo")
    rows = [row for path in args.data for row in read_jsonl(path)]
    result = run(recipe, base_model=args.base, train=rows, out_dir=args.out, init_adapter=args.init_adapter)
    print(result.to_dict())
    return result


if __name__ == "__main__":
    main()
