"""A reward model: the base model with a one-output sequence-classification head and LoRA, trained on preference
pairs with trl's RewardTrainer; reports pairwise accuracy on a held-out split.

    python -m training.reward --base data/models/SmolLM2-135M-Instruct --data pairs.jsonl --out runs/x/reward
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common import RecipeError, StageResult, TrainRecipe, completed_stage, load_recipe, stage_cli

__all__ = ["RewardRecipe", "load_reward_model", "main", "pairwise_accuracy", "run", "score"]


@dataclass
class RewardRecipe(TrainRecipe):
    # Share of the pairs' prompts held out to measure pairwise accuracy (0 = measure on the training pairs).
    eval_fraction: float = 0.2

    def check(self) -> None:
        super().check()
        if not 0 <= self.eval_fraction < 1:
            raise RecipeError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


def run(recipe: RewardRecipe, *, base_model: str, train: list[dict[str, Any]], out_dir: Path,
        progress: bool = True) -> StageResult:
    """Train a reward adapter on pairs into out_dir/adapter; metrics include held-out `pairwise_accuracy`."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from training.common import load_tokenizer, train_and_save
    from training.data import check, holdout_split

    if (done := completed_stage(out_dir)) is not None:
        return done
    started = time.perf_counter()
    tokenizer = load_tokenizer(base_model)
    # Step 1: usable pairs, split by prompt so held-out questions were never seen in training.
    checked = check(train, "pairs", tokenizer=tokenizer, max_length=recipe.max_length, source="reward pairs")
    split, held = holdout_split({"pairs": checked.rows}, recipe.eval_fraction)
    train_rows, eval_rows = split["pairs"], held["pairs"] or split["pairs"]
    # Step 2: the scalar head (num_labels=1) reads the last non-pad token, so the model must know the pad id.
    dtype, _ = recipe.device_setup()
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(**recipe.trainer_args(out_dir, progress=progress), max_length=recipe.max_length)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                            processing_class=tokenizer, peft_config=recipe.lora_config("SEQ_CLS", model=model))
    # Step 3: train, then measure on the held-out pairs with the trained model as it will be used.
    result = train_and_save(trainer, "reward", out_dir, started=started,
                            extra={"examples": len(train_rows), "eval_pairs": len(eval_rows),
                                   "skipped": sum(checked.skipped.values())})
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    result.metrics["pairwise_accuracy"] = pairwise_accuracy(trained, tokenizer, eval_rows)
    result.metrics["eval_on"] = "held-out" if held["pairs"] else "train"
    if trainer.accelerator.is_main_process:
        _rewrite_done(out_dir, result)
    return result


def _rewrite_done(out_dir: Path, result: StageResult) -> None:
    import json

    from training.common import DONE_FILE

    (out_dir / DONE_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")


def load_reward_model(base_model: str, adapter: Path | str, *, dtype=None):
    """(model, tokenizer): the reward adapter merged into its base, in eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from training.common import load_tokenizer

    tokenizer = load_tokenizer(base_model)
    kw = {"dtype": dtype} if dtype is not None else {}
    base = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1, **kw)
    base.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().eval()
    return model, tokenizer


def score(model, tokenizer, prompts: list[list[dict[str, str]]], answers: list[str], *, batch_size: int = 8
          ) -> list[float]:
    """The reward of each (prompt, answer), read as the chat template renders the whole exchange."""
    import torch

    texts = [tokenizer.apply_chat_template(p + [{"role": "assistant", "content": a}], tokenize=False)
             for p, a in zip(prompts, answers, strict=True)]
    scores: list[float] = []
    device = next(model.parameters()).device
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, padding_side="right",
                          add_special_tokens=False).to(device)
        with torch.inference_mode():
            scores += model(**batch).logits[:, 0].float().tolist()
    return scores


def pairwise_accuracy(model, tokenizer, pairs: list[dict[str, Any]]) -> float:
    """Share of pairs whose chosen answer scores above the rejected one."""
    if not pairs:
        return float("nan")
    prompts = [p["prompt"] for p in pairs]
    chosen = score(model, tokenizer, prompts, [p["chosen"][0]["content"] for p in pairs])
    rejected = score(model, tokenizer, prompts, [p["rejected"][0]["content"] for p in pairs])
    return round(sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs), 4)


def main(argv: list[str] | None = None) -> StageResult:
    from training.data import read_jsonl

    args = stage_cli(__doc__.splitlines()[0], argv)
    recipe = load_recipe(RewardRecipe, args.recipe, stage="reward")
    rows = [row for path in args.data for row in read_jsonl(path)]
    result = run(recipe, base_model=args.base, train=rows, out_dir=args.out)
    print(result.to_dict())
    return result


if __name__ == "__main__":
    main()
