"""Feedback store throughput on SQLite and PostgreSQL, and export time for 100k interactions.

    .venv/bin/python bench/feedback_store.py [--records 2000] [--votes 4000] [--threads 4] [--export-size 100000]

Writes go through the public API one call at a time (each call is its own transaction, as in the bot).
The export set is bulk-loaded, then each format is exported. PostgreSQL is a throwaway cluster with default
durability settings (needs root and /usr/lib/postgresql/15/bin; skipped otherwise).
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from core.types import Message, Reply, Source, Turn, new_id
from feedback import FeedbackStore
from feedback.models import Conversation, Interaction, Vote
from kaizen_testing.pg import PgCluster, unavailable_reason

QUESTION = "How do I rotate the staging database credentials without downtime?"
ANSWER = "Create the new user first, deploy the config that uses it, then drop the old user. " * 3


def make_reply(n: int, sibling_of: str | None = None) -> Reply:
    turn = Turn(text=f"{QUESTION} #{n}", platform="slack", workspace="T1", channel=f"C{n % 20}", thread=f"t{n // 5}")
    prompt = [Message("system", "You are Kaizen. " * 20), Message("user", turn.text)]
    sources = [Source(id=f"wiki/db.md#{n % 7}", text="", channels=("C-ops",) if n % 10 == 0 else ())]
    return Reply(
        answer=ANSWER,
        turn=turn,
        prompt=prompt,
        sources=sources,
        model="smollm2-135m",
        decoding={"strategy": "sample", "temperature": 0.6},
        prompt_tokens=300,
        completion_tokens=60,
        latency_ms=850.0,
        sibling_of=sibling_of,
    )


def rate(count: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def bulk_load(store: FeedbackStore, size: int) -> None:
    """`size` interactions in sibling pairs with votes (liked first, disliked second), 10% restricted."""
    rng = random.Random(7)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    conversations = [
        dict(
            id=new_id(),
            platform="slack",
            workspace="T1",
            channel=f"C{c}",
            channel_name="",
            thread=f"t{c}",
            created_at=t0,
        )
        for c in range(1000)
    ]
    interactions, votes = [], []
    for n in range(size):
        first = n % 2 == 0
        iid = new_id()
        sibling = None if first else interactions[-1]["id"]
        pair = n // 2
        question = f"{QUESTION} #{pair}"
        interactions.append(
            dict(
                id=iid,
                conversation_id=conversations[pair % 1000]["id"],
                sibling_of=sibling,
                platform="slack",
                user_id=f"U{pair % 50}",
                question=question,
                prompt=[{"role": "system", "content": "You are Kaizen. " * 20}, {"role": "user", "content": question}],
                sources=[{"id": "wiki/db.md", "title": "", "uri": "", "channels": ["C-ops"] if pair % 10 == 0 else []}],
                restricted=pair % 10 == 0,
                answer=f"{ANSWER} ({'first' if first else 'second'} {pair})",
                model="smollm2-135m",
                adapter="",
                preset="balanced",
                mode="rag",
                decoding={"strategy": "greedy"},
                called_model=True,
                latency_ms=800.0,
                first_token_ms=90.0,
                prompt_tokens=300,
                completion_tokens=60,
                message_ref=None,
                created_at=t0 + timedelta(seconds=n),
            )
        )
        if rng.random() < 0.6:
            value = 1 if first else -1
            votes.append(
                dict(interaction_id=iid, user_id=f"U{n % 30}", value=value, reason=None, created_at=t0, updated_at=t0)
            )
    with store.engine.begin() as conn:
        conn.execute(sa.insert(Conversation.__table__), conversations)
        for start in range(0, size, 5000):
            conn.execute(sa.insert(Interaction.__table__), interactions[start : start + 5000])
        for start in range(0, len(votes), 5000):
            conn.execute(sa.insert(Vote.__table__), votes[start : start + 5000])


def bench(name: str, url: str, export_url: str, workdir: Path, args: argparse.Namespace) -> list[str]:
    store = FeedbackStore.from_url(url, spool_dir=workdir / "spool")
    replies = [make_reply(n) for n in range(args.records)]
    records_s = rate(len(replies), lambda: [store.record(reply=r) for r in replies])

    rng = random.Random(1)
    plan = [(rng.choice(replies).id, f"U{rng.randrange(200)}", rng.choice((1, -1))) for _ in range(args.votes)]
    votes_s = rate(len(plan), lambda: [store.vote(interaction_id=i, user=u, value=v) for i, u, v in plan])

    def threaded() -> None:
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda p: store.vote(interaction_id=p[0], user=p[1], value=-p[2]), plan))

    votes_threads_s = rate(len(plan), threaded)
    assert store.spool_pending() == 0

    # A fresh database for the export set, so the figures above do not include its size.
    store.close()
    export_store = FeedbackStore.from_url(export_url, spool_dir=workdir / "spool")
    load_start = time.perf_counter()
    bulk_load(export_store, args.export_size)
    load_s = time.perf_counter() - load_start
    timings = []
    for kind in ("sft", "pairs", "kto"):
        start = time.perf_counter()
        count = export_store.export(kind=kind, out=workdir / f"{kind}.jsonl")
        timings.append(f"{time.perf_counter() - start:.1f} s ({count})")
    export_store.close()
    return [
        name,
        f"{records_s:,.0f}",
        f"{votes_s:,.0f}",
        f"{votes_threads_s:,.0f}",
        f"{load_s:.1f} s",
        *timings,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--votes", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--export-size", type=int, default=100_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory(prefix="kaizen-bench-") as tmp:
        work = Path(tmp)
        rows.append(bench("SQLite", f"sqlite:///{work / 'kaizen.db'}", f"sqlite:///{work / 'export.db'}", work, args))
        reason = unavailable_reason()
        if reason:
            print(f"PostgreSQL skipped: {reason}")
        else:
            cluster = PgCluster(fast=False)
            try:
                rows.append(bench("PostgreSQL 15", cluster.create_database(), cluster.create_database(), work, args))
            finally:
                cluster.destroy()

    header = [
        "database",
        "interactions/s",
        "votes/s",
        f"votes/s ({args.threads} threads)",
        f"load {args.export_size // 1000}k",
        "export sft (n)",
        "export pairs (n)",
        "export kto (n)",
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))


if __name__ == "__main__":
    main()
