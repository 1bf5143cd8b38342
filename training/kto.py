"""KTO on unpaired 👍/👎 answers as they come (trl KTOTrainer) with LoRA: no pairs needed, each labelled answer
counts on its own against a reference (the policy as the stage starts).

    python -m training.kto --base data/models/SmolLM2-135M-Instruct --data kto.jsonl --out runs/x/kto
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common import RecipeError, StageResult, TrainRecipe, completed_stage, load_recipe, stage_cli

__all__ = ["KTORecipe", "main", "run"]

logger = logging.getLogger(__name__)


@dataclass
class KTORecipe(TrainRecipe):
    learning_rate: float = 5e-5
    beta: float = 0.1
    # 0 = balance automatically so 👍 and 👎 weigh the same in total (KTO's recommended 1 to 4/3 ratio).
    desirable_weight: float = 0.0
    undesirable_weight: float = 1.0

    def check(self) -> None:
        super().check()
        if self.batch_size < 2:
            raise RecipeError("KTO needs batch_size of at least 2 (its KL estimate pairs examples in a batch)")
        if self.beta <= 0 or self.undesirable_weight <= 0 or self.desirable_weight < 0:
            raise RecipeError("beta and undesirable_weight must be positive, desirable_weight >= 0")


def run(recipe: KTORecipe, *, base_model: str, train: list[dict[str, Any]], out_dir: Path,
        init_adapter: Path | None = None, progress: bool = True) -> StageResult:
    """Train the policy adapter on labelled answers into out_dir/adapter."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from training.common import load_policy, load_tokenizer, train_and_save
    from training.data import check

    if (done := completed_stage(out_dir)) is not None:
        return done
    started = time.perf_counter()
    tokenizer = load_tokenizer(base_model)
    checked = check(train, "kto", tokenizer=tokenizer, max_length=recipe.max_length, source="kto data")
    if len(checked.rows) < 2:
        raise RecipeError("KTO needs at least 2 labelled answers")
    # Step 1: weigh the rarer label up so the model does not just learn the majority vote.
    liked = sum(r["label"] for r in checked.rows)
    disliked = len(checked.rows) - liked
    desirable = recipe.desirable_weight or (round(disliked / liked * recipe.undesirable_weight, 4)
                                           if liked and disliked else 1.0)
    model, peft_config = load_policy(base_model, recipe, init_adapter)
    args = KTOConfig(**recipe.trainer_args(out_dir, progress=progress), max_length=recipe.max_length,
                     beta=recipe.beta, desirable_weight=desirable, undesirable_weight=recipe.undesirable_weight)
    trainer = KTOTrainer(model=model, args=args, train_dataset=Dataset.from_list(checked.rows),
                         processing_class=tokenizer, peft_config=peft_config)
    return train_and_save(trainer, "kto", out_dir, started=started,
                          extra={"examples": len(checked.rows), "liked": liked, "disliked": disliked,
                                 "desirable_weight": desirable, "skipped": sum(checked.skipped.values())})


def main(argv: list[str] | None = None) -> StageResult:
    from training.data import read_jsonl

    args = stage_cli(__doc__.splitlines()[0], argv)
    recipe = load_recipe(KTORecipe, args.recipe, stage="kto")
    rows = [row for path in args.data for row in read_jsonl(path)]
    result = run(recipe, base_model=args.base, train=rows, out_dir=args.out, init_adapter=args.init_adapter)
    print(result.to_dict())
    return result


if __name__ == "__main__":
    main()
