"""Training benchmarks on the default SmolLM2-135M-Instruct.

    .venv/bin/python bench/training.py [--only sft,nightly,loop] [--sft-steps 6] [--precision auto]

1. SFT tokens/s and peak memory: `training.sft` against a plain trl SFTTrainer script with the same settings
   (LoRA r=16 all-linear, seq 256, batch 4; fp32 on CPU, bf16 on a GPU), each in its own process so peak memory
   (max RSS on CPU, max CUDA allocation on a GPU) is its own. Tokens are non-padding input tokens; time is trl's
   train_runtime (model loading excluded).
2. Wall time of one nightly cycle (export -> SFT -> reward -> RL -> gate -> promote) for 1,000 interactions,
   with the step counts capped as printed (the default recipes train for epochs, far longer on a CPU).
3. The loop works: simulated users with a hidden, consistent preference (step-by-step answers: a numbered list)
   vote on the assistant's answers (two sampled answers per question: "another answer" gives pairs); the like rate
   of greedy answers to held-out questions before and after one and two nightly cycles (default pipeline).
   (A length preference — under 60 words — does not work as a test with this model: its answers to these questions
   run to the token limit, 5 % of them are under 60 words, so there is almost nothing liked to learn from.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAX_NEW_TOKENS = 96
STEPS = re.compile(r"(^|\n)\s*1[.)]\s")  # the hidden preference: answers laid out as numbered steps
TOPICS = ["the VPN", "expense reports", "the wiki", "code review", "on-call", "the staging database", "vacation days",
          "the coffee machine", "a new laptop", "the office wifi", "Jira access", "the release process",
          "password rotation", "the team calendar", "printer problems", "onboarding", "the build server",
          "customer tickets", "meeting rooms", "the holiday party"]
FORMS = ["How do I deal with {}?", "What should I know about {}?", "Who do I ask about {}?", "Explain {} to me.",
         "Any tips for {}?"]
CAPS = {"sft": {"max_steps": 20}, "reward": {"max_steps": 20},
        "rl": {"max_steps": 3, "num_generations": 4, "max_completion_length": 32},
        "nightly": {"gate": {"max_examples": 16, "max_new_tokens": 48}}}


def questions() -> list[str]:
    qs = [form.format(topic) for topic in TOPICS for form in FORMS]
    random.Random(3).shuffle(qs)
    return qs


def liked(answer: str) -> bool:
    return bool(STEPS.search(answer))


# ---- 1. SFT throughput -------------------------------------------------------------------------------------


def sft_rows(n: int = 64) -> list[dict]:
    text = ("To rotate the credentials, create the new database user first, deploy the configuration that uses it, "
            "watch the error rate, and only then drop the old user. ") * 7
    return [{"prompt": [{"role": "system", "content": "You are Kaizen."},
                        {"role": "user", "content": f"How do I rotate credentials for service {i}?"}],
             "completion": [{"role": "assistant", "content": text}]} for i in range(n)]


def _peak_gib(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def sft_child(variant: str, base: str, steps: int, precision: str) -> dict:
    """One measurement, in this (child) process."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = precision == "bf16" or (precision == "auto" and device == "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        if variant == "kaizen":
            from training import sft
            from training.common import load_recipe

            recipe = load_recipe(sft.SFTRecipe, overrides={
                "lora_r": 16, "lora_alpha": 32, "max_length": 256, "batch_size": 4, "max_steps": steps,
                "precision": "bf16" if bf16 else "fp32", "save_steps": 10_000, "logging_steps": 1}, stage="sft")
            result = sft.run(recipe, base_model=base, train=sft_rows(), out_dir=Path(tmp) / "sft", progress=False)
            tokens, runtime = result.metrics["num_tokens"], result.metrics["train_runtime_s"]
        else:
            # The plain trl script, as its documentation writes it, with the same settings.
            from datasets import Dataset
            from peft import LoraConfig
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from trl import SFTConfig, SFTTrainer

            dtype = torch.bfloat16 if bf16 and device == "cuda" else torch.float32
            model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
            args = SFTConfig(output_dir=tmp, max_length=256, per_device_train_batch_size=4, max_steps=steps,
                             learning_rate=2e-4, bf16=bf16, gradient_checkpointing=False, report_to=[],
                             logging_steps=1, save_strategy="no", use_cpu=device == "cpu", disable_tqdm=True)
            trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(sft_rows()),
                                 processing_class=AutoTokenizer.from_pretrained(base),
                                 peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                        target_modules="all-linear", task_type="CAUSAL_LM"))
            out = trainer.train()
            tokens = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e][-1]
            runtime = out.metrics["train_runtime"]
    return {"variant": variant, "device": device, "precision": "bf16" if bf16 else "fp32", "steps": steps,
            "tokens": tokens, "tokens_per_s": tokens / runtime, "peak_gib": _peak_gib(device)}


def bench_sft(base: str, steps: int, precision: str) -> list[dict]:
    rows = []
    for variant in ("plain-trl", "kaizen"):
        cmd = [sys.executable, __file__, "--child", variant, "--base", base, "--sft-steps", str(steps),
               "--precision", precision]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("\n1. SFT throughput (LoRA r=16 all-linear, seq 256, batch 4)")
    print(f"{'script':<10} {'device':<6} {'dtype':<5} {'steps':>5} {'tokens':>7} {'tokens/s':>9} {'peak GiB':>9}")
    for r in rows:
        print(f"{r['variant']:<10} {r['device']:<6} {r['precision']:<5} {r['steps']:>5} {r['tokens']:>7.0f} "
              f"{r['tokens_per_s']:>9.1f} {r['peak_gib']:>9.2f}")
    return rows


# ---- 2. one nightly cycle on 1,000 interactions -------------------------------------------------------------


def fill_store(settings, n: int) -> None:
    """n interactions: question + "another answer" sibling; both voted on 60 % of questions, one on the rest."""
    from core.types import Message, Reply, Turn
    from feedback import FeedbackStore

    rng = random.Random(5)
    qs = questions()
    with FeedbackStore.open(settings) as store:
        for i in range(n // 2):
            q = f"{qs[i % len(qs)]} (ticket {i})"
            turn = Turn(text=q, platform="slack", workspace="T1", channel="C1", thread=f"t{i}", user="asker")
            prompt = [Message("system", "You are Kaizen, a helpful AI assistant."), Message("user", q)]
            short = Reply(answer=f"Ask the IT desk in #help; they handle {i % 7} of these a day.", turn=turn,
                          prompt=prompt)
            long = Reply(answer="There are many aspects to consider here. " * 12, turn=turn, prompt=prompt,
                         sibling_of=short.id)
            store.record(reply=short)
            store.record(reply=long)
            store.vote(interaction_id=short.id, user="u1", value=1)
            if rng.random() < 0.6:
                store.vote(interaction_id=long.id, user="u2", value=-1)


def bench_nightly(base_dir: Path, n: int) -> dict:
    from core.config import load_settings
    from training.nightly import Recipes, run_nightly

    state = base_dir / "nightly-state"
    settings = load_settings(data_dir=state, model={"name": str(base_dir / "base")})
    fill_store(settings, n)
    t0 = time.perf_counter()
    result = run_nightly(settings, Recipes.load(overrides=CAPS), progress=False)
    wall = time.perf_counter() - t0
    run = result.run
    stages = {s: d["metrics"]["runtime_s"] for s, d in run.stages.items()}
    print(f"\n2. Nightly cycle on {n} interactions ({json.dumps(run.window['counts'])} examples; caps "
          f"{json.dumps({k: v for k, v in CAPS.items() if k != 'nightly'})})")
    print(f"{'step':<28} {'seconds':>8}")
    for stage, secs in stages.items():
        print(f"{stage:<28} {secs:>8.1f}")
    print(f"{'export + gate + registry':<28} {wall - sum(stages.values()):>8.1f}")
    print(f"{'total':<28} {wall:>8.1f}   -> {result.status}: {result.reason}")
    return {"wall_s": wall, "stages": stages, "status": result.status}


# ---- 3. the loop works --------------------------------------------------------------------------------------


def serve_and_vote(settings, prompts: list[str], *, vote: bool, seed: int) -> float:
    """Answer `prompts` with the promoted adapter (as `kaizen serve` would); with vote=True, also ask for another
    answer and let the simulated users vote on both. Returns the like rate of the first answers."""
    from bot.runtime import build_engine
    from feedback import FeedbackStore

    store = FeedbackStore.open(settings)
    engine = build_engine(settings, store=store if vote else None)
    return asyncio.run(_answer_all(engine, store, prompts, vote=vote, seed=seed))


async def _answer_all(engine, store, prompts: list[str], *, vote: bool, seed: int) -> float:
    from core.types import Turn

    preset = "balanced" if vote else "precise"

    async def one(i: int, text: str) -> bool:
        turn = Turn(text=text, platform="slack", workspace="T1", channel="C1", thread=f"s{seed}-{i}", user="u",
                    preset=preset, decoding={"max_new_tokens": MAX_NEW_TOKENS})
        first = await engine.answer(turn)
        if vote:
            second = await engine.another(first)
            for k, reply in enumerate((first, second)):
                await store.avote(interaction_id=reply.id, user=f"user{k}", value=1 if liked(reply.answer) else -1)
        return liked(first.answer)

    try:
        likes = await asyncio.gather(*(one(i, q) for i, q in enumerate(prompts)))
    finally:
        await engine.aclose()
        store.close()
    return sum(likes) / len(likes)


def bench_loop(base_dir: Path, per_cycle: int, held_out: int, pipeline: str, regression: bool) -> list[dict]:
    from core.adapters import current_adapter
    from core.config import load_settings
    from training.nightly import Recipes, run_nightly

    state = base_dir / "loop-state"
    (state / "models").mkdir(parents=True, exist_ok=True)
    link = state / "models" / "SmolLM2-135M-Instruct"
    if not link.exists():
        link.symlink_to(base_dir / "base", target_is_directory=True)
    settings = load_settings(data_dir=state)
    qs = questions()
    test, pool = qs[:held_out], qs[held_out:]
    rows = []
    stages = "auto" if pipeline == "auto" else pipeline.split(",")
    recipes = Recipes.load(overrides={"sft": {"epochs": 2.0}, "dpo": {"max_steps": 20}, "rl": CAPS["rl"],
                                      "reward": CAPS["reward"],
                                      "nightly": {**CAPS["nightly"], "min_sft": 4, "min_pairs": 4, "min_kto": 4,
                                                  "pipeline": stages}})
    if not regression:  # an empty must-still-answer set: what the training alone does to the like rate
        (base_dir / "no-regression.jsonl").write_text("")
        recipes.nightly.gate.regression_file = str(base_dir / "no-regression.jsonl")
    for cycle in range(3):
        t0 = time.perf_counter()
        rate = serve_and_vote(settings, test, vote=False, seed=100 + cycle)
        serving = (current_adapter(state) or ("base model",))[0]
        rows.append({"after cycles": cycle, "serving": serving, "held-out like rate": rate})
        print(f"   after {cycle} cycle(s): serving {serving}, held-out like rate {rate:.0%} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
        if cycle == 2:
            break
        train = pool[cycle * per_cycle:(cycle + 1) * per_cycle]
        serve_and_vote(settings, train, vote=True, seed=cycle)
        result = run_nightly(settings, recipes, progress=False)
        rows[-1]["nightly"] = f"{result.status}: {result.reason}"
        print(f"   nightly {cycle + 1}: {result.status}: {result.reason}", flush=True)
    print(f"\n3. The loop works (hidden preference: numbered steps; {per_cycle} questions voted per "
          f"cycle, {held_out} held out, greedy answers of at most {MAX_NEW_TOKENS} tokens; pipeline {pipeline}; "
          f"regression set {'on' if regression else 'off'})")
    print(f"{'cycles':>6}  {'serving':<14} {'like rate':>9}  nightly decision")
    for r in rows:
        print(f"{r['after cycles']:>6}  {r['serving']:<14} {r['held-out like rate']:>9.0%}  {r.get('nightly', '')}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="sft,nightly,loop")
    parser.add_argument("--sft-steps", type=int, default=6)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--interactions", type=int, default=1000)
    parser.add_argument("--per-cycle", type=int, default=48)
    parser.add_argument("--held-out", type=int, default=20)
    parser.add_argument("--pipeline", default="auto", help="the loop's nightly pipeline ('auto' or stages)")
    parser.add_argument("--no-regression", action="store_true", help="the loop's gate without must-still-answer set")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--base", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if args.child:
        print(json.dumps(sft_child(args.child, args.base, args.sft_steps, args.precision)))
        return

    from core.config import ModelSettings
    from core.models import resolve_source

    with tempfile.TemporaryDirectory(prefix="kaizen-bench-") as tmp:
        base_dir = Path(tmp)
        source = Path(resolve_source(ModelSettings(), ROOT / "data")[0])
        (base_dir / "base").symlink_to(source, target_is_directory=True)
        wanted = set(args.only.split(","))
        t0 = time.perf_counter()
        if "sft" in wanted:
            bench_sft(str(source), args.sft_steps, args.precision)
        if "nightly" in wanted:
            bench_nightly(base_dir, args.interactions)
        if "loop" in wanted:
            print("\n3. The loop works: running ...", flush=True)
            bench_loop(base_dir, args.per_cycle, args.held_out, args.pipeline, not args.no_regression)
        print(f"\nbench/training.py finished in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
