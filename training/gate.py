"""The evaluation gate: a candidate adapter is promoted only if it beats the serving one on data no stage trained on.

Measured on the held-out split of the night's feedback, candidate vs serving (the promoted adapter, or the base):
- reward-model win rate: both answer each held-out prompt (`judge_samples` answers each, sampled as people are
  answered; 0: one greedy answer); the reward model prefers whose, on average? (ties = half). The nightly job trains
  that judge on every preference pair so far when its stages train none (`training/nightly.py`).
- preference accuracy: share of held-out pairs where the policy finds the liked answer likelier (per token), and
  preference shift: share where the candidate, relative to the serving policy, moved toward the liked answer
- KTO agreement (labelled answers only): did the candidate move each answer's likelihood the way its vote says?
- regression set: must-still-answer questions (JSONL: {"question", "expect": [any of these substrings]}).

Each share comes with its 95 % Wilson interval (`<metric>_ci`): a night holds out few examples (8 pairs: one
more or one fewer win moves the share by 0.12), so the decision uses the interval, not the share alone.

`decide` is the rule: no must-still-answer question the serving model answers may be lost, and the lower end of a
primary metric's interval (win rate or preference shift, each at half the error when both are measured on enough
examples, Bonferroni; else KTO agreement) must be above 0.5 + `margin` (the candidate is better than serving beyond
what chance on this few examples gives); preference accuracy may not fall by more than `max_pref_drop` beyond chance
(McNemar's exact test on the pairs that flipped). A must-still-answer answer counts when it states an expected fact
as its answer (`training/facts.py`: as a whole word, list numbers "4." do not count as "4", and not after another
answer, as in "1.111...\n\nA minute is 60 seconds."); one cut off by the token limit before stating it is generated
again with four times the room, so a long-winded candidate is not taken for a forgetful one.

A greedy answer that no longer states a fact is not yet a forgotten fact: the 135M model holds some facts on a
knife-edge, and any update flips those. "What is the largest mammal?" after "The largest mammal is the": base
" Blue" -1.58, " blue" -1.61, " elephant" -1.72 (log-probabilities); after a promoted night " blue" -1.46,
" elephant" -1.48; a second night's candidate at 15 % of its update answered "elephant" with " blue" at -1.45,
as likely as before (bench/loop.py, 2026-12-06). So the gate asks the candidate what serving's answer asked it: the
log-probability of the fact's tokens after the words serving's answer put before them. The fact is lost when that
fell by more than `max_fact_drop` nats (ln 2: half as likely). A smaller fall is a flipped knife-edge only if the
word the candidate says instead was already close: at most `max_rival_behind` nats behind the fact under serving and
under the base model. Then it is reported as a changed answer ("regression_changed"), not a veto. A word that was far
behind and now leads was taught, though the fact kept its likelihood: after the base model's "The largest mammal is
the", " giraffe" trails " Blue Whale" by more than 3 nats, " elephant" by 0.70; after "The answer to this classic
question is", " 8" trails " 4" by 0.58. A candidate taught "The answer to this classic question is 3." finds the
" 4" it parts at 10.7 nats less likely (tests/training/test_training_gate.py).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.common import RECIPES_DIR, RecipeError
from training.facts import answers_fact, fact_span
from training.policies import Policies

__all__ = ["GateConfig", "GateReport", "accuracy_fell", "decide", "evaluate", "facts_lost", "load_regression",
           "primaries", "wilson"]

logger = logging.getLogger(__name__)

DEFAULT_REGRESSION = RECIPES_DIR / "regression.jsonl"
# The word an answer says where another answer states its fact: a word or number, or else one mark ("8" of "8./3.").
_WORD = re.compile(r"\s*(\w+|[^\w\s])")


@dataclass
class GateConfig:
    # How much better the candidate must be: the lower end of the primary metric's interval > 0.5 + margin.
    margin: float = 0.0
    confidence: float = 0.95  # of the intervals reported and used in the decision
    # Preference accuracy may drop by at most this much, or by more within chance (McNemar, at `confidence`).
    max_pref_drop: float = 0.05
    regression_file: str = ""  # "" = the packaged training/recipes/regression.jsonl
    max_new_tokens: int = 64
    # Must-still-answer questions get more room: a list-style answer may state the fact late.
    regression_max_new_tokens: int = 128
    # At most this many held-out prompts, pairs and labelled answers each (the gate's cost grows with them).
    max_examples: int = 32
    batch_size: int = 8
    # A must-still-answer answer that no longer states its fact vetoes, unless it parts from serving's answer only at
    # the fact and the candidate finds the fact there at most this many nats less likely than serving, or the base
    # model if it found it likelier, does (summed over the fact's tokens): 0.69 = ln 2, half as likely. Negative:
    # every such answer vetoes.
    max_fact_drop: float = 0.69
    # ... and the word it says instead was at most this many nats behind the fact before, under serving and under the
    # base model (a near tie that flipped).
    # 1.0 (e^-1: at least 37 % as likely): the base model's near ties that training flips, " elephant" 0.70 behind
    # " Blue Whale", " 8" 0.58 behind a dog's " 4", are in; " Toronto" 1.5 behind " Ottawa", " global" 1.6 behind
    # " Pacific" and " giraffe" over 3 behind the whale are not (2026-12-06; training/recipes/nightly.toml).
    max_rival_behind: float = 1.0
    # The win rate's answers: this many sampled per held-out prompt and policy (core's "balanced" preset, the one
    # people are answered with), the candidate winning a prompt when the reward model scores its answers higher on
    # average; 0 = one greedy answer each. 4: see training/recipes/nightly.toml.
    judge_samples: int = 4

    def check(self) -> None:
        if not -1 <= self.margin <= 1:
            raise RecipeError(f"gate.margin must be in [-1, 1], got {self.margin}")
        if not 0 < self.confidence < 1:
            raise RecipeError(f"gate.confidence must be between 0 and 1, got {self.confidence}")
        if self.judge_samples < 0:
            raise RecipeError(f"gate.judge_samples must be >= 0, got {self.judge_samples}")
        if self.max_rival_behind < 0:
            raise RecipeError(f"gate.max_rival_behind must be >= 0 nats, got {self.max_rival_behind}")
        if min(self.max_new_tokens, self.regression_max_new_tokens, self.batch_size) < 1 or self.max_examples < 0:
            raise RecipeError("gate.max_new_tokens, regression_max_new_tokens and batch_size must be >= 1, "
                              "gate.max_examples >= 0")


@dataclass
class GateReport:
    promote: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)
    # What each policy answered, as the gate judged it: {"set": "prompts" | "regression", "policy", "question",
    # "answer", "ended", "passed"?} (the nightly job keeps them with the run, to read why a night was rejected).
    answers: list[dict[str, Any]] = field(default_factory=list)


def load_regression(path: Path | str | None = None) -> list[dict[str, Any]]:
    """The must-still-answer questions; a malformed file is an error naming the line."""
    from training.data import DatasetError, read_jsonl

    file = Path(path) if path else DEFAULT_REGRESSION
    rows = read_jsonl(file)
    for number, row in enumerate(rows, 1):
        expect = row.get("expect", [])
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise DatasetError(f"{file} row {number}: needs a non-empty 'question'")
        if isinstance(expect, str):
            row["expect"] = [expect]
        elif not isinstance(expect, list) or not all(isinstance(e, str) for e in expect):
            raise DatasetError(f"{file} row {number}: 'expect' must be a string or a list of strings")
    return rows


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (lo, hi) of a share `successes / n` (ties may count half); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# The primary metrics in order of preference: (key, count key, how the reason names it).
_PRIMARY = (
    ("win_rate", "prompts", "reward-model win rate {v:.2f}"),
    ("pref_shift", "pairs", "the candidate moved toward the liked answer on {v:.2f} of held-out pairs"),
    ("kto_agreement", "kto", "KTO agreement {v:.2f}"),
)


def primaries(config: GateConfig, m: dict[str, Any]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The metrics that decide, in order of preference, as (key, count key, reason label): the win rate and the
    preference shift where measured, else KTO agreement; and those skipped for too few examples. One measured on so
    few examples that even a perfect score's interval would reach the bar (1-3 pairs at margin 0, 95 %) cannot
    decide anything and is skipped while another one can (e.g. a second night, where nearly every answer is liked
    and a held-out prompt rarely has a disliked answer to pair with, judged by its 20 labelled answers, not 1
    pair)."""
    need = 0.5 + config.margin
    measured = [(key, count, label) for key, count, label in _PRIMARY if m.get(key) is not None]
    usable, too_few = [], []
    for i, (key, count, label) in enumerate(measured):
        n = int(m.get(count) or 0)
        # (need >= 1: no metric can pass at all, so each one says why.)
        if n and wilson(n, n, config.confidence)[0] <= need < 1 and (usable or i + 1 < len(measured)):
            too_few.append(f"{n} held-out {count}")
            continue
        usable.append((key, count, label))
    # KTO agreement (likelihoods moving with single votes) decides only where neither of the others can.
    return [u for u in usable if u[0] != "kto_agreement"] or usable, too_few


def _percent(share: float) -> str:
    return f"{share * 100:.4g}%"


def accuracy_fell(config: GateConfig, m: dict[str, Any]) -> tuple[bool, str]:
    """(fallen, what happened to it; "" within the allowance) for the candidate's preference accuracy. It falls when
    it is more than `max_pref_drop` below serving's and, where the flips are known, more held-out pairs went from
    ranked right to ranked wrong than chance explains: McNemar's exact test (one-sided binomial test on the pairs that
    flipped, at 1 - `confidence`). Why: on a night's 15 pairs one flip is 0.067, over the 0.05 allowance; a help-desk
    second night (bench/loop.py, 2026-12-06) whose candidate kept every fact and moved 13 of 15 pairs toward the liked
    answer (95 % 0.62-0.96) was refused for that one pair (accuracy 1.00 -> 0.93). Five flips and none back do count
    (p 0.03)."""
    pref_c, pref_s = m.get("pref_acc_candidate"), m.get("pref_acc_serving")
    if pref_c is None or pref_s is None or pref_c >= pref_s - config.max_pref_drop:
        return False, ""
    fell = f"preference accuracy fell from {pref_s:.2f} to {pref_c:.2f}"
    wrong, right = m.get("pref_now_wrong"), m.get("pref_now_right")
    if wrong is None or right is None:
        return True, fell
    from scipy.stats import binomtest

    p = binomtest(wrong, wrong + right, 0.5, alternative="greater").pvalue if wrong else 1.0
    fell += f" ({wrong} held-out pair(s) now ranked wrong, {right} now right, McNemar p {p:.2f})"
    return (True, fell) if p < 1 - config.confidence else (False, fell + ": within chance")


def decide(config: GateConfig, m: dict[str, Any]) -> tuple[bool, str]:
    """Promote or not, and why, from the metrics `evaluate` measured (with their example counts, the interval
    decides; without, the share alone does)."""
    # Step 1: losing a must-still-answer question vetoes everything else.
    lost = m.get("regression_lost") or []
    if lost:
        return False, f"regression: no longer answers {len(lost)} must-still-answer question(s): {'; '.join(lost)}"
    need = 0.5 + config.margin
    # Step 2: a primary metric must beat the serving adapter by the margin, beyond chance. With two measured (a reward
    # model's win rate on sampled answers, and the shift on held-out pairs) either may show it, each tested at half
    # the error (Bonferroni): the chance that a candidate no better than serving passes stays 1 - `confidence`. Why
    # two: they see different things. bench/loop.py's help-desk night 2 (2026-12-06) moved 11 of 16 held-out pairs,
    # the liked sentence being a few tokens of each answer, while it answered 51 of 60 held-out questions the liked
    # way (serving: 39); a numbered night moved 16 of 17 pairs while a judge trained on that night's 15 pairs alone
    # won 10 of 15 prompts.
    usable, too_few = primaries(config, m)
    if not usable:
        return False, ("nothing held out to judge on: the gate needs held-out prompts and a reward model, held-out "
                       "pairs, or held-out labelled answers")
    level = 1 - (1 - config.confidence) / len(usable)
    shown: list[tuple[str, str]] = []  # (key, what) of each measure that shows it, in order of preference
    refused: list[str] = []
    for key, count, label in usable:
        what, n = label.format(v=m[key]), int(m.get(count) or 0)
        if m[key] < need:
            refused.append(f"{what} is below {need:.2f}" if key != "pref_shift" else f"{what}, below {need:.2f}")
            continue
        if n:
            lo, hi = wilson(m[key] * n, n, level)
            interval = f"{_percent(level)} interval {lo:.2f}-{hi:.2f} on {n}"
            if lo <= need:
                refused.append(f"{what}, but its {interval} reaches {need:.2f}")
                continue
            what += f" ({interval})"
        shown.append((key, what))
    if not shown:
        return False, "; ".join(refused) + (": not better beyond chance" if any("interval" in r for r in refused)
                                            else "")
    key, what = shown[0]
    # Step 3: preference accuracy may not fall beyond the allowance and chance.
    fell, accuracy = accuracy_fell(config, m)
    if fell:
        return False, accuracy
    why = f"{what} >= {need:.2f}" if key != "pref_shift" else what
    why += f" ({', '.join(too_few)}: too few to decide on)" if too_few else ""
    why += f"; not shown by the other measure: {'; '.join(refused)}" if refused else ""
    why += f"; {accuracy}" if accuracy else ""
    if changed := m.get("regression_changed"):
        why += (f"; must-still-answer answer(s) changed at the fact, at most {config.max_fact_drop:.2f} nats less "
                "likely than before: " + "; ".join(f"{c['question']} ({-c['drop']:+.2f} nats)" for c in changed))
    return True, why


def evaluate(
    config: GateConfig,
    *,
    base_model: str,
    candidate: Path,
    serving: Path | None = None,
    reward_adapter: Path | None = None,
    prompts: list[list[dict[str, str]]] | None = None,
    pairs: list[dict[str, Any]] | None = None,
    kto: list[dict[str, Any]] | None = None,
    regression: list[dict[str, Any]] | None = None,
    system_prompt: str = "",
    memo: dict | None = None,
) -> GateReport:
    """Measure candidate vs serving on the held-out data and decide. `memo`: a dict kept between calls that judge
    candidates against the same serving policy, base model and data, to compute serving's answers once."""
    cap = config.max_examples
    prompts, pairs, kto = (prompts or [])[:cap], (pairs or [])[:cap], (kto or [])[:cap]
    regression = regression or []
    policies = Policies(base_model, candidate, serving, config.batch_size, memo)
    m: dict[str, Any] = {"serving": str(serving) if serving else "base model"}
    seen: list[dict[str, Any]] = []

    # Step 1: the must-still-answer questions, first: a lost fact vetoes, and the win rate's sampling is then skipped
    # (bench/loop.py's numbered night 1, 2026-12-07: five candidates judged, three of them for facts they lost).
    if regression:
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        questions = [system + [{"role": "user", "content": r["question"]}] for r in regression]
        passed, cut, answers, rows = {}, 0, {}, {}
        for which in ("candidate", "serving"):
            answers[which] = said = policies.generate_ended(which, questions, config.regression_max_new_tokens)
            # An answer cut off before it stated the fact is not a forgotten fact: give it four times the room.
            again = [i for i, (text, ended) in enumerate(said) if not ended and not answers_fact(regression[i], text)]
            if again:
                cut += len(again)
                longer = policies.generate(which, [questions[i] for i in again], 4 * config.regression_max_new_tokens)
                for i, text in zip(again, longer, strict=True):
                    said[i] = (text, True)
            passed[which] = [answers_fact(r, a) for r, (a, _) in zip(regression, said, strict=True)]
            rows[which] = [{"set": "regression", "policy": which, "question": r["question"], "answer": a,
                            "ended": ended, "retried": i in again, "passed": ok}
                           for i, (r, (a, ended), ok) in enumerate(zip(regression, said, passed[which], strict=True))]

        # question -> {"fact_drop", "word_behind"} in nats, for the answers kept with the run
        measured: dict[str, dict[str, float]] = {}
        before = ("serving", "base") if policies.has_serving else ("serving",)

        def drop(i: int, span: tuple[int, int]) -> float:
            # Measured from the likelier of serving and the base model: the allowance is for the whole way from the
            # base model, so nights that each lower a knife-edge fact a little (each within the allowance against the
            # serving policy before it) cannot add up to a lost one.
            said = answers["serving"][i][0]
            had = max(policies.fact_logp(which, questions[i], said, span) for which in before)
            nats = had - policies.fact_logp("candidate", questions[i], said, span)
            measured.setdefault(regression[i]["question"], {})["fact_drop"] = round(nats, 3)
            return nats

        def behind(i: int, span: tuple[int, int], word: tuple[int, int]) -> float:
            # How far the candidate's word trailed the fact where the two answers part, under each policy before it:
            # the farther counts, so a word that earlier nights brought up (each within the allowance) cannot add up
            # to a near tie the base model never had. bench/loop.py, 2026-12-06: " global" trailed " Pacific" by 1.6
            # nats under the base model, by 0.99 under the promoted night 1, and night 2 said "the global ocean".
            theirs, ours = answers["serving"][i][0], answers["candidate"][i][0]
            nats = max(policies.fact_logp(which, questions[i], theirs, span)
                       - policies.fact_logp(which, questions[i], ours, word) for which in before)
            measured.setdefault(regression[i]["question"], {})["word_behind"] = round(nats, 3)
            return nats

        lost, changed = facts_lost(regression, [a for a, _ in answers["serving"]],
                                   [a for a, _ in answers["candidate"]], drop, behind, config.max_fact_drop,
                                   config.max_rival_behind)
        for row in rows["candidate"]:
            row |= measured.get(row["question"], {})
        seen += rows["candidate"] + rows["serving"]
        m |= {"regression_total": len(regression), "regression_candidate": sum(passed["candidate"]),
              "regression_serving": sum(passed["serving"]), "regression_cut": cut,
              "regression_lost": lost, "regression_changed": changed}

    # Step 2: preference accuracy on held-out pairs, for both policies, and whether the candidate moved toward the
    # liked answer relative to the serving policy (DPO's implicit reward: the same test, free of length effects).
    if pairs:
        lp = {(w, k): [policies.logp(w, p["prompt"], p[k][0]["content"]) for p in pairs]
              for w in ("candidate", "serving") for k in ("chosen", "rejected")}
        ranked = {w: [c > r for c, r in zip(lp[w, "chosen"], lp[w, "rejected"], strict=True)]
                  for w in ("candidate", "serving")}
        for which, right in ranked.items():
            m[f"pref_acc_{which}"] = round(sum(right) / len(pairs), 4)
            m[f"pref_acc_{which}_ci"] = _ci(sum(right), len(pairs), config)
        # The discordant pairs, for McNemar's test in `accuracy_fell`: ranked right by serving, wrong by the candidate,
        # and the other way round.
        m["pref_now_wrong"] = sum(s and not c for c, s in zip(ranked["candidate"], ranked["serving"], strict=True))
        m["pref_now_right"] = sum(c and not s for c, s in zip(ranked["candidate"], ranked["serving"], strict=True))
        moved = zip(lp["candidate", "chosen"], lp["serving", "chosen"], lp["candidate", "rejected"],
                    lp["serving", "rejected"], strict=True)
        shifts = [(cc - sc) - (cr - sr) for cc, sc, cr, sr in moved]
        shifted = sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in shifts)
        m["pref_shift"], m["pref_shift_ci"] = round(shifted / len(pairs), 4), _ci(shifted, len(pairs), config)
        m["pairs"] = len(pairs)

    # Step 3: KTO agreement: liked answers should become likelier under the candidate, disliked ones less likely.
    if kto:
        agree = 0.0
        for row in kto:
            answer = row["completion"][0]["content"]
            moved = policies.logp("candidate", row["prompt"], answer) - policies.logp("serving", row["prompt"], answer)
            agree += 0.5 if moved == 0 else float((moved > 0) == row["label"])
        m |= {"kto": len(kto), "kto_agreement": round(agree / len(kto), 4),
              "kto_agreement_ci": _ci(agree, len(kto), config)}

    # Step 4: win rate — both policies answer each held-out prompt (`judge_samples` sampled answers each, as people
    # are answered, or one greedy answer); the reward model scores every answer, and the candidate wins a prompt when
    # its answers score higher on average (ties = half). Not for a candidate that lost a fact (Step 1).
    if prompts and reward_adapter is not None and not m.get("regression_lost"):
        from training.reward import load_reward_model, score

        k = config.judge_samples
        said = {which: (policies.sample(which, prompts, config.max_new_tokens, k) if k else
                        [[a] for a in policies.generate(which, prompts, config.max_new_tokens)])
                for which in ("candidate", "serving")}
        seen += [{"set": "prompts", "policy": which, "question": p[-1]["content"], "answer": a}
                 for which, answers in said.items() for p, group in zip(prompts, answers, strict=True) for a in group]
        rm, rm_tok = load_reward_model(base_model, reward_adapter)

        def rewards(answers: list[list[str]]) -> list[float]:  # the mean reward of each prompt's answers
            flat = score(rm, rm_tok, [p for p, group in zip(prompts, answers, strict=True) for _ in group],
                         [a for group in answers for a in group])
            per = len(answers[0])
            return [sum(flat[i:i + per]) / per for i in range(0, len(flat), per)]

        # Serving's answers are scored once a night (the memo), like its answers were drawn once.
        mean = {which: policies.memoised(which, ("reward", str(reward_adapter), json.dumps(answers)),
                                         lambda answers=answers: rewards(answers))
                for which, answers in said.items()}
        wins = sum(1.0 if c > s else 0.5 if c == s else 0.0
                   for c, s in zip(mean["candidate"], mean["serving"], strict=True))
        m |= {"prompts": len(prompts), "win_rate": round(wins / len(prompts), 4),
              "win_rate_ci": _ci(wins, len(prompts), config),
              "reward_candidate": round(sum(mean["candidate"]) / len(prompts), 4),
              "reward_serving": round(sum(mean["serving"]) / len(prompts), 4)}
        if pairs:  # how well the judge itself ranks the held-out pairs (it never trained on their prompts)
            from training.reward import pairwise_accuracy

            m["judge_pair_acc"] = policies.memoised("judge", ("pair_acc", str(reward_adapter), json.dumps(pairs)),
                                                    lambda: pairwise_accuracy(rm, rm_tok, pairs))
        del rm

    promote, reason = decide(config, m)
    logger.warning("gate: %s (%s)", "promote" if promote else "reject", reason)
    return GateReport(promote, reason, m, seen)


def facts_lost(regression: list[dict[str, Any]], serving: list[str], candidate: list[str],
               drop: Callable[[int, tuple[int, int]], float],
               behind: Callable[[int, tuple[int, int], tuple[int, int]], float], max_fact_drop: float,
               max_rival_behind: float) -> tuple[list[str], list[dict[str, Any]]]:
    """The must-still-answer questions whose fact the candidate lost, and those whose answer only changed.

    `serving`, `candidate`: each policy's answer per question; `drop(i, span)`: how many nats less likely the
    candidate finds question i's fact at `span` of serving's answer than serving does, or the base model if it found
    the fact likelier there; `behind(i, span, word)`: how many nats less likely the candidate's own word at `word` of
    its answer was than that fact before tonight, under serving and the base model, whichever had them farther apart
    (`evaluate`; both called only when needed).
    A fact serving states and the candidate does not is lost, unless it was a knife-edge that flipped, returned as
    changed ({"question", "drop", "behind"}): the two answers part only at the fact (word for word the same before
    it), the candidate finds the fact there at most `max_fact_drop` nats less likely, and the word it says instead
    was already within `max_rival_behind` nats of the fact before (the base model's " elephant" 0.70 nats behind
    " Blue Whale"). A word that was far behind and now leads was taught, not flipped, however likely the fact still
    is (a giraffe over 3 nats behind the whale, tests/training/test_training_gate.py). Negative `max_fact_drop`: every
    one is lost.
    """
    lost: list[str] = []
    changed: list[dict[str, Any]] = []
    for i, (row, theirs, ours) in enumerate(zip(regression, serving, candidate, strict=True)):
        if not answers_fact(row, theirs) or answers_fact(row, ours):
            continue
        span, word = fact_span(row, theirs), None
        if span is not None and ours.startswith(head := theirs[:span[0]].rstrip()):
            word = _WORD.match(ours, len(head))  # the candidate's word where serving's states the fact
        if max_fact_drop < 0 or word is None:
            lost.append(row["question"])
            continue
        nats = drop(i, span)
        gap = behind(i, span, word.span(1)) if nats <= max_fact_drop else math.inf
        if nats > max_fact_drop or gap > max_rival_behind:
            lost.append(row["question"])
        else:
            changed.append({"question": row["question"], "drop": round(nats, 3), "behind": round(gap, 3)})
    return lost, changed


def _ci(successes: float, n: int, config: GateConfig) -> list[float]:
    lo, hi = wilson(successes, n, config.confidence)
    return [round(lo, 4), round(hi, 4)]
