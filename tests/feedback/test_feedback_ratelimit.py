"""The shared rate limit (feedback.ratelimit) on SQLite and PostgreSQL: exact across processes' engines, even when
they ask at the same instant; a sliding window; idle rows expire."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from feedback import FeedbackStore
from feedback.ratelimit import SharedRateLimiter


def test_requests_from_two_replicas_at_once_get_the_limit_once(db_url, tmp_path):
    # Two stores = two engines (connection pools), as two replicas have; 16 threads ask for one user at once.
    stores = [FeedbackStore.from_url(db_url, spool_dir=tmp_path / f"spool{i}") for i in range(2)]
    limiters = [SharedRateLimiter(s.engine, 5) for s in stores]
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: limiters[i % 2].allow(key="slack:U1"), range(24)))
        assert results.count(True) == 5
        assert limiters[0].allow(key="discord:U1")  # another user (or platform) counts apart
    finally:
        for s in stores:
            s.close()


def test_the_window_slides_and_idle_rows_expire(store):
    now = [1_800_000_000.0]
    limiter = SharedRateLimiter(store.engine, 2, window_s=60, clock=lambda: now[0])
    assert limiter.allow(key="k")
    now[0] += 30
    assert limiter.allow(key="k") and not limiter.allow(key="k")  # two in the last minute
    now[0] += 30.5
    assert limiter.allow(key="k")  # the first has left the window (the refused one never counted)...
    assert not limiter.allow(key="k")  # ...the second has not
    assert limiter.purge() == 0
    now[0] += 61
    assert limiter.purge() == 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM rate_limits")).scalar() == 0
