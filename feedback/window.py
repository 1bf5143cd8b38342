"""Which feedback a training window holds: windows follow when votes (and corrections) were made.

A window is the half-open interval [since, until) of feedback time (a vote's `updated_at`). An answer's label in
a window is the net of the votes made in it, so a vote cast tonight on an answer from last month is trained on
tonight, and consecutive windows that share their boundary use every vote exactly once. Changing a vote moves it
to the window it was changed in (it is a new opinion); a retracted vote is gone.

Only answers with feedback in the window, plus their sibling families (so "try another answer" alternatives still
pair up), are read: a night's export costs what the night's feedback holds, not the whole history.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from feedback.models import Interaction, Vote

if TYPE_CHECKING:
    from feedback.preferences import Answer

__all__ = ["load_window"]


def _in_window(column: sa.ColumnElement[datetime], since: datetime | None, until: datetime | None) -> list:
    where = []
    if since is not None:
        where.append(column >= since)
    if until is not None:
        where.append(column < until)
    return where


def load_window(conn: sa.Connection, *, since: datetime | None = None, until: datetime | None = None) -> list[Answer]:
    """Model answers with feedback in [since, until) and their sibling families, oldest first, with the net of
    the votes made in the window (answers of the family without any: net 0, they only group)."""
    from feedback.preferences import Answer

    it, votes = Interaction.__table__, Vote.__table__
    net: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    rows = conn.execute(
        sa.select(votes.c.interaction_id, votes.c.value).where(*_in_window(votes.c.updated_at, since, until))
    )
    for interaction_id, value in rows:
        net[interaction_id] += int(value)
        count[interaction_id] += 1
    if not count:
        return []
    # The family of an answer: the answer it is an alternative of (or itself), and every alternative of that.
    root = sa.func.coalesce(it.c.sibling_of, it.c.id)
    voted = sa.select(votes.c.interaction_id).where(*_in_window(votes.c.updated_at, since, until))
    roots = sa.select(root).where(it.c.id.in_(voted)).scalar_subquery()
    stmt = (
        sa.select(it.c.id, it.c.sibling_of, it.c.prompt, it.c.question, it.c.answer, it.c.sources, it.c.created_at)
        .where(it.c.called_model.is_(True), sa.or_(it.c.id.in_(roots), it.c.sibling_of.in_(roots)))
        .order_by(it.c.created_at, it.c.id)
    )
    return [Answer(*row, net=net.get(row[0], 0), votes=count.get(row[0], 0)) for row in conn.execute(stmt)]
