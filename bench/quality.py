"""Answer-quality benchmark: the shipped defaults against the old ones, in one run, on the default model.

Sets (bench/data/, all written for this project from public-domain facts):
- general.jsonl — 66 general questions (facts, short instructions), chat mode;
- docs/ + docs.jsonl — 16 short articles, ingested, and 64 questions whose answer must state a fact from them;
- sqlite_docs/articles/ + retrieval_sqlite_{dev,test}.jsonl — 59 real public-domain articles (the SQLite documentation)
  in 200-word chunks, and 2 × 59 paraphrased questions → the article that answers them (dev tuned on, test held out);
- the agent bench's tool questions (bench/agent.py: arithmetic, date/time, doc look-ups).

Sampling presets run `--samples` times per question; accuracy is the mean ± standard deviation over runs.
"Old" is what shipped before issue 17 (preset `balanced` at T=0.6/top-p 0.9/top-k 50, mode `chat`, a relevance gate
on cosine only, chunks indexed without their title/section line, the agent's free final answer); "new" is what ships
now. Ends with exactly one line:

    quality: general A, docs B, agent C, recall@5 D, MRR E

Run: .venv/bin/python bench/quality.py [--samples 3] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parent / "data"
# The default before issue 17, kept here so every run measures old and new side by side.
OLD_PRESET = {"strategy": "sample", "temperature": 0.6, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.1}
OLD_MODE = "chat"
MAX_NEW_TOKENS = 64


def _acc(arm) -> str:
    return f"{arm.mean:.3f} ± {arm.spread:.3f}"


async def _general(engine, items, new_preset: str, samples: int, rows: list) -> float:
    from core.answer_eval import evaluate_answers, states

    arms = await evaluate_answers(engine, items, presets=["old-default", new_preset, "precise"], mode="chat",
                                  samples=samples, overrides={"max_new_tokens": MAX_NEW_TOKENS})
    old, new, greedy = arms
    rows.append(("general: old default (balanced T=0.6)", _acc(old)))
    rows.append((f"general: new default ({new_preset})", _acc(new)))
    rows.append(("general: greedy (precise)", _acc(greedy)))
    # "Try another answer" on the new default: is the sibling different, and still right?
    from core.types import Turn

    async def pair(item):
        first = await engine.answer(Turn(text=item.question, platform="eval", thread=f"another-{item.line}",
                                         preset=new_preset, mode="chat", history=(),
                                         decoding={"max_new_tokens": MAX_NEW_TOKENS}))
        second = await engine.another(first)
        return first.answer.strip() != second.answer.strip(), states(second.answer, item.expect)

    pairs = await asyncio.gather(*(pair(item) for item in items))
    rows.append(("general: 'try another' differs / still right",
                 f"{sum(d for d, _ in pairs) / len(pairs):.3f} / {sum(r for _, r in pairs) / len(pairs):.3f}"))
    return new.mean


async def _docs(engine, items, new_preset: str, new_mode: str, samples: int, rows: list) -> float:
    from core.answer_eval import evaluate_answers

    items = [dataclasses.replace(i, mode=None) for i in items]  # each arm's own mode
    overrides = {"max_new_tokens": MAX_NEW_TOKENS}
    [old] = await evaluate_answers(engine, items, presets=["old-default"], mode=OLD_MODE, samples=samples,
                                   overrides=overrides)
    [new] = await evaluate_answers(engine, items, presets=[new_preset], mode=new_mode, samples=samples,
                                   overrides=overrides)
    engine.settings.rag.answer_style = "generate"  # rag answers as before: the model writes all of it
    try:
        [generated] = await evaluate_answers(engine, items, presets=[new_preset], mode="rag", samples=1,
                                             overrides=overrides)
    finally:
        engine.settings.rag.answer_style = "quote"
    rows.append((f"docs: old default ({OLD_MODE}, balanced T=0.6)", _acc(old)))
    rows.append((f"docs: new default ({new_mode}, {new_preset})", _acc(new)))
    old_rag = generated.rag_outcomes()
    rows.append((f"docs: rag, answer written whole (old style), {new_preset}, 1 run: stating the fact",
                 f"{sum(o.correct for o in old_rag) / max(1, len(old_rag)):.3f}"))
    rag = new.rag_outcomes()
    citing = [o for o in rag if o.citations]
    rows.append(("docs: answered from the documents (rag)", f"{len(rag) / max(1, sum(map(len, new.runs))):.3f}"))
    rows.append(("docs: rag answers stating the fact", f"{sum(o.correct for o in rag) / max(1, len(rag)):.3f}"))
    rows.append(("docs: rag answers citing [n] / all citations hold the fact",
                 f"{len(citing)} / {sum(o.citations_ok for o in citing)}"))
    right = [o for o in citing if o.correct]
    rows.append(("docs: right rag answers citing [n] / all citations hold the fact",
                 f"{len(right)} / {sum(o.citations_ok for o in right)}"))
    for o in [o for o in right if not o.citations_ok][:8]:
        rows.append(("  cited [n] lacks the fact", f"{o.item.question} — want {o.item.expect[0]}; got "
                                                   f"{' '.join(o.answer.split())[:160]}"))
    for o in new.misses()[:8]:
        rows.append(("  missed", f"{o.item.question} — want {o.item.expect[0]}; got {' '.join(o.answer.split())[:70]}"))
    return new.mean


async def _agent(engine, items, preset: str, rows: list) -> float:
    from core import agent as agent_module
    from core import tools as tools_module
    from core.answer_eval import evaluate_answers

    results = {}
    examples, arithmetic, question_query = agent_module.EXAMPLES, tools_module.arithmetic_spans, \
        tools_module.question_query
    for label, old in (("old", True), ("new", False)):
        # Before issue 17: a free final answer, arguments re-typed by the model, only the calculator's worked
        # example, search_docs answered without evidence sentences.
        agent_module.ReActAgent.free_final_answer = old
        if old:
            agent_module.EXAMPLES = {"calculator": examples["calculator"]}
            tools_module.arithmetic_spans = tools_module.question_query = None
            engine.settings.rag.answer_style = "generate"
        try:
            [arm] = await evaluate_answers(engine, items, presets=[preset], mode="agent", samples=1,
                                           overrides={"max_new_tokens": 48})
        finally:
            agent_module.EXAMPLES, tools_module.arithmetic_spans = examples, arithmetic
            tools_module.question_query, engine.settings.rag.answer_style = question_query, "quote"
        results[label] = arm
    agent_module.ReActAgent.free_final_answer = False
    rows.append(("agent: old (free final answer, re-typed arguments, one example)", _acc(results["old"])))
    rows.append(("agent: new", _acc(results["new"])))
    for o in results["new"].misses()[:6]:
        rows.append(("  missed", f"{o.item.question} — want {o.item.expect[0]}; got {' '.join(o.answer.split())[:70]}"))
    return results["new"].mean


def _retrieval(rag_settings, embedder, rows: list) -> tuple[float, float]:
    """BM25 alone, the old and the new hybrid on the SQLite articles; (recall@5, MRR) of the new one, held out."""
    import numpy as np

    from core.rag import Retriever, ingest
    from core.rag import chunking as chunking_module
    from core.rag import retrieval as retrieval_module
    from core.rag.eval import evaluate, is_hit, load_eval_set

    # 200-word chunks: 256 of the embedding model's tokens (the longest chunk of these articles is ~200 words).
    rag = rag_settings.rag.model_copy(update={"chunk_size": 256, "chunk_overlap": 32})
    retrievers = {}
    for arm in ("old", "new"):
        settings = rag_settings.model_copy(update={"data_dir": rag_settings.data_dir.parent / f"sqlite-{arm}",
                                                   "rag": rag})
        saved_prefix = chunking_module.HeadingPrefix.__call__
        if arm == "old":  # before issue 17: the full-text index saw the chunk text only, no title/section line
            chunking_module.HeadingPrefix.__call__ = lambda self, nodes, **kwargs: nodes
        try:
            ingest(settings, [DATA / "sqlite_docs" / "articles"], source="sqlite", public=True, embedder=embedder)
        finally:
            chunking_module.HeadingPrefix.__call__ = saved_prefix
        retrievers[arm] = Retriever(settings, embedder=embedder)
        retrievers[arm].warm()
    result = (float("nan"), float("nan"))
    for half, label in (("dev", "dev (tuned on)"), ("test", "test (held out)")):
        items = load_eval_set(DATA / f"retrieval_sqlite_{half}.jsonl")
        ranks = []
        for item in items:  # BM25 alone: the store's full-text ranking of the chunk text, nothing else
            hits = retrievers["old"]._store.lexical(item.question, k=10, filters=None)
            sources = [retrieval_module._to_source(retrieval_module._Candidate(hit.node, hit.score, 0.0, np.zeros(1)))
                       for hit in hits]
            ranks.append(next((n for n, s in enumerate(sources, start=1) if is_hit(item, s)), None))
        bm25_r5 = sum(1 for r in ranks if r is not None and r <= 5) / len(items)
        bm25_mrr = sum(1.0 / r for r in ranks if r is not None) / len(items)
        rows.append((f"retrieval, SQLite docs {label}, {len(items)} questions: BM25 alone recall@5 / MRR",
                     f"{bm25_r5:.3f} / {bm25_mrr:.3f}"))
        saved = retrieval_module.LEXICAL_MARGIN, retrieval_module.LEXICAL_LEAD
        # Before issue 17: only cosine (or a quoted code) passed the gate, and fusion alone ordered the hits.
        retrieval_module.LEXICAL_MARGIN = retrieval_module.LEXICAL_LEAD = float("inf")
        try:
            old = evaluate(retrievers["old"], items, channel=None)
        finally:
            retrieval_module.LEXICAL_MARGIN, retrieval_module.LEXICAL_LEAD = saved
        new = evaluate(retrievers["new"], items, channel=None)
        rows.append((f"retrieval {half}: old hybrid recall@5 / MRR", f"{old.recall[5]:.3f} / {old.mrr:.3f}"))
        rows.append((f"retrieval {half}: new hybrid recall@5 / MRR", f"{new.recall[5]:.3f} / {new.mrr:.3f}"))
        for miss in new.misses:
            rows.append(("  missed", f"{miss.question} ({miss.source_file})"))
        result = (new.recall[5], new.mrr)
    for retriever in retrievers.values():
        retriever.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3, help="runs of each sampling preset (mean ± sd)")
    parser.add_argument("--limit", type=int, default=0, help="questions per set (0 = all)")
    parser.add_argument("--skip", default="", help="comma-separated sets to skip: general,docs,agent,retrieval")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    skip = {s for s in args.skip.split(",") if s}

    from bench.agent import DOCS as AGENT_DOCS
    from bench.agent import agent_items
    from core.answer_eval import load_answer_set
    from core.config import load_settings
    from core.engine import Engine
    from core.models import load_model
    from core.rag import Retriever, format_context, ingest
    from core.rag.embeddings import load_embedder

    cut = (lambda xs: xs[: args.limit]) if args.limit else (lambda xs: xs)
    started = time.perf_counter()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="kaizen-quality-") as tmp:
        model_dir = Path(".pytest_cache/kaizen-data")
        settings = load_settings(data_dir=model_dir if model_dir.exists() else Path(tmp) / "data",
                                 presets={"old-default": OLD_PRESET}, model={"max_batch_size": 32})
        new_preset, new_mode = settings.default.preset, settings.default.mode
        rag_settings = settings.model_copy(update={"data_dir": Path(tmp) / "rag"})
        embedder = load_embedder(rag_settings)
        ingest(rag_settings, [DATA / "docs"], source="articles", public=True, embedder=embedder)
        handbook = Path(tmp) / "handbook"
        handbook.mkdir()
        for name, text in AGENT_DOCS.items():
            (handbook / name).write_text(text, encoding="utf-8")
        ingest(rag_settings, [handbook], source="handbook", public=True, embedder=embedder)
        model = load_model(settings)
        engine = Engine(settings, model, retriever=Retriever(rag_settings, embedder=embedder),
                        format_context=format_context)
        general = docs = agent = recall5 = mrr = float("nan")
        if "general" not in skip:
            general = asyncio.run(_general(engine, cut(load_answer_set(DATA / "general.jsonl")), new_preset,
                                           args.samples, rows))
        if "docs" not in skip:
            docs = asyncio.run(_docs(engine, cut(load_answer_set(DATA / "docs.jsonl")), new_preset, new_mode,
                                     args.samples, rows))
        if "agent" not in skip:
            agent = asyncio.run(_agent(engine, cut(agent_items()), "precise", rows))
        if "retrieval" not in skip:
            recall5, mrr = _retrieval(rag_settings, embedder, rows)
        model.close()
    rows.append(("bench wall time", f"{time.perf_counter() - started:.0f} s"))
    width = max(len(name) for name, _ in rows)
    print(f"model {model.name}; new default preset {new_preset!r}, mode {new_mode!r}; samples {args.samples}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    print(f"quality: general {general:.3f}, docs {docs:.3f}, agent {agent:.3f}, recall@5 {recall5:.3f}, MRR {mrr:.3f}")


if __name__ == "__main__":
    main()
