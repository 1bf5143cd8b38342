"""Plain helpers shared by the training tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

SYSTEM = "You are Kaizen, a helpful AI assistant."
QUESTIONS = [
    "How do I reset my VPN token?", "Where is the expense policy?", "How do I book a meeting room?",
    "Who approves vacation requests?", "How do I get a new laptop?", "What is the wifi password policy?",
    "How do I join the on-call rota?", "Where are the brand guidelines?", "How do I request access to Jira?",
    "When is payday?", "How do I report a phishing mail?", "Where do I find the org chart?",
]


def short_answer(i: int) -> str:
    return f"Open the portal, section {i}. [1]"


def long_answer(i: int) -> str:
    return f"Well, there are many things to consider here and it depends a lot on the situation, item {i}."


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def tiny_overrides(**extra) -> dict:
    """Recipe values that make every stage take a couple of steps on the tiny model."""
    return {"lora_r": 4, "lora_alpha": 8, "learning_rate": 5e-3, "max_steps": 2, "batch_size": 2, "max_length": 128,
            "logging_steps": 1, **extra}


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))
