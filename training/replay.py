"""Replay: the serving model's own good answers to general prompts, mixed into each night's SFT data.

Training on a night's feedback alone pulls the policy toward a few dozen answers and away from everything else it
could do (forgetting). Mixing in what the serving policy already answers well on general prompts anchors it there
(self-distillation, "experience replay"): the loss on those rows is near zero unless the new data moves them.
The prompts come from `training/recipes/replay.jsonl` ({"question", "expect": [...]} rows, the same form as the
must-still-answer set but different questions, so the gate still judges on questions no stage trained on). An
answer is kept only when it ended by itself within the token budget and its first sentence states an expected fact
(if any): a replayed answer that rambles before its fact teaches the ramble. 2026-12-06, SFT (sft.toml) on the base
model's replay answers alone, seeds 42 and 7: kept wherever they state the fact (27 rows, the spider's "The answer
to this question is a classic example of a mathematical concept called "Silk Road" ... a spider has 8 legs" among
them), both lost a dog's legs to the same opening ("... a classic example of a mathematical concept. In the context
of the human body ..."), 18 of 20 must-still-answer facts kept; kept only where the first sentence states it (24
rows), both kept the dog, 19 of 20 (the largest mammal, a near tie, flipped to the elephant in all four).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from training.common import RECIPES_DIR

__all__ = ["DEFAULT_REPLAY", "replay_rows"]

logger = logging.getLogger(__name__)

DEFAULT_REPLAY = RECIPES_DIR / "replay.jsonl"


def replay_rows(*, base_model: str, serving: Path | None, count: int, system_prompt: str = "",
                file: str | Path = "", max_new_tokens: int = 128, batch_size: int = 8) -> list[dict[str, Any]]:
    """Up to `count` SFT rows ({"messages": [...]}) answered greedily by the serving policy (base + `serving`
    adapter, or the base model); [] when count is 0. Raises DatasetError for a malformed prompts file."""
    if count <= 0:
        return []
    from training.facts import states_first
    from training.gate import load_regression
    from training.policies import Policies

    rows = load_regression(file or DEFAULT_REPLAY)[:count]
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    prompts = [system + [{"role": "user", "content": r["question"]}] for r in rows]
    # The gate's loading and batched greedy decoding, with the serving adapter in the "candidate" slot.
    policies = Policies(base_model, serving, None, batch_size)
    answers = policies.generate_ended("candidate", prompts, max_new_tokens)
    kept = [p + [{"role": "assistant", "content": text}]
            for r, p, (text, ended) in zip(rows, prompts, answers, strict=True) if ended and states_first(r, text)]
    logger.warning("replay: %d of %d general prompts answered well (ended, fact in the first sentence) by the "
                   "serving policy", len(kept), len(rows))
    return [{"messages": messages} for messages in kept]
