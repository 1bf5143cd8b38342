"""Operator mistakes, each as a user makes it, through `kaizen`'s entry point (`bot.cli.main`): exit code 2, one
`error:` line that names the thing and the fix, never a traceback. The commands fail before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main

UTF16_TOML = "\ufeff[model]\n".encode("utf-16-le")  # what Notepad's "Unicode" writes: FF FE, then UTF-16


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


CURATED_BAD = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n{oops\n'
# (id, files written in the working folder, argv, extra environment, what the one error line must say)
CASES = [
    ("toml-unclosed-table", {"kaizen.toml": "[model\n"}, ["ask", "hi"], {},
     ["kaizen.toml:1", "invalid TOML", "fix that line"]),
    ("toml-utf16-bom", {"kaizen.toml": UTF16_TOML}, ["ask", "hi"], {},
     ["kaizen.toml", "UTF-16", "save it again as UTF-8"]),
    ("toml-not-utf8", {"kaizen.toml": b"[model]\n# caf\xe9\n"}, ["ask", "hi"], {},
     ["kaizen.toml:2", "not UTF-8", "save it again as UTF-8"]),
    ("toml-bad-value", {"kaizen.toml": "[model]\ndtype = \"fp8\"\n"}, ["ask", "hi"], {}, ["model.dtype", "'bfloat16'"]),
    ("config-missing", {}, ["ask", "hi", "--config", "nope.toml"], {}, ["config file not found: nope.toml"]),
    ("config-env-missing", {}, ["ask", "hi"], {"KAIZEN_CONFIG": "gone.toml"},
     ["config file not found: gone.toml", "KAIZEN_CONFIG"]),
    ("dotenv-not-utf8", {".env": b"KAIZEN_LOG_LEVEL=INFO\n# \xff\n"}, ["ask", "hi"], {}, [".env", "not UTF-8"]),
    ("export-out-unwritable", {}, ["feedback", "export", "--format", "sft", "--out", "/proc/x.jsonl"], {},
     ["/proc/x.jsonl", "give a path in a folder that exists"]),
    ("export-out-under-a-file", {"notes.txt": "x"}, ["feedback", "export", "-f", "pairs", "-o", "notes.txt/x.jsonl"],
     {}, ["cannot use notes.txt/x.jsonl"]),
    ("nightly-recipes-missing", {}, ["train", "nightly", "--recipes", "/nonexistent"], {},
     ["recipes folder not found: /nonexistent", "leave --recipes out"]),
    ("nightly-curated-bad-line",
     {"curated.jsonl": CURATED_BAD, "recipes/nightly.toml": 'curated_sft = "curated.jsonl"\n'},
     ["train", "nightly", "--recipes", "recipes"], {}, ["curated.jsonl:2: not valid JSON", "fix or remove that line"]),
    ("nightly-curated-missing", {"recipes/nightly.toml": 'curated_sft = "gone.jsonl"\n'},
     ["train", "nightly", "--recipes", "recipes"], {}, ["dataset file not found: gone.jsonl"]),
    ("train-data-bad-line", {"bad.jsonl": CURATED_BAD}, ["train", "sft", "--no-store", "--data", "bad.jsonl"],
     {"KAIZEN_MODEL__NAME": "/nonexistent-base"}, ["bad.jsonl:2: not valid JSON"]),
    ("train-data-not-utf8", {"bad.jsonl": b'{"a": "\xff"}\n'}, ["train", "dpo", "--no-store", "--data", "bad.jsonl"],
     {"KAIZEN_MODEL__NAME": "/nonexistent-base"}, ["bad.jsonl: not UTF-8", "save it as UTF-8"]),
    ("ingest-path-missing", {}, ["ingest", "no-such-folder", "--source", "docs", "--public"], {},
     ["path does not exist", "no-such-folder"]),
    ("since-not-a-date", {}, ["feedback", "export", "-f", "sft", "-o", "x.jsonl", "--since", "yesterday"], {},
     ["--since 'yesterday' is not a date", "YYYY-MM-DD"]),
    ("unknown-preset", {}, ["ask", "hi", "--preset", "spicy"], {}, ["unknown preset 'spicy'", "valid presets"]),
    ("export-out-is-a-folder", {"out/keep": "x"}, ["feedback", "export", "-f", "sft", "-o", "out"], {},
     ["'--out'", "is a directory", "kaizen feedback export --help"]),
    ("export-unknown-format", {}, ["feedback", "export", "-f", "xml", "-o", "x.jsonl"], {},
     ["'--format'", "'sft', 'pairs', 'kto'"]),
    ("unknown-option", {}, ["ask", "hi", "--bogus"], {}, ["No such option: --bogus", "kaizen ask --help"]),
    ("unknown-command", {}, ["nosuchcmd"], {}, ["No such command 'nosuchcmd'", "kaizen --help"]),
    ("recipe-missing", {}, ["train", "sft", "--no-store", "--recipe", "gone.toml"],
     {"KAIZEN_MODEL__NAME": "/nonexistent-base"}, ["recipe file not found: gone.toml"]),
    ("recipe-not-toml", {"r.toml": 'learning_rate = "x\n'}, ["train", "sft", "--no-store", "--recipe", "r.toml"],
     {"KAIZEN_MODEL__NAME": "/nonexistent-base"}, ["r.toml: not valid TOML", "line 1"]),
    ("eval-file-missing", {}, ["eval", "retrieval", "gone.jsonl"], {}, ["evaluation file not found: gone.jsonl"]),
    ("ingest-bad-source-name", {"a.txt": "x"}, ["ingest", "a.txt", "--source", "bad name!", "--public"], {},
     ["invalid source name 'bad name!'", "use letters, digits"]),
]


@pytest.mark.parametrize(("files", "argv", "env", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_operator_error_is_one_line(isolated_env, monkeypatch, capsys, files, argv, env, expected):
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env / "state"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _write(isolated_env, files)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert exit_.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(part in lines[0] for part in expected), lines[0]
    assert "Traceback" not in out + err


def test_bad_curated_file_does_not_use_up_a_nightly_attempt(isolated_env):
    """The scheduled job (`python -m training.nightly`) reports bad curated data without starting or failing a run."""
    from core.config import load_settings
    from training.nightly import Recipes, run_nightly
    from training.registry import Registry

    _write(isolated_env, {"curated.jsonl": CURATED_BAD})
    settings = load_settings(data_dir=isolated_env / "state")
    recipes = Recipes.load(overrides={"nightly": {"curated_sft": str(isolated_env / "curated.jsonl")}})
    for _ in range(3):
        result = run_nightly(settings, recipes, progress=False)
        assert result.status == "failed" and "curated.jsonl:2: not valid JSON" in result.reason
        assert result.run is None
    assert Registry(settings.data_dir).runs() == []


def test_export_to_a_good_path_still_works(isolated_env, monkeypatch, capsys):
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env / "state"))
    with pytest.raises(SystemExit) as exit_:
        main(["feedback", "export", "-f", "kto", "-o", "out/kto.jsonl"])
    assert exit_.value.code == 0
    assert (isolated_env / "out" / "kto.jsonl").read_text() == ""
    assert "wrote 0 kto example(s)" in capsys.readouterr().out
    assert not list((isolated_env / "out").glob(".*.tmp"))


def test_log_records_follow_stderr_after_the_setup_time_stream_is_closed(isolated_env, monkeypatch):
    """CI once failed here: a handler bound to the stderr of its set-up time (an earlier test's captured stream,
    closed since) printed "--- Logging error ---" and a stack instead of the record into a later test's output."""
    import io
    import logging
    import sys

    from bot.observability import setup_logging
    from core.config import load_settings

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    try:
        setup_logging(load_settings(data_dir=isolated_env / "state"))
        first.close()
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("asyncio").error("Task was destroyed but it is pending!")
        lines = second.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].endswith("ERROR asyncio: Task was destroyed but it is pending!"), lines
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
