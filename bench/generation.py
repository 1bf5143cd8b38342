"""Generation benchmark for the default model on this machine.

Prints one table: load time (first start converts the GGUF, later starts load safetensors), time to first
token, and tokens/s at 1, 4 and 8 concurrent conversations through the engine beside raw `model.generate`
at the same batch sizes, plus peak RSS.

    .venv/bin/python bench/generation.py [--max-new-tokens 96] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe a day at the beach.",
    "Write a poem about autumn leaves.",
    "Explain why the sky is blue.",
    "Describe how bread is made.",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain what a computer does.",
]

LOAD_SNIPPET = """
import time, sys
t = time.perf_counter()
from core.config import load_settings
from core.models import load_model
m = load_model(load_settings(data_dir=sys.argv[1]))
print(time.perf_counter() - t)
m.close()
"""


def time_load(data_dir: str) -> float:
    out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, data_dir], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return float(out.stdout.strip().splitlines()[-1])


def raw_generate(model, tokenizer, batch: int, max_new: int) -> tuple[float, int]:
    """Left-padded greedy `generate` on `batch` prompts: (seconds, tokens produced before EOS)."""
    import torch

    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in PROMPTS[:batch]]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    t = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, repetition_penalty=1.1,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    dt = time.perf_counter() - t
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    eos = tokenizer.eos_token_id
    tokens = sum(row.index(eos) if eos in row else len(row) for row in new)
    return dt, tokens


async def engine_run(engine, n: int, max_new: int) -> tuple[float, int, list[float]]:
    from core.types import Turn

    t = time.perf_counter()
    replies = await asyncio.gather(*[
        engine.answer(Turn(text=PROMPTS[i], thread=f"bench-{n}-{i}", preset="precise",
                           decoding={"max_new_tokens": max_new}))
        for i in range(n)])
    dt = time.perf_counter() - t
    return dt, sum(r.completion_tokens for r in replies), [r.first_token_ms or 0 for r in replies]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--data-dir", default="")
    args = ap.parse_args()

    from core.config import load_settings
    from core.engine import Engine
    from core.models import load_model

    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as fresh:
        rows.append(("load, first start (GGUF -> safetensors)", f"{time_load(fresh):.1f} s"))
        rows.append(("load, later start (safetensors)", f"{time_load(fresh):.1f} s"))
        data_dir = args.data_dir or fresh
        settings = load_settings(data_dir=data_dir, default={"preset": "precise"})
        model = load_model(settings)
        engine = Engine(settings, model)
        hf, tok = model.model, model.tokenizer
        rows.append(("dtype / threads", f"{hf.dtype} / {__import__('torch').get_num_threads()}"))

        asyncio.run(engine_run(engine, 1, 8))  # warm-up
        raw_generate(hf, tok, 1, 8)
        for n in (1, 4, 8):
            dt, toks = raw_generate(hf, tok, n, args.max_new_tokens)
            rows.append((f"raw generate, batch {n}", f"{toks / dt:.1f} tok/s ({toks} tok in {dt:.1f} s)"))
            dt, toks, ttft = asyncio.run(engine_run(engine, n, args.max_new_tokens))
            rows.append((f"engine, {n} concurrent", f"{toks / dt:.1f} tok/s ({toks} tok in {dt:.1f} s)"))
            rows.append((f"engine, {n} concurrent: time to first token",
                         f"median {statistics.median(ttft):.0f} ms, max {max(ttft):.0f} ms"))
        model.close()
    rows.append(("peak RSS (this process)", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"))
    rows.append(("reference: llama.cpp, same GGUF, 1 stream", "128 tok/s (measured by the team)"))

    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
