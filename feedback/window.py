"""Which feedback a training window holds: windows follow when votes and corrections were made.

A window is the half-open interval [since, until) of feedback time (a vote's or a correction's `updated_at`). An
answer's label in a window comes from the feedback given in it, so a vote cast tonight on an answer from last month
is trained on tonight, and consecutive windows that share their boundary use every vote exactly once. Changing a
vote moves it to the window it was changed in (it is a new opinion); a retracted vote is gone.

A correction is a person's better answer: it joins the corrected answer's group as an alternative answer liked by
its author (+1), and it counts as its author's 👎 on the model's answer (replacing that person's vote in the same
window), so the exports make it an SFT example, a pair (correction chosen over the model's answer) and a liked KTO
row. It carries the corrected answer's prompt and sources, so the same permission and scrubbing rules apply.

Only answers with feedback in the window, plus their sibling families (so "try another answer" alternatives still
pair up), are read: a night's export costs what the night's feedback holds, not the whole history.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from feedback.models import Correction, Interaction, Vote

if TYPE_CHECKING:
    from feedback.preferences import Answer

__all__ = ["CORRECTION_PREFIX", "load_window"]

# Ids of the answers made from corrections: "correction:<row id>" (never an interaction id, which is hex).
CORRECTION_PREFIX = "correction:"


def _in_window(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    where = []
    if since is not None:
        where.append(column >= since)
    if until is not None:
        where.append(column < until)
    return where


def load_window(conn: sa.Connection, *, since: datetime | None = None, until: datetime | None = None) -> list[Answer]:
    """Model answers with feedback in [since, until) and their sibling families, plus one answer per correction,
    oldest first, each labelled with the window's feedback only (answers of a family without any: net 0)."""
    from feedback.preferences import Answer

    it, votes, fixes = Interaction.__table__, Vote.__table__, Correction.__table__
    # Step 1: the window's opinions, one per (answer, person); a correction is its author's 👎 on the answer.
    opinion: dict[tuple[str, str], int] = {}
    for interaction_id, user, value in conn.execute(
        sa.select(votes.c.interaction_id, votes.c.user_id, votes.c.value).where(
            *_in_window(votes.c.updated_at, since, until)
        )
    ):
        opinion[interaction_id, user] = int(value)
    corrections = list(
        conn.execute(
            sa.select(fixes.c.id, fixes.c.interaction_id, fixes.c.user_id, fixes.c.text, fixes.c.updated_at)
            .where(*_in_window(fixes.c.updated_at, since, until))
            .order_by(fixes.c.updated_at, fixes.c.id)
        )
    )
    for _, interaction_id, user, _, _ in corrections:
        opinion[interaction_id, user] = -1
    if not opinion:
        return []
    net: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for (interaction_id, _), value in opinion.items():
        net[interaction_id] += value
        count[interaction_id] += 1

    # Step 2: the answers with feedback and their families (the answer an alternative belongs to, and its others).
    root = sa.func.coalesce(it.c.sibling_of, it.c.id)
    voted = sa.union(
        sa.select(votes.c.interaction_id).where(*_in_window(votes.c.updated_at, since, until)),
        sa.select(fixes.c.interaction_id).where(*_in_window(fixes.c.updated_at, since, until)),
    )
    roots = sa.select(root).where(it.c.id.in_(voted)).scalar_subquery()
    stmt = (
        sa.select(it.c.id, it.c.sibling_of, it.c.prompt, it.c.question, it.c.answer, it.c.sources, it.c.created_at)
        .where(it.c.called_model.is_(True), sa.or_(it.c.id.in_(roots), it.c.sibling_of.in_(roots)))
        .order_by(it.c.created_at, it.c.id)
    )
    answers = [Answer(*row, net=net.get(row[0], 0), votes=count.get(row[0], 0)) for row in conn.execute(stmt)]

    # Step 3: each correction as an alternative of the answer it corrects, liked by its author.
    by_id = {a.id: a for a in answers}
    for row_id, interaction_id, _, text, at in corrections:
        corrected = by_id.get(interaction_id)
        if corrected is None:  # a correction of something the model did not say (e.g. a command reply)
            continue
        answers.append(
            Answer(
                id=f"{CORRECTION_PREFIX}{row_id}",
                sibling_of=corrected.id,
                prompt=corrected.prompt,
                question=corrected.question,
                answer=text,
                sources=corrected.sources,
                created_at=at,
                net=1,
                votes=1,
                corrects=corrected.answer,
            )
        )
    return answers
