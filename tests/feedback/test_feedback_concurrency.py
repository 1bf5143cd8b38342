"""Concurrent writers, in threads and in two processes, on the same interactions: nothing lost or duplicated."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from feedback import FeedbackStore
from feedback.models import Conversation, Interaction, Vote

ROOT = Path(__file__).resolve().parents[2]
THREADS = 6
SHARED = 8


def vote_rows(store: FeedbackStore) -> list[tuple[str, str, int, str | None]]:
    votes = Vote.__table__
    with store.engine.connect() as conn:
        stmt = sa.select(votes.c.interaction_id, votes.c.user_id, votes.c.value, votes.c.reason)
        return [tuple(r) for r in conn.execute(stmt)]


def test_threads_record_and_vote_on_the_same_interactions(store, make_reply):
    shared = [make_reply(question=f"question {i}") for i in range(SHARED)]
    for reply in shared:
        store.record(reply=reply)

    def worker(t: int) -> list[str]:
        statuses = []
        # Every thread records into the same conversation (a get-or-create race) ...
        for k in range(4):
            statuses.append(store.record(reply=make_reply(question=f"thread {t} question {k}")))
        # ... and votes on every shared interaction: its own vote, changed by odd threads, and a vote as a
        # user all threads share (the unique (interaction, user) row every thread upserts).
        for reply in shared:
            statuses.append(store.vote(interaction_id=reply.id, user=f"U{t}", value=1))
            if t % 2:
                statuses.append(store.vote(interaction_id=reply.id, user=f"U{t}", value=-1, reason=f"t{t}"))
            statuses.append(store.vote(interaction_id=reply.id, user="U-everyone", value=1))
        return statuses

    with ThreadPoolExecutor(THREADS) as pool:
        statuses = [s for result in pool.map(worker, range(THREADS)) for s in result]

    assert set(statuses) == {"stored"}
    rows = vote_rows(store)
    expected = {(r.id, f"U{t}", -1 if t % 2 else 1, f"t{t}" if t % 2 else None) for r in shared for t in range(THREADS)}
    expected |= {(r.id, "U-everyone", 1, None) for r in shared}
    assert len(rows) == len(expected) and set(rows) == expected
    with store.engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(Interaction.__table__)).scalar() == SHARED + 4 * THREADS
        )
        assert conn.execute(sa.select(sa.func.count()).select_from(Conversation.__table__)).scalar() == 1


WORKER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    from feedback import FeedbackStore

    url, spool, name, ids = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
    store = FeedbackStore.from_url(url, spool_dir=Path(spool))
    # Both processes start voting at the same moment, so their writes really overlap.
    (Path(spool).parent / f"ready-{name}").touch()
    while not (Path(spool).parent / "go").exists():
        time.sleep(0.005)
    statuses = []
    for round in range(2):
        for interaction_id in ids:
            for k in range(3):
                # Users both processes vote as (same final value), and users of this process only.
                statuses.append(store.vote(interaction_id=interaction_id, user=f"shared{k}", value=1))
                statuses.append(store.vote(interaction_id=interaction_id, user=f"{name}-{k}", value=1))
                statuses.append(
                    store.vote(interaction_id=interaction_id, user=f"{name}-{k}", value=-1, reason=name)
                )
    store.close()
    print("statuses", sorted(set(statuses)), len(statuses))
    """
)


def test_two_processes_vote_on_the_same_interactions(store, make_reply, tmp_path):
    shared = [make_reply(question=f"question {i}") for i in range(SHARED)]
    for reply in shared:
        store.record(reply=reply)
    url = store.engine.url.render_as_string(hide_password=False)
    ids = ",".join(r.id for r in shared)

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(tmp_path / f"spool-{name}"), name, ids],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("pa", "pb")
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{n}").exists() for n in ("pa", "pb")) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert f"statuses ['stored'] {2 * SHARED * 3 * 3}" in out

    rows = vote_rows(store)
    expected = {(r.id, f"shared{k}", 1, None) for r in shared for k in range(3)}
    expected |= {(r.id, f"{name}-{k}", -1, name) for r in shared for k in range(3) for name in ("pa", "pb")}
    assert len(rows) == len(expected) and set(rows) == expected
