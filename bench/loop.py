"""The loop, end to end on the default SmolLM2-135M-Instruct on CPU: does a night of reactions make it better?

    .venv/bin/python bench/loop.py [--quick] [--preferences numbered,helpdesk] [--per-night 50] [--held-out 60]

For each preference, simulated users with a hidden, consistent preference ask new questions every night; each
question gets an answer and "another answer" (as the buttons give them), both voted 👍/👎 by the preference, and a
share of the disliked first answers is corrected into what the users wanted. Then the nightly job runs with its
packaged recipes' safeguards (gate with 95 % intervals and its judge, the packaged must-still-answer set, replay,
pull-back), on the `--pipeline` stages (default: SFT). The like rate is measured on held-out questions (greedy
answers, never trained on) before and after each cycle. Preferences:

- numbered (format): the answer starts straight with numbered steps ("1. ..." on the first line, two or more).
- helpdesk (behaviour): the answer points the user to the help desk when they get stuck.

Prints a table per preference and one line per preference; the last line is the worst of them:
    loop: <name> like rate 0.45 -> 0.78 (+33 points) after 2 cycles; must-still-answer lost 0; promoted 2/2
"must-still-answer lost" compares what serves after the last night with the base model, by the gate's rule
(training/gate.py): a fact the base model states and the final model does not, unless the two answers part only at
the fact, the final model finds it at most ln 2 nats less likely, and the base model had the word said instead at
most 1 nat behind it, a near tie (printed as "changed", with both in nats).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPICS = ["the VPN", "expense reports", "the wiki", "code review", "on-call", "the staging database", "vacation days",
          "the coffee machine", "a new laptop", "the office wifi", "Jira access", "the release process",
          "password rotation", "the team calendar", "printer problems", "onboarding", "the build server",
          "customer tickets", "meeting rooms", "the holiday party", "parking permits", "the travel policy",
          "security badges", "the company chat", "backup restores", "monitor setup", "the shared drive",
          "sick leave", "performance reviews", "the lunch budget", "desk booking", "two-factor login"]
FORMS = ["How do I deal with {}?", "What should I know about {}?", "How do I get started with {}?",
         "Explain {} to me.", "Any tips for {}?"]
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_STARTS_NUMBERED = re.compile(r"^\s*1[.)]\s+\S.*\n\s*2[.)]\s+\S", re.DOTALL)


def questions() -> list[str]:
    qs = [form.format(topic) for topic in TOPICS for form in FORMS]
    random.Random(7).shuffle(qs)
    return qs


def _sentences(answer: str, n: int) -> list[str]:
    """The answer's first `n` sentences as a person rewriting it would keep them: list markers and bold dropped, and
    a line that only leads into a list ("Here's how:") left out. Why: joining lines as they were turned "Here's how:
    / 1. Open ..." into the sentence "Here's how: 1.", and corrections full of "...: 1." taught the numbered nights to
    answer "1. The answer is 1." to counting questions (2026-12-06)."""
    parts: list[str] = []
    for line in answer.splitlines():
        line = _MARKER.sub("", line).replace("**", "").strip(" #")
        parts += [s.strip() for s in _SENTENCE.split(line)
                  if len(s.strip().split()) > 1 and not s.strip().endswith(":")]
    return parts[:n] or ["Ask a colleague who knows it."]


@dataclass(frozen=True)
class Preference:
    name: str
    kind: str
    liked: Callable[[str], bool]
    correct: Callable[[str], str]  # what a user who holds this preference rewrites a disliked answer into


def _numbered(answer: str) -> str:
    steps = [re.sub(r"^\d+[.)]\s*", "", s) for s in _sentences(answer, 3)]
    if len(steps) < 2:
        steps.append("Check that it worked.")
    return "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))


def _helpdesk(answer: str) -> str:
    return " ".join(_sentences(answer, 2)) + " If you get stuck, ask the help desk."


PREFERENCES = {
    "numbered": Preference("numbered", "format", lambda a: bool(_STARTS_NUMBERED.match(a)), _numbered),
    "helpdesk": Preference("helpdesk", "behaviour", lambda a: bool(re.search(r"help ?desk", a, re.I)), _helpdesk),
}


@dataclass
class Size:
    per_night: int
    held_out: int
    cycles: int
    max_new_tokens: int
    correct_share: float
    steps: int | None  # cap per training stage (None: the packaged recipes' epochs)


def wilson(k: int, n: int) -> tuple[float, float]:
    from training.gate import wilson as w

    return w(k, n, 0.95)


async def _answer_all(engine, store, prompts: list[str], pref: Preference, *, vote: bool, seed: int,
                      size: Size) -> list[str]:
    from core.types import Turn

    rng = random.Random(seed)
    preset = "balanced" if vote else "precise"

    async def one(i: int, text: str) -> str:
        turn = Turn(text=text, platform="slack", workspace="T1", channel="C1", thread=f"{pref.name}-{seed}-{i}",
                    user="asker", preset=preset, mode="chat", decoding={"max_new_tokens": size.max_new_tokens})
        first = await engine.answer(turn)
        if vote:
            second = await engine.another(first)
            for k, reply in enumerate((first, second)):
                await store.avote(interaction_id=reply.id, user=f"user{k}", value=1 if pref.liked(reply.answer) else -1)
            if not pref.liked(first.answer) and rng.random() < size.correct_share:
                await store.arecord_correction(interaction_id=first.id, user="corrector",
                                               text=pref.correct(first.answer), platform="slack")
        return first.answer

    try:
        # A few at a time: the engine batches them, and the 2-core machine is not swamped.
        out: list[str] = []
        for start in range(0, len(prompts), 8):
            out += await asyncio.gather(*(one(start + i, q) for i, q in enumerate(prompts[start:start + 8])))
        return out
    finally:
        await engine.aclose()


def serve(settings, prompts: list[str], pref: Preference, *, vote: bool, seed: int, size: Size) -> list[str]:
    """Answer `prompts` with the promoted adapter, as `kaizen serve` would (and vote/correct when `vote`); the first
    answers, in order."""
    from bot.runtime import build_engine
    from feedback import FeedbackStore

    store = FeedbackStore.open(settings)
    try:
        engine = build_engine(settings, store=store if vote else None)
        return asyncio.run(_answer_all(engine, store, prompts, pref, vote=vote, seed=seed, size=size))
    finally:
        store.close()


def run_preference(pref: Preference, base: Path, work: Path, size: Size, pipeline: list[str], qs: list[str],
                   sets: dict | None = None) -> dict:
    from core.adapters import current_adapter
    from core.config import load_settings
    from training.common import merge_overrides
    from training.nightly import Recipes, run_nightly

    state = work / pref.name
    (state / "models").mkdir(parents=True, exist_ok=True)
    (state / "models" / "SmolLM2-135M-Instruct").symlink_to(base, target_is_directory=True)
    settings = load_settings(data_dir=state)
    held, pool = qs[:size.held_out], qs[size.held_out:]
    # The packaged recipes (gate, must-still-answer set, replay), each stage capped at `steps` if given.
    cap = {"max_steps": size.steps} if size.steps else {}
    overrides = {"sft": cap, "dpo": cap, "kto": cap, "reward": cap, "rl": cap, "nightly": {
        "pipeline": pipeline, "min_sft": 4, "min_pairs": 4, "min_kto": 4,
        "gate": {"max_new_tokens": size.max_new_tokens}}}
    recipes = Recipes.load(overrides=merge_overrides(overrides, sets or {}))
    rows: list[dict] = []
    for cycle in range(size.cycles + 1):
        t0 = time.perf_counter()
        answers = serve(settings, held, pref, vote=False, seed=1000 + cycle, size=size)
        likes = [pref.liked(a) for a in answers]
        with (state / f"held_out_cycle{cycle}.jsonl").open("w") as f:  # what the like rate was measured on
            f.writelines(json.dumps({"question": q, "answer": a, "liked": ok}) + "\n"
                         for q, a, ok in zip(held, answers, likes, strict=True))
        lo, hi = wilson(sum(likes), len(likes))
        row = {"cycle": cycle, "serving": (current_adapter(state) or ("base model",))[0],
               "rate": sum(likes) / len(likes), "ci": (lo, hi), "decision": "", "kept": ""}
        rows.append(row)
        print(f"  [{pref.name}] cycle {cycle}: serving {row['serving']}, like rate {row['rate']:.2f} "
              f"[{lo:.2f}, {hi:.2f}] ({time.perf_counter() - t0:.0f}s)", flush=True)
        if cycle == size.cycles:
            break
        t0 = time.perf_counter()
        night = pool[cycle * size.per_night:(cycle + 1) * size.per_night]
        serve(settings, night, pref, vote=True, seed=cycle, size=size)
        result = run_nightly(settings, recipes, progress=False)
        m = result.run.metrics if result.run else {}
        row["decision"] = f"{result.status}: {result.reason}"
        row["promoted"] = result.status == "promoted"
        if "regression_total" in m:
            # Kept by the gate's rule (what it judged last: the promoted candidate, or the last one tried); an answer
            # that changed only at a fact still likely enough is kept but not stated.
            kept, total = m["regression_total"] - len(m.get("regression_lost") or []), m["regression_total"]
            stated = f" ({m['regression_candidate']} stated)" if m["regression_candidate"] != kept else ""
            row["kept"] = f"{kept}/{total}{stated}"
        print(f"  [{pref.name}] night {cycle + 1}: {row['decision']} ({time.perf_counter() - t0:.0f}s)", flush=True)
    serving = current_adapter(state)
    final = must_still_answer(settings, recipes, serving[1]) if serving else None
    lost = 0  # the base model still serves: nothing it knew can be lost
    if final is not None:
        lost = len(final["regression_lost"])
        changed = "; ".join(f"{c['question']} (fact {-c['drop']:+.2f} nats, its rival {c['behind']:.2f} behind before)"
                            for c in final["regression_changed"])
        print(f"  [{pref.name}] must-still-answer, what serves now vs the base model: "
              f"{final['regression_candidate']}/{final['regression_total']} stated (base "
              f"{final['regression_serving']}); lost: {'; '.join(final['regression_lost']) or 'none'}; "
              f"changed at the fact only, a near tie flipped: "
              f"{changed or 'none'}", flush=True)
    return {"pref": pref, "rows": rows, "lost": lost, "promoted": sum(bool(r.get("promoted")) for r in rows)}


def must_still_answer(settings, recipes, adapter: Path) -> dict:
    """The gate's must-still-answer check of `adapter` (what serves after the last night) against the base model:
    what two nights cost together, by the rule each night's gate used (training/gate.py `facts_lost`)."""
    from training.common import base_model_path
    from training.gate import evaluate, load_regression

    cfg = recipes.nightly.gate
    report = evaluate(cfg, base_model=base_model_path(settings), candidate=adapter, serving=None,
                      regression=load_regression(cfg.regression_file), system_prompt=settings.default.system_prompt)
    return report.metrics


def report(result: dict, size: Size) -> str:
    pref, rows = result["pref"], result["rows"]
    print(f"\n{pref.name} ({pref.kind}): {size.per_night} questions a night, {size.held_out} held out, "
          f"corrections on {size.correct_share:.0%} of disliked answers")
    print(f"{'cycle':>5}  {'serving':<13} {'like rate [95% CI]':<20} {'kept':<17} gate decision")
    for r in rows:
        rate = f"{r['rate']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"
        print(f"{r['cycle']:>5}  {r['serving']:<13} {rate:<20} {r['kept'] or '-':<17} {r['decision'] or '-'}")
    before, after = rows[0]["rate"], rows[-1]["rate"]
    gain, promoted = (after - before) * 100, f"{result['promoted']}/{size.cycles}"
    return (f"loop: {pref.name} like rate {before:.2f} -> {after:.2f} ({gain:+.0f} points) after {size.cycles} "
            f"cycles; must-still-answer lost {result['lost']}; promoted {promoted}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small size for development (not the issue's)")
    parser.add_argument("--preferences", default="numbered,helpdesk")
    parser.add_argument("--per-night", type=int, default=None)
    parser.add_argument("--held-out", type=int, default=None)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None,
                        help="cap on optimizer steps per stage (default: the recipes' epochs; --quick: 10)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="answer length cap (default: 96; --quick: 64; 256, the presets' own, changed no "
                             "like rate in a measured night and costs 2x the time)")
    parser.add_argument("--pipeline", default="sft",
                        help="stages a night runs (default sft: with DPO after the lr 5e-4 SFT, a help-desk night "
                             "still lost 2 facts pulled back to alpha 0.5, 2026-12-05)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="recipe override stage.key=value (as `kaizen train nightly --set`): sft.lora_layers=8")
    parser.add_argument("--keep", default="", help="work in this folder and keep it (runs, gate answers, databases)")
    args = parser.parse_args()
    size = Size(per_night=12, held_out=12, cycles=args.cycles, max_new_tokens=64, correct_share=0.5, steps=10) \
        if args.quick else Size(per_night=50, held_out=60, cycles=args.cycles, max_new_tokens=96,
                                correct_share=0.5, steps=None)
    size.per_night = args.per_night or size.per_night
    size.held_out = args.held_out or size.held_out
    size.steps = args.steps or size.steps
    size.max_new_tokens = args.max_new_tokens or size.max_new_tokens
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from core.config import ModelSettings
    from core.models import resolve_source
    from training.nightly import parse_sets

    qs = questions()
    if size.held_out + size.cycles * size.per_night > len(qs):
        parser.error(f"only {len(qs)} questions: lower --held-out or --per-night")
    source = Path(resolve_source(ModelSettings(), ROOT / "data")[0])
    t0 = time.perf_counter()
    lines = []
    keep = Path(args.keep) if args.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(str(keep)) if keep else tempfile.TemporaryDirectory(prefix="kaizen-loop-") as tmp:
        results = [run_preference(PREFERENCES[name], source, Path(tmp), size, args.pipeline.split(","), qs,
                                  parse_sets(args.sets)) for name in args.preferences.split(",")]
        lines = [(r["rows"][-1]["rate"] - r["rows"][0]["rate"], report(r, size)) for r in results]
    print(f"\nbench/loop.py finished in {time.perf_counter() - t0:.0f}s ({'quick' if args.quick else 'full'} size)")
    for _, line in sorted(lines, key=lambda x: -x[0]):  # the worst last
        print(line)


if __name__ == "__main__":
    main()
