"""`kaizen train ...` / `kaizen model ...` as bot/cli.py mounts them, on the tiny model."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from bot.cli_train import model_app, train_app
from training.registry import Registry

app = typer.Typer()
app.add_typer(train_app, name="train")
app.add_typer(model_app, name="model")
runner = CliRunner()
TINY = ["--set", "max_steps=2", "--set", "batch_size=2", "--set", "lora_r=4", "--set", "max_length=128"]


@pytest.fixture
def cli_env(isolated_env, tiny_base, monkeypatch):
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env / "state"))
    monkeypatch.setenv("KAIZEN_MODEL__NAME", tiny_base)
    return isolated_env


def test_manual_stages_register_versions_without_promoting(cli_env, datasets):
    pairs = cli_env / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in datasets["pairs"]))

    result = runner.invoke(app, ["train", "dpo", "--no-store", "--data", str(pairs), *TINY])
    assert result.exit_code == 0, result.output
    assert "registered kaizen-0001" in result.output and "kaizen model promote kaizen-0001" in result.output
    registry = Registry(cli_env / "state")
    (run,) = registry.runs()
    assert run.kind == "dpo" and run.status == "trained" and run.version == "kaizen-0001"
    assert run.window["files"] == [str(pairs)] and run.config["dpo"]["max_steps"] == 2
    assert registry.current() is None  # a manual stage never changes what is served

    # RL needs a reward model first, and says so.
    rl = runner.invoke(app, ["train", "rl", "--no-store", "--data", str(pairs), *TINY, "--set", "num_generations=2"])
    assert rl.exit_code == 2 and "run `kaizen train reward` first" in rl.output


def test_bad_input_on_the_command_line_is_one_clear_error(cli_env, datasets):
    same = cli_env / "same.jsonl"
    same.write_text("".join(json.dumps({**r, "rejected": r["chosen"]}) + "\n" for r in datasets["pairs"][:3]))
    result = runner.invoke(app, ["train", "reward", "--no-store", "--data", str(same), *TINY])
    assert result.exit_code == 2
    assert "no usable pairs examples: 0 pairs example(s) (3 skipped: 3 chosen equals rejected)" in result.output
    registry = Registry(cli_env / "state")
    assert registry.versions() == [] and registry.runs()[0].status == "failed"

    empty = runner.invoke(app, ["train", "sft", *TINY])
    assert empty.exit_code == 2 and "no sft examples: the feedback store has none" in empty.output
    typo = runner.invoke(app, ["train", "sft", "--set", "lora_rank=3"])
    assert typo.exit_code == 2 and "unknown key(s) lora_rank" in typo.output
    nothing = runner.invoke(app, ["train", "nightly"])
    assert nothing.exit_code == 0 and "nightly: skipped: too little new feedback" in nothing.output
    unknown = runner.invoke(app, ["model", "promote", "kaizen-0042"])
    assert unknown.exit_code == 2 and "unknown version 'kaizen-0042'" in unknown.output
