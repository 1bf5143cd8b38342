"""Does an answer state a must-still-answer fact as its answer, not only name it in passing?

A row is {"question", "expect": [accepted answers]}. A fact counts where it stands as a whole word or number,
case-insensitively ("4" is not in "14", "2024", "4.0" or a list's "4."), and only if the answer did not first give
another answer to the same question. The 135M model's damaged answers do exactly that, and a plain substring test
counted them as kept (bench/loop.py, eighth run, 2026-12-06): "1.111111111111111...\\n\\nA minute is a unit of time
that is equal to 60 seconds." and "The largest mammal is the elephant. The largest land animal is the blue whale".
Two rules tell which answer it gave:

- A number is expected ("How many ...?"): a different number standing as a line of its own before the fact is the
  answer given, bare or with what it counts ("1.111..." or "1.96 seconds" above "A minute is 60 seconds."); numbers
  on the way in a sentence are not ("A day is 24 hours, and a week is 7 days.", "1 hour is equal to 3600
  seconds.\n1 minute is equal to 60 seconds."), nor a list's "1" alone on a line above the answer. A number in
  arithmetic is an operand, not a stated answer ("1000 * 60 = 6000 seconds" does not state 60; "1 minute = 60
  seconds" does).
- "What is X?": the first sentence that says "X is ..." is the answer; the fact must be in it. Without such a
  sentence the fact may stand anywhere ("Which organ pumps blood" is answered in the second sentence by the base
  model: "The human body is home to a complex network of organs ... The heart is the primary organ ...").
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["answers_fact", "fact_span", "states_first"]

# List markers ("1. ", "4) ", or "1" alone on a line above more text) at the start of a line: a numbered list is not
# an answer to "how many".
_LIST_MARKER = re.compile(r"(?m)^\s*(?:\d+[.)]|[-*\u2022])\s+|^[ \t]*\d+[ \t]*(?=\n\s*\S)")
# A number: not part of a word, a decimal or a thousands-grouped number taken whole ("1.111", "6,000").
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
# What may follow a number that stands as a line of its own: what it counts, and an end ("1.96 seconds", "1.111...").
_ALONE = re.compile(r"[ \t]*(?:[A-Za-z]+)?[ \t]*[.!…]*[ \t]*")
# Arithmetic around a number makes it an operand, not a stated answer.
_OPERATORS = r"*×/+"
_NOT_OPERAND = rf"(?<![{_OPERATORS}])(?<![{_OPERATORS}] )"
_WHAT_IS = re.compile(r"^\s*what\s+(?:is|are)\s+(?:the\s+)?([^?]+?)\s*\?*\s*$", re.IGNORECASE)
# A sentence ends at . ! ? (with any closing quotes or brackets after it: 'called "Silk Road problem." However') or
# at a line break.
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(?=\s|$)|\n")


def answers_fact(row: dict[str, Any], answer: str) -> bool:
    """True when `answer` states one of the row's expected facts as its answer (see the module docstring);
    a row without expectations: any non-empty answer."""
    if not row.get("expect"):
        return bool(_LIST_MARKER.sub(" ", answer).strip())
    return fact_span(row, answer) is not None


def states_first(row: dict[str, Any], answer: str) -> bool:
    """True when the answer's first sentence (list markers aside) states an expected fact as `answers_fact` counts
    one: the stricter test for an answer to train on. Why: the base model's answer to "How many legs does a spider
    have?" opens "The answer to this question is a classic example of a mathematical concept called "Silk Road"" and
    names 8 legs only at the end; replayed (training/replay.py), it taught the dog's answer the same opening and "30
    legs" (SFT recipe on the 30 kept replay answers, 2026-12-06; without that row: "... is 4. A dog has four legs.")."""
    text = _LIST_MARKER.sub(lambda marker: " " * len(marker.group()), answer)
    end = _SENTENCE_END.search(text, len(text) - len(text.lstrip()))
    return answers_fact(row, answer[:end.end()] if end else answer)


def fact_span(row: dict[str, Any], answer: str) -> tuple[int, int] | None:
    """(start, end) in `answer` of the first expected fact it states as its answer (as `answers_fact` counts
    one), else None."""
    # List markers become spaces of the same length: "4." opening a list item is not a "4", offsets stay put.
    text = _LIST_MARKER.sub(lambda marker: " " * len(marker.group()), answer)
    start, end = _claim(row, text)
    # A number is a whole number: not part of a word, nor of a decimal ("4" is not in "4.0", "1.4" or "14"), nor
    # an operand of arithmetic ("1000 * 60 = 6000" does not say 60).
    found = [m for e in row.get("expect") or []
             if (m := re.compile(rf"(?<![\w.]){_NOT_OPERAND}{re.escape(str(e))}(?!\w|\.\d|\s?[{_OPERATORS}=])",
                                 re.IGNORECASE).search(text, start, end))]
    span = min((m.span() for m in found), default=None)
    if span is None or _another_number_first(row, text, span):
        return None
    return span


def _another_number_first(row: dict[str, Any], text: str, span: tuple[int, int]) -> bool:
    """A "how many" answer that gave a different number before the fact, on a line of its own: bare ("1.111...")
    or with what it counts ("1.96 seconds")."""
    expect = {str(e).lower() for e in row.get("expect") or []}
    if not any(e.isdigit() for e in expect):
        return False
    for m in _NUMBER.finditer(text, 0, span[0]):
        if m.group().lower() in expect:
            continue  # the fact itself, said earlier
        line_start, line_end = text.rfind("\n", 0, m.start()) + 1, text.find("\n", m.end())
        rest = text[m.end():line_end if line_end >= 0 else len(text)]
        if not text[line_start:m.start()].strip() and _ALONE.fullmatch(rest):
            return True
    return False


def _claim(row: dict[str, Any], text: str) -> tuple[int, int]:
    """Where the answer to "What is X?" stands: the first sentence saying "X is/are ..." (the whole text without
    one, or for any other question), as (start, end) offsets."""
    asked = _WHAT_IS.match(str(row.get("question") or ""))
    if not asked:
        return 0, len(text)
    subject = r"\s+".join(map(re.escape, asked.group(1).split()))
    claim = re.search(rf"(?<!\w)(?:the\s+)?{subject}\s+(?:is|are|was|were)\b", text, re.IGNORECASE)
    if claim is None:
        return 0, len(text)
    end = _SENTENCE_END.search(text, claim.end())
    return claim.start(), end.end() if end else len(text)
