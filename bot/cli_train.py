"""`kaizen train sft|reward|rl|dpo|kto|nightly` and `kaizen model list|status|promote|canary|check|rollback`.

Mounted by bot/cli.py: `app.add_typer(train_app, name="train")`, `app.add_typer(model_app, name="model")`.
A manual stage trains on the feedback store's export (and/or curated JSONL files) and registers a version without
promoting it; `kaizen train nightly` is the gated, promoting job; `kaizen model promote` is the operator's override.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bot.cli_common import fail, parse_since, settings_or_exit

__all__ = ["model_app", "train_app"]

train_app = typer.Typer(help="Train LoRA adapters from the feedback store (one stage, or the nightly job).",
                        no_args_is_help=True)
model_app = typer.Typer(help="The adapter registry: list versions and runs, canary status, promote, roll back.",
                        no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="kaizen.toml to read (default: ./kaizen.toml)")]
DataOpt = Annotated[list[Path] | None, typer.Option("--data", "-d", help="extra JSONL dataset (repeatable)")]
SinceOpt = Annotated[str | None, typer.Option(help="only feedback from this date on (YYYY-MM-DD, UTC)")]
StoreOpt = Annotated[bool, typer.Option("--store/--no-store", help="train on the feedback store's export")]
RecipeOpt = Annotated[Path | None, typer.Option("--recipe", help="recipe TOML (default: training/recipes/<stage>)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a recipe value: key=value (repeatable)")]
InitOpt = Annotated[str, typer.Option("--init", help="start from: current (the promoted adapter), base, or a version")]
AudienceOpt = Annotated[str, typer.Option(help="who may talk to the model ('public' leaves restricted answers out)")]
ScrubOpt = Annotated[bool, typer.Option("--scrub/--no-scrub", help="replace e-mails, phone numbers and mentions")]




def _stage(stage: str, *, kind: str, data: list[Path] | None, since: str | None, store: bool, recipe: Path | None,
           sets: list[str] | None, init: str, audience: str, scrub: bool, config: Path | None,
           reward: str | None = None) -> None:
    """One manual stage: data -> train -> register (not promoted) -> summary."""
    from training import dpo, kto, rl, sft
    from training import reward as reward_stage
    from training.common import RecipeError, base_model_path, load_recipe, recipe_dict
    from training.data import DatasetError, prompts_from, read_jsonl
    from training.nightly import parse_sets
    from training.registry import Registry, RegistryError

    modules = {"sft": (sft, sft.SFTRecipe), "reward": (reward_stage, reward_stage.RewardRecipe),
               "rl": (rl, rl.RLRecipe), "dpo": (dpo, dpo.DPORecipe), "kto": (kto, kto.KTORecipe)}
    module, recipe_cls = modules[stage]
    settings = settings_or_exit(config)
    when = parse_since(since)
    registry = Registry(settings.data_dir)
    # Step 1: recipe, base model, starting adapter and data; every mistake is one clear line.
    try:
        overrides = parse_sets([f"{stage}.{s}" for s in sets or []]).get(stage, {})
        the_recipe = load_recipe(recipe_cls, recipe, overrides, stage=stage)
        base = base_model_path(settings)
        init_adapter = _init_adapter(registry, init, base) if stage != "reward" else None
        rows = [row for path in data or [] for row in read_jsonl(path)]
        if store:
            # RL's prompts: every question with feedback, whatever its kind.
            for source in ("sft", "pairs", "kto") if kind == "prompts" else (kind,):
                rows += _store_rows(settings, source, when, audience, scrub)
        if kind == "prompts":
            rows = prompts_from(rows)
        reward_path = _reward_adapter(registry, reward, base) if stage == "rl" else None
    except (RecipeError, DatasetError, RegistryError) as e:
        fail(str(e))
    if not rows:
        fail(f"no {kind} examples: the feedback store has none{' since ' + since if since else ''} and no --data "
             "file was given")
    window = {"since": when.isoformat() if when else None, "until": datetime.now(UTC).isoformat(),
              "audience": audience, "scrub": scrub, "counts": {kind: len(rows)}, "files": [str(p) for p in data or []]}
    run = registry.new_run(stage, base_model=base, window=window, config={stage: recipe_dict(the_recipe)})
    out = registry.run_dir(run) / stage
    # Step 2: train; a bad dataset fails the run with its reason and registers nothing.
    try:
        match stage:
            case "reward":
                result = module.run(the_recipe, base_model=base, train=rows, out_dir=out)
            case "rl":
                result = module.run(the_recipe, base_model=base, prompts=rows, reward_adapter=reward_path,
                                    out_dir=out, init_adapter=init_adapter)
            case _:
                result = module.run(the_recipe, base_model=base, train=rows, out_dir=out, init_adapter=init_adapter)
    except (DatasetError, RecipeError) as e:
        registry.finish(run, "failed", error=str(e))
        fail(str(e))
    # Step 3: register (promotion is the gate's or the operator's call).
    version = registry.register(run, result.adapter, kind="reward" if stage == "reward" else "policy",
                                metrics=result.metrics)
    registry.finish(run, "trained", stages={stage: result.to_dict()},
                    **({"reward_version": version.name} if stage == "reward" else {"version": version.name}))
    _summary(f"{stage}: registered {version.name}", result.metrics)
    typer.echo(f"registered {version.name} at {version.path}" +
               ("" if stage == "reward" else f"; serve it with `kaizen model promote {version.name}`"))


def _store_rows(settings, kind: str, since: datetime | None, audience: str, scrub: bool) -> list[dict]:
    from feedback import FeedbackError, FeedbackStore

    try:
        with FeedbackStore.open(settings) as store:
            return store.examples(kind=kind, since=since, audience=audience, scrub=scrub)
    except FeedbackError as e:
        fail(str(e))


def _init_adapter(registry, init: str, base: str) -> Path | None:
    match init:
        case "base":
            return None
        case "current":
            return registry.serving_adapter(base)
        case name:
            return registry.version(name).path


def _reward_adapter(registry, name: str | None, base: str) -> Path:
    from training.registry import RegistryError

    if name:
        return registry.version(name).path
    latest = registry.latest_reward(base)
    if latest is None:
        raise RegistryError("no reward model for this base model yet: run `kaizen train reward` first")
    return latest.path


def _summary(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console(width=120).print(table)


@train_app.command("sft")
def train_sft(data: DataOpt = None, since: SinceOpt = None, store: StoreOpt = True, recipe: RecipeOpt = None,
              sets: SetOpt = None, init: InitOpt = "current", audience: AudienceOpt = "public",
              scrub: ScrubOpt = True, config: ConfigOpt = None) -> None:
    """LoRA SFT on liked answers (plus curated JSONL), loss on the answers only."""
    _stage("sft", kind="sft", data=data, since=since, store=store, recipe=recipe, sets=sets, init=init,
           audience=audience, scrub=scrub, config=config)


@train_app.command("reward")
def train_reward(data: DataOpt = None, since: SinceOpt = None, store: StoreOpt = True, recipe: RecipeOpt = None,
                 sets: SetOpt = None, audience: AudienceOpt = "public", scrub: ScrubOpt = True,
                 config: ConfigOpt = None) -> None:
    """A reward model (sequence-classification head + LoRA) on preference pairs; prints held-out accuracy."""
    _stage("reward", kind="pairs", data=data, since=since, store=store, recipe=recipe, sets=sets, init="base",
           audience=audience, scrub=scrub, config=config)


@train_app.command("rl")
def train_rl(data: DataOpt = None, since: SinceOpt = None, store: StoreOpt = True, recipe: RecipeOpt = None,
             sets: SetOpt = None, init: InitOpt = "current",
             reward: Annotated[str | None, typer.Option(help="reward version (default: the latest)")] = None,
             audience: AudienceOpt = "public", scrub: ScrubOpt = True, config: ConfigOpt = None) -> None:
    """PPO-style RL (clipped surrogate, KL to the reference) against the reward model, on the store's prompts."""
    _stage("rl", kind="prompts", data=data, since=since, store=store, recipe=recipe, sets=sets, init=init,
           audience=audience, scrub=scrub, config=config, reward=reward)


@train_app.command("dpo")
def train_dpo(data: DataOpt = None, since: SinceOpt = None, store: StoreOpt = True, recipe: RecipeOpt = None,
              sets: SetOpt = None, init: InitOpt = "current", audience: AudienceOpt = "public",
              scrub: ScrubOpt = True, config: ConfigOpt = None) -> None:
    """DPO on preference pairs."""
    _stage("dpo", kind="pairs", data=data, since=since, store=store, recipe=recipe, sets=sets, init=init,
           audience=audience, scrub=scrub, config=config)


@train_app.command("kto")
def train_kto(data: DataOpt = None, since: SinceOpt = None, store: StoreOpt = True, recipe: RecipeOpt = None,
              sets: SetOpt = None, init: InitOpt = "current", audience: AudienceOpt = "public",
              scrub: ScrubOpt = True, config: ConfigOpt = None) -> None:
    """KTO on unpaired 👍/👎 answers."""
    _stage("kto", kind="kto", data=data, since=since, store=store, recipe=recipe, sets=sets, init=init,
           audience=audience, scrub=scrub, config=config)


@train_app.command("nightly")
def train_nightly(
    recipes: Annotated[Path | None, typer.Option(help="folder of <stage>.toml recipes overriding the packaged ones",
                                                 file_okay=False)] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="stage.key=value override (repeatable)")] = None,
    config: ConfigOpt = None,
) -> None:
    """The nightly job: new feedback -> stages -> gate -> promote. Exit 0 (also when skipped), 1 failed, 75 busy."""
    from training.common import RecipeError
    from training.data import DatasetError, read_curated
    from training.nightly import Recipes, parse_sets, run_nightly

    settings = settings_or_exit(config)
    try:
        loaded = Recipes.load(recipes, parse_sets(sets or []))
        if loaded.nightly.curated_sft:  # bad data is the operator's to fix, not a failed (retried) run
            read_curated(loaded.nightly.curated_sft)
    except (RecipeError, DatasetError) as e:
        fail(str(e))
    result = run_nightly(settings, loaded)
    run = result.run
    if run is not None:
        metrics = {f"{stage}.{k}": v for stage, d in run.stages.items() for k, v in d["metrics"].items()
                   if k in ("train_loss", "steps", "examples", "prompts", "pairwise_accuracy", "reward", "runtime_s")}
        _summary(f"nightly {run.id}: {result.status}", {**metrics, **run.metrics})
    message = f"nightly: {result.status}: {result.reason}"
    if run is not None and run.version:
        message += f" (version {run.version})"
    typer.secho(message, fg=typer.colors.RED if result.exit_code else None, err=bool(result.exit_code))
    raise typer.Exit(result.exit_code)


# ---- kaizen model ----------------------------------------------------------------------------------------


def _registry(config: Path | None):
    from training.registry import Registry

    return Registry(settings_or_exit(config).data_dir)


def _window(w: dict[str, Any]) -> str:
    since = (w.get("since") or "start")[:16]
    until = (w.get("until") or "?")[:16]
    counts = " ".join(f"{k}={v}" for k, v in (w.get("counts") or {}).items())
    return f"{since} → {until}\n{counts}"


def _metrics(run) -> str:
    shown = []
    for key in ("win_rate", "pref_acc_candidate", "pref_acc_serving", "kto_agreement"):
        if run.metrics.get(key) is not None:
            shown.append(f"{key}={run.metrics[key]:.2f}")
    if run.metrics.get("regression_total"):
        shown.append(f"regression={run.metrics['regression_candidate']}/{run.metrics['regression_total']}")
    for stage, d in run.stages.items():
        if "pairwise_accuracy" in d.get("metrics", {}):
            shown.append(f"{stage}.acc={d['metrics']['pairwise_accuracy']:.2f}")
    return " ".join(shown) or "-"


@model_app.command("list")
def model_list(
    as_json: Annotated[bool, typer.Option("--json", help="print runs and versions as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Every training run (data window, stages, gate metrics, decision) and the version it registered."""
    from core.adapters import AdapterError

    registry = _registry(config)
    try:
        current = registry.current()
    except AdapterError as e:
        current = None
        typer.secho(f"warning: {e}", fg=typer.colors.YELLOW, err=True)
    runs = registry.runs()
    if as_json:
        import dataclasses

        typer.echo(json.dumps({"current": current.name if current else None,
                               "runs": [dataclasses.asdict(r) for r in runs],
                               "versions": [{**dataclasses.asdict(v), "path": str(v.path)}
                                            for v in registry.versions()]}, default=str))
        return
    table = Table(title=f"serving: {current.name if current else 'base model'}")
    for column in ("run", "status", "version", "data window", "stages", "metrics", "decision"):
        table.add_column(column, overflow="fold")
    for run in runs:
        version = run.version or run.reward_version or "-"
        if current is not None and run.version == current.name:
            version = f"* {version}"
        stages = ", ".join(run.stages) or ", ".join(run.window.get("stages") or []) or "-"
        why = run.decision.get("reason") or run.error or ""
        table.add_row(run.id, run.status, version, _window(run.window), stages, _metrics(run), why)
    Console(width=160).print(table)


VllmOpt = Annotated[bool, typer.Option("--vllm", help="also load it into the vLLM server at model.base_url now "
                                                    "(runtime LoRA API: VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)")]


@model_app.command("promote")
def model_promote(version: Annotated[str, typer.Argument(help="the version to serve, e.g. kaizen-0003")],
                  vllm: VllmOpt = False, config: ConfigOpt = None) -> None:
    """Serve VERSION from now on (no gate: the operator's call). Running servers switch within their poll."""
    from training.registry import Registry, RegistryError

    settings = settings_or_exit(config)
    try:
        promoted = Registry(settings.data_dir).promote(version, reason="manual (kaizen model promote)",
                                                       **_vllm(settings, vllm))
    except RegistryError as e:
        fail(str(e))
    typer.echo(f"serving {promoted.name} ({promoted.path})")


@model_app.command("rollback")
def model_rollback(vllm: VllmOpt = False, config: ConfigOpt = None) -> None:
    """Serve what was promoted before the current version (or the base model)."""
    from training.registry import Registry, RegistryError

    settings = settings_or_exit(config)
    try:
        previous = Registry(settings.data_dir).rollback(**_vllm(settings, vllm))
    except RegistryError as e:
        fail(str(e))
    typer.echo(f"serving {previous.name if previous else 'the base model'}")


def _vllm(settings, wanted: bool) -> dict[str, Any]:
    """With --vllm, the adapter is loaded into the model server first (serving is untouched if that fails)."""
    if not wanted:
        return {}
    if settings.model.backend != "openai":
        fail("--vllm needs model.backend = 'openai' and model.base_url pointing at the vLLM server")
    return {"vllm_url": settings.model.base_url, "vllm_api_key": settings.model.api_key.get_secret_value()}


# ---- canary ----------------------------------------------------------------------------------------------


def _rate_cell(t, interval) -> str:
    if not t.votes:
        return "no votes yet"
    return f"{t.rate:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"


@model_app.command("status")
def model_status(
    as_json: Annotated[bool, typer.Option("--json", help="print the numbers as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """The serving and canary adapters, the canary's share, live votes and like rate of each (95% Wilson
    intervals), P(canary better) and what happens next. The same numbers are on /metrics of `kaizen serve`."""
    from core.adapters import AdapterError
    from core.canary import wilson_interval
    from feedback import FeedbackError, FeedbackStore
    from training.registry import Registry, canary_rule, tally_votes

    settings = settings_or_exit(config)
    registry = Registry(settings.data_dir)
    rule = canary_rule(settings.canary)
    try:
        current = registry.current()
        with FeedbackStore.open(settings) as store:
            status = registry.canary_status(store.engine, rule)
            serving_name = current.name if current else ""
            serving_tally = status.decision.serving if status else tally_votes(store.engine, [serving_name])[
                serving_name]
    except (AdapterError, FeedbackError) as e:
        fail(str(e))
    rows = [("serving", serving_name or "base model", "100%" if status is None else f"{1 - status.canary.share:.0%}",
             serving_tally)]
    if status is not None:
        rows.append(("canary", status.canary.name, f"{status.canary.share:.0%}", status.decision.canary))
    if status is None:
        nxt = "no canary running" + ("" if settings.canary.enabled else
                                     " ([canary] enabled = false: the nightly job promotes outright)")
    elif status.decision.action == "continue":
        nxt = status.decision.reason
    else:
        how = "at the next check of `kaizen serve`" if settings.canary.enabled and settings.canary.check_s else \
            "with `kaizen model check`"
        nxt = f"{status.decision.action} {how}: {status.decision.reason}"
    if as_json:
        typer.echo(json.dumps({
            "serving": serving_name or None, "canary": status.canary.name if status else None,
            "share": status.canary.share if status else 0.0,
            "started_at": status.canary.started_at.isoformat() if status else None,
            "adapters": [{"role": role, "adapter": name, "likes": t.likes, "dislikes": t.dislikes, "votes": t.votes,
                          "like_rate": t.rate, "interval": wilson_interval(t.likes, t.votes)}
                         for role, name, _, t in rows],
            "p_better": status.decision.p_better if status else None,
            "next": status.decision.action if status else None, "reason": nxt}))
        return
    since = f"votes since {status.canary.started_at:%Y-%m-%d %H:%M} UTC" if status else "all votes"
    table = Table(title=f"adapters ({since})")
    for column in ("role", "adapter", "share", "👍", "👎", "like rate [95% interval]"):
        table.add_column(column, justify="right" if column in ("share", "👍", "👎") else "left")
    for role, name, share, t in rows:
        table.add_row(role, name, share, str(t.likes), str(t.dislikes),
                      _rate_cell(t, wilson_interval(t.likes, t.votes)))
    console = Console(width=140)
    console.print(table)
    if status is not None:
        console.print(f"P(canary better) = {status.decision.p_better:.3f}  (promote at >= {rule.promote_at} after "
                      f"{rule.min_votes} canary votes; roll back at <= {1 - rule.rollback_at:.3f} after "
                      f"{rule.min_rollback_votes}; default "
                      f"{rule.default} after {rule.max_days:g} days)")
    console.print(f"next: {nxt}", soft_wrap=True)


@model_app.command("canary")
def model_canary(version: Annotated[str, typer.Argument(help="the version to try, e.g. kaizen-0004")],
                 share: Annotated[float | None, typer.Option(help="share of conversations (default [canary] share)")
                                  ] = None,
                 vllm: VllmOpt = False, config: ConfigOpt = None) -> None:
    """Put VERSION on trial for a share of conversations next to the serving adapter; live votes decide."""
    from training.registry import Registry, RegistryError

    settings = settings_or_exit(config)
    share = settings.canary.share if share is None else share
    try:
        canary = Registry(settings.data_dir).start_canary(version, share=share, reason="manual (kaizen model canary)",
                                                          **_vllm(settings, vllm))
    except RegistryError as e:
        fail(str(e))
    typer.echo(f"canary {canary.name} answers {canary.share:.0%} of conversations next to "
               f"{canary.serving or 'the base model'}; see `kaizen model status`")


@model_app.command("check")
def model_check(vllm: VllmOpt = False, config: ConfigOpt = None) -> None:
    """Apply the canary rule to the live votes now (what `kaizen serve` does every [canary] check_s)."""
    from core.adapters import AdapterError
    from feedback import FeedbackError, FeedbackStore
    from training.registry import Registry, RegistryError, canary_rule

    settings = settings_or_exit(config)
    try:
        with FeedbackStore.open(settings) as store:
            status = Registry(settings.data_dir).check_canary(store.engine, canary_rule(settings.canary),
                                                              **_vllm(settings, vllm))
    except (AdapterError, FeedbackError, RegistryError) as e:
        fail(str(e))
    if status is None:
        typer.echo("no canary running")
        return
    d = status.decision
    verb = {"continue": "still running", "promote": "promoted", "rollback": "rolled back"}[d.action]
    typer.echo(f"canary {status.canary.name}: {verb}: {d.reason}")
