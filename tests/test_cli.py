"""The `kaizen` console script, run as a user runs it (a real subprocess, the real default model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KAIZEN = str(Path(sys.executable).with_name("kaizen"))


def run(args, env_extra=None, cwd=None, stdin=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    env.update(env_extra or {})
    return subprocess.run([KAIZEN, *args], capture_output=True, text=True, env=env, cwd=cwd, input=stdin,
                          timeout=timeout)


@pytest.fixture
def env(model_data_dir, default_model):  # default_model: the conversion has happened once
    return {"KAIZEN_DATA_DIR": str(model_data_dir)}


def test_ask_capital_of_france(env, tmp_path):
    r = run(["ask", "What is the capital of France?", "--preset", "precise"], env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_ask_json(env, tmp_path):
    r = run(["ask", "What is the capital of France?", "--preset", "precise", "--json"], env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    assert {"answer", "sources", "id", "model", "decoding", "trace", "prompt"} <= set(reply)
    assert "Paris" in reply["answer"] and reply["decoding"]["strategy"] == "greedy" and reply["sources"] == []


def test_bad_input_gives_clear_errors(env, tmp_path):
    r = run(["ask", "hi", "--preset", "spicy"], env, cwd=tmp_path)
    assert r.returncode == 2 and "valid presets: balanced, beam, creative, precise" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "kaizen.toml").write_text('[channels.eng]\n[model]\ndtype = "fp8"\n')
    r = run(["ask", "hi"], env, cwd=tmp_path)
    assert r.returncode == 2 and "model.dtype" in r.stderr and "'bfloat16'" in r.stderr
    (tmp_path / "kaizen.toml").write_text("[channels.eng]\n")
    r = run(["ask", "hi", "--channel", "sales"], env, cwd=tmp_path)
    assert r.returncode == 2 and "valid profiles: eng" in r.stderr
    r = run(["ask", "  "], env, cwd=tmp_path)
    assert r.returncode == 0 and "Ask me a question" in r.stdout


def test_missing_model_is_explained(tmp_path):
    r = run(["ask", "hi"], {"KAIZEN_DATA_DIR": str(tmp_path), "KAIZEN_MODEL__NAME": str(tmp_path / "no-model")},
            cwd=tmp_path)
    assert r.returncode == 2 and "could not load model" in r.stderr and "KAIZEN_MODEL__NAME" in r.stderr


def test_chat_session(env, tmp_path):
    script = "/preset precise\nWhat is the capital of France?\n/trace\n/preset nope\n/quit\n"
    r = run(["chat"], env, cwd=tmp_path, stdin=script)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "preset: precise" in out and "Paris" in out
    assert "prompt the model saw" in out and "generate" in out
    assert "unknown preset 'nope'" in out


def test_serve_without_tokens_opens_chat(env, tmp_path):
    r = run(["serve"], env, cwd=tmp_path, stdin="/quit\n")
    assert r.returncode == 0 and "opening the console chat" in r.stderr and "Kaizen" in r.stdout
