"""Canary decision rule on simulated traffic: how many votes until a decision, and how often it is the wrong one.

    .venv/bin/python bench/canary.py [--rollouts 200] [--share 0.2] [--votes-per-day 100] [--seed 0]

For each like-rate gap (serving -> canary: 0.55 -> 0.70, a better canary, and 0.70 -> 0.55, a worse one) it runs
`--rollouts` simulated rollouts: votes arrive one at a time, a `share` of them on canary answers (conversations are
assigned by hash, so per vote this is a coin with P = share), each a 👍 with the arm's like rate; the rule in
`core.canary.decide` is applied after every vote (the most often the server could look). `--votes-per-day` turns
vote counts into days for `max_days`. Right decision = promote a better canary, roll back a worse one;
"worse canary kept" = a worse canary promoted (also by the max_days default). Votes = all votes (both arms) cast
from the canary's start to its decision. For comparison (same seed, printed first) the naive rule: once the canary
has `min_votes` votes, keep whichever observed like rate is higher. Pure Python, a few seconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.canary import CanaryRule, Tally, decide  # noqa: E402

GAPS = ((0.55, 0.70), (0.70, 0.55))


def rollout(rng: random.Random, serving_rate: float, canary_rate: float, rule: CanaryRule, *, share: float,
            votes_per_day: float) -> tuple[str, int]:
    """One simulated canary: (decision, votes cast until it)."""
    canary, serving = Tally(), Tally()
    n = 0
    while True:
        n += 1
        if rng.random() < share:
            canary = canary.add(rng.random() < canary_rate)
        else:
            serving = serving.add(rng.random() < serving_rate)
        d = decide(canary, serving, rule, age_days=n / votes_per_day)
        if d.action != "continue":
            return d.action, n


def naive(rng: random.Random, serving_rate: float, canary_rate: float, min_votes: int, *, share: float
          ) -> tuple[str, int]:
    """The baseline: after `min_votes` canary votes, promote iff the canary's observed like rate is higher."""
    canary, serving = Tally(), Tally()
    n = 0
    while canary.votes < min_votes:
        n += 1
        if rng.random() < share:
            canary = canary.add(rng.random() < canary_rate)
        else:
            serving = serving.add(rng.random() < serving_rate)
    return ("promote" if (canary.rate or 0) > (serving.rate or 0) else "rollback"), n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rollouts", type=int, default=200)
    p.add_argument("--share", type=float, default=0.2)
    p.add_argument("--votes-per-day", type=float, default=100.0)
    p.add_argument("--min-votes", type=int, default=CanaryRule.min_votes)
    p.add_argument("--promote-at", type=float, default=CanaryRule.promote_at)
    p.add_argument("--rollback-at", type=float, default=CanaryRule.rollback_at)
    p.add_argument("--min-rollback-votes", type=int, default=CanaryRule.min_rollback_votes)
    p.add_argument("--max-days", type=float, default=CanaryRule.max_days)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rule = CanaryRule(min_votes=args.min_votes, promote_at=args.promote_at, rollback_at=args.rollback_at,
                      min_rollback_votes=args.min_rollback_votes, max_days=args.max_days)
    rng = random.Random(args.seed)
    base = [(want, naive(rng, s, c, args.min_votes, share=args.share))
            for s, c in GAPS for want in ["promote" if c > s else "rollback"] for _ in range(args.rollouts)]
    base_right = sum(a == w for w, (a, _) in base) / len(base)
    base_kept = sum(a == "promote" for w, (a, _) in base if w == "rollback") / (len(base) / 2)
    print(f"before (naive: higher observed rate after {args.min_votes} canary votes): right decision "
          f"{base_right:.2f} (worse canary kept {base_kept:.2f}), median "
          f"{statistics.median(n for _, (_, n) in base):.0f} votes")
    rng = random.Random(args.seed)
    print(f"rule: {rule}; share {args.share}, {args.votes_per_day:g} votes/day, {args.rollouts} rollouts per gap")
    right_total, runs, worse_kept, worse_runs, all_votes = 0, 0, 0, 0, []
    for serving_rate, canary_rate in GAPS:
        better = canary_rate > serving_rate
        want = "promote" if better else "rollback"
        results = [rollout(rng, serving_rate, canary_rate, rule, share=args.share,
                           votes_per_day=args.votes_per_day) for _ in range(args.rollouts)]
        right = sum(a == want for a, _ in results)
        votes = [n for a, n in results if a == want]
        if not better:
            worse_kept += sum(a == "promote" for a, _ in results)
            worse_runs += len(results)
        right_total, runs = right_total + right, runs + len(results)
        all_votes += votes
        med = statistics.median(votes) if votes else float("nan")
        q90 = statistics.quantiles(votes, n=10)[-1] if len(votes) > 1 else float("nan")
        print(f"serving {serving_rate:.2f} -> canary {canary_rate:.2f}: right ({want}) {right / len(results):.3f}, "
              f"median {med:.0f} votes (p90 {q90:.0f}) to decide")
    kept = worse_kept / worse_runs if worse_runs else 0.0
    print(f"canary: right decision {right_total / runs:.2f} of rollouts (worse canary kept {kept:.2f}), "
          f"median {statistics.median(all_votes):.0f} votes to decide")


if __name__ == "__main__":
    main()
