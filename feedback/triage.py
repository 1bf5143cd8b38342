"""Why each 👎: sort disliked answers by cause, from what was recorded with them, and say what each cause calls for.

Causes, each with the evidence it is read from (the voter's reason text wins when it names a cause):

* ``retrieval_miss`` — a documents question answered with no sources, the "found nothing" reply, or sources that
  share almost no words with the question (weak). Action: documents to add.
* ``stale_source`` — a cited document changed after the answer: its file on disk is newer than the answer or no longer
  matches the hash the source registry recorded at ingest, or it was removed. Action: re-ingest those sources.
* ``refused_or_empty`` — an empty answer, a refusal, or a canned "couldn't answer". Action: examples for training.
* ``unsupported_claim`` — the answer's numbers or most of its content words are not in the excerpts it was given or
  the tool observations in its prompt. Action: questions for the regression set.
* ``style_length`` — the reason complains about length, tone or format, or the answer is very long. Action: examples
  for training (preference pairs).
* ``other`` — none of the above. Action: read them.

Everything is read from the feedback tables (interactions, votes with their reasons) and, for staleness, the source
registry's per-file hashes (`documents`: file path -> `DocumentState`); nothing is sent to a model.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from feedback.models import Interaction, Vote

__all__ = ["ACTIONS", "CAUSES", "DocumentState", "TriageItem", "TriageReport", "classify", "documents_from_registry",
           "format_report", "triage"]

logger = logging.getLogger(__name__)

CAUSES = ("retrieval_miss", "stale_source", "refused_or_empty", "unsupported_claim", "style_length", "other")
ACTIONS = {
    "retrieval_miss": "documents to add: ingest documents that answer these questions (kaizen ingest PATH --source)",
    "stale_source": "re-ingest the changed sources so answers quote the current text (kaizen ingest)",
    "refused_or_empty": "examples for training: write the answer it should have given (SFT / preference pairs)",
    "unsupported_claim": "questions for the regression set: add them with the correct answer so the gate checks them",
    "style_length": "examples for training: preferred shorter/clearer answers as preference pairs (DPO/KTO)",
    "other": "read these and decide (regression set or training examples)",
}

# Canned replies of the engine and agent (core.engine / core.agent); matched by their opening words.
_NOTHING_FOUND = "i found nothing about that in the documents"
_CANNED_REFUSALS = ("sorry, i couldn't come up with an answer", "sorry, i couldn't work that out")
_REFUSAL = re.compile(
    r"(?i)^\W*(i(?:'m| am)? (?:sorry|afraid)[,. ]+(?:but )?i (?:can(?:no|')t|am unable|don't know)|"
    r"i (?:can(?:no|')t|am unable to|won't) (?:help|answer|assist|provide)|i don't know|as an ai)"
)
_REASONS = {
    "stale_source": re.compile(r"(?i)\b(out ?dated|stale|old (?:version|info|policy|docs?)|no longer|changed|"
                               r"not current|superseded)\b"),
    "retrieval_miss": re.compile(r"(?i)\b(not in the docs?|no (?:docs?|sources?)|wrong (?:docs?|document|source)|"
                                 r"couldn'?t find|didn'?t find|missing (?:docs?|info))\b"),
    "unsupported_claim": re.compile(r"(?i)\b(wrong|incorrect|inaccurate|made (?:it )?up|hallucinat\w*|not true|"
                                    r"false|invented|doesn'?t say)\b"),
    "refused_or_empty": re.compile(r"(?i)\b(refus\w*|empty|no answer|didn'?t answer|won'?t answer)\b"),
    "style_length": re.compile(r"(?i)\b(too (?:long|short|verbose|wordy)|verbose|rambl\w*|tone|rude|format\w*|"
                               r"wall of text|tl;?dr)\b"),
}
_WORD = re.compile(r"[^\W_]{4,}", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_STOP = frozenset("""about above after again also answer because been before being below between both could does
doing down during each from further have having here into just more most only other over same should some such
than that their them then there these they this those through under until very what when where which while whom
will with would your yours company documents excerpts question please""".split())
_EXCERPT = re.compile(r"(?s)<excerpt[^>]*>(.*?)</excerpt>")
_DOCUMENTS = re.compile(r"(?s)<documents>(.*?)</documents>")
_OBSERVATION = re.compile(r"(?s)<observation>(.*?)</observation>|Observation:(.*?)(?=\n\s*(?:Thought|Action|Final "
                          r"Answer)\s*:|\Z)")
WEAK_OVERLAP = 0.15  # share of the question's content words found in its excerpts, below which they are weak
SUPPORTED = 0.5  # share of the answer's content words that must be found in the excerpts/observations
LONG_ANSWER = 250  # words


@dataclass(frozen=True)
class DocumentState:
    """What the source registry knows about one ingested file: its hash at the last ingest and its source."""

    sha256: str
    source: str
    ingested_at: datetime | None = None


@dataclass
class TriageItem:
    interaction_id: str
    cause: str
    evidence: str  # one line: what was recorded that points at the cause
    question: str
    answer: str
    created_at: datetime
    adapter: str
    mode: str
    reasons: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # uri or title of each source
    stale: list[str] = field(default_factory=list)  # documents that changed after the answer


@dataclass
class TriageReport:
    items: list[TriageItem]

    def by_cause(self) -> dict[str, list[TriageItem]]:
        """Every cause (in CAUSES order, also those without items) -> its items, newest first."""
        grouped: dict[str, list[TriageItem]] = {c: [] for c in CAUSES}
        for item in sorted(self.items, key=lambda i: i.created_at, reverse=True):
            grouped[item.cause].append(item)
        return grouped

    def counts(self) -> dict[str, int]:
        return {cause: len(items) for cause, items in self.by_cause().items()}

    def stale_documents(self) -> dict[str, list[str]]:
        """source name -> files to re-ingest (from the stale items)."""
        out: dict[str, set[str]] = defaultdict(set)
        for item in self.items:
            for doc in item.stale:
                source, _, path = doc.partition(":")
                out[source].add(path)
        return {k: sorted(v) for k, v in sorted(out.items())}


def _words(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOP}


def _grounding(prompt: list[dict[str, Any]]) -> tuple[str, str]:
    """(excerpts, observations) the model was shown, from the recorded prompt."""
    excerpts, observations = [], []
    for m in prompt:
        content = str(m.get("content") or "")
        role = m.get("role")
        found = _EXCERPT.findall(content) or _DOCUMENTS.findall(content)
        excerpts += found
        if role == "tool":
            observations.append(content)
        elif role == "assistant" and ("Observation" in content or "<observation>" in content):
            observations += [a or b for a, b in _OBSERVATION.findall(content)]
    return "\n".join(excerpts), "\n".join(observations)


def _file_sha256(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def _stale(sources: list[dict[str, Any]], created_at: datetime, documents: dict[str, DocumentState] | None,
           cache: dict[str, tuple[float | None, str | None]]) -> list[tuple[str, str]]:
    """(document, why) for each cited document that changed after the answer."""
    out = []
    for s in sources:
        uri = str(s.get("uri") or "")
        if not uri:
            continue
        state = documents.get(uri) if documents else None
        label = f"{state.source if state else s.get('source', '')}:{uri}"
        if uri not in cache:
            p = Path(uri)
            try:
                mtime = p.stat().st_mtime
            except OSError:
                mtime = None
            cache[uri] = (mtime, _file_sha256(p) if mtime is not None else None)
        mtime, disk_sha = cache[uri]
        if documents and state is None:
            out.append((label, "no longer in the source registry (removed since)"))
        elif mtime is None:
            if state is not None:
                out.append((label, "the file was deleted"))
        elif recorded := s.get("sha256"):
            if state is not None and state.sha256 != recorded:
                out.append((label, "re-ingested with different content after the answer"))
        elif mtime > created_at.timestamp():
            out.append((label, f"modified {datetime.fromtimestamp(mtime, UTC):%Y-%m-%d %H:%M} UTC, after the answer"))
        elif state is not None and disk_sha is not None and disk_sha != state.sha256:
            out.append((label, "changed on disk since it was ingested (the index is out of date)"))
    return out


def classify(row: dict[str, Any], reasons: list[str], documents: dict[str, DocumentState] | None = None,
             cache: dict | None = None) -> TriageItem:
    """The cause of one disliked answer. `row`: the interaction's columns (question, answer, mode, sources, prompt,
    created_at, ...); `reasons`: the 👎 reason texts given for it."""
    cache = {} if cache is None else cache
    answer = (row.get("answer") or "").strip()
    question = row.get("question") or ""
    sources = list(row.get("sources") or [])
    created_at = row["created_at"]
    stale = _stale(sources, created_at, documents, cache)
    excerpts, observations = _grounding(list(row.get("prompt") or []))
    item = TriageItem(row["id"], "other", "", question, answer, created_at, row.get("adapter") or "",
                      row.get("mode") or "", [r for r in reasons if r], [str(s.get("uri") or s.get("title") or
                                                                              s.get("id")) for s in sources],
                      [doc for doc, _ in stale])

    def label(cause: str, evidence: str) -> TriageItem:
        item.cause, item.evidence = cause, evidence
        return item

    # 1. The voter said why.
    said = " ".join(item.reasons)
    for cause, pattern in _REASONS.items():
        if said and (m := pattern.search(said)):
            if cause == "stale_source" and not stale and sources == []:
                continue
            return label(cause, f"reason: {m.group(0)!r}")
    # 2. What was recorded.
    lowered = answer.lower()
    if not answer:
        return label("refused_or_empty", "empty answer")
    if lowered.startswith(_NOTHING_FOUND):
        return label("retrieval_miss", "no document matched the question")
    if row.get("mode") == "rag" and not sources:
        return label("retrieval_miss", "documents question answered without sources")
    if stale:
        return label("stale_source", "; ".join(f"{doc}: {why}" for doc, why in stale))
    if lowered.startswith(_CANNED_REFUSALS) or _REFUSAL.search(answer):
        return label("refused_or_empty", "refusal: " + answer[:60])
    q_words = _words(question)
    if sources and excerpts and q_words:
        overlap = len(q_words & _words(excerpts)) / len(q_words)
        if overlap < WEAK_OVERLAP:
            return label("retrieval_miss", f"weak sources: {overlap:.0%} of the question's words are in them")
    grounding = excerpts + "\n" + observations
    if grounding.strip():
        missing_numbers = sorted(set(_NUMBER.findall(answer)) - set(_NUMBER.findall(grounding + question)))
        a_words = _words(answer) - q_words
        support = len(a_words & _words(grounding)) / len(a_words) if a_words else 1.0
        if missing_numbers:
            return label("unsupported_claim", f"numbers not in the excerpts/observations: {', '.join(missing_numbers)}")
        if support < SUPPORTED:
            return label("unsupported_claim", f"only {support:.0%} of the answer's words are in the "
                                              "excerpts/observations")
    if len(answer.split()) > LONG_ANSWER:
        return label("style_length", f"{len(answer.split())} words")
    return label("other", "nothing recorded points at a cause")


def triage(engine: sa.Engine, *, since: datetime | None = None,
           documents: dict[str, DocumentState] | None = None) -> TriageReport:
    """Classify every answer with a 👎 (given at or after `since`, UTC) in the feedback database `engine`.
    An answer with several 👎 is one item; all their reasons are used."""
    if since is not None and since.tzinfo is None:
        raise ValueError(f"naive datetime {since!r}: give UTC timestamps")
    i, v = Interaction.__table__, Vote.__table__
    stmt = (sa.select(i, v.c.reason).select_from(v.join(i, v.c.interaction_id == i.c.id))
            .where(v.c.value == -1).order_by(i.c.created_at))
    if since is not None:
        stmt = stmt.where(v.c.updated_at >= since)
    rows: dict[str, dict[str, Any]] = {}
    reasons: dict[str, list[str]] = defaultdict(list)
    with engine.connect() as conn:
        for r in conn.execute(stmt).mappings():
            rows.setdefault(r["id"], dict(r))
            if r["reason"]:
                reasons[r["id"]].append(r["reason"])
    cache: dict = {}
    return TriageReport([classify(row, reasons[key], documents, cache) for key, row in rows.items()])


def documents_from_registry(sources: dict[str, Any]) -> dict[str, DocumentState]:
    """file path -> DocumentState from `SourceRegistry.sources()` (core.rag.sources.SourceRecord values)."""
    out = {}
    for name, record in sources.items():
        try:
            at = datetime.fromisoformat(record.updated_at) if record.updated_at else None
        except ValueError:
            at = None
        for key, f in record.files.items():
            out[key] = DocumentState(f.sha256, name, at)
    return out


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def format_report(report: TriageReport, *, examples: int = 3) -> str:
    """Plain text: per cause its count, the action it calls for and up to `examples` examples (newest first)."""
    grouped = report.by_cause()
    total = len(report.items)
    lines = [f"{total} disliked answer(s)" + (": " + ", ".join(f"{c} {len(v)}" for c, v in grouped.items() if v)
                                              if total else "")]
    for cause, items in grouped.items():
        if not items:
            continue
        lines += ["", f"## {cause}: {len(items)}", f"action: {ACTIONS[cause]}"]
        if cause == "stale_source":
            for source, files in report.stale_documents().items():
                lines.append(f"  re-ingest source {source or '?'}: {', '.join(files)}")
        for item in items[:examples]:
            lines.append(f"- [{item.created_at:%Y-%m-%d %H:%M}] {item.interaction_id} ({item.mode}"
                         f"{', adapter ' + item.adapter if item.adapter else ''})")
            lines.append(f"    Q: {_short(item.question, 110)}")
            lines.append(f"    A: {_short(item.answer, 110)}")
            lines.append(f"    why: {_short(item.evidence, 110)}")
            if item.reasons:
                lines.append(f"    👎 reason: {_short(' / '.join(item.reasons), 100)}")
    return "\n".join(lines)
