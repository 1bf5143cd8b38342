"""The engine on the real default model (SmolLM2-135M-Instruct), loaded once for the session."""

import asyncio
import time

import pytest

from core.config import load_settings
from core.engine import EMPTY_MESSAGE_REPLY, Engine
from core.types import Turn


@pytest.fixture
def engine(default_model, isolated_env):
    recorded = []

    async def on_reply(reply):
        recorded.append(reply)

    settings = load_settings(
        data_dir=isolated_env,
        # These tests are about chat: the shipped default mode is `auto`, which sends arithmetic to the agent.
        default={"mode": "chat"},
        channels={"terse": {"preset": "precise", "system_prompt": "You are a terse assistant."}},
    )
    e = Engine(settings, default_model, on_reply=on_reply)
    e.recorded = recorded
    return e


async def test_capital_of_france(engine):
    streamed: list[str] = []
    reply = await engine.answer(Turn(text="What is the capital of France?", preset="precise"),
                                on_text=streamed.append)
    assert "Paris" in reply.answer
    assert streamed and streamed[-1] == reply.answer
    assert reply.model == "SmolLM2-135M-Instruct" and reply.decoding["strategy"] == "greedy"
    assert reply.prompt[-1].content == "What is the capital of France?"
    assert reply.prompt_tokens == engine.model.count_tokens([m.as_dict() for m in reply.prompt])
    assert 0 < reply.completion_tokens <= 256 and reply.latency_ms > 0 and reply.first_token_ms is not None
    assert engine.recorded == [reply]  # recorded before answer() returned


async def test_channel_profile_and_history(engine):
    t = Turn(text="What is the capital of France?", channel="C9", channel_name="terse", thread="t1")
    first = await engine.answer(t)
    assert first.preset == "precise" and first.prompt[0].content == "You are a terse assistant."
    second = await engine.answer(Turn(text="And of Italy?", channel="C9", channel_name="terse", thread="t1"))
    assert [m.content for m in second.prompt[1:3]] == ["What is the capital of France?", first.answer]
    other_thread = await engine.answer(Turn(text="Hi", channel="C9", channel_name="terse", thread="t2",
                                            decoding={"max_new_tokens": 8}))
    assert len(other_thread.prompt) == 2


async def test_empty_message_needs_no_model(engine):
    reply = await engine.answer(Turn(text="   \n "))
    assert reply.answer == EMPTY_MESSAGE_REPLY and not reply.called_model and not reply.prompt


async def test_unknown_preset(engine):
    with pytest.raises(ValueError, match="valid presets"):
        await engine.answer(Turn(text="hi", preset="spicy"))


async def test_input_longer_than_context_is_trimmed(engine, monkeypatch):
    monkeypatch.setattr(engine.model, "context_window", 512)
    reply = await engine.answer(Turn(text="Summarise: " + "the cat sat on the mat. " * 2000, preset="precise",
                                     decoding={"max_new_tokens": 16}))
    assert reply.prompt_tokens <= 512 - 16
    assert any(s.kind == "trim" and s.detail["what"] == "message" for s in reply.trace)
    assert reply.answer


async def test_concurrent_conversations_are_batched_and_loop_stays_free(engine):
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    questions = ["What is the capital of France?", "Name a fruit.", "What is 2+2?", "Say hello.",
                 "What color is the sky?", "Name a planet.", "What is water?", "Who are you?"]
    t0 = time.perf_counter()
    replies = await asyncio.gather(*[
        engine.answer(Turn(text=q, thread=f"t{i}", preset="precise", decoding={"max_new_tokens": 24}))
        for i, q in enumerate(questions)])
    elapsed = time.perf_counter() - t0
    stop.set()
    await tick_task
    batch_sizes = [next(s.detail["batch_size"] for s in r.trace if s.kind == "generate") for r in replies]
    assert max(batch_sizes) >= 4, batch_sizes  # they shared generate calls
    assert "Paris" in replies[0].answer
    assert ticks > elapsed / 0.01 * 0.3  # the event loop kept running while the model worked


async def test_candidates_and_another(engine):
    turn = Turn(text="Suggest a name for a cat.", thread="cands", decoding={"max_new_tokens": 16})
    cands = await engine.candidates(turn, n=2)
    assert len(cands) == 2 and cands[1].sibling_of == cands[0].id
    assert cands[0].prompt == cands[1].prompt and cands[0].decoding["num_return_sequences"] == 2
    first = await engine.answer(Turn(text="What is the capital of France?", preset="precise", thread="x"))
    alt = await engine.another(first)
    assert alt.sibling_of == first.id and alt.prompt == first.prompt
    assert alt.decoding["strategy"] == "sample" and alt.id != first.id


async def test_beam_and_sampling_seeded(engine):
    beam = await engine.answer(Turn(text="What is the capital of France?", preset="beam", thread="b",
                                    decoding={"max_new_tokens": 20}))
    assert "Paris" in beam.answer
    a = await engine.answer(Turn(text="Tell me a word.", preset="creative", thread="s1",
                                 decoding={"seed": 42, "max_new_tokens": 12}))
    b = await engine.answer(Turn(text="Tell me a word.", preset="creative", thread="s2",
                                 decoding={"seed": 42, "max_new_tokens": 12}))
    assert a.answer == b.answer  # same seed, same sample


async def test_chain_of_thought_keeps_reasoning_out(default_model, isolated_env):
    settings = load_settings(data_dir=isolated_env, default={"chain_of_thought": True, "preset": "precise",
                                                                   "mode": "chat"})
    engine = Engine(settings, default_model)
    streamed: list[str] = []
    reply = await engine.answer(Turn(text="What is 2 + 3?", decoding={"max_new_tokens": 60}),
                                on_text=streamed.append)
    assert not streamed  # reasoning must not leak through streaming
    assert "Reasoning:" not in reply.answer
    assert "Reasoning:" in reply.prompt[0].content


async def test_lora_adapter_switch_without_reload(default_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.decoding import BUILTIN_PRESETS

    # A real LoRA adapter with non-zero weights, saved the way training will save it.
    base = AutoModelForCausalLM.from_pretrained(default_model.model.name_or_path)
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    d = BUILTIN_PRESETS["precise"].model_copy(update={"max_new_tokens": 12})
    [before] = await default_model.generate(msgs, d)
    inner = default_model.model
    await default_model.set_adapter("test-v1", str(tmp_path / "adapter"))
    try:
        [with_adapter] = await default_model.generate(msgs, d)
        assert with_adapter.text != before.text
        assert default_model.adapter == "test-v1"
        await default_model.set_adapter("")
        [after] = await default_model.generate(msgs, d)
        assert after.text == before.text
        assert default_model.model.get_base_model() is inner  # the base model was wrapped, never reloaded
        [explicit] = await default_model.generate(msgs, d, adapter="test-v1")
        assert explicit.text == with_adapter.text
        with pytest.raises(ValueError, match="unknown adapter"):
            await default_model.set_adapter("nope")
    finally:
        await default_model.set_adapter("")
