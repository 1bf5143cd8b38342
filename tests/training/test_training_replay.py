"""Replay against forgetting keeps only answers worth training on: the serving policy's own answers that ended by
themselves and state their fact in the first sentence (training/replay.py)."""

from __future__ import annotations

import json

from training_helpers import SYSTEM

from training.replay import replay_rows


def test_replay_leaves_out_an_answer_that_rambles_before_its_fact(default_model_path, tmp_path):
    """The base model's answer about a spider's legs opens with "a classic example of a mathematical concept called
    "Silk Road"" and names 8 legs at the end; trained on, it taught a dog's answer the same opening and "30 legs"."""
    questions = [{"question": "How many legs does a spider have?", "expect": ["8", "eight"]},
                 {"question": "How many sides does a triangle have?", "expect": ["3", "three"]},
                 {"question": "What is the capital of Italy?", "expect": ["Rome"]},
                 {"question": "What is the capital of Italy?", "expect": ["Milan"]}]  # never said: left out
    file = tmp_path / "replay.jsonl"
    file.write_text("".join(json.dumps(q) + "\n" for q in questions))
    rows = replay_rows(base_model=str(default_model_path), serving=None, count=4, system_prompt=SYSTEM, file=file,
                       max_new_tokens=96)
    asked = [r["messages"][1]["content"] for r in rows]
    assert asked == ["How many sides does a triangle have?", "What is the capital of Italy?"], rows
    assert rows[1]["messages"] == [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": "What is the capital of Italy?"},
                                   {"role": "assistant", "content": "The capital of Italy is Rome."}]
    assert rows[0]["messages"][2]["content"].startswith("The answer to this classic problem is 3.")
