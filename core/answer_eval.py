"""Answer-level evaluation: does the engine's answer state the expected fact?

An evaluation set is JSONL, one question a line:

    {"question": "What is the capital of France?", "expect": ["Paris"], "mode": "chat", "channel": "eng"}

`expect` lists accepted answers (any one counts; matched case-insensitively, as whole words, spacing ignored);
`mode` and `channel` are optional (default: the channel profile's mode, the default channel). Each question is
asked through `Engine.answer` exactly as a user's would be, concurrently (the model backend batches concurrent
requests), with no conversation history. Sampling presets are run `samples` times; each run's accuracy is one
sample of the preset's accuracy, reported as mean and standard deviation. Answers in `rag` mode are also checked
for their citations: every `[n]` must point at an excerpt that holds an expected answer.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.decoding import resolve_decoding
from core.text import clean_text, read_jsonl
from core.types import Reply, Turn

__all__ = [
    "AnswerEvalError",
    "AnswerItem",
    "ArmResult",
    "Outcome",
    "citations_hold",
    "evaluate_answers",
    "load_answer_set",
    "report_lines",
    "states",
]

MODES = ("chat", "rag", "agent", "auto")
_CITATION = re.compile(r"\[(\d{1,2})\]")


class AnswerEvalError(ValueError):
    """An evaluation file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class AnswerItem:
    question: str
    expect: tuple[str, ...]
    mode: str | None = None
    channel: str = ""
    line: int = 0


@dataclass(frozen=True)
class Outcome:
    """One answer to one question: `correct` when it states an expected answer."""

    item: AnswerItem
    answer: str
    correct: bool
    mode: str  # the mode that answered (auto resolved; "none" when the model was not called)
    citations: int = 0  # [n] markers in the answer
    citations_ok: bool = True  # every [n] names an excerpt holding an expected answer


@dataclass
class ArmResult:
    """One preset on one mode: `runs[i]` holds the outcomes of sample run i over every question."""

    preset: str
    mode: str
    runs: list[list[Outcome]] = field(default_factory=list)

    @property
    def accuracies(self) -> list[float]:
        return [sum(o.correct for o in run) / len(run) for run in self.runs if run]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies) if self.accuracies else 0.0

    @property
    def spread(self) -> float:
        """Standard deviation of the accuracy across sample runs (0 for one run)."""
        acc = self.accuracies
        return statistics.stdev(acc) if len(acc) > 1 else 0.0

    def misses(self) -> list[Outcome]:
        """Outcomes of the first run that missed (the same question in later runs is not repeated)."""
        return [o for o in self.runs[0] if not o.correct] if self.runs else []

    def rag_outcomes(self) -> list[Outcome]:
        return [o for run in self.runs for o in run if o.mode == "rag"]


def load_answer_set(path: Path) -> list[AnswerItem]:
    """Read a JSONL evaluation set. Raises AnswerEvalError naming the line of the first bad entry."""
    path = Path(path)
    items: list[AnswerItem] = []
    for number, row in read_jsonl(path, error=AnswerEvalError):
        if not isinstance(row, dict):
            raise AnswerEvalError(f"{path}:{number}: each line must be a JSON object")
        question = clean_text(str(row.get("question") or "")).strip()
        if not question:
            raise AnswerEvalError(f'{path}:{number}: needs a non-empty "question"')
        expect = row.get("expect")
        if isinstance(expect, str):
            expect = [expect]
        if not isinstance(expect, list) or not [e for e in expect if str(e).strip()]:
            raise AnswerEvalError(f'{path}:{number}: "expect" must be a non-empty list of accepted answers')
        mode = row.get("mode")
        if mode is not None and mode not in MODES:
            raise AnswerEvalError(f"{path}:{number}: unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        items.append(AnswerItem(question=question, expect=tuple(str(e).strip() for e in expect if str(e).strip()),
                                mode=mode, channel=str(row.get("channel") or ""), line=number))
    if not items:
        raise AnswerEvalError(f"{path}: no questions")
    return items


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def states(answer: str, expect: Sequence[str]) -> bool:
    """True when `answer` contains one of `expect` as whole words ("12" does not match "120")."""
    text = _squash(answer)
    for wanted in expect:
        w = _squash(wanted)
        if w and re.search(rf"(?<![\w]){re.escape(w)}(?![\w])", text):
            return True
    return False


def citations_hold(reply: Reply, expect: Sequence[str]) -> tuple[int, bool]:
    """(number of [n] citations in the answer, whether each names an excerpt that states an expected answer)."""
    cited = [int(n) for n in _CITATION.findall(reply.answer)]
    ok = all(1 <= n <= len(reply.sources) and states(reply.sources[n - 1].text, expect) for n in cited)
    return len(cited), ok


async def _ask(engine: Any, item: AnswerItem, preset: str, mode: str | None, run: int,
               limit: asyncio.Semaphore, overrides: dict[str, Any] | None) -> Outcome:
    turn = Turn(text=item.question, platform="eval", channel=item.channel, channel_name=item.channel,
                thread=f"eval-{run}-{item.line}", user="eval", preset=preset, mode=item.mode or mode,
                decoding=overrides, history=())
    async with limit:
        reply: Reply = await engine.answer(turn)
    cited, ok = citations_hold(reply, item.expect) if reply.mode == "rag" else (0, True)
    return Outcome(item=item, answer=reply.answer, correct=states(reply.answer, item.expect), mode=reply.mode,
                   citations=cited, citations_ok=ok)


async def evaluate_answers(
    engine: Any,
    items: Sequence[AnswerItem],
    *,
    presets: Sequence[str],
    mode: str | None = None,
    samples: int = 3,
    concurrency: int = 16,
    overrides: dict[str, Any] | None = None,
) -> list[ArmResult]:
    """Ask every question with each preset (`samples` runs for sampling presets, one for greedy and beam).

    `mode` overrides the profile's mode for items that name none; `overrides` are per-message decoding options
    (e.g. {"max_new_tokens": 64}). Raises DecodingError for an unknown preset. Results come in `presets` order.
    """
    limit = asyncio.Semaphore(max(1, concurrency))
    results = []
    for preset in presets:
        decoding = resolve_decoding(engine.settings.presets, preset, overrides)
        runs = samples if decoding.strategy == "sample" else 1
        outcomes = await asyncio.gather(*(
            _ask(engine, item, preset, mode, run, limit, overrides) for run in range(runs) for item in items
        ))
        n = len(items)
        arm = ArmResult(preset=preset, mode=mode or "profile",
                        runs=[list(outcomes[r * n:(r + 1) * n]) for r in range(runs)])
        results.append(arm)
    return results


def report_lines(results: Sequence[ArmResult], *, misses: int = 10) -> list[str]:
    """Accuracy per mode and preset (mean ± standard deviation over sample runs), rag citation checks,
    then up to `misses` missed questions per arm."""
    lines = []
    for arm in results:
        n = len(arm.runs[0]) if arm.runs else 0
        line = (f"{arm.mode:<8} {arm.preset:<12} accuracy {arm.mean:.3f} ± {arm.spread:.3f} "
                f"({len(arm.runs)} run{'s' if len(arm.runs) != 1 else ''} × {n} questions)")
        rag = arm.rag_outcomes()
        if rag:
            citing = [o for o in rag if o.citations]
            good = sum(o.citations_ok for o in citing)
            line += (f"; rag answers stating the fact {sum(o.correct for o in rag) / len(rag):.3f}, "
                     f"citations pointing at it {good}/{len(citing)}")
        lines.append(line)
    for arm in results:
        missed = arm.misses()
        if missed and misses:
            lines.append(f"missed ({arm.mode}, {arm.preset}, first run): {len(missed)}")
            for o in missed[:misses]:
                answer = " ".join(o.answer.split())[:100]
                lines.append(f"  line {o.item.line}: {o.item.question} — expected {' | '.join(o.item.expect)}; "
                             f"got: {answer}")
    return lines
