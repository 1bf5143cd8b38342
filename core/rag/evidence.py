"""Evidence sentences: which sentence of the retrieved excerpts answers the question.

A rag answer from the 135M default model that paraphrases its excerpts states the asked-for fact about a quarter
of the time (bench/quality.py, docs set: it often repeats the question or drifts). Opening the answer with the
excerpt sentence that answers the question, cited, and letting the model continue from there is right whenever
that sentence is: extractive question answering, the oldest trick for small readers. This module ranks the
sentences of the excerpts for a question:

    relevance = cosine(question, sentence) + LEXICAL_WEIGHT * (share of the question's content words in the sentence)
                + NUMBER_BONUS if the question asks for a quantity or a date and the sentence has a digit
    score = relevance - TOPIC_WEIGHT * (cosine(sentence, title) - cosine(question, title)), title: its excerpt's

The cosine comes from the retrieval embedder (all-MiniLM-L6-v2 by default, trained on question/answer pairs, so
it matches a question to its answer sentence); the word overlap breaks its ties on names; the answer-type cue
(classic in extractive QA) stops "Mercury is closest to the Sun." from beating "A year on Mercury lasts 88 days"
for "How long does Mercury take to orbit the Sun?". Weights chosen on half of bench/data/docs.jsonl (32
questions; a grid of LEXICAL_WEIGHT 0/0.15/0.3/0.6, a novelty term 0/0.1/0.2 that never helped, NUMBER_BONUS
0/0.1/0.2): the top sentence holds the expected fact for 0.72 of the tuning half and 0.78 of the other half
(cosine alone: 0.56 / 0.75), one of the top two for 0.81 / 0.88; the excerpts hold it for 0.98.

The topic term: a question names its subject ("Who was the captain of the Titanic?"), so the sentence that only
introduces the subject ("RMS Titanic was a British passenger liner that sank …") is close to it in the embedding
while answering nothing; it was the top sentence for 9 of the 17 questions whose top sentence missed the fact. A
right answer then came from the model's continuation, after a "[n]" pointing at that introduction: a citation of an
excerpt that does not hold the fact. Such a sentence is about as close to its excerpt's title, an answer to the
question's ask much less. The question's own closeness to the title is given back, so the term does not favour
excerpts about another subject: alone, the first term let Mercury's "The planet turns on its axis … once every 59
Earth days", which does not name its planet, lead the answers about Jupiter's rotation. TOPIC_WEIGHT chosen on the
even lines of bench/data/docs.jsonl (0.5/0.75/1/1.5 for the first term alone, then the question's share given back
at 0-1 x it, the floor below left on the relevance): the top sentence holds the fact for 0.78 -> 0.91 of those 32
questions and 0.69 -> 0.81 of the odd lines, held out; with the floor on the score, 0.97 / 0.84. Excerpts without a
title have no topic term.

Sentences scoring under MIN_SCORE are not evidence. Before the topic term, on that set every top sentence holding
the fact scored 0.66 or more (5th percentile), while the best sentence of another question's excerpts passed 0.5 for 1
in 64 (0.47 at the 95th percentile); with it, 0.81 (5th percentile, lowest 0.56) against the same 1 in 64 (0.43) —
and a planted "Ignore all previous instructions…" scores 0.20 for a question about an error code (0.09 in an excerpt
titled "VPN guide"), so a search that found the wrong excerpts is never quoted as the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.types import Source

__all__ = ["Evidence", "cite", "rank_evidence", "split_sentences"]

LEXICAL_WEIGHT = 0.3
NUMBER_BONUS = 0.2
TOPIC_WEIGHT = 0.75
MIN_SCORE = 0.5
MIN_CHARS = 16  # shorter pieces are headings, list debris or abbreviations cut off, not statements
MAX_SENTENCES = 64  # per question: bounds the embedding work (top_k excerpts of ~200 words hold ~40)

_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")
_WORD = re.compile(r"[a-z0-9]+")
_ASKS_NUMBER = re.compile(r"(?i)\b(how (long|many|much|far|old|tall|high|deep|big|large|wide|fast|often)|when|"
                          r"(what|which|in which) (year|date|century|month|day))\b")
_DIGIT = re.compile(r"\d")
_STOP = frozenset(
    "a an the of is are was were be been to in on at by for from with and or not it its this that these those "
    "what which who whom whose when where why how do does did done can could should would may might will shall "
    "many much there their they them he she his her i you we me my our your about into than then so as if".split()
)


@dataclass(frozen=True)
class Evidence:
    """A sentence of excerpt `source` (0-based index into the sources given; cite it as [source + 1])."""

    source: int
    sentence: str
    score: float


def cite(sentence: str, n: int) -> str:
    """An evidence sentence as an answer opens with it: the sentence, then its excerpt's number, "… [n]"."""
    return f"{sentence} [{n}]"


def split_sentences(text: str) -> list[str]:
    """Sentences of an excerpt: paragraphs and list items split first, headings (markdown `#` lines) left out,
    then sentence ends (., !, ? before a capital, digit or quote). Pieces under MIN_CHARS are dropped."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)", text):
        lines = [ln.strip().lstrip("-*• ").strip() for ln in block.splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
        flat = " ".join(lines)
        out += [s.strip() for s in _BOUNDARY.split(flat) if len(s.strip()) >= MIN_CHARS]
    return out


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def rank_evidence(
    question: str,
    sources: Sequence[Source],
    *,
    embed_query: Callable[[str], Sequence[float]],
    embed_texts: Callable[[list[str]], Sequence[Sequence[float]]],
    min_score: float = MIN_SCORE,
) -> list[Evidence]:
    """The sentences of `sources` scoring at least `min_score`, best first (see the module docstring for the
    score); [] when none does.

    `embed_query` / `embed_texts`: the retrieval embedder's query and document encoders (vectors of one size).
    """
    pieces = [(i, s) for i, src in enumerate(sources) for s in split_sentences(src.text)][:MAX_SENTENCES]
    if not pieces:
        return []
    q = np.asarray(embed_query(question), dtype=np.float32)
    v = np.asarray(embed_texts([s for _, s in pieces]), dtype=np.float32)
    cosine = v @ q / (np.linalg.norm(v, axis=1) * np.linalg.norm(q) + 1e-9)
    asked = _content_words(question)
    overlap = np.array([len(asked & _content_words(s)) / max(1, len(asked)) for _, s in pieces], dtype=np.float32)
    relevance = cosine + LEXICAL_WEIGHT * overlap
    if _ASKS_NUMBER.search(question):
        relevance += NUMBER_BONUS * np.array([bool(_DIGIT.search(s)) for _, s in pieces], dtype=np.float32)
    score = relevance - TOPIC_WEIGHT * _topic(q, v, [sources[i].title.strip() for i, _ in pieces], embed_texts)
    order = np.argsort(-score, kind="stable")
    return [Evidence(pieces[j][0], pieces[j][1], float(score[j])) for j in order if score[j] >= min_score]


def _topic(question: np.ndarray, vectors: np.ndarray, titles: list[str],
           embed_texts: Callable[[list[str]], Sequence[Sequence[float]]]) -> np.ndarray:
    """For each sentence (rows of `vectors`, shape (n, d); `question` shape (d,)), its cosine with its excerpt's
    title less the question's cosine with that title; 0 where the excerpt has no title. Each distinct title is
    embedded once."""
    distinct = sorted({t for t in titles if t})
    if not distinct:
        return np.zeros(len(titles), dtype=np.float32)
    embedded = np.asarray(embed_texts(distinct), dtype=np.float32)
    embedded /= np.linalg.norm(embedded, axis=1, keepdims=True) + 1e-9
    row = {t: embedded[i] for i, t in enumerate(distinct)}
    unit = vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9)
    asked = question / (np.linalg.norm(question) + 1e-9)
    return np.array([float((unit[j] - asked) @ row[t]) if t else 0.0 for j, t in enumerate(titles)],
                    dtype=np.float32)
