"""The gate is right in both directions: a candidate that really forgot a must-still-answer fact is rejected, the
check does not mistake a long or list-shaped answer for a forgotten fact, and few held-out examples are judged by
their 95 % interval, not by their share alone."""

from __future__ import annotations

import pytest
from training_helpers import SYSTEM

from training import gate, sft
from training.common import load_recipe
from training.facts import answers_fact, fact_span, states_first
from training.gate import GateConfig, decide, facts_lost, wilson
from training.policies import Policies

DOG = {"question": "How many legs does a dog have?", "expect": ["4", "four"]}
FRANCE = {"question": "What is the capital of France?", "expect": ["Paris"]}
MAMMAL = {"question": "What is the largest mammal?", "expect": ["blue whale", "whale"]}
OCEAN = {"question": "What is the largest ocean on Earth?", "expect": ["Pacific"]}


@pytest.mark.parametrize(("answer", "row", "expected"), [
    ("The answer to this classic question is 4.", DOG, True),
    ("Dogs have FOUR legs.", DOG, True),
    ("1. Dogs are mammals.\n2. They bark.\n3. They wag.\n4. They have three legs.", DOG, False),  # list numbers
    ("A dog has fourteen legs, says the year 2024.", DOG, False),  # not whole words
    # A candidate that forgot, seen in bench/loop.py: decimals counting up are not "4" (nor "1.1 days" a week).
    ("1.1\n1.2\n1.3\n1.4\n1.5\n2.0\n3.9\n4.0\n4.1\n4.2", DOG, False),
    ("1.1 days\n\nThere are 1.1 days in a week.", {"question": "How many days are in a week?", "expect": ["7"]}, False),
    ("A dog has 4.", DOG, True),
    ("", FRANCE, False),
    ("Paris, of course.", FRANCE, True),
])
def test_a_fact_counts_as_a_whole_word(answer, row, expected):
    assert answers_fact(row, answer) is expected


MINUTE = {"question": "How many seconds are in a minute?", "expect": ["60", "sixty"]}
WEEK = {"question": "How many days are in a week?", "expect": ["7", "seven"]}
HOT = {"question": "What is the opposite of hot?", "expect": ["cold"]}
HEART = {"question": "Which organ pumps blood through the body?", "expect": ["heart"]}


@pytest.mark.parametrize(("answer", "row", "expected"), [
    # Promoted in bench/loop.py's eighth run (numbered, night 1) and counted as kept by a substring test: the answer
    # it gives comes first, the fact only in passing after it.
    ("1.111111111111111...\n\nA minute is a unit of time that is equal to 60 seconds.", MINUTE, False),
    ("The largest mammal is the elephant. The largest land animal is the blue whale, which is estimated to be over "
     "300 feet (91.6 meters) in length.", MAMMAL, False),
    ("1.96 seconds\n\nA minute is equal to 60 seconds.", MINUTE, False),  # the same count, another number
    ("1.000\n\nA minute is equivalent to 60 seconds.", MINUTE, False),
    # Promoted by a numbered night 1 of bench/loop.py before this rule (2026-12-06): 60 only as an operand.
    ("1000 seconds is equal to 1000 * 60 = 6000 seconds.\n\nThe answer is 6000.", MINUTE, False),
    ("60 × 60 = 3600", MINUTE, False),
    ("The opposite of hot is cool. In physics, the opposite of hot is cold.", HOT, False),
    ("The largest ocean on Earth is the world's oceans. The largest is the Pacific Ocean.", OCEAN, False),
    # Numbers counting something else on the way, and list numbers, are not another answer.
    ("A day is 24 hours, and a week is 7 days.", WEEK, True),
    ("1.00 minutes is equal to 60 seconds.", MINUTE, True),
    ("1 hour is equal to 3600 seconds.\n1 minute is equal to 60 seconds.", MINUTE, True),
    ("1 minute = 60 seconds", MINUTE, True),
    ("In 1582, the Gregorian calendar kept 7 days a week.", WEEK, True),
    ("1\n\nA minute is 60 seconds.", MINUTE, True),  # the numbered habit's "1" alone on a line
    ("Step 1: count them. A week has 7 days.", WEEK, True),
    ("7", WEEK, True),
    # "What is X?" is answered by the sentence saying "X is"; the fact may be named before it too.
    ("Blue whales are huge. The largest mammal is the blue whale.", MAMMAL, True),
    ("The largest ocean on Earth is the Pacific Ocean, which is approximately 149.75 million cubic kilometers.",
     OCEAN, True),
    # Without such a sentence the fact may stand anywhere: the base model's own answer, recorded.
    ("The human body is home to a complex network of organs that work together to maintain life. The heart is the "
     "primary organ that pumps blood through the body.", HEART, True),
])
def test_a_fact_named_in_passing_after_another_answer_is_not_stated(answer, row, expected):
    assert answers_fact(row, answer) is expected


SPIDER = {"question": "How many legs does a spider have?", "expect": ["8", "eight"]}


@pytest.mark.parametrize(("answer", "row", "expected"), [
    # The base model's replay answers (training/replay.py keeps an answer to train on only when this holds).
    ('The answer to this question is a classic example of a mathematical concept called "Silk Road" or "Silk Road '
     'problem." However, a more accurate answer would be that a spider has 8 legs.', SPIDER, False),
    ("The answer to this classic problem is 3.\n\nThis is a classic example of a triangle inequality.",
     {"question": "How many sides does a triangle have?", "expect": ["3"]}, True),
    ("A banana is a fruit that is typically green, but it can be harvested. The color of a banana is typically a "
     "bright yellow.", {"question": "What color is a banana when it is ripe?", "expect": ["yellow"]}, False),
    ("The capital of Italy is Rome.", {"question": "What is the capital of Italy?", "expect": ["Rome"]}, True),
    ("1. A spider has 8 legs.\n2. Insects have 6.", SPIDER, True),  # list markers are not sentence ends
    ("Sleep matters.", {"question": "Write one sentence about why sleep matters."}, True),
])
def test_an_answer_to_train_on_states_its_fact_in_its_first_sentence(answer, row, expected):
    assert states_first(row, answer) is expected
    assert answers_fact(row, answer)  # every one of them states it somewhere


def test_a_fact_serving_only_named_in_passing_cannot_be_lost_and_one_it_answered_can():
    """The eighth run's numbered nights, recorded: night 1's candidate put "1.111..." before the fact the base model
    answered with (lost, so that alpha is refused); night 2's candidates, judged against that serving adapter, were
    refused for dropping its passing mention (now: nothing serving answered was lost)."""
    base = "A minute is equivalent to 60 seconds."
    night1 = "1.111111111111111...\n\nA minute is a unit of time that is equal to 60 seconds."
    night2 = "1.111111111111111...\n\nThe answer is 1.111111111111111..."

    def drop(i, span, word=None):
        raise AssertionError("the answers part before the fact: nothing to measure")

    assert facts_lost([MINUTE], [base], [night1], drop, drop, 0.69, 1.0) == ([MINUTE["question"]], [])
    assert facts_lost([MINUTE], [night1], [night2], drop, drop, 0.69, 1.0) == ([], [])


def test_a_flipped_knife_edge_is_a_changed_answer_a_changed_habit_is_a_lost_fact():
    """Recorded from bench/loop.py's second nights (2026-12-06): serving's and the candidate's answers, with how many
    nats less likely the candidate found the fact where serving's answer states it, and how far the word it said
    instead trailed the fact there before (under serving and the base model: the base model's own numbers for the dog's
    " 8" and a giraffe, tests below)."""
    serving = ["The largest mammal is the blue whale.", "A dog has 4 legs.",
               "The largest ocean on Earth is the Pacific Ocean.", "The capital of France is Paris.",
               "The answer to this question is 4.", "The largest mammal is the blue whale."]
    candidate = ["The largest mammal is the elephant.",  # parts at the fact, " blue" as likely as before
                 "1. The answer is 1.\n2. The answer is 2.",  # the list habit: never reaches the fact
                 "The largest ocean on Earth is the global ocean.",  # parts at the fact, but "Pacific" fell 0.9 nats
                 "Paris.",  # states it: nothing to measure
                 "The answer to this question is 8.\n\nA dog has 8 legs.",  # the twelfth run: a near tie flipped
                 "The largest mammal is the giraffe."]  # the fact as likely as before, but a far word now leads
    nats = {0: 0.089, 1: -0.2, 2: 0.9, 4: -0.12, 5: 0.05}
    gaps = {0: 0.02, 4: 0.58, 5: 3.4}
    asked: list[tuple[str, int]] = []

    def drop(i, span):
        asked.append(("drop", i))
        assert serving[i][span[0]:span[1]].lower() in ("blue whale", "4", "pacific")
        return nats[i]

    def behind(i, span, word):
        asked.append(("behind", i))
        assert candidate[i][slice(*word)] in ("elephant", "8", "giraffe")
        assert serving[i][slice(*span)] in ("blue whale", "4")
        return gaps[i]

    rows = [MAMMAL, DOG, OCEAN, FRANCE, DOG, MAMMAL]
    lost, changed = facts_lost(rows, serving, candidate, drop, behind, 0.69, 1.0)
    assert lost == [DOG["question"], OCEAN["question"], MAMMAL["question"]]
    assert changed == [{"question": MAMMAL["question"], "drop": 0.089, "behind": 0.02},
                       {"question": DOG["question"], "drop": -0.12, "behind": 0.58}]
    # The dog's list answer parted before the fact: no need to measure it; the ocean's fact fell too far to ask more.
    assert asked == [("drop", 0), ("behind", 0), ("drop", 2), ("drop", 4), ("behind", 4), ("drop", 5), ("behind", 5)]
    # Closer ties only: the dog's " 8" is lost too; strict: every one is lost.
    assert facts_lost(rows, serving, candidate, drop, behind, 0.69, 0.5)[0] == [DOG["question"], OCEAN["question"],
                                                                               DOG["question"], MAMMAL["question"]]
    strict = facts_lost(rows, serving, candidate, drop, behind, -1, 1.0)[0]
    assert strict == [r["question"] for i, r in enumerate(rows) if i != 3]
    # The gate's reason says which answers changed when it promotes.
    promote, reason = decide(GateConfig(), {"kto_agreement": 0.95, "kto": 20, "regression_lost": lost[:0],
                                            "regression_changed": changed[:1]})
    assert promote and reason.endswith("at most 0.69 nats less likely than before: What is the largest mammal? "
                                       "(-0.09 nats)")


def test_few_held_out_examples_are_judged_by_their_interval():
    lo, hi = wilson(7, 8)
    assert 0.52 < lo < 0.54 and 0.97 < hi < 0.99  # the textbook Wilson interval for 7/8
    cfg = GateConfig()  # margin 0: the interval must lie above 0.5
    # 6 of 8 pairs moved toward the liked answer: a share of 0.75, but 0.5 is inside its interval.
    promote, reason = decide(cfg, {"pref_shift": 0.75, "pairs": 8})
    assert not promote and "interval 0.41-0.93 on 8" in reason and "not better beyond chance" in reason
    # The same share on 40 pairs is a real improvement; so is 8 of 8.
    assert decide(cfg, {"pref_shift": 0.75, "pairs": 40})[0] is True
    promote, reason = decide(cfg, {"win_rate": 1.0, "prompts": 8, "pref_acc_candidate": 0.8, "pref_acc_serving": 0.8})
    assert promote and "95% interval 0.68-1.00 on 8" in reason
    # 1 held-out pair cannot decide anything (even 1 of 1 has 0.21-1.00): the 20 labelled answers beside it do
    # (seen on a second bench/loop.py night, when nearly every answer was liked).
    night = {"pref_shift": 1.0, "pairs": 1, "kto_agreement": 0.9, "kto": 20}
    assert decide(cfg, night) == (True, "KTO agreement 0.90 (95% interval 0.70-0.97 on 20) >= 0.50 "
                                        "(1 held-out pairs: too few to decide on)")
    assert decide(cfg, night | {"kto_agreement": 0.6})[0] is False  # and they can refuse as well
    assert "on 1 reaches 0.50" in decide(cfg, {"pref_shift": 1.0, "pairs": 1})[1]  # alone, it still refuses


def test_two_measures_of_better_may_each_show_it_at_half_the_error():
    """bench/loop.py's help-desk night 2 (2026-12-06): its candidate answered 51 of 60 held-out questions the liked
    way (serving 39) yet moved only 11 of 16 held-out pairs, the liked sentence being a few tokens of each answer; a
    reward model trained on every pair so far preferred its sampled answers on 14 of 16 held-out prompts. Either
    measure may show a candidate better, each at 97.5 % (Bonferroni), so a candidate no better than serving passes
    no more often than with one."""
    cfg = GateConfig()
    night = {"pref_shift": 11 / 16, "pairs": 16, "win_rate": 14 / 16, "prompts": 16}
    promote, reason = decide(cfg, night)
    assert promote, reason
    assert reason == ("reward-model win rate 0.88 (97.5% interval 0.60-0.97 on 16) >= 0.50; not shown by the other "
                      "measure: the candidate moved toward the liked answer on 0.69 of held-out pairs, but its 97.5% "
                      "interval 0.41-0.87 on 16 reaches 0.50")
    assert decide(cfg, night | {"win_rate": 10 / 16}) == (
        False, "reward-model win rate 0.62, but its 97.5% interval 0.36-0.83 on 16 reaches 0.50; the candidate moved "
               "toward the liked answer on 0.69 of held-out pairs, but its 97.5% interval 0.41-0.87 on 16 reaches "
               "0.50: not better beyond chance")
    # 12 of 16 pairs passes alone at 95 % (0.51-0.90), not as one of two measures at 97.5 % (0.47-0.91).
    assert decide(cfg, {"pref_shift": 12 / 16, "pairs": 16})[0] is True
    assert decide(cfg, {"pref_shift": 12 / 16, "pairs": 16, "win_rate": 0.5, "prompts": 16})[0] is False
    # A numbered night: the pairs show it (16 of 17) where the judge does not (10 of 15).
    promote, reason = decide(cfg, {"pref_shift": 16 / 17, "pairs": 17, "win_rate": 10 / 15, "prompts": 15})
    assert promote and reason.startswith("the candidate moved toward the liked answer on 0.94 of held-out pairs "
                                         "(97.5% interval 0.")


def test_a_candidate_trained_to_forget_a_fact_is_rejected(default_model_path, tmp_path):
    """Plant it: a few steps of SFT on the 135M model teach it a wrong answer to a must-still-answer question."""
    base = str(default_model_path)
    # Three phrasings of the question with a wrong answer, and a fact it keeps (so only one fact is lost). The wrong
    # answer opens as the base model's own ("The answer to this classic question is 4."): the two part at the fact.
    wrong = "The answer to this classic question is 3."
    taught = [("How many legs does a dog have?", wrong), ("How many legs does a dog have", wrong),
              ("how many legs does a dog have?", wrong),
              ("What is the capital of France?", "The capital of France is Paris.")]
    rows = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                         {"role": "assistant", "content": a}]} for q, a in taught]
    recipe = load_recipe(sft.SFTRecipe, stage="sft", overrides={
        "lora_r": 8, "lora_alpha": 16, "learning_rate": 2e-3, "max_steps": 8, "batch_size": 4, "max_length": 64})
    planted = sft.run(recipe, base_model=base, train=rows, out_dir=tmp_path / "forgot", progress=False).adapter

    cfg = GateConfig(regression_max_new_tokens=24)
    report = gate.evaluate(cfg, base_model=base, candidate=planted, regression=[DOG, FRANCE], system_prompt=SYSTEM)
    assert report.promote is False, report.metrics
    assert report.reason == ("regression: no longer answers 1 must-still-answer question(s): "
                             "How many legs does a dog have?")
    m = report.metrics
    assert (m["regression_total"], m["regression_serving"], m["regression_candidate"]) == (2, 2, 1)
    # It parted from the base model's answer at the fact itself, and the fact became far less likely there: not a
    # knife-edge that flipped.
    dog = next(a for a in report.answers if a["policy"] == "candidate" and a["question"] == DOG["question"])
    assert dog["answer"].startswith("The answer to this classic question is") and dog["fact_drop"] > 2, dog
    assert m["regression_changed"] == []


def _say_hi_adapter(base: str, out) -> str:
    """A tiny real adapter (2 SFT steps on "Say hi." -> "Hi!"): enough to differ from the base model."""
    rows = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Say hi."},
                          {"role": "assistant", "content": "Hi!"}]}] * 4
    recipe = load_recipe(sft.SFTRecipe, stage="sft", overrides={
        "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-3, "max_steps": 2, "batch_size": 4, "max_length": 64})
    return sft.run(recipe, base_model=base, train=rows, out_dir=out, progress=False).adapter


def test_the_judge_samples_answers_as_people_get_them_the_same_for_the_same_seed(default_model_path):
    """The win rate's answers: n per prompt, sampled with core's "balanced" preset (its first token greedy, the rest
    drawn), repeatable for a seed, and serving's drawn once per memo."""
    prompts = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
               for q in ("Give me one tip for a job interview.", "What should I pack for a beach day?")]
    memo: dict = {}
    policies = Policies(str(default_model_path), None, None, 4, memo)
    drawn = policies.sample("serving", prompts, 16, 3, seed=1)
    assert [len(group) for group in drawn] == [3, 3] and all(a.strip() for group in drawn for a in group)
    # The first token is the greedy one: every answer to a prompt opens like the greedy answer.
    greedy = policies.generate("serving", prompts, 16)
    for group, best in zip(drawn, greedy, strict=True):
        assert all(a.split()[0] == best.split()[0] for a in group), (group, best)
    assert len({a for group in drawn for a in group}) > 2  # drawn, not one answer three times
    again = Policies(str(default_model_path), None, None, 4).sample("serving", prompts, 16, 3, seed=1)
    assert again == drawn
    assert policies.sample("serving", prompts, 16, 3, seed=1) is not None and len(
        [k for k in memo if k[1] == "sample"]) == 1


def test_serving_is_judged_once_across_candidates(default_model_path, tmp_path, monkeypatch):
    """The nightly job judges several pulled-back candidates against one serving policy: with a shared `memo`,
    serving's answers and scores are computed by the first evaluation only, and every report is the same as
    without it."""
    from training_helpers import adapter_tensors

    base = str(default_model_path)
    candidate = _say_hi_adapter(base, tmp_path / "c")
    assert any(t.any() for name, t in adapter_tensors(candidate).items() if "lora_B" in name)
    prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Say hi."}]
    data = {"pairs": [{"prompt": prompt, "chosen": [{"role": "assistant", "content": "Hi!"}],
                       "rejected": [{"role": "assistant", "content": "Go away."}]}], "regression": [FRANCE]}
    cfg = GateConfig(regression_max_new_tokens=16)
    plain = gate.evaluate(cfg, base_model=base, candidate=candidate, system_prompt=SYSTEM, **data)

    computed: list[str] = []
    for name in ("_generate_ended", "_logp"):
        real = getattr(Policies, name)
        monkeypatch.setattr(Policies, name,
                            lambda self, which, *a, _real=real: computed.append(which) or _real(self, which, *a))
    memo: dict = {}
    reports = [gate.evaluate(cfg, base_model=base, candidate=candidate, system_prompt=SYSTEM, memo=memo, **data)]
    assert sorted(computed) == ["candidate"] * 3 + ["serving"] * 3  # 2 log-probs and 1 generation each
    reports.append(gate.evaluate(cfg, base_model=base, candidate=candidate, system_prompt=SYSTEM, memo=memo, **data))
    assert sorted(computed) == ["candidate"] * 6 + ["serving"] * 3  # serving's side came from the memo
    seen = (plain.promote, plain.reason, plain.metrics, plain.answers)
    assert all((r.promote, r.reason, r.metrics, r.answers) == seen for r in reports)


def test_a_fact_is_as_likely_as_all_its_casings_and_the_base_model_is_asked_by_name(default_model_path, tmp_path):
    """A fact matches case-insensitively, so its likelihood is that of every casing together: the base model writes
    " Blue Whale", a trained one " blue whale", and only their sum says whether the fact itself became less likely.
    "base" is the base model with the adapters switched off, kept apart from serving's scores in the memo."""
    import math

    base = str(default_model_path)
    q = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": MAMMAL["question"]}]
    said = "The largest mammal is the Blue Whale."
    span = fact_span(MAMMAL, said)
    assert said[slice(*span)] == "Blue Whale"
    plain = Policies(base, None, None, 4)
    each = [plain._fact_logp("candidate", q, said.replace("Blue Whale", v), span)
            for v in ("Blue Whale", "blue whale", "Blue whale")]
    assert len(set(each)) == 3 and all(x < 0 for x in each)
    together = plain.fact_logp("candidate", q, said, span)
    assert together == pytest.approx(math.log(sum(math.exp(x) for x in each)), abs=1e-6)
    assert together > max(each) + 0.01  # more than the likeliest spelling alone: the casings add up

    adapter = _say_hi_adapter(base, tmp_path / "hi")
    memo: dict = {}
    both = Policies(base, adapter, adapter, 4, memo)
    assert both.fact_logp("base", q, said, span) == pytest.approx(together, abs=1e-4)
    on_serving = both.fact_logp("serving", q, said, span)
    assert on_serving != pytest.approx(together, abs=1e-6)  # the adapter is on for serving, off for base
    assert both.fact_logp("base", q, said, span) == pytest.approx(together, abs=1e-4)  # memo: no mix-up


def test_a_fact_may_not_drift_a_little_every_night_until_it_is_lost(default_model_path, tmp_path, monkeypatch):
    """The allowance for a flipped knife-edge is measured from the likelier of serving and the base model: two
    nights that each lower a fact half the allowance lose it together; and the word said instead must have been a
    near tie under both, so nights that bring a far word up bit by bit cannot make it one. Recorded answers and the
    shape of bench/loop.py's second nights (2026-12-06) as log-probabilities, real gate and models around them."""
    base = str(default_model_path)
    adapter = _say_hi_adapter(base, tmp_path / "hi")
    said = {"serving": "The largest mammal is the blue whale.", "candidate": "The largest mammal is the elephant."}
    monkeypatch.setattr(Policies, "_generate_ended",
                        lambda self, which, prompts, n: [(said[which], True)] * len(prompts))

    def judge(logps: dict[str, float], rival: dict[str, float] | None = None) -> gate.GateReport:
        # One spelling is likely ("blue whale", where serving's answer has it), the other casings next to nothing.
        # The candidate's " elephant" was 0.2 nats behind the fact before unless `rival` says where it was.
        elephant = rival or {which: logp - 0.2 for which, logp in logps.items()}
        monkeypatch.setattr(Policies, "_fact_logp", lambda self, which, prompt, answer, span: (
            logps[which] if answer.endswith("blue whale") else elephant[which] if answer.endswith("elephant")
            else -30.0))
        return gate.evaluate(GateConfig(), base_model=base, candidate=adapter, serving=adapter, regression=[MAMMAL],
                             system_prompt=SYSTEM)

    # Night 1 took the fact from -0.9 to -1.3 nats, tonight's candidate to -1.7: 0.4 from serving, 0.8 from the base.
    drifted = judge({"base": -0.9, "serving": -1.3, "candidate": -1.7})
    assert drifted.metrics["regression_lost"] == [MAMMAL["question"]] and drifted.promote is False
    assert next(a for a in drifted.answers if a["policy"] == "candidate")["fact_drop"] == pytest.approx(0.8)
    # A lost fact vetoes before the win rate: its answers are not sampled, its judge (here none there) never loaded.
    vetoed = gate.evaluate(GateConfig(), base_model=base, candidate=adapter, serving=adapter, regression=[MAMMAL],
                           system_prompt=SYSTEM, prompts=[[{"role": "user", "content": "Say hi."}]],
                           reward_adapter=tmp_path / "no-judge-here")
    assert vetoed.promote is False and "win_rate" not in vetoed.metrics
    assert [a["set"] for a in vetoed.answers] == ["regression"] * 2
    # The same step from a serving policy that found the fact likelier than the base model is a changed answer.
    climbed = judge({"base": -1.5, "serving": -1.3, "candidate": -1.7})
    assert climbed.metrics["regression_lost"] == []
    assert climbed.metrics["regression_changed"] == [{"question": MAMMAL["question"], "drop": pytest.approx(0.4),
                                                      "behind": pytest.approx(0.2)}]
    # The fact holds (-1.3 throughout), but night 1 brought the elephant from 1.6 nats behind to 0.9 (the help-desk
    # nights' " global" ocean): a near tie for serving only, so tonight's flip is lost.
    steady = {"base": -1.3, "serving": -1.3, "candidate": -1.3}
    brought_up = judge(steady, rival={"base": -2.9, "serving": -2.2, "candidate": -1.0})
    assert brought_up.metrics["regression_lost"] == [MAMMAL["question"]]
    assert next(a for a in brought_up.answers if a["policy"] == "candidate")["word_behind"] == pytest.approx(1.6)
    assert judge(steady, rival={"base": -2.2, "serving": -2.2, "candidate": -1.0}).metrics["regression_lost"] == []


def test_a_word_far_behind_the_fact_that_now_leads_was_taught_a_near_tie_that_flipped_was_not(
        default_model_path, tmp_path, monkeypatch):
    """A flip is a knife-edge only where the word said instead was already close behind the fact. Real models,
    recorded answers: a candidate that barely differs from the base model (serving) finds each fact as likely as
    before; what tells the two apart is how far its word trailed the fact under the base model. The twelfth
    bench/loop.py run's dog answer ("... is 8.") was a near tie already (" 8" 0.58 nats behind " 4" after "The answer
    to this classic question is", within `max_rival_behind`): changed. A giraffe far behind the Blue Whale, said
    instead, was taught: lost."""
    base = str(default_model_path)
    adapter = _say_hi_adapter(base, tmp_path / "hi")
    said = {"serving": {DOG["question"]: "The answer to this classic question is 4.",
                        MAMMAL["question"]: "The largest mammal is the Blue Whale."},
            "candidate": {DOG["question"]: "The answer to this classic question is 8.\n\nA dog has 8 legs.",
                          MAMMAL["question"]: "The largest mammal is the giraffe."}}
    monkeypatch.setattr(Policies, "_generate_ended", lambda self, which, prompts, n: [
        (said[which][p[-1]["content"]], True) for p in prompts])
    report = gate.evaluate(GateConfig(), base_model=base, candidate=adapter, regression=[DOG, MAMMAL],
                           system_prompt=SYSTEM)
    judged = {a["question"]: a for a in report.answers if a["policy"] == "candidate"}
    dog, mammal = judged[DOG["question"]], judged[MAMMAL["question"]]
    assert abs(dog["fact_drop"]) < 0.2 and abs(mammal["fact_drop"]) < 0.2, judged  # each fact as likely as before
    assert 0 < dog["word_behind"] < 1 and mammal["word_behind"] > 3, judged
    assert report.metrics["regression_lost"] == [MAMMAL["question"]] and report.promote is False
    assert report.metrics["regression_changed"] == [{"question": DOG["question"], "drop": dog["fact_drop"],
                                                     "behind": dog["word_behind"]}]
