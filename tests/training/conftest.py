"""Fixtures for the training tests: a tiny Llama built here (seconds on CPU) with the default model's tokenizer,
datasets with a consistent preference, and a feedback store filled through its public API."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# This folder is named like the `training` package; the repository root must win on sys.path.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.types import Message, Reply, Turn  # noqa: E402

sys.path.insert(1, str(Path(__file__).resolve().parent))
from training_helpers import (  # noqa: E402
    QUESTIONS,
    SYSTEM,
    assistant,
    long_answer,
    prompt,
    short_answer,
)


@pytest.fixture(scope="session")
def default_model_path(model_data_dir) -> Path:
    """The converted default SmolLM2-135M-Instruct folder (converted once, kept between runs)."""
    from core.config import ModelSettings
    from core.models import resolve_source

    return Path(resolve_source(ModelSettings(), model_data_dir)[0])


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, default_model_path) -> str:
    """A 2-layer Llama (hidden 32) with SmolLM2's tokenizer and chat template, saved like any base model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def datasets() -> dict[str, list[dict]]:
    """sft / pairs / kto / prompts rows where the short, cited answer is always the liked one."""
    n = len(QUESTIONS)
    return {
        "sft": [{"messages": prompt(i) + assistant(short_answer(i))} for i in range(n)],
        "pairs": [{"prompt": prompt(i), "chosen": assistant(short_answer(i)), "rejected": assistant(long_answer(i))}
                  for i in range(n)],
        "kto": [row for i in range(n) for row in (
            {"prompt": prompt(i), "completion": assistant(short_answer(i)), "label": True},
            {"prompt": prompt(i), "completion": assistant(long_answer(i)), "label": False})],
        "prompts": [{"prompt": prompt(i)} for i in range(n)],
    }


FillStore = Callable[..., list[str]]


@pytest.fixture
def fill_store() -> FillStore:
    """Record, for each question, a short cited answer (👍) and a long one (👎, its sibling) through the store."""

    def fill(store, questions: range, *, voter: str = "u1") -> list[str]:
        ids = []
        for i in questions:
            msgs = [Message("system", SYSTEM), Message("user", QUESTIONS[i % len(QUESTIONS)] + f" (#{i})")]
            turn = Turn(text=msgs[-1].content, platform="slack", workspace="T1", channel="C1", thread=f"t{i}",
                        user="asker")
            good = Reply(answer=short_answer(i), turn=turn, prompt=msgs, model="tiny")
            bad = Reply(answer=long_answer(i), turn=turn, prompt=msgs, model="tiny", sibling_of=good.id)
            for reply, value in ((good, 1), (bad, -1)):
                store.record(reply=reply)
                store.vote(interaction_id=reply.id, user=voter, value=value)
                ids.append(reply.id)
        return ids

    return fill
