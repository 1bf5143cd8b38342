"""Answer-level evaluation: the set format, the match rule, and `kaizen eval answers` on the real default model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.answer_eval import AnswerEvalError, load_answer_set, states

KAIZEN = str(Path(sys.executable).with_name("kaizen"))


def test_states_matches_whole_words_case_and_spacing_ignored():
    assert states("The capital of France is  PARIS.", ["Paris"])
    assert states("It is 12.", ["twelve", "12"])
    assert not states("It is 120.", ["12"])  # a number inside a longer one is not the answer
    assert not states("Parisian food", ["Paris"])
    assert states("Error gw-7 found", ["gw-7"])


@pytest.mark.parametrize(("line", "error"), [
    ("not json", "not JSON"),
    ('{"expect": ["x"]}', 'non-empty "question"'),
    ('{"question": "q"}', '"expect" must be'),
    ('{"question": "q", "expect": []}', '"expect" must be'),
    ('{"question": "q", "expect": ["x"], "mode": "telepathy"}', "unknown mode 'telepathy'"),
    ('["q"]', "JSON object"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, error):
    path = tmp_path / "set.jsonl"
    path.write_text('{"question": "ok?", "expect": "yes"}\n' + line + "\n")
    with pytest.raises(AnswerEvalError, match=rf"set.jsonl:2: .*{error}"):
        load_answer_set(path)


def test_shipped_sets_load_and_are_big_enough():
    data = Path(__file__).resolve().parents[1] / "bench" / "data"
    general, docs = load_answer_set(data / "general.jsonl"), load_answer_set(data / "docs.jsonl")
    assert len(general) >= 60 and len(docs) >= 60
    # Every fact a docs question expects is stated in the articles (else no answer could be right).
    articles = " ".join(p.read_text() for p in (data / "docs").glob("*.md"))
    assert all(states(articles, item.expect) for item in docs)


def test_cli_prints_accuracy_and_misses(model_data_dir, default_model, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(r) for r in [
        {"question": "What is the capital of France?", "expect": ["Paris"], "mode": "chat"},
        {"question": "Reply with only the word yes.", "expect": ["zebra-42"], "mode": "chat"},
    ]) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    env["KAIZEN_DATA_DIR"] = str(model_data_dir)
    r = subprocess.run([KAIZEN, "eval", "answers", str(questions), "--preset", "precise", "--max-new-tokens", "24"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "precise" in r.stdout and "accuracy 0.500 ± 0.000 (1 run × 2 questions)" in r.stdout
    assert "line 2: Reply with only the word yes. — expected zebra-42" in r.stdout
    r = subprocess.run([KAIZEN, "eval", "answers", str(questions), "--preset", "spicy"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "unknown preset 'spicy'" in r.stderr
