"""Votes turned into the datasets trl trains on, and the stats that say how much there is.

Every voted answer gets a net score (sum of its +1/-1 votes): conflicting voters are resolved by it, and a
net of 0 is no label. Answers are grouped when they answer the same thing: siblings ("try another answer")
and interactions whose prompt messages are identical (same question in the same context). Within a group
identical answer texts are merged (their votes summed), which removes duplicates. Then:

- sft:   every liked answer (net > 0)                      -> {"messages": prompt + [answer]}
         (a person's correction also carries "origin": "correction": training may weigh it higher, and
         "kept": N when its first N characters are the model's own words, up to where the person changed them)
- pairs: every liked x disliked answer of one group        -> {"prompt", "chosen", "rejected"}
- kto:   every labelled answer (net != 0), unpaired        -> {"prompt", "completion", "label"}

After scrubbing, examples that became identical are kept once; pairs whose two answers became equal and KTO rows
whose prompt + answer is labelled both ways are dropped before anything is written or counted (a warning says how
many).

Permission-safe: an answer that drew on a restricted source (one with allowed channels) is left out unless
the audience is one of those channels, so restricted documents never reach a model everyone can talk to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from feedback.models import Conversation, Interaction, Vote
from feedback.window import CORRECTION_PREFIX

__all__ = [
    "Answer",
    "ExportKind",
    "FeedbackStats",
    "StatsRow",
    "allowed_for",
    "build_examples",
    "compute_stats",
    "drop_degenerate",
    "load_answers",
    "scrub_text",
    "write_jsonl",
]

logger = logging.getLogger(__name__)

ExportKind = Literal["sft", "pairs", "kto"]
EXPORT_KINDS: tuple[str, ...] = ("sft", "pairs", "kto")
PUBLIC = "public"


@dataclass(frozen=True)
class Answer:
    """One recorded answer with its votes summed."""

    id: str
    sibling_of: str | None
    prompt: list[dict[str, str]]
    question: str
    answer: str
    sources: list[dict[str, Any]]
    created_at: datetime
    net: int
    votes: int
    corrects: str | None = None  # a correction: the model's answer it replaces


def _vote_totals() -> sa.Subquery:
    votes = Vote.__table__
    up = sa.func.sum(sa.case((votes.c.value > 0, 1), else_=0))
    down = sa.func.sum(sa.case((votes.c.value < 0, 1), else_=0))
    return (
        sa.select(
            votes.c.interaction_id,
            sa.func.sum(votes.c.value).label("net"),
            sa.func.count().label("n"),
            up.label("up"),
            down.label("down"),
        )
        .group_by(votes.c.interaction_id)
        .subquery("vote_totals")
    )


def load_answers(
    conn: sa.Connection, *, since: datetime | None = None, until: datetime | None = None
) -> list[Answer]:
    """Answers with feedback given in [since, until) (by when it was given, not when the answer was), oldest
    first, labelled by that feedback only: consecutive windows use every vote once (see `feedback.window`)."""
    from feedback.window import load_window

    return load_window(conn, since=since, until=until)


def allowed_for(sources: Iterable[dict[str, Any]], audience: str) -> bool:
    """True when everyone in `audience` may read every source ("public": only unrestricted sources)."""
    audience = audience.lstrip("#")
    for source in sources:
        channels = {str(c).lstrip("#") for c in source.get("channels") or ()}
        if channels and (audience == PUBLIC or audience not in channels):
            return False
    return True


# Mentions first as Slack/Discord write them (<@U123>, <@!123>, <@U123|name>), then plain @name.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PLATFORM_MENTION = re.compile(r"<@[!&]?[A-Za-z0-9]+(?:\|[^>]*)?>")
_AT_NAME = re.compile(r"(?<![\w.@])@[A-Za-z0-9][\w.-]*\w|(?<![\w.@])@[A-Za-z0-9]")
_PHONE_CANDIDATE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{5,}\d(?![\w])")
_DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}$|^\d+(?:\.\d+){2,}$")


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    has_separator = any(ch in " -.()" for ch in text.strip())
    # Phone numbers have 7-15 digits and are written with a + or separators; ids, dates and versions are not.
    if not 7 <= digits <= 15 or not (text.startswith("+") or has_separator) or _DATE_LIKE.search(text):
        return text
    if digits < 9 and "-" not in text and " " not in text:
        return text
    return "[phone]"


def scrub_text(text: str) -> str:
    """Replace e-mail addresses, phone numbers and user mentions with placeholders."""
    text = _EMAIL.sub("[email]", text)
    text = _PLATFORM_MENTION.sub("@user", text)
    text = _AT_NAME.sub("@user", text)
    return _PHONE_CANDIDATE.sub(_phone, text)


@dataclass
class _Candidate:
    """One distinct answer text within a group, its votes summed over the interactions that gave it."""

    answer: str
    net: int = 0
    votes: int = 0
    corrected: bool = False  # a person wrote it (a correction), not the model
    original: str | None = None  # the model's answer a correction replaced


def _prompt_key(prompt: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()


def _prompt_of(answer: Answer) -> list[dict[str, str]]:
    # Only role and content: that is what trl's chat templates read. A reply recorded without its prompt
    # (should not happen) falls back to the user's question.
    prompt = [{"role": m["role"], "content": m["content"]} for m in answer.prompt]
    return prompt or [{"role": "user", "content": answer.question}]


def _groups(answers: list[Answer]) -> list[tuple[list[dict[str, str]], list[_Candidate]]]:
    """Answers to the same thing (siblings, or identical prompts), merged by answer text."""
    parent: dict[str, str] = {a.id: a.id for a in answers}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    # Step 1: union siblings, and every answer with the first answer that saw the same prompt.
    first_with_prompt: dict[str, str] = {}
    prompt_of = {a.id: _prompt_of(a) for a in answers}
    for a in answers:
        if a.sibling_of in parent:
            union(a.sibling_of, a.id)
        key = _prompt_key(prompt_of[a.id])
        union(first_with_prompt.setdefault(key, a.id), a.id)

    # Step 2: within a group, the oldest answer's prompt is the prompt; equal answer texts are one candidate.
    prompts: dict[str, list[dict[str, str]]] = {}
    candidates: dict[str, dict[str, _Candidate]] = defaultdict(dict)
    for a in answers:  # oldest first
        root = find(a.id)
        prompts.setdefault(root, prompt_of[a.id])
        text = a.answer.strip()
        if not text:
            continue
        cand = candidates[root].setdefault(text, _Candidate(answer=text))
        cand.net += a.net
        cand.votes += a.votes
        cand.corrected |= a.id.startswith(CORRECTION_PREFIX)
        if a.corrects is not None and cand.original is None:
            cand.original = a.corrects.strip()
    return [(prompts[root], list(cands.values())) for root, cands in candidates.items()]


def kept_prefix(correction: str, original: str) -> int:
    """How many leading characters of `correction` are the model's own words from `original`: their common start,
    cut back to the whitespace before the word where they part (so a changed word is never half kept)."""
    common = 0
    for a, b in zip(correction, original, strict=False):
        if a != b:
            break
        common += 1
    if common == len(correction):  # nothing changed at the start's end: the whole text kept (or a pure cut)
        return common
    return max((i for i in range(common + 1) if i < len(correction) and correction[i].isspace()), default=0)


def _origin(c: _Candidate, clean) -> dict[str, Any]:
    """A correction's SFT row says so, and how much of it the model had already said ("kept": characters)."""
    if not c.corrected:
        return {}
    kept = kept_prefix(clean(c.answer), clean(c.original)) if c.original else 0
    return {"origin": "correction"} | ({"kept": kept} if kept else {})


def build_examples(
    answers: list[Answer], *, kind: ExportKind, audience: str = PUBLIC, scrub: bool = False
) -> list[dict[str, Any]]:
    """The examples of one kind, in trl's conversational format, permission-filtered for `audience`."""
    if kind not in EXPORT_KINDS:
        raise ValueError(f"unknown export format {kind!r}; valid: {', '.join(EXPORT_KINDS)}")
    # Step 1: drop answers the audience may not see before anything is grouped with them.
    visible = [a for a in answers if allowed_for(a.sources, audience)]

    def clean(text: str) -> str:
        return scrub_text(text) if scrub else text

    def assistant(text: str) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": clean(text)}]

    # Step 2: one example per liked answer / labelled answer / (liked, disliked) couple of each group.
    examples: list[dict[str, Any]] = []
    for prompt, cands in _groups(visible):
        prompt = [{"role": m["role"], "content": clean(m["content"])} for m in prompt]
        liked = [c for c in cands if c.net > 0]
        disliked = [c for c in cands if c.net < 0]
        match kind:
            case "sft":
                examples += [{"messages": prompt + assistant(c.answer)} | _origin(c, clean) for c in liked]
            case "pairs":
                examples += [
                    {"prompt": prompt, "chosen": assistant(good.answer), "rejected": assistant(bad.answer)}
                    for good in liked
                    for bad in disliked
                ]
            case "kto":
                examples += [
                    {"prompt": prompt, "completion": assistant(c.answer), "label": c.net > 0} for c in liked + disliked
                ]

    # Step 3: scrubbing can make two examples identical (keep the first), a pair's two answers equal, or one answer
    # labelled both ways (both teach nothing but noise: dropped, counted, said).
    seen: set[str] = set()
    unique = []
    for example in examples:
        key = json.dumps(example, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(example)
    kept, dropped = drop_degenerate(unique, kind)
    if dropped:
        logger.warning("%s export%s: dropped %s", kind, " (scrubbed)" if scrub else "",
                       ", ".join(f"{n} {why}" for why, n in dropped.most_common()))
    return kept


def drop_degenerate(rows: list[dict[str, Any]], kind: str) -> tuple[list[dict[str, Any]], Counter[str]]:
    """(rows worth training on, count of dropped rows per reason): pairs whose chosen equals rejected, and KTO
    rows whose prompt + completion also appears with the opposite label (every such row is dropped)."""
    dropped: Counter[str] = Counter()
    if kind == "pairs":
        kept = [r for r in rows if _content(r["chosen"]) != _content(r["rejected"])]
        dropped["pair(s) whose chosen equals rejected"] = len(rows) - len(kept)
    elif kind == "kto":
        labels: dict[str, set[bool]] = defaultdict(set)
        for r in rows:
            labels[_kto_key(r)].add(bool(r["label"]))
        kept = [r for r in rows if len(labels[_kto_key(r)]) == 1]
        dropped["kto row(s) labelled both true and false"] = len(rows) - len(kept)
    else:
        kept = rows
    return kept, +dropped


def _content(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages).strip()


def _kto_key(row: dict[str, Any]) -> str:
    return json.dumps([row["prompt"], _content(row["completion"])], sort_keys=True)


def write_jsonl(rows: Iterable[dict[str, Any]], out: Path) -> None:
    """Write one JSON object per line; a failed export leaves no half-written file behind.

    Raises OSError whose `filename` is `out` (not the temporary file) when the path cannot be written."""
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(out)) from None


@dataclass(frozen=True)
class StatsRow:
    key: str
    interactions: int
    voted: int
    up: int
    down: int

    @property
    def votes(self) -> int:
        return self.up + self.down

    @property
    def like_rate(self) -> float | None:
        """Share of 👍 among all votes, None when there are no votes."""
        return self.up / self.votes if self.votes else None


@dataclass(frozen=True)
class FeedbackStats:
    audience: str
    total: StatsRow
    by_channel: list[StatsRow] = field(default_factory=list)
    by_model: list[StatsRow] = field(default_factory=list)
    # Examples an export for `audience` would write now.
    pairs: int = 0
    sft: int = 0
    kto: int = 0


def compute_stats(conn: sa.Connection, *, since: datetime | None = None, audience: str = PUBLIC) -> FeedbackStats:
    it, conv = Interaction.__table__, Conversation.__table__
    totals = _vote_totals()
    measures = (
        sa.func.count(it.c.id),
        sa.func.count(totals.c.interaction_id),
        sa.func.coalesce(sa.func.sum(totals.c.up), 0),
        sa.func.coalesce(sa.func.sum(totals.c.down), 0),
    )
    joined = it.join(conv, conv.c.id == it.c.conversation_id).outerjoin(totals, totals.c.interaction_id == it.c.id)
    where = [it.c.created_at >= since] if since is not None else []

    def rows(*keys: sa.ColumnElement[Any], label: sa.ColumnElement[Any] | None = None) -> list[tuple[Any, ...]]:
        # `label` is shown next to the group keys without splitting the group (e.g. a renamed channel).
        shown = (*keys, label) if label is not None else keys
        stmt = sa.select(*shown, *measures).select_from(joined).where(*where)
        if keys:
            stmt = stmt.group_by(*keys).order_by(*keys)
        return list(conn.execute(stmt))

    def stat(key: str, values: list[Any]) -> StatsRow:
        return StatsRow(key, *(int(v or 0) for v in values))

    # Channels are shown by name when the front end gave one; direct messages have no channel.
    by_channel = [
        stat(f"{platform}:{name or channel or '(direct)'}", values)
        for platform, channel, name, *values in rows(
            conv.c.platform, conv.c.channel, label=sa.func.max(conv.c.channel_name)
        )
    ]
    by_model = [
        stat(f"{model or '(unknown)'} + {adapter or 'base'}", values)
        for model, adapter, *values in rows(it.c.model, it.c.adapter)
    ]
    answers = load_answers(conn, since=since)
    counts = {kind: len(build_examples(answers, kind=kind, audience=audience)) for kind in EXPORT_KINDS}
    return FeedbackStats(
        audience=audience,
        total=stat("all", list(rows()[0])),
        by_channel=by_channel,
        by_model=by_model,
        **counts,
    )
