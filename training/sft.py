"""LoRA supervised fine-tuning on liked answers (trl SFTTrainer), loss on the answer tokens only (of a correction:
on the words the person changed, see training.data.to_tokenized).

    python -m training.sft --base data/models/SmolLM2-135M-Instruct --data sft.jsonl --out runs/x/sft
    accelerate launch --config_file deploy/accelerate.yaml -m training.sft --base ... --data ... --out ...
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common import RecipeError, StageResult, TrainRecipe, completed_stage, load_recipe, stage_cli

__all__ = ["SFTRecipe", "main", "run"]


@dataclass
class SFTRecipe(TrainRecipe):
    # Pack several short examples into one max_length row (faster on many short answers).
    packing: bool = False
    # A correction's words kept from the model's answer ("kept" in the export) in the loss too (see
    # training.data.to_tokenized: left out, a kept help-desk night lost 1 fact instead of 3 and liked 30/30, not 25/30).
    kept_in_loss: bool = False

    def check(self) -> None:
        super().check()
        if self.packing and self.max_length < 64:
            raise RecipeError("packing needs max_length of at least 64")


def run(recipe: SFTRecipe, *, base_model: str, train: list[dict[str, Any]], out_dir: Path,
        init_adapter: Path | None = None, progress: bool = True) -> StageResult:
    """Train an adapter on `train` (sft rows, checked) into out_dir/adapter; a finished out_dir is reused."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from training.common import load_policy, load_tokenizer, train_and_save
    from training.data import check, to_tokenized

    if (done := completed_stage(out_dir)) is not None:
        return done
    started = time.perf_counter()
    tokenizer = load_tokenizer(base_model)
    # Step 1: drop what cannot be trained on; tokenize with the loss on the answer alone (of a correction: on what the
    # person changed).
    checked = check(train, "sft", tokenizer=tokenizer, max_length=recipe.max_length, source="sft data")
    dataset = Dataset.from_list(to_tokenized(checked.rows, tokenizer, skip_kept=not recipe.kept_in_loss))
    # Step 2: the policy (continuing `init_adapter` if given) and trl's trainer.
    model, peft_config = load_policy(base_model, recipe, init_adapter)
    args = SFTConfig(**recipe.trainer_args(out_dir, progress=progress), max_length=recipe.max_length,
                     packing=recipe.packing, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    # Step 3: train (resuming from a checkpoint after a crash), save, measure.
    return train_and_save(trainer, "sft", out_dir, started=started,
                          extra={"examples": len(checked.rows), "skipped": sum(checked.skipped.values())})


def main(argv: list[str] | None = None) -> StageResult:
    from training.data import read_jsonl

    args = stage_cli(__doc__.splitlines()[0], argv)
    recipe = load_recipe(SFTRecipe, args.recipe, stage="sft")
    rows = [row for path in args.data for row in read_jsonl(path)]
    result = run(recipe, base_model=args.base, train=rows, out_dir=args.out, init_adapter=args.init_adapter)
    print(result.to_dict())
    return result


if __name__ == "__main__":
    main()
