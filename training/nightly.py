"""`kaizen train nightly`: one idempotent job from new feedback to a gated, registered, maybe promoted adapter.

1. Take the lock (two nightly jobs never run at once) and resume the last run if it crashed.
2. Export the feedback that is new since the last finished run (permission-safe: `audience`, scrubbed).
3. Plan the stages from what there is: SFT on liked answers; reward model + RL when there are enough pairs,
   otherwise KTO on labelled answers. Too little new data: record a skipped run, say why, exit cleanly.
4. Hold out a share of the prompts, train each stage (each continues the previous one, the first continues the
   serving adapter), register the versions, run the gate, promote only on a pass. With no reward stage tonight, the
   gate's reward model (its judge) is trained on every preference pair so far, tonight's held-out prompts left out.
   A candidate that lost a must-still-answer fact is pulled back toward serving (training/pullback.py); one rejected
   at every alpha is trained again without the settled liked answers (`settled`), if there were any, and judged the
   same way.
Serving changes in exactly one place (the atomic write of current.json), after everything else succeeded.

    python -m training.nightly [--recipes DIR] [--set sft.max_steps=2 ...]     (settings from KAIZEN_* / kaizen.toml)
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.common import RecipeError
from training.config import NightlyConfig, Recipes, parse_sets, plan_stages
from training.registry import Registry, Run

if TYPE_CHECKING:
    from core.config import Settings
    from training.gate import GateConfig, GateReport

# NightlyConfig, Recipes, parse_sets and plan_stages live in training/config.py; named here for the job's callers.
__all__ = ["NightlyBusy", "NightlyConfig", "NightlyResult", "Recipes", "nightly_lock", "parse_sets", "plan_stages",
           "run_nightly"]

logger = logging.getLogger(__name__)

EXIT_CODES = {"promoted": 0, "canary": 0, "rejected": 0, "skipped": 0, "trained": 0, "failed": 1, "locked": 75}


@dataclass
class NightlyResult:
    status: str  # promoted | rejected | trained | skipped | failed | locked
    reason: str
    run: Run | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


class NightlyBusy(RuntimeError):
    """Another nightly job holds the lock."""


@contextmanager
def nightly_lock(data_dir: Path | str) -> Iterator[None]:
    """An exclusive OS lock (released by the OS if the process dies, so a crash never leaves it stuck)."""
    path = Path(data_dir) / "training" / "nightly.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text(encoding="utf-8").strip() or "another process"
            raise NightlyBusy(f"another nightly job is running ({holder}); not starting a second one") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}".encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def run_nightly(settings: Settings, recipes: Recipes | None = None, *, progress: bool = True) -> NightlyResult:
    """The whole job; never raises for a failed night (the result says failed and why, the run records it)."""
    from core.models import ModelNotFoundError
    from feedback import FeedbackError
    from training.data import DatasetError

    recipes = recipes or Recipes.load()
    try:
        with nightly_lock(settings.data_dir):
            return _night(settings, recipes, progress=progress)
    except NightlyBusy as e:
        return NightlyResult("locked", str(e))
    except (FeedbackError, ModelNotFoundError, RecipeError, DatasetError, OSError) as e:
        # Before a run exists (no base model, feedback database down, unreadable run data): nothing to record.
        return NightlyResult("failed", f"{type(e).__name__}: {e}")


def _weighted(rows: list[dict[str, Any]], correction_repeats: int) -> list[dict[str, Any]]:
    """`rows` with each correction row repeated `correction_repeats` times (in place, so the order stays)."""
    return [row for row in rows for _ in range(correction_repeats if row.get("origin") == "correction" else 1)]


def _contested(data: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The SFT rows worth training on when serving already pleases: corrections, and liked answers to a prompt that
    also got a disliked answer (from the labelled answers, `data["kto"]`)."""
    from training.data import prompt_key, prompt_of

    disliked = {prompt_key(prompt_of(r)) for r in data["kto"] if not r["label"]}
    return [r for r in data["sft"] if r.get("origin") == "correction" or prompt_key(prompt_of(r)) in disliked]


def _export(settings: Settings, cfg: NightlyConfig, since: datetime | None,
            until: datetime) -> dict[str, list[dict[str, Any]]]:
    """The feedback given in [since, until): by vote/correction time, so each vote is trained on exactly once."""
    from feedback import FeedbackStore

    with FeedbackStore.open(settings) as store:
        return {kind: store.examples(kind=kind, since=since, until=until, audience=cfg.audience, scrub=cfg.scrub)
                for kind in ("sft", "pairs", "kto")}


def _night(settings: Settings, recipes: Recipes, *, progress: bool) -> NightlyResult:
    from feedback.preferences import write_jsonl
    from training.common import base_model_path
    from training.data import read_curated, read_jsonl

    cfg = recipes.nightly
    if cfg.curated_sft:  # a bad curated file is a data error: reported before any run or attempt is touched
        read_curated(cfg.curated_sft)
    registry = Registry(settings.data_dir)
    base = base_model_path(settings)
    # Step 1: a run that crashed (or failed) is resumed on its own data; one that keeps failing is given up.
    run = registry.unfinished("nightly")
    if run is not None and run.attempts >= cfg.max_attempts:
        registry.finish(run, "abandoned", error=f"{run.error} (gave up after {run.attempts} attempts)")
        run = None
    if run is not None:
        run.attempts += 1
        run.status, run.error, run.config = "running", None, recipes.to_dict()
        registry.save(run)
        data = {k: read_jsonl(registry.run_dir(run) / "data" / f"{k}.jsonl") for k in ("sft", "pairs", "kto")}
        logger.warning("resuming nightly run %s (attempt %d)", run.id, run.attempts)
    else:
        # Step 2: the feedback new since the last finished run.
        last = registry.last_finished("nightly")
        since = datetime.fromisoformat(last.window["until"]) if last and last.window.get("until") else None
        until = datetime.now(UTC)
        data = _export(settings, cfg, since, until)
        counts = {k: len(v) for k, v in data.items()}
        window = {"since": since.isoformat() if since else None, "until": until.isoformat(),
                  "audience": cfg.audience, "scrub": cfg.scrub, "counts": counts}
        stages, notes = plan_stages(cfg, counts, have_reward=registry.latest_reward(base) is not None)
        if not stages:
            run = registry.new_run("nightly", base_model=base, window=window, config=recipes.to_dict())
            reason = ("too little new feedback since " + (window["since"] or "the beginning") + ": "
                      + "; ".join(notes))
            registry.finish(run, "skipped", decision={"promote": False, "reason": reason})
            return NightlyResult("skipped", reason, run)
        run = registry.new_run("nightly", base_model=base, window=window, config=recipes.to_dict())
        for kind, rows in data.items():
            write_jsonl(rows, registry.run_dir(run) / "data" / f"{kind}.jsonl")
    try:
        return _train_gate_promote(settings, recipes, registry, run, data, base, progress=progress)
    except Exception as e:  # noqa: BLE001 - recorded on the run; serving was not touched
        logger.exception("nightly run %s failed", run.id)
        registry.finish(run, "failed", error=f"{type(e).__name__}: {e}")
        return NightlyResult("failed", f"{type(e).__name__}: {e}", run)


def _train_gate_promote(settings: Settings, recipes: Recipes, registry: Registry, run: Run,
                        data: dict[str, list[dict[str, Any]]], base: str, *, progress: bool) -> NightlyResult:
    from feedback.preferences import write_jsonl
    from training import gate, pullback
    from training.data import holdout_split, prompts_from, read_jsonl
    from training.stages import run_stage

    cfg = recipes.nightly
    counts = {k: len(v) for k, v in data.items()}
    old_reward = registry.latest_reward(base)
    stages, notes = plan_stages(cfg, counts, have_reward=old_reward is not None)
    run.window["stages"], run.window["left_out"] = stages, notes
    # Step 3: hold out prompts for the gate (the same prompts in every dataset); curated SFT rows always train.
    train, held = holdout_split(data, cfg.eval_fraction, min_pairs=cfg.min_held_out_pairs)
    curated = read_jsonl(cfg.curated_sft) if cfg.curated_sft else []
    serving = registry.serving_adapter(base)
    serving_name = _current_name(registry)
    replay = _replay(settings, cfg, registry, run, base, serving) if "sft" in stages else []
    contested = _contested(train) if "sft" in stages else train["sft"]
    settled = len(train["sft"]) - len(contested)  # liked answers with nothing disliked beside them
    # What the SFT stage trains on, in order: a candidate the gate rejects at every alpha is trained again on the next.
    # Nothing but settled answers: there is no other candidate to train (the replay alone would only copy serving).
    everything, without = ("all", train["sft"]), ("without settled", contested)
    tries = {"keep": [everything], "skip": [without if contested else everything],
             "retry": [everything, without] if settled and contested else [everything]}[cfg.settled]
    run.window["settled"] = settled
    held_prompts = [r["prompt"] for r in prompts_from(held["pairs"], held["sft"], held["kto"])]
    regression = gate.load_regression(cfg.gate.regression_file)
    memo: dict = {}  # serving's answers and scores: the same for every candidate judged tonight

    def judge(candidate: Path) -> gate.GateReport:
        return gate.evaluate(
            cfg.gate, base_model=base, candidate=candidate, serving=serving, reward_adapter=judge_path or reward_path,
            prompts=held_prompts, pairs=held["pairs"], kto=held["kto"], regression=regression,
            system_prompt=settings.default.system_prompt, memo=memo,
        )

    answers: list[dict[str, Any]] = []
    tried: list[dict[str, Any]] = []
    reward_path = old_reward.path if old_reward else None
    judge_path = _judge(settings, recipes, registry, run, held, base, progress=progress) if (
        cfg.judge and "reward" not in stages and held_prompts) else None
    for attempt, (data_name, sft_train) in enumerate(tries):
        # A retry lives in its own folder and registers its own version; the first keeps the run's layout. Only the
        # SFT data differs: a retry keeps the first attempt's reward model (the same pairs), so both face one judge.
        folder = registry.run_dir(run) / ("without-settled" if attempt else "")
        suffix = "-without-settled" if attempt else ""
        sft_rows = _weighted(sft_train, cfg.correction_repeats) + curated + replay
        policy = serving
        # Step 4: the stages, each continuing the policy of the one before (the first continues the serving adapter).
        for stage in [s for s in stages if not (attempt and s == "reward")]:
            out = folder / stage
            rows = {"sft": sft_rows, "reward": train["pairs"], "dpo": train["pairs"],
                    "kto": train["kto"], "rl": prompts_from(train["pairs"], train["sft"], train["kto"])}[stage]
            init = None if stage == "reward" else policy
            result = run_stage(stage, getattr(recipes, stage), cfg, base=base, rows=rows, out=out, init=init,
                               reward_path=reward_path, progress=progress)
            if stage == "reward":
                reward_path = result.adapter
            else:
                policy = result.adapter
            run.stages[stage + suffix] = result.to_dict()
            registry.save(run)
        # Step 5: register what was trained (a resumed run keeps the versions it already registered).
        if "reward" in stages and run.reward_version is None:
            run.reward_version = registry.register(run, reward_path, kind="reward",
                                                   metrics=run.stages["reward"]["metrics"]).name
        if policy is None or policy == serving:
            return _finish(registry, run, "trained", "only a reward model was trained; nothing to promote")
        stage_metrics = {s: run.stages[s + suffix if s != "reward" else s]["metrics"] for s in stages}
        if run.version is None or attempt:
            run.version = registry.register(run, policy, metrics=stage_metrics).name
        registry.save(run)
        # Step 6: the gate, on held-out data only (the same data for every candidate judged below).
        report = judge(policy)
        answers += [{**a, "alpha": 1.0, "data": data_name} for a in report.answers]
        tried.append({"alpha": 1.0, "data": data_name, "promote": report.promote, "reason": report.reason})
        first = len(tried) - 1
        # Step 6b: a candidate that lost a must-still-answer fact is pulled back toward serving
        # (training/pullback.py), largest alpha first; each pulled-back candidate faces the whole gate again, and one
        # that passes is registered.
        best = None  # the highest share among pulled-back candidates that kept every fact
        for alpha in cfg.pull_back:
            pulled = len(tried) > first + 1
            if report.promote or not _pull_further(cfg.gate, report, pulled=pulled, best=best):
                break
            if pulled and not report.metrics.get("regression_lost"):
                best = max(best or 0.0, _best_share(cfg.gate, report) or 0.0)
            name = "pullback-" + pullback.describe(alpha).replace(", ", "-").replace(" ", "")  # attention0-mlp1
            mixed = pullback.interpolate(base_model=base, serving=serving, candidate=policy, alpha=alpha,
                                         out=folder / name)
            if mixed is None:
                break
            report = judge(mixed)
            answers += [{**a, "alpha": alpha, "data": data_name} for a in report.answers]
            tried.append({"alpha": alpha, "data": data_name, "promote": report.promote, "reason": report.reason})
            if report.promote:
                run.version = registry.register(run, mixed, metrics={**stage_metrics, "pull_back_alpha": alpha}).name
        if report.promote:
            if len(tried) > first + 1:  # say which alpha, and why not the full one
                report.reason += (f" (pulled back to alpha {pullback.describe(tried[-1]['alpha'])}; "
                                  f"at alpha 1: {tried[first]['reason']})")
            if attempt:  # say why the first candidate did not pass
                report.reason += (f" (trained without the {settled} liked answer(s) nothing disliked stood "
                                  f"beside; with them: {tried[first - 1]['reason']})")
            break
    # Each judged candidate with the gate's decision, when there was more than the trained one.
    run.metrics = {**report.metrics, "pull_back": tried if len(tried) > 1 else []}
    run.decision = {"promote": report.promote, "reason": report.reason}
    write_jsonl(answers, registry.run_dir(run) / "gate_answers.jsonl")  # what the gate judged, to read later
    # Step 7: promote only on a pass, and only if nobody promoted something else meanwhile.
    now_serving = _current_name(registry)
    if report.promote and now_serving != serving_name:
        return _finish(registry, run, "rejected", f"serving changed to {now_serving or 'the base model'} "
                                                  "during the run; not overriding it")
    if not report.promote:
        return _finish(registry, run, "rejected", report.reason)
    if settings.canary.enabled:  # live votes decide: a share of conversations first (training/registry.py)
        registry.start_canary(run.version, share=settings.canary.share, reason=f"nightly {run.id}: {report.reason}")
        return _finish(registry, run, "canary", f"{report.reason}; on trial for {settings.canary.share:.0%} of "
                                                "conversations until the votes decide (kaizen model status)")
    registry.promote(run.version, reason=f"nightly {run.id}: {report.reason}")
    return _finish(registry, run, "promoted", report.reason)


def _pull_further(config: GateConfig, report: GateReport, *, pulled: bool, best: float | None) -> bool:
    """Whether a rejected candidate is pulled back (further) toward serving. One that lost a must-still-answer fact
    is: that is what pulling back trades gain for. The trained candidate that lost none is not. A pulled-back one that
    kept every fact is pulled further while a primary metric's share is still above the bar (it moved toward the
    liked answer, and its interval or a fall in preference accuracy refused it) and higher than at the last
    fact-keeping alpha (`best`): pulling back takes gain away, so a share that stopped rising will not pass further on.
    Why past the first fact-keeping alpha: on a kept help-desk second night (bench/loop.py, 2026-12-06) attention 0 /
    MLP 1 kept the facts and moved 11 of 15 held-out pairs (0.48-0.89, refused); the next alpha, 0.7, lost a fact;
    attention 0 / MLP 0.7 kept them and moved 13 of 15 (0.62-0.96). Why it stops: bench/loop.py's fourteenth run
    walked the five fact-keeping alphas of a help-desk night twice at 11 of 16 pairs each, 1103 s for that night."""
    if report.metrics.get("regression_lost"):
        return True
    share = _best_share(config, report) if pulled else None
    return share is not None and share > 0.5 + config.margin and (best is None or share > best)


def _best_share(config: GateConfig, report: GateReport) -> float | None:
    """The highest share among the metrics that decide (`gate.primaries`), None when none was measured."""
    from training.gate import primaries

    usable, _ = primaries(config, report.metrics)
    return max((report.metrics[key] for key, _, _ in usable), default=None)


def _judge(settings: Settings, recipes: Recipes, registry: Registry, run: Run,
           held: dict[str, list[dict[str, Any]]], base: str, *, progress: bool) -> Path | None:
    """A reward model for the gate, trained on every preference pair given before this run's window closed (the most
    recent `judge_max_pairs`) except those on tonight's held-out prompts; None with fewer than `min_pairs` of them.
    Why all of them: a night's own pairs are too few to learn a preference from. bench/loop.py's help-desk night 2
    (2026-12-06): trained on its 14 training pairs, the reward model ranked 6 of its 16 held-out pairs right; on those
    and night 1's (59), 12 of 16, and it scored the liked answers to 60 new questions above the others (AUC 0.93)."""
    from feedback import FeedbackStore
    from feedback.preferences import write_jsonl
    from training.data import prompt_key, prompt_of, read_jsonl
    from training.stages import run_stage

    cfg = recipes.nightly
    path = registry.run_dir(run) / "data" / "judge.jsonl"
    if path.is_file():  # a resumed run judges with the same data
        rows = read_jsonl(path)
    else:
        until = datetime.fromisoformat(run.window["until"]) if run.window.get("until") else datetime.now(UTC)
        with FeedbackStore.open(settings) as store:
            every = store.examples(kind="pairs", until=until, audience=cfg.audience, scrub=cfg.scrub)
        held_keys = {prompt_key(prompt_of(r)) for rows in held.values() for r in rows}
        rows = [r for r in every if prompt_key(prompt_of(r)) not in held_keys][-cfg.judge_max_pairs:]
        write_jsonl(rows, path)
    if len(rows) < cfg.min_pairs:
        logger.warning("judge: %d preference pair(s) so far, needs %d; the held-out pairs judge alone", len(rows),
                       cfg.min_pairs)
        return None
    result = run_stage("reward", recipes.reward, cfg, base=base, rows=rows, out=registry.run_dir(run) / "judge",
                       init=None, reward_path=None, progress=progress)
    run.stages["judge"] = result.to_dict()
    registry.save(run)
    return result.adapter


def _replay(settings: Settings, cfg: NightlyConfig, registry: Registry, run: Run, base: str,
            serving: Path | None) -> list[dict[str, Any]]:
    """The serving policy's good answers to general prompts (kept with the run's data, so a resumed run reuses them)."""
    from feedback.preferences import write_jsonl
    from training.data import read_jsonl
    from training.replay import replay_rows

    path = registry.run_dir(run) / "data" / "replay.jsonl"
    if path.is_file():
        return read_jsonl(path)
    rows = replay_rows(base_model=base, serving=serving, count=cfg.replay, system_prompt=settings.default.system_prompt,
                       file=cfg.replay_file, max_new_tokens=cfg.replay_max_new_tokens, batch_size=cfg.gate.batch_size)
    write_jsonl(rows, path)
    return rows


def _current_name(registry: Registry) -> str | None:
    from core.adapters import AdapterError

    try:
        current = registry.current()
    except AdapterError:
        return "(unreadable current.json)"
    return current.name if current else None


def _finish(registry: Registry, run: Run, status: str, reason: str) -> NightlyResult:
    run.decision = {**run.decision, "promote": status == "promoted", "reason": reason}
    registry.finish(run, status)
    return NightlyResult(status, reason, run)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from core.config import load_settings

    parser = argparse.ArgumentParser(description="Kaizen's nightly training job")
    parser.add_argument("--recipes", type=Path, default=None, help="folder with <stage>.toml recipes")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="stage.key=value override")
    args = parser.parse_args(argv)
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_nightly(settings, Recipes.load(args.recipes, parse_sets(args.sets)))
    print(f"nightly: {result.status}: {result.reason}" + (f" (run {result.run.id})" if result.run else ""))
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
