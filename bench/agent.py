"""Agent benchmark: tool-needing questions on the default model, with and without constrained decoding.

For each question: was a valid tool call made (an enabled tool, arguments that parse against its schema), was it the
expected tool, and does the final answer contain the expected value. Prints one table.

    .venv/bin/python bench/agent.py [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ARITHMETIC = [
    ("What is 17 * 23?", "391"), ("What is 144 / 12?", "12"), ("What is 1250 divided by 5?", "250"),
    ("Calculate 98 + 57.", "155"), ("What is 1000 - 387?", "613"), ("What is 25 * 25?", "625"),
    ("Compute 2^10.", "1024"), ("What is 81 / 9?", "9"), ("What is 13 * 7?", "91"),
    ("How much is 450 + 275?", "725"), ("What is 19 * 19?", "361"), ("What is 3600 / 60?", "60"),
    ("Calculate 72 * 3.", "216"), ("What is 512 - 128?", "384"), ("What is 45 * 11?", "495"),
    ("What is 15% of 200? Compute 200 * 0.15.", "30"),
]


def date_questions() -> list[tuple[str, str]]:
    now = datetime.now(UTC)
    return [
        ("What day of the week is it today?", now.strftime("%A")),
        ("What is today's date?", now.strftime("%Y-%m-%d")),
        ("What year is it now?", str(now.year)),
        ("Which month are we in?", now.strftime("%B")),
        ("What time is it in UTC right now?", now.strftime("%Y")),
        ("What is the date today in Europe/Paris?", now.strftime("%Y")),
        ("Tell me the current date.", now.strftime("%Y-%m-%d")),
    ]


DOCS = {
    "vpn.md": "# VPN\n\nTo connect to the office VPN, install WireGuard and import the profile from vpn.acme.internal. "
              "The VPN gateway is gw-7.acme.internal.\n",
    "expenses.md": "# Expenses\n\nMeals on business trips are reimbursed up to 45 euros per day. Submit receipts "
                   "within 30 days in the Expensify app.\n",
    "holidays.md": "# Holidays\n\nEvery employee gets 27 days of paid holiday per year. Unused days expire on "
                   "March 31 of the following year.\n",
    "oncall.md": "# On-call\n\nThe on-call rotation changes every Tuesday at 10:00. Escalate incidents via the "
                 "pager number 555-0199.\n",
    "laptops.md": "# Laptops\n\nNew laptops are ordered through the IT portal; the standard model is the "
                  "ThinkPad T14. Delivery takes 5 working days.\n",
}
DOC_QUESTIONS = [
    ("Search the docs: what is the VPN gateway host?", "gw-7"),
    ("Look up in the company docs how much meals on business trips are reimbursed per day.", "45"),
    ("Search the documents: how many days of paid holiday do employees get?", "27"),
    ("Find in the docs when the on-call rotation changes.", "Tuesday"),
    ("Search the docs for the pager number for incidents.", "555-0199"),
    ("Look up the standard laptop model in the documents.", "T14"),
    ("Search the docs: within how many days must receipts be submitted?", "30"),
    ("What does the documentation say about when unused holidays expire?", "March"),
]


def agent_items() -> list:
    """The bench's questions as answer-evaluation items (`core.answer_eval`), mode agent."""
    from core.answer_eval import AnswerItem

    questions = [*ARITHMETIC, *date_questions(), *DOC_QUESTIONS]
    return [AnswerItem(question=q, expect=(a,), mode="agent", line=n) for n, (q, a) in enumerate(questions, start=1)]


async def run_arm(engine, questions, *, constrained: bool) -> dict:
    from core.types import Turn

    engine.settings.tools.constrained = constrained
    valid = right_tool = correct = calls = 0
    t0 = time.perf_counter()
    for q, expected, tool in questions:
        reply = await engine.answer(Turn(text=q, thread=f"{constrained}-{q}", channel="eng",
                                         decoding={"max_new_tokens": 48}))
        actions = [s.detail for s in reply.trace if s.kind == "action"]
        calls += len(actions)
        first = actions[0] if actions else None
        valid += bool(first and first["valid"])
        right_tool += bool(first) and first.get("tool") == tool
        correct += expected.lower() in reply.answer.lower()
    n = len(questions)
    return {"valid": valid / n, "right_tool": right_tool / n, "correct": correct / n, "calls": calls / n,
            "s_per_q": (time.perf_counter() - t0) / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="questions per category (0 = all)")
    args = ap.parse_args()

    from core.config import load_settings
    from core.engine import Engine
    from core.models import load_model
    from core.rag import ingest, open_retriever

    cut = (lambda xs: xs[: args.limit]) if args.limit else (lambda xs: xs)
    questions = ([(q, a, "calculator") for q, a in cut(ARITHMETIC)]
                 + [(q, a, "current_time") for q, a in cut(date_questions())]
                 + [(q, a, "search_docs") for q, a in cut(DOC_QUESTIONS)])
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for name, text in DOCS.items():
            (docs / name).write_text(text)
        model_dir = Path(".pytest_cache/kaizen-data")
        settings = load_settings(data_dir=model_dir if model_dir.exists() else Path(tmp) / "data",
                                 default={"mode": "agent", "preset": "precise"})
        rag_settings = settings.model_copy(update={"data_dir": Path(tmp) / "rag"})
        ingest(rag_settings, [docs], source="handbook", public=True)
        model = load_model(settings)
        engine = Engine(settings, model, retriever=open_retriever(rag_settings))
        results = {arm: asyncio.run(run_arm(engine, questions, constrained=arm)) for arm in (True, False)}
        model.close()
    print(f"agent bench: {len(questions)} tool-needing questions "
          f"({sum(t == 'calculator' for *_, t in questions)} arithmetic, "
          f"{sum(t == 'current_time' for *_, t in questions)} date/time, "
          f"{sum(t == 'search_docs' for *_, t in questions)} doc look-ups), model {model.name}, greedy")
    print(f"{'decoding of actions':<28} {'valid 1st call':>14} {'right tool':>10} {'correct answer':>14} "
          f"{'calls/q':>8} {'s/q':>6}")
    for arm, label in ((True, "constrained (trie + schema)"), (False, "free text + tolerant parser")):
        r = results[arm]
        print(f"{label:<28} {r['valid']:>14.0%} {r['right_tool']:>10.0%} {r['correct']:>14.0%} "
              f"{r['calls']:>8.1f} {r['s_per_q']:>6.1f}")


if __name__ == "__main__":
    main()
