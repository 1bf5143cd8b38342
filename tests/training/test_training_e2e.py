"""One nightly cycle on the real default SmolLM2-135M (a handful of steps), ending with the promoted adapter
answering through `kaizen ask`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli_train import model_app
from core.adapters import current_adapter
from core.config import load_settings
from feedback import FeedbackStore
from training.nightly import Recipes, run_nightly

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.model


def test_nightly_on_the_default_model_promotes_an_adapter_that_kaizen_ask_serves(
        isolated_env, default_model_path, monkeypatch, fill_store):
    state = isolated_env / "state"
    # The converted default model is shared, not converted again for this data dir.
    (state / "models").mkdir(parents=True)
    (state / "models" / default_model_path.name).symlink_to(default_model_path, target_is_directory=True)
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(state))
    settings = load_settings()
    with FeedbackStore.open(settings) as store:
        fill_store(store, range(6))
    few = {"max_steps": 2, "batch_size": 2, "max_length": 192, "logging_steps": 1}
    recipes = Recipes.load(overrides={
        "sft": few, "reward": few,
        "rl": {**few, "max_steps": 1, "num_generations": 2, "max_completion_length": 8},
        "nightly": {"min_sft": 4, "min_pairs": 4, "min_kto": 4, "replay": 4,
                    # One or two steps cannot make a better model; the gate's judgement is tested on the tiny
                    # model. Here: it measures everything, and must still see every must-still-answer question.
                    "gate": {"margin": -1.0, "max_new_tokens": 16, "regression_max_new_tokens": 48}},
    })

    result = run_nightly(settings, recipes, progress=False)

    assert result.status == "promoted", result.reason
    run = result.run
    assert list(run.stages) == ["sft", "reward", "rl"] and run.version == "kaizen-0001"
    assert run.metrics["regression_total"] == 20 and run.metrics["regression_lost"] == []
    assert 0 <= run.metrics["win_rate"] <= 1
    name, path = current_adapter(state)
    assert name == "kaizen-0001" and (path / "adapter_model.safetensors").is_file()
    assert "* kaizen-0001" in CliRunner().invoke(model_app, ["list"]).output

    # A fresh `kaizen ask` process picks up the promoted adapter and records that it answered.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")} | {
        "KAIZEN_DATA_DIR": str(state),
        # A short greedy preset: on a CPU every token of a 256-token answer costs time and proves nothing more.
        "KAIZEN_PRESETS": json.dumps({"short": {"strategy": "greedy", "max_new_tokens": 24}}),
    }
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "kaizen"), "ask", "--json", "--preset", "short",
                           "What is the capital of France?"],
                          cwd=isolated_env, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reply = json.loads(done.stdout)
    assert reply["adapter"] == "kaizen-0001" and reply["answer"].strip()
