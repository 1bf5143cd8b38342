"""The evaluation gate: a candidate adapter is promoted only if it beats the serving one on data no stage trained on.

Measured on the held-out split of the night's feedback, candidate vs serving (the promoted adapter, or the base):
- reward-model win rate: both answer each held-out prompt (greedy); the reward model prefers whose? (ties = half)
- preference accuracy: share of held-out pairs where the policy finds the liked answer likelier (per token), and
  preference shift: share where the candidate, relative to the serving policy, moved toward the liked answer
- KTO agreement (labelled answers only): did the candidate move each answer's likelihood the way its vote says?
- regression set: must-still-answer questions (JSONL: {"question", "expect": [any of these substrings]}).

Each share comes with its 95 % Wilson interval (`<metric>_ci`): a night holds out few examples (8 pairs: one
more or one fewer win moves the share by 0.12), so the decision uses the interval, not the share alone.

`decide` is the rule: no must-still-answer question the serving model answers may be lost, and the lower end of
the primary metric's interval (win rate, else preference shift, else KTO agreement) must be above 0.5 + `margin`
(the candidate is better than serving beyond what chance on this few examples gives); preference accuracy may not
fall by more than `max_pref_drop` beyond chance (McNemar's exact test on the pairs that flipped). A
must-still-answer answer counts when it states an expected fact as its answer (`training/facts.py`: as a whole word,
list numbers "4." do not count as "4", and not after another answer, as in "1.111...\n\nA minute is 60 seconds.");
one cut off by the token limit before stating it is generated again with four times the room, so a
long-winded candidate is not taken for a forgetful one.

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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.common import RECIPES_DIR, RecipeError
from training.facts import answers_fact, fact_span

__all__ = ["GateConfig", "GateReport", "accuracy_fell", "decide", "evaluate", "facts_lost", "load_regression",
           "primary", "wilson"]

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

    def check(self) -> None:
        if not -1 <= self.margin <= 1:
            raise RecipeError(f"gate.margin must be in [-1, 1], got {self.margin}")
        if not 0 < self.confidence < 1:
            raise RecipeError(f"gate.confidence must be between 0 and 1, got {self.confidence}")
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


def primary(config: GateConfig, m: dict[str, Any]) -> tuple[str, str, str, list[str]] | None:
    """The metric that decides, as (key, count key, reason label, metrics skipped for too few examples), or None when
    nothing was measured. One measured on so few examples that even a perfect score's interval would reach the bar
    (1-3 pairs at margin 0, 95 %) cannot decide anything: the next one does (e.g. a second night, where nearly every
    answer is liked and a held-out prompt rarely has a disliked answer to pair with, judged by its 20 labelled
    answers, not 1 pair)."""
    need = 0.5 + config.margin
    measured = [(key, count, label) for key, count, label in _PRIMARY if m.get(key) is not None]
    too_few: list[str] = []
    for i, (key, count, label) in enumerate(measured):
        n = int(m.get(count) or 0)
        # (need >= 1: no metric can pass at all, so the first one says why.)
        if n and wilson(n, n, config.confidence)[0] <= need < 1 and i + 1 < len(measured):
            too_few.append(f"{n} held-out {count}")
            continue
        return key, count, label, too_few
    return None


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
    # Step 2: the primary metric must beat the serving adapter by the margin, beyond chance.
    chosen = primary(config, m)
    if chosen is None:
        return False, ("nothing held out to judge on: the gate needs held-out prompts and a reward model, held-out "
                       "pairs, or held-out labelled answers")
    key, count, label, too_few = chosen
    what = label.format(v=m[key])
    n = int(m.get(count) or 0)
    if m[key] < need:
        return False, f"{what} is below {need:.2f}" if key != "pref_shift" else f"{what}, below {need:.2f}"
    if n:
        lo, hi = wilson(m[key] * n, n, config.confidence)
        interval = f"{config.confidence:.0%} interval {lo:.2f}-{hi:.2f} on {n}"
        if lo <= need:
            return False, f"{what}, but its {interval} reaches {need:.2f}: not better beyond chance"
        what += f" ({interval})"
    # Step 3: preference accuracy may not fall beyond the allowance and chance.
    fell, accuracy = accuracy_fell(config, m)
    if fell:
        return False, accuracy
    why = f"{what} >= {need:.2f}" if key != "pref_shift" else what
    why += f" ({', '.join(too_few)}: too few to decide on)" if too_few else ""
    why += f"; {accuracy}" if accuracy else ""
    if changed := m.get("regression_changed"):
        why += (f"; must-still-answer answer(s) changed at the fact, at most {config.max_fact_drop:.2f} nats less "
                "likely than before: " + "; ".join(f"{c['question']} ({-c['drop']:+.2f} nats)" for c in changed))
    return True, why


class _Policies:
    """The base model with the candidate and (if any) the serving adapter loaded side by side ("candidate", "serving",
    "base" name them). What the serving policy and the base model answered and scored is computed once (the gate's
    knife-edge check asks for serving's fact twice); with a `memo` dict it is kept there, so judging several
    candidates against the same serving policy (the nightly job's pull-back) computes their side once."""

    def __init__(self, base_model: str, candidate: Path | None, serving: Path | None, batch_size: int,
                 memo: dict | None = None) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from training.common import load_tokenizer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = load_tokenizer(base_model)
        self.tokenizer.padding_side = "left"  # generation continues where each prompt ends
        base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype).to(self.device)
        self.batch_size = batch_size
        self.has_serving = serving is not None
        self.memo = {} if memo is None else memo
        if candidate is None:  # the base model alone (e.g. to replay what it answers while nothing is promoted)
            self.model = base.eval()
            return
        self.model = PeftModel.from_pretrained(base, str(candidate), adapter_name="candidate").eval()
        if serving is not None:
            self.model.load_adapter(str(serving), adapter_name="serving")

    @contextmanager
    def use(self, which: str):
        if not hasattr(self.model, "disable_adapter"):
            yield
        elif which == "base" or (which == "serving" and not self.has_serving):
            with self.model.disable_adapter():  # the base model (nothing promoted yet: it serves)
                yield
        else:
            self.model.set_adapter(which)
            yield

    def generate(self, which: str, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        return [text for text, _ in self.generate_ended(which, prompts, max_new_tokens)]

    def _memoised(self, which: str, key: tuple, compute):
        if which == "candidate":
            return compute()
        if (which, *key) not in self.memo:
            self.memo[(which, *key)] = compute()
        return self.memo[(which, *key)]

    def generate_ended(self, which: str, prompts: list[list[dict[str, str]]], max_new_tokens: int
                       ) -> list[tuple[str, bool]]:
        """Greedy answers, each with whether it ended by itself (False: cut off at `max_new_tokens`)."""
        key = ("generate", json.dumps(prompts), max_new_tokens)
        return list(self._memoised(which, key, lambda: self._generate_ended(which, prompts, max_new_tokens)))

    def _generate_ended(self, which: str, prompts: list[list[dict[str, str]]], max_new_tokens: int
                        ) -> list[tuple[str, bool]]:
        import torch

        out: list[tuple[str, bool]] = []
        tok = self.tokenizer
        with self.use(which):
            for i in range(0, len(prompts), self.batch_size):
                enc = tok.apply_chat_template(prompts[i:i + self.batch_size], add_generation_prompt=True,
                                              return_tensors="pt", padding=True, return_dict=True
                                              ).to(self.device)
                with torch.inference_mode():
                    ids = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                              pad_token_id=tok.pad_token_id)
                width = enc["input_ids"].shape[1]
                for row in ids[:, width:]:
                    ended = bool((row == tok.eos_token_id).any() or (row == tok.pad_token_id).any())
                    out.append((tok.decode(row, skip_special_tokens=True).strip(), ended))
        return out

    def logp(self, which: str, prompt: list[dict[str, str]], answer: str) -> float:
        """Mean log-probability per answer token (the end-of-turn token included)."""
        return self._memoised(which, ("logp", json.dumps(prompt), answer), lambda: self._logp(which, prompt, answer))

    def fact_logp(self, which: str, prompt: list[dict[str, str]], answer: str, span: tuple[int, int]) -> float:
        """Log-probability (nats) of answer[start:end], the whitespace before it included, after the prompt and
        answer[:start], in any of its casings (as written, lower, Capitalized, Title: their probabilities summed, as
        a fact is matched case-insensitively): how likely the policy finds the fact where the answer states it. Why
        the casings: after night 2 of bench/loop.py (2026-12-06) the model found " blue whale" as likely as the base
        model did (-1.64 vs -1.65 nats) and " Blue Whale", the base model's spelling, 1.2 nats less likely."""
        start, end = span
        fact = answer[start:end]
        spellings = (fact, fact.lower(), fact.capitalize(), fact.title())
        variants = dict.fromkeys(v for v in spellings if len(v) == len(fact))  # a casing that keeps the offsets
        scores = [self._memoised(which, ("fact", json.dumps(prompt), answer[:start] + v, (start, end)),
                                 lambda v=v: self._fact_logp(which, prompt, answer[:start] + v, (start, end)))
                  for v in variants]
        top = max(scores)
        return top + math.log(sum(math.exp(x - top) for x in scores))

    def _fact_logp(self, which: str, prompt: list[dict[str, str]], answer: str, span: tuple[int, int]) -> float:
        """Summed log-probability of answer[start:end] (one spelling) after the prompt and answer[:start]."""
        import torch

        tok = self.tokenizer
        start = len(answer[:span[0]].rstrip())  # " blue whale" is one piece with its space, as generated
        head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        before = tok(head + answer[:start], add_special_tokens=False)["input_ids"]
        ids = tok(head + answer[:span[1]], add_special_tokens=False)["input_ids"]
        # The fact's tokens: from where the two tokenizations part (a merge across the boundary moves it earlier).
        first = next((i for i, (a, b) in enumerate(zip(before, ids, strict=False)) if a != b), len(before))
        if first == 0 or first >= len(ids):
            return 0.0
        t = torch.tensor([ids], device=self.device)
        with self.use(which), torch.inference_mode():
            logits = self.model(input_ids=t).logits[0, first - 1:-1].float()
        return float(torch.log_softmax(logits, -1).gather(1, t[0, first:, None]).sum())

    def _logp(self, which: str, prompt: list[dict[str, str]], answer: str) -> float:
        import torch

        tok = self.tokenizer
        head = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
        full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": answer}],
                                       return_dict=True)["input_ids"]
        ids = torch.tensor([full], device=self.device)
        with self.use(which), torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0, :-1].float()
        targets = ids[0, 1:]
        logps = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
        return float(logps[len(head) - 1:].mean())


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
    policies = _Policies(base_model, candidate, serving, config.batch_size, memo)
    m: dict[str, Any] = {"serving": str(serving) if serving else "base model"}
    seen: list[dict[str, Any]] = []

    # Step 1: win rate — both policies answer the held-out prompts, the reward model judges each couple.
    if prompts and reward_adapter is not None:
        from training.reward import load_reward_model, score

        cand = policies.generate("candidate", prompts, config.max_new_tokens)
        serv = policies.generate("serving", prompts, config.max_new_tokens)
        seen += [{"set": "prompts", "policy": which, "question": p[-1]["content"], "answer": a}
                 for which, said in (("candidate", cand), ("serving", serv))
                 for p, a in zip(prompts, said, strict=True)]
        rm, rm_tok = load_reward_model(base_model, reward_adapter)
        rc, rs = score(rm, rm_tok, prompts, cand), score(rm, rm_tok, prompts, serv)
        wins = sum(1.0 if c > s else 0.5 if c == s else 0.0 for c, s in zip(rc, rs, strict=True))
        m |= {"prompts": len(prompts), "win_rate": round(wins / len(prompts), 4),
              "win_rate_ci": _ci(wins, len(prompts), config),
              "reward_candidate": round(sum(rc) / len(rc), 4), "reward_serving": round(sum(rs) / len(rs), 4)}
        del rm

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

    # Step 4: the must-still-answer questions.
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
