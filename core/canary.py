"""Canary rollout: which conversations a candidate adapter answers, and when the live votes have decided.

Assignment. A conversation (platform, workspace, channel, thread) goes to the canary when
`sha256(canary name, key)` read as a number in [0, 1) is below `share`. That is deterministic — every replica and
every restart agrees, with no shared state — so a thread never switches adapter while the canary runs (it switches
only when the canary is promoted or rolled back, and then everyone moves to the decided adapter). Salting with the
canary's name gives each new canary a fresh sample of conversations.

Decision. Each vote on an answer is a Bernoulli trial (👍 = 1). With a uniform Beta(1, 1) prior the like rate of each
arm has the posterior Beta(1 + likes, 1 + dislikes), and P(canary better) = P(p_canary > p_serving) is computed
exactly (Evan Miller's closed-form sum over Beta functions, no sampling). We chose Beta posteriors over a frequentist
test because they are exact at the small counts a canary starts with (no normal approximation, no minimum cell
count), they give an interpretable number to print next to each decision, and they can be looked at after every vote;
the cost of looking often (a posterior threshold is not an error rate under optional stopping) is paid by strict
thresholds, tuned by simulation in `bench/canary.py` (200 rollouts per like-rate gap):

* rollback as soon as the canary has `min_rollback_votes` (15) votes and P(canary worse) >= `rollback_at` (0.975);
* promote once the canary has `min_votes` (50) votes and P(canary better) >= `promote_at` (0.95);
* after `max_days` without either, the configured default (`rollback` unless told otherwise) decides.

Only votes given during the canary count, for both arms, so a drift in questions or voters over time hits both alike.
Pure Python (math, hashlib): serving and the CLI import it without torch.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "Action",
    "CanaryRouter",
    "CanaryRule",
    "Decision",
    "Tally",
    "assign_canary",
    "decide",
    "p_better",
    "wilson_interval",
    "with_adapter",
]

Action = Literal["continue", "promote", "rollback"]


@dataclass(frozen=True)
class Tally:
    """Votes on one adapter's answers: `likes` 👍 and `dislikes` 👎 (counts, >= 0)."""

    likes: int = 0
    dislikes: int = 0

    def __post_init__(self) -> None:
        if self.likes < 0 or self.dislikes < 0:
            raise ValueError(f"vote counts must be >= 0, got {self.likes} likes and {self.dislikes} dislikes")

    @property
    def votes(self) -> int:
        return self.likes + self.dislikes

    @property
    def rate(self) -> float | None:
        """The observed like rate in [0, 1], or None without votes."""
        return self.likes / self.votes if self.votes else None

    def add(self, liked: bool) -> Tally:
        return Tally(self.likes + liked, self.dislikes + (not liked))


@dataclass(frozen=True)
class CanaryRule:
    """The thresholds of the decision (see the module docstring); `min_votes` counts votes on canary answers."""

    min_votes: int = 50
    promote_at: float = 0.95
    rollback_at: float = 0.975
    min_rollback_votes: int = 15
    max_days: float = 7.0
    default: Literal["promote", "rollback"] = "rollback"

    def __post_init__(self) -> None:
        if not (0.5 < self.promote_at < 1 and 0.5 < self.rollback_at < 1):
            raise ValueError("promote_at and rollback_at are probabilities in (0.5, 1)")
        if self.min_votes < 1 or self.min_rollback_votes < 1 or self.max_days <= 0:
            raise ValueError("min_votes and min_rollback_votes must be >= 1 and max_days > 0")
        if self.default not in ("promote", "rollback"):
            raise ValueError(f"default decision must be 'promote' or 'rollback', got {self.default!r}")


@dataclass(frozen=True)
class Decision:
    """What the votes say now: `action`, a one-line `reason`, and the numbers behind it (for history.jsonl)."""

    action: Action
    reason: str
    p_better: float
    canary: Tally
    serving: Tally
    age_days: float
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["canary"] = {**d["canary"], "votes": self.canary.votes, "rate": self.canary.rate,
                       "interval": wilson_interval(self.canary.likes, self.canary.votes)}
        d["serving"] = {**d["serving"], "votes": self.serving.votes, "rate": self.serving.rate,
                        "interval": wilson_interval(self.serving.likes, self.serving.votes)}
        return d


def assign_canary(key: Sequence[str], *, canary: str, share: float) -> bool:
    """True when the conversation `key` is answered by `canary` (a stable `share` of keys, 0 <= share <= 1)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"canary share must be between 0 and 1, got {share}")
    if not canary or share == 0.0:
        return False
    digest = hashlib.sha256("\x1f".join((canary, *key)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class CanaryRouter:
    """The serving side of a rollout: which adapter answers a conversation. `set(name, share)` when a canary is
    loaded, `clear()` when it ends; `adapter_for(key)` is the canary's name for its conversations, else None
    (= the model's served adapter). Reads are plain attribute reads, so the event loop never waits."""

    def __init__(self) -> None:
        self.state: tuple[str, float] | None = None

    def set(self, name: str, share: float) -> None:
        if not name:
            raise ValueError("a canary needs an adapter name")
        assign_canary((), canary=name, share=share)  # validates the share
        self.state = (name, share)

    def clear(self) -> None:
        self.state = None

    @property
    def canary(self) -> str:
        return self.state[0] if self.state else ""

    def adapter_for(self, key: Sequence[str]) -> str | None:
        state = self.state
        if state is not None and assign_canary(key, canary=state[0], share=state[1]):
            return state[0]
        return None


class _AdapterBound:
    """`model` with every generate/complete/choose/generate_with_tools call sent to `adapter` (for code that takes
    a model, like the agent). Everything else is the model's own."""

    def __init__(self, model: Any, adapter: str) -> None:
        self._model, self._bound = model, adapter

    @property
    def adapter(self) -> str:
        return self._bound

    def __getattr__(self, name: str) -> Any:
        # Only what the model has: the agent picks its protocol by what is there (hasattr).
        attr = getattr(self._model, name)
        if name in ("complete", "choose", "continue_answer"):
            return functools.partial(attr, adapter=self._bound)
        if name == "generate_with_tools":
            if "adapter" not in inspect.signature(attr).parameters:
                # Native tool calling that cannot be sent to the canary: the agent then uses its text protocol,
                # which can, so the answer really comes from the adapter it is recorded under.
                raise AttributeError(name)
            return functools.partial(attr, adapter=self._bound)
        return attr

    async def generate(self, messages: Any, decoding: Any, *, adapter: str | None = None, on_text: Any = None) -> Any:
        return await self._model.generate(messages, decoding, adapter=adapter or self._bound, on_text=on_text)


def with_adapter(model: Any, adapter: str | None) -> Any:
    """`model` itself when `adapter` is None/empty, else a view of it that answers with `adapter`."""
    return _AdapterBound(model, adapter) if adapter else model


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _p_greater(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X > Y) for X ~ Beta(a1, b1), Y ~ Beta(a2, b2), integer a1 (exact finite sum, a1 terms)."""
    base = _lbeta(a2, b2)
    total = 0.0
    for i in range(a1):
        total += math.exp(_lbeta(a2 + i, b1 + b2) - math.log(b1 + i) - _lbeta(1 + i, b1) - base)
    return min(1.0, max(0.0, total))


def p_better(canary: Tally, serving: Tally) -> float:
    """P(canary's like rate > serving's) under independent Beta(1 + likes, 1 + dislikes) posteriors, in [0, 1].
    0.5 with no votes at all. Exact; the sum runs over the arm with fewer likes (symmetry)."""
    a1, b1 = 1 + canary.likes, 1 + canary.dislikes
    a2, b2 = 1 + serving.likes, 1 + serving.dislikes
    if a1 <= a2:
        return _p_greater(a1, b1, a2, b2)
    return 1.0 - _p_greater(a2, b2, a1, b1)


def wilson_interval(likes: int, votes: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval (95% with the default z) for a like rate; None without votes.
    Unlike the normal approximation it stays inside [0, 1] and is honest at small counts."""
    if votes <= 0:
        return None
    p = likes / votes
    denom = 1 + z * z / votes
    centre = (p + z * z / (2 * votes)) / denom
    half = z * math.sqrt(p * (1 - p) / votes + z * z / (4 * votes * votes)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def decide(canary: Tally, serving: Tally, rule: CanaryRule, *, age_days: float = 0.0) -> Decision:
    """Apply `rule` to the votes so far (`age_days`: how long the canary has run). Rollback is checked first:
    a reliably worse canary goes at once, whatever its vote count beyond `min_rollback_votes`."""
    p = p_better(canary, serving)
    numbers = {"p_better": round(p, 4), "min_votes": rule.min_votes, "promote_at": rule.promote_at,
               "rollback_at": rule.rollback_at, "max_days": rule.max_days, "age_days": round(age_days, 3)}

    def made(action: Action, reason: str) -> Decision:
        return Decision(action, reason, p, canary, serving, age_days, numbers)

    rates = f"canary {_rate(canary)} vs serving {_rate(serving)}"
    if canary.votes >= rule.min_rollback_votes and 1 - p >= rule.rollback_at:
        return made("rollback", f"reliably worse: P(canary worse) = {1 - p:.3f} >= {rule.rollback_at} ({rates})")
    if canary.votes >= rule.min_votes and p >= rule.promote_at:
        return made("promote", f"better: P(canary better) = {p:.3f} >= {rule.promote_at} after {canary.votes} "
                               f"votes ({rates})")
    if age_days >= rule.max_days:
        return made(rule.default, f"undecided after {age_days:.1f} days (P(canary better) = {p:.3f}, {rates}): "
                                  f"default decision {rule.default}")
    if canary.votes < rule.min_votes:
        wait = f"waiting for votes: {canary.votes}/{rule.min_votes} on the canary"
    else:
        wait = f"not yet decided: P(canary better) = {p:.3f} < {rule.promote_at}"
    return made("continue", f"{wait} ({rates}); default {rule.default} after {rule.max_days:g} days")


def _rate(t: Tally) -> str:
    return f"{t.likes}/{t.votes}" + (f" = {t.rate:.2f}" if t.votes else "")
