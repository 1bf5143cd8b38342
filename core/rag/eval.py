"""Retrieval evaluation: recall@1/5/10 and MRR over a JSONL file of questions.

Each line is `{"question": ..., "source_file": "handbook/vpn.md"}` (a hit is a chunk from that file; a
bare file name matches it in any folder) or `{"question": ..., "answer": ...}` (a hit is a chunk that
contains the answer, case and spacing ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core.rag.retrieval import Retriever
from core.rag.sources import RagError
from core.text import read_jsonl
from core.types import Source

__all__ = ["CUTOFFS", "EvalItem", "EvalResult", "evaluate", "is_hit", "load_eval_set"]

CUTOFFS = (1, 5, 10)


@dataclass(frozen=True)
class EvalItem:
    question: str
    source_file: str = ""
    answer: str = ""
    line: int = 0


@dataclass
class EvalResult:
    questions: int
    recall: dict[int, float]
    mrr: float
    misses: list[EvalItem] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [*(f"recall@{n} {self.recall[n]:.3f}" for n in CUTOFFS), f"mrr {self.mrr:.3f}"]


def load_eval_set(path: Path) -> list[EvalItem]:
    items = []
    for number, row in read_jsonl(path, error=RagError):
        if not isinstance(row, dict) or not str(row.get("question", "")).strip():
            raise RagError(f'{path}:{number}: needs a non-empty "question"')
        source_file, answer = str(row.get("source_file") or ""), str(row.get("answer") or "")
        if bool(source_file) == bool(answer):
            raise RagError(f'{path}:{number}: give exactly one of "source_file" or "answer"')
        items.append(EvalItem(question=row["question"], source_file=source_file, answer=answer, line=number))
    if not items:
        raise RagError(f"{path}: no questions")
    return items


def is_hit(item: EvalItem, source: Source) -> bool:
    if item.answer:
        return _squash(item.answer) in _squash(source.text)
    wanted = PurePosixPath(item.source_file.replace("\\", "/")).parts
    for stored in (source.metadata.get("path", ""), source.uri):
        parts = PurePosixPath(str(stored).replace("\\", "/")).parts
        if parts and len(wanted) <= len(parts) and parts[-len(wanted) :] == wanted:
            return True
    return False


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def evaluate(retriever: Retriever, items: list[EvalItem], *, channel: str | None = None) -> EvalResult:
    """Ask every question (as `channel`; None = every source) and score the first hit's rank."""
    depth = max(CUTOFFS)
    ranks: list[int | None] = []
    for item in items:
        sources = retriever.search(item.question, channel=channel, k=depth)
        ranks.append(next((n for n, s in enumerate(sources, start=1) if is_hit(item, s)), None))
    count = len(items)
    recall = {n: sum(1 for r in ranks if r is not None and r <= n) / count for n in CUTOFFS}
    mrr = sum(1.0 / r for r in ranks if r is not None) / count
    misses = [item for item, r in zip(items, ranks, strict=True) if r is None]
    return EvalResult(questions=count, recall=recall, mrr=mrr, misses=misses)
