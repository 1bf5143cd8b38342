"""Policy updates against the reward model: PPO's clipped surrogate objective with a KL penalty to the reference
policy, via trl's RLOOTrainer (trl 1.16 has no PPOTrainer). RLOO samples `num_generations` answers per prompt,
uses the leave-one-out mean reward as the baseline (no value network), subtracts `beta` x KL(policy || reference)
from the reward, and clips the probability ratio to [1 - epsilon, 1 + epsilon] as PPO does. LoRA on the policy;
the reference is the policy as the stage starts (trl keeps a frozen copy of the adapter).

    python -m training.rl --base data/models/SmolLM2-135M-Instruct --data prompts.jsonl --reward runs/x/reward/adapter \
        --out runs/x/rl
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common import RecipeError, StageResult, TrainRecipe, completed_stage, load_recipe

__all__ = ["RLRecipe", "main", "run"]


@dataclass
class RLRecipe(TrainRecipe):
    learning_rate: float = 2e-5
    # Answers sampled per prompt (RLOO's group); batch_size x grad_accum must be a multiple of it.
    num_generations: int = 4
    max_completion_length: int = 64
    beta: float = 0.05  # KL penalty coefficient
    epsilon: float = 0.2  # PPO clip range
    num_iterations: int = 1  # optimisation passes over each batch of generations
    temperature: float = 1.0

    def check(self) -> None:
        super().check()
        if self.num_generations < 2:
            raise RecipeError(f"num_generations must be at least 2 (RLOO's baseline), got {self.num_generations}")
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise RecipeError(f"batch_size x grad_accum ({self.batch_size * self.grad_accum}) must be a multiple of "
                              f"num_generations ({self.num_generations})")
        if self.max_completion_length >= self.max_length:
            raise RecipeError("max_completion_length must be below max_length (the prompt needs room)")


def run(recipe: RLRecipe, *, base_model: str, prompts: list[dict[str, Any]], reward_adapter: Path, out_dir: Path,
        init_adapter: Path | None = None, progress: bool = True) -> StageResult:
    """Train the policy adapter on `prompts` ({"prompt": [...]}) against the reward model in `reward_adapter`."""
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    from training.common import load_policy, load_tokenizer, train_and_save
    from training.data import check
    from training.reward import load_reward_model

    if (done := completed_stage(out_dir)) is not None:
        return done
    started = time.perf_counter()
    tokenizer = load_tokenizer(base_model)
    # Step 1: prompts that leave room for an answer of max_completion_length.
    budget = recipe.max_length - recipe.max_completion_length
    checked = check(prompts, "prompts", tokenizer=tokenizer, max_length=budget, source="rl prompts")
    # Step 2: the reward model (merged, frozen) and the policy with LoRA.
    dtype, _ = recipe.device_setup()
    reward_model, reward_tokenizer = load_reward_model(base_model, reward_adapter, dtype=dtype)
    model, peft_config = load_policy(base_model, recipe, init_adapter)
    args = RLOOConfig(
        **recipe.trainer_args(out_dir, progress=progress),
        num_generations=recipe.num_generations,
        max_completion_length=recipe.max_completion_length,
        beta=recipe.beta,
        epsilon=recipe.epsilon,
        num_iterations=recipe.num_iterations,
        temperature=recipe.temperature,
    )
    trainer = RLOOTrainer(model=model, reward_funcs=reward_model, reward_processing_classes=reward_tokenizer,
                          args=args, train_dataset=Dataset.from_list(checked.rows), processing_class=tokenizer,
                          peft_config=peft_config)
    # Step 3: train; the first and last logged mean reward show whether the policy moved toward the reward model.
    return train_and_save(trainer, "rl", out_dir, started=started,
                          extra={"prompts": len(checked.rows), "skipped": sum(checked.skipped.values())})


def main(argv: list[str] | None = None) -> StageResult:
    import argparse

    from training.data import read_jsonl

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--data", required=True, action="append", type=Path, help="prompts JSONL (repeatable)")
    parser.add_argument("--reward", required=True, type=Path, help="reward adapter folder")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--recipe", type=Path, default=None)
    parser.add_argument("--init-adapter", type=Path, default=None)
    args = parser.parse_args(argv)
    recipe = load_recipe(RLRecipe, args.recipe, stage="rl")
    rows = [row for path in args.data for row in read_jsonl(path)]
    result = run(recipe, base_model=args.base, prompts=rows, reward_adapter=args.reward, out_dir=args.out,
                 init_adapter=args.init_adapter)
    print(result.to_dict())
    return result


if __name__ == "__main__":
    main()
