"""Serving benchmark: the static batcher against continuous batching, on the default model, in one run.

For each arrival rate (default 0.5, 1 and 2 new conversations per second) a Poisson process submits conversations
for `--duration` seconds (prompts, answer lengths and presets drawn from a fixed seed; half use the "precise"
preset, half "balanced", so the static batcher cannot put them in one batch). Each batcher serves the very same
arrivals through `ChatModel.generate` with streaming; both wrap the same loaded weights. Measured per batcher:
time to first token p50/p95 (submission to the first streamed text, as a caller sees it), per-stream tok/s
(tokens after the first / time after the first) and aggregate tok/s (all answer tokens / time from the first
arrival to the last answer). Then 16 concurrent conversations (continuous) beside raw left-padded `generate` at
batch 16 with the same prompts and settings. The last line has the issue's form:

    serving: at 1/s p95 TTFT static X ms, continuous Y ms (Z× lower); aggregate static A, continuous B tok/s

    .venv/bin/python bench/serving.py [--rates 0.5,1,2] [--duration 60] [--max-batch 16] [--max-answer 128]
                                      [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generation import PROMPTS as GENERATION_PROMPTS  # noqa: E402

# bench/generation.py's eight prompts, then eight more: batch 16 needs sixteen.
PROMPTS = [
    *GENERATION_PROMPTS,
    "What are good habits for a code review?",
    "Summarize the plot of a detective novel you invent.",
    "How do I keep a sourdough starter alive?",
    "Give three tips for a team stand-up meeting.",
    "Why do leaves change colour in autumn?",
    "Explain recursion to a new programmer.",
    "Describe a busy train station in the morning.",
    "What should a good README contain?",
]


@dataclass
class Arrival:
    at: float  # seconds after the start
    prompt: str
    preset: str
    max_new_tokens: int


@dataclass
class Outcome:
    ttft_s: float
    tokens: int
    decode_s: float  # from the first streamed text to the answer
    end_s: float  # seconds after the start


def arrivals(rate: float, duration: float, seed: int, longest: int = 128) -> list[Arrival]:
    """A Poisson process of `rate` conversations per second over `duration` seconds (fixed seed); answer
    lengths uniform in [longest // 5, longest] tokens."""
    rng = random.Random(seed)
    out, t = [], rng.expovariate(rate)
    while t < duration:
        out.append(Arrival(t, rng.choice(PROMPTS), rng.choice(["precise", "balanced"]),
                           rng.randint(max(1, longest // 5), longest)))
        t += rng.expovariate(rate)
    return out


async def serve(model, plan: list[Arrival], presets) -> tuple[list[Outcome], float]:
    start = time.perf_counter()

    async def one(a: Arrival) -> Outcome:
        await asyncio.sleep(max(0.0, start + a.at - time.perf_counter()))
        t0 = time.perf_counter()
        first: list[float] = []
        decoding = presets[a.preset].model_copy(update={"max_new_tokens": a.max_new_tokens})
        gen = (await model.generate([{"role": "user", "content": a.prompt}], decoding,
                                    on_text=lambda _t: first or first.append(time.perf_counter())))[0]
        end = time.perf_counter()
        t1 = first[0] if first else end
        return Outcome(t1 - t0, gen.completion_tokens, end - t1, end - start)

    outcomes = await asyncio.gather(*[one(a) for a in plan])
    return list(outcomes), time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def summarize(outcomes: list[Outcome], plan: list[Arrival]) -> dict[str, float]:
    ttft = [o.ttft_s * 1000 for o in outcomes]
    per_stream = [(o.tokens - 1) / o.decode_s for o in outcomes if o.tokens > 1 and o.decode_s > 0]
    span = max(o.end_s for o in outcomes) - plan[0].at
    return {"n": len(outcomes), "ttft_p50": pct(ttft, 50), "ttft_p95": pct(ttft, 95),
            "stream": statistics.median(per_stream) if per_stream else 0.0,
            "aggregate": sum(o.tokens for o in outcomes) / span}


def raw_generate(hf, tokenizer, prompts: list[str], decoding) -> tuple[float, int]:
    """Left-padded `generate` over `prompts` in one batch: (seconds, answer tokens before end-of-turn)."""
    import torch

    from core.decoding import to_generation_kwargs

    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in prompts]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(hf.device)
    eos = hf.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or [tokenizer.eos_token_id])
    t = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(**enc, **to_generation_kwargs(decoding),
                          pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    dt = time.perf_counter() - t
    tokens = 0
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        tokens += next((i for i, x in enumerate(row) if x in eos), len(row))
    return dt, tokens


async def concurrent(model, prompts: list[str], decoding) -> tuple[float, int]:
    t = time.perf_counter()
    gens = await asyncio.gather(*[model.generate([{"role": "user", "content": p}], decoding) for p in prompts])
    return time.perf_counter() - t, sum(g[0].completion_tokens for g in gens)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="0.5,1,2", help="new conversations per second, comma-separated")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per rate and batcher")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-answer", type=int, default=128, help="longest answer drawn, in tokens")
    ap.add_argument("--concurrent-tokens", type=int, default=64, help="answer length for the 16-concurrent run")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    args = ap.parse_args()

    import torch

    from core.config import load_settings
    from core.decoding import BUILTIN_PRESETS
    from core.models import TransformersChatModel, load_model

    settings = load_settings(data_dir=args.data_dir)
    base = load_model(settings)
    hf, tok = base.model, base.tokenizer
    base.close()
    models = {kind: TransformersChatModel(hf, tok, name=base.name, context_window=base.context_window,
                                          max_batch_size=args.max_batch, batching=kind)
              for kind in ("static", "continuous")}
    print(f"model {base.name}, {hf.dtype}, {torch.get_num_threads()} threads, max batch {args.max_batch}, "
          f"{args.duration:.0f} s of arrivals per rate")
    for m in models.values():  # warm-up
        asyncio.run(m.generate([{"role": "user", "content": "Hi"}], BUILTIN_PRESETS["precise"].model_copy(
            update={"max_new_tokens": 4})))

    results: dict[tuple[float, str], dict[str, float]] = {}
    print(f"{'rate/s':>6} {'batcher':<10} {'convs':>5} {'TTFT p50 ms':>11} {'TTFT p95 ms':>11} "
          f"{'stream tok/s':>12} {'aggregate tok/s':>15}")
    rates = [float(r) for r in args.rates.split(",")]
    for i, rate in enumerate(rates):
        plan = arrivals(rate, args.duration, args.seed + i, args.max_answer)
        for kind, m in models.items():
            outcomes, _ = asyncio.run(serve(m, plan, BUILTIN_PRESETS))
            s = results[(rate, kind)] = summarize(outcomes, plan)
            print(f"{rate:>6g} {kind:<10} {s['n']:>5} {s['ttft_p50']:>11.0f} {s['ttft_p95']:>11.0f} "
                  f"{s['stream']:>12.1f} {s['aggregate']:>15.1f}", flush=True)

    decoding = BUILTIN_PRESETS["precise"].model_copy(update={"max_new_tokens": args.concurrent_tokens})
    raw_dt, raw_tok = raw_generate(hf, tok, PROMPTS[:16], decoding)
    cb_dt, cb_tok = asyncio.run(concurrent(models["continuous"], PROMPTS[:16], decoding))
    print(f"raw generate, batch 16: {raw_tok / raw_dt:.1f} tok/s ({raw_tok} tok in {raw_dt:.1f} s); "
          f"16 concurrent (continuous): {cb_tok / cb_dt:.1f} tok/s ({cb_tok} tok in {cb_dt:.1f} s) "
          f"= {cb_tok / cb_dt / (raw_tok / raw_dt):.2f} × raw")
    for m in models.values():
        m.close()

    one = 1.0 if 1.0 in rates else rates[0]
    st, ct = results[(one, "static")], results[(one, "continuous")]
    print(f"serving: at {one:g}/s p95 TTFT static {st['ttft_p95']:.0f} ms, continuous {ct['ttft_p95']:.0f} ms "
          f"({st['ttft_p95'] / ct['ttft_p95']:.1f}× lower); aggregate static {st['aggregate']:.1f}, "
          f"continuous {ct['aggregate']:.1f} tok/s")


if __name__ == "__main__":
    main()
