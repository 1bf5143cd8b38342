"""Canary rollout: the decision rule on simulated populations voting through a real feedback store, the registry's
decisions in history.jsonl, and stickiness per thread through a real engine, model and adapter watcher."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from core.adapters import current_adapter, current_canary, watch_adapter
from core.canary import CanaryRule, Tally, assign_canary, decide, p_better, wilson_interval
from core.types import Message, Reply, Turn

RULE = CanaryRule()  # the shipped thresholds (min_votes 50)


async def _until(check, what: str, timeout_s: float = 60.0) -> None:
    """Wait for the adapter watcher (it polls every 0.05 s; a loaded machine can be slow)."""
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def lora_adapters(tiny_base, tmp_path_factory):
    """Two real LoRA adapters for the tiny model with random (non-zero) weights, so they change the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_base)
        peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        with torch.no_grad():
            for name, param in peft.named_parameters():
                if "lora_" in name:
                    param.mul_(50.0)
        folder = tmp_path_factory.mktemp(f"lora{seed}")
        peft.save_pretrained(folder)
        out.append(folder)
    return out


@pytest.fixture
def registry(tmp_path, lora_adapters):
    from training.registry import Registry

    reg = Registry(tmp_path)
    run = reg.new_run("sft", base_model="tiny")
    names = [reg.register(run, a).name for a in lora_adapters]
    reg.promote(names[0])
    return reg, names


@pytest.fixture
def store(tmp_path):
    from feedback import FeedbackStore

    s = FeedbackStore.from_url(f"sqlite:///{tmp_path / 'fb.db'}", spool_dir=tmp_path / "spool")
    yield s
    s.close()


def _simulate(store, *, serving: str, canary: str, rates: dict[str, float], share: float, n: int,
              rng: random.Random, start: int = 0) -> None:
    """`n` conversations, each assigned by the rollout's hash; one answer each, voted 👍 with its adapter's rate."""
    for i in range(start, start + n):
        turn = Turn(text=f"question {i}", platform="slack", workspace="T1", channel="C1", thread=f"t{i}", user="u")
        adapter = canary if assign_canary(turn.conversation_key, canary=canary, share=share) else serving
        reply = Reply(answer=f"answer {i}", turn=turn, prompt=[Message("user", turn.text)], model="tiny",
                      adapter=adapter)
        store.record(reply=reply)
        store.vote(interaction_id=reply.id, user=f"v{i % 7}", value=1 if rng.random() < rates[adapter] else -1)


def test_beta_posterior_and_intervals_are_exact():
    # P(Beta(8,4) > Beta(6,6)) = 0.8065 (exact sum; a 10^6-draw Monte Carlo gives 0.806).
    assert p_better(Tally(7, 3), Tally(5, 5)) == pytest.approx(0.80650, abs=1e-4)
    assert p_better(Tally(5, 5), Tally(7, 3)) == pytest.approx(1 - 0.80650, abs=1e-4)
    assert p_better(Tally(), Tally()) == pytest.approx(0.5)
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.3968, abs=1e-3) and high == pytest.approx(0.8922, abs=1e-3)
    assert wilson_interval(0, 0) is None
    # Few votes decide nothing, however lopsided; the deadline applies the default.
    assert decide(Tally(0, 5), Tally(50, 0), RULE).action == "continue"
    assert decide(Tally(3, 3), Tally(30, 30), RULE, age_days=8).action == "rollback"
    assert "default decision rollback" in decide(Tally(3, 3), Tally(30, 30), RULE, age_days=8).reason


def test_assignment_is_stable_per_conversation_and_close_to_the_share():
    keys = [("slack", "T1", "C1", f"t{i}") for i in range(4000)]
    first = [assign_canary(k, canary="kaizen-0002", share=0.2) for k in keys]
    assert first == [assign_canary(k, canary="kaizen-0002", share=0.2) for k in keys]
    assert 0.18 < sum(first) / len(first) < 0.22
    # A new canary gets a fresh sample of conversations.
    other = [assign_canary(k, canary="kaizen-0003", share=0.2) for k in keys]
    assert other != first
    with pytest.raises(ValueError, match="between 0 and 1"):
        assign_canary(keys[0], canary="x", share=1.5)


def test_a_better_canary_is_promoted_with_its_numbers_in_the_history(registry, store):
    reg, (serving, candidate) = registry
    reg.start_canary(candidate, share=0.3, reason="test")
    rates = {serving: 0.5, candidate: 0.8}
    rng = random.Random(7)
    promoted_after = None
    for batch in range(20):
        _simulate(store, serving=serving, canary=candidate, rates=rates, share=0.3, n=50, rng=rng, start=batch * 50)
        status = reg.check_canary(store.engine, RULE)
        if status.decision.action != "continue":
            assert status.decision.action == "promote"
            promoted_after = status.decision.canary.votes
            break
    assert promoted_after is not None and promoted_after >= RULE.min_votes
    assert current_adapter(reg.data_dir)[0] == candidate and current_canary(reg.data_dir) is None
    last = reg.history_entries()[-1]
    assert last["action"] == "promote" and last["version"] == candidate and last["serving"] == serving
    numbers = last["decision"]
    assert numbers["p_better"] >= RULE.promote_at and numbers["canary"]["votes"] == promoted_after
    assert numbers["numbers"]["min_votes"] == RULE.min_votes and len(numbers["canary"]["interval"]) == 2
    # The promotion went on the rollback stack: rolling back serves the old adapter again.
    assert reg.rollback().name == serving


def test_a_worse_canary_is_rolled_back_before_min_votes(registry, store):
    reg, (serving, candidate) = registry
    reg.start_canary(candidate, share=0.3)
    rates = {serving: 0.85, candidate: 0.2}
    rng = random.Random(3)
    status = None
    for batch in range(40):
        _simulate(store, serving=serving, canary=candidate, rates=rates, share=0.3, n=10, rng=rng, start=batch * 10)
        status = reg.check_canary(store.engine, RULE)
        if status.decision.action != "continue":
            break
    assert status.decision.action == "rollback"
    assert status.decision.canary.votes < RULE.min_votes  # strong evidence: it did not wait for min_votes
    assert current_adapter(reg.data_dir)[0] == serving and current_canary(reg.data_dir) is None
    last = reg.history_entries()[-1]
    assert last["action"] == "canary_rollback" and last["version"] == candidate
    assert 1 - last["decision"]["p_better"] >= RULE.rollback_at
    # A canary rollback does not pop the promotion stack: an operator's rollback still goes to the base model.
    assert reg.rollback() is None


def test_an_undecided_canary_gets_the_default_after_max_days(registry, store):
    reg, (serving, candidate) = registry
    reg.start_canary(candidate, share=0.3)
    _simulate(store, serving=serving, canary=candidate, rates={serving: 0.6, candidate: 0.6}, share=0.3, n=20,
              rng=random.Random(1))
    assert reg.check_canary(store.engine, RULE).decision.action == "continue"
    later = datetime.now(UTC) + timedelta(days=RULE.max_days + 1)
    promote_default = CanaryRule(default="promote")
    status = reg.check_canary(store.engine, promote_default, now=later)
    assert status.decision.action == "promote" and "default decision promote" in status.decision.reason
    assert current_adapter(reg.data_dir)[0] == candidate


async def test_each_thread_keeps_its_adapter_through_the_engine(tmp_path, tiny_base, registry):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.config import Settings
    from core.engine import Engine
    from core.models import TransformersChatModel

    reg, (serving, candidate) = registry
    model = TransformersChatModel(AutoModelForCausalLM.from_pretrained(tiny_base).eval(),
                                  AutoTokenizer.from_pretrained(tiny_base), name="tiny", context_window=512)
    engine = Engine(Settings(data_dir=tmp_path), model)
    watcher = asyncio.create_task(watch_adapter(reg.data_dir, model, interval_s=0.05, router=engine.canary))
    try:
        await _until(lambda: model.adapter == serving, "the serving adapter")
        reg.start_canary(candidate, share=0.5)
        await _until(lambda: engine.canary.canary == candidate, "the canary")
        assert model.adapter == serving
        decoding = {"strategy": "greedy", "max_new_tokens": 3}
        seen: dict[str, set[str]] = {}
        for turn_no in range(2):
            for t in range(8):
                turn = Turn(text=f"hello {turn_no}", platform="slack", channel="C1", thread=f"th{t}", mode="chat",
                            decoding=decoding)
                reply = await engine.answer(turn)
                seen.setdefault(turn.thread, set()).add(reply.adapter)
        assert all(len(adapters) == 1 for adapters in seen.values()), seen  # sticky: no thread switched
        assert {a for s in seen.values() for a in s} == {serving, candidate}  # both arms answered
        # The canary's answers really come from its weights (the request named it).
        canary_thread = next(t for t, s in seen.items() if s == {candidate})
        turn = Turn(text="hello 0", platform="slack", channel="C1", thread=canary_thread, mode="chat",
                    decoding=decoding, history=())
        via_engine = await engine.answer(turn)
        msgs = [m.as_dict() for m in via_engine.prompt]
        from core.decoding import DecodingConfig

        (direct,) = await model.generate(msgs, DecodingConfig(**via_engine.decoding), adapter=candidate)
        assert via_engine.answer == direct.text
        # The rollout ends: everyone is answered by the serving adapter again.
        reg.decide_canary(decide(Tally(0, 40), Tally(40, 0), RULE))
        await _until(lambda: not engine.canary.canary, "the end of the canary")
        assert (await engine.answer(turn)).adapter == serving
        assert json.loads(reg.history.read_text().splitlines()[-1])["action"] == "canary_rollback"
    finally:
        watcher.cancel()
        model.close()


async def test_model_status_and_metrics_show_the_live_numbers(isolated_env, monkeypatch, lora_adapters):
    import httpx
    from typer.testing import CliRunner

    from bot.cli import app
    from bot.observability import HealthServer, Metrics, _live_once
    from core.config import load_settings
    from feedback import FeedbackStore
    from training.registry import Registry

    state = isolated_env / "state"
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(state))
    monkeypatch.setenv("KAIZEN_CANARY__ENABLED", "true")
    reg = Registry(state)
    run = reg.new_run("sft", base_model="tiny")
    serving, candidate = (reg.register(run, a).name for a in lora_adapters)
    reg.promote(serving)
    runner = CliRunner()
    out = runner.invoke(app, ["model", "canary", candidate, "--share", "0.3"])
    assert out.exit_code == 0 and f"canary {candidate} answers 30%" in out.output, out.output
    settings = load_settings()
    with FeedbackStore.open(settings) as store:
        _simulate(store, serving=serving, canary=candidate, rates={serving: 0.5, candidate: 0.7}, share=0.3,
                  n=40, rng=random.Random(5))
        status = json.loads(runner.invoke(app, ["model", "status", "--json"]).output)
        assert status["serving"] == serving and status["canary"] == candidate and status["share"] == 0.3
        arms = {a["role"]: a for a in status["adapters"]}
        assert arms["canary"]["votes"] + arms["serving"]["votes"] == 40
        low, high = arms["canary"]["interval"]
        assert low <= arms["canary"]["like_rate"] <= high and status["next"] == "continue"
        assert f"/{RULE.min_votes} on the canary" in status["reason"]
        table = runner.invoke(app, ["model", "status"]).output
        assert "P(canary better)" in table and candidate in table and "next: waiting for votes" in table

        metrics = Metrics()
        assert _live_once(settings, store, metrics) is None
        # The canary's answers are counted, but the served adapter stays the "current" one.
        from core.canary import CanaryRouter

        metrics.router = CanaryRouter()
        metrics.router.set(candidate, 0.3)
        metrics.set_adapter(serving)
        metrics.observe_reply(Reply(answer="a", turn=Turn(text="q"), adapter=candidate))
        health = HealthServer("127.0.0.1", 0, metrics)
        await health.start()
        try:
            async with httpx.AsyncClient() as client:
                body = (await client.get(f"http://127.0.0.1:{health.port}/metrics")).text
        finally:
            await health.stop()
        up = arms["canary"]["likes"]
        assert f'kaizen_adapter_votes{{adapter="{candidate}",role="canary",value="up"}} {up:.1f}' in body
        assert f'kaizen_canary_share{{adapter="{candidate}"}} 0.3' in body
        assert f'kaizen_adapter_like_rate_lower{{adapter="{serving}",role="serving"}}' in body
        assert "kaizen_canary_p_better" in body
        assert f'kaizen_adapter_info{{adapter="{serving}"}} 1.0' in body
        assert f'kaizen_adapter_info{{adapter="{candidate}"}}' not in body

        # A decisive population: `kaizen model check` rolls it back and says why; status shows no canary.
        _simulate(store, serving=serving, canary=candidate, rates={serving: 0.95, candidate: 0.05}, share=0.3,
                  n=150, rng=random.Random(6), start=40)
        checked = runner.invoke(app, ["model", "check"])
        assert checked.exit_code == 0 and f"canary {candidate}: rolled back: reliably worse" in checked.output
        assert "no canary running" in runner.invoke(app, ["model", "status"]).output
        assert _live_once(settings, store, metrics) is None
        assert "kaizen_canary_share{" not in metrics.render().decode()  # no stale canary series


async def test_canary_through_a_vllm_style_server_names_the_adapter_per_request(tmp_path, registry):
    from aiohttp import web

    from core.config import ModelSettings, Settings
    from core.engine import Engine
    from core.models import OpenAIChatModel

    reg, (serving, candidate) = registry
    asked: list[str] = []

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append(body["model"])
        return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                       "content": f"from {body['model']}"}}],
                                  "usage": {"prompt_tokens": 5, "completion_tokens": 2}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
    model = OpenAIChatModel(ModelSettings(backend="openai", base_url=url, name="base"))
    engine = Engine(Settings(data_dir=tmp_path, tools={"native": True}), model)
    reg.start_canary(candidate, share=0.5)
    watcher = asyncio.create_task(watch_adapter(reg.data_dir, model, interval_s=0.05, router=engine.canary))
    try:
        await _until(lambda: engine.canary.canary == candidate and model.adapter == serving, "serving and canary")
        replies = [await engine.answer(Turn(text="hi", platform="discord", channel="C", thread=f"x{t}", mode="chat"))
                   for t in range(12)]
        for reply in replies:
            assert reply.answer == f"from {reply.adapter}"  # the request named the conversation's adapter
            routed = assign_canary(reply.turn.conversation_key, canary=candidate, share=0.5)
            assert reply.adapter == (candidate if routed else serving)
        assert set(asked) == {serving, candidate}
        # The agent in a canary thread: every request names the canary (native tool calls, which this backend
        # cannot send to an adapter, give way to the text protocol).
        thread = next(r.turn.thread for r in replies if r.adapter == candidate)
        asked.clear()
        agent = await engine.answer(Turn(text="What is 17 * 23?", platform="discord", channel="C", thread=thread,
                                         mode="agent"))
        assert agent.adapter == candidate and asked and set(asked) == {candidate}
    finally:
        watcher.cancel()
        await model.aclose()
        await runner.cleanup()


def test_nightly_starts_a_canary_instead_of_promoting_when_enabled(isolated_env, tiny_base, monkeypatch, fill_store):
    from training_helpers import tiny_overrides

    from core.config import load_settings
    from feedback import FeedbackStore
    from training.nightly import Recipes, run_nightly
    from training.registry import Registry

    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env / "state"))
    monkeypatch.setenv("KAIZEN_MODEL__NAME", tiny_base)
    monkeypatch.setenv("KAIZEN_CANARY__ENABLED", "true")
    monkeypatch.setenv("KAIZEN_CANARY__SHARE", "0.25")
    settings = load_settings()
    with FeedbackStore.open(settings) as store:
        fill_store(store, range(6))
    no_regression = isolated_env / "regression.jsonl"
    no_regression.write_text("")  # the gate's own tests cover it; here only its verdict matters
    recipes = Recipes.load(overrides={"sft": tiny_overrides(), "nightly": {
        "min_sft": 4, "min_pairs": 4, "min_kto": 4, "pipeline": ["sft"], "eval_fraction": 0.2,
        "gate": {"margin": -1.0, "max_new_tokens": 4, "regression_max_new_tokens": 4,
                 "regression_file": str(no_regression)}}})
    result = run_nightly(settings, recipes, progress=False)
    assert result.status == "canary" and result.exit_code == 0, result.reason
    assert "on trial for 25% of conversations" in result.reason
    canary = current_canary(settings.data_dir)
    assert canary.name == result.run.version and canary.share == 0.25 and canary.serving == ""
    assert current_adapter(settings.data_dir) is None  # nothing promoted: the votes decide
    entry = Registry(settings.data_dir).history_entries()[-1]
    assert entry["action"] == "canary" and entry["version"] == canary.name and entry["share"] == 0.25
