"""`kaizen eval retrieval`, `kaizen ingest` and `kaizen sources` through typer, on real stores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bot import cli_rag
from core.rag import RagError, evaluate, load_eval_set
from core.rag.eval import EvalItem, is_hit
from core.types import Source


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


EVAL_ROWS = [
    {"question": "What does error E-4471 mean?", "source_file": "it/vpn.md"},
    {"question": "Where do I report phishing?", "source_file": "security.pdf"},
    {"question": "How much is the daily meal allowance on trips?", "answer": "45 euros"},
    {"question": "Which day are badge photos taken?", "answer": "badge photos are taken on tuesday"},
    {"question": "What is the budget of Project Nightingale?", "source_file": "salaries.md"},
]


def test_evaluation_scores_hits_and_lists_misses(corpus, tmp_path):
    _, retriever = corpus
    items = load_eval_set(_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS))

    as_general = evaluate(retriever, items, channel="general")
    everything = evaluate(retriever, items, channel=None)

    # The general channel cannot read the HR source, so that question misses; all others hit first.
    assert as_general.recall == {1: 0.8, 5: 0.8, 10: 0.8} and as_general.mrr == pytest.approx(0.8)
    assert [m.question for m in as_general.misses] == ["What is the budget of Project Nightingale?"]
    assert everything.recall[1] == 1.0 and everything.misses == []
    assert as_general.lines() == ["recall@1 0.800", "recall@5 0.800", "recall@10 0.800", "mrr 0.800"]


def test_hits_match_file_suffixes_or_contained_answers():
    source = Source(
        id="1",
        text="Badge photos are  taken on\nTuesday.",
        uri="/srv/docs/handbook/it/vpn.md",
        metadata={"path": "docs/handbook/it/vpn.md"},
    )
    assert is_hit(EvalItem("q", source_file="vpn.md"), source)
    assert is_hit(EvalItem("q", source_file="handbook/it/vpn.md"), source)
    assert not is_hit(EvalItem("q", source_file="other/vpn.md"), source)
    assert not is_hit(EvalItem("q", source_file="pn.md"), source)
    assert is_hit(EvalItem("q", answer="badge photos are taken on tuesday"), source)
    assert not is_hit(EvalItem("q", answer="wednesday"), source)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q", "source_file": "a.md"}\nnot json\n', r"eval.jsonl:2: not JSON"),
        ('{"question": "q"}\n', r"eval.jsonl:1: give exactly one of"),
        ('{"question": "", "answer": "x"}\n', r"eval.jsonl:1: needs a non-empty"),
        ("\n", "no questions"),
    ],
)
def test_bad_evaluation_files_name_the_line(tmp_path, content, message):
    path = tmp_path / "eval.jsonl"
    path.write_text(content)
    with pytest.raises(RagError, match=message):
        load_eval_set(path)


@pytest.fixture
def cli(tmp_path, monkeypatch, embedder):
    """The RAG commands registered as the lead's `kaizen` app registers them, with settings from env."""
    app = typer.Typer()
    app.command("ingest")(cli_rag.ingest)
    app.add_typer(cli_rag.sources_app, name="sources")
    app.add_typer(cli_rag.eval_app, name="eval")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KAIZEN_VECTOR_STORE", "lancedb")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_cli_ingest_list_eval_remove(cli, handbook, tmp_path):
    (handbook / "broken.pdf").write_bytes(b"%PDF-1.4 nonsense")

    result = cli("ingest", handbook, "--source", "handbook", "--public")
    assert result.exit_code == 0, result.output
    assert "skipped handbook/broken.pdf: unreadable PDF" in result.output
    assert "handbook: 6 added, 0 updated, 0 unchanged, 0 removed, 1 skipped" in result.output

    result = cli("ingest", handbook, "--source", "handbook", "--public")
    assert "0 added, 0 updated, 6 unchanged, 0 removed" in result.output

    listed = cli("sources", "list")
    assert listed.exit_code == 0 and re.search(r"^handbook\tpublic\t6 files\t\d+ chunks", listed.output, re.M)

    rows = [r for r in EVAL_ROWS if "salaries" not in r.get("source_file", "")]
    rows.append({"question": "How do I file a patent?", "answer": "patent office form 12"})
    evaluated = cli("eval", "retrieval", _jsonl(tmp_path / "eval.jsonl", rows), "--channel", "general")
    assert evaluated.exit_code == 0, evaluated.output
    lines = evaluated.output.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["recall@1", "recall@5", "recall@10", "mrr"]
    assert all(re.fullmatch(r"\S+ \d\.\d{3}", line) for line in lines[:4])
    assert lines[0] == "recall@1 0.800"
    assert lines[4:] == ["missed 1 of 5:", "  line 5: How do I file a patent?"]

    removed = cli("sources", "remove", "handbook")
    assert removed.exit_code == 0 and removed.output.startswith("removed handbook (6 files,")
    assert "no sources yet" in cli("sources", "list").output


def test_cli_errors_are_one_line_and_change_nothing(cli, handbook, tmp_path):
    missing = cli("ingest", handbook, tmp_path / "nope", "--source", "handbook", "--channels", "eng")
    assert missing.exit_code == 2 and "error: path does not exist" in missing.output
    assert "Traceback" not in missing.output
    assert not (tmp_path / "data" / "rag-sources-lancedb.json").exists()

    neither = cli("ingest", handbook, "--source", "handbook")
    assert neither.exit_code == 2 and "--channels C1,C2) or --public" in neither.output

    unknown = cli("sources", "remove", "ghost")
    assert unknown.exit_code == 2 and "unknown source 'ghost'" in unknown.output

    no_file = cli("eval", "retrieval", tmp_path / "none.jsonl")
    assert no_file.exit_code == 2 and "evaluation file not found" in no_file.output


def test_cli_channels_restrict_the_source(cli, handbook):
    assert cli("ingest", handbook, "--source", "handbook", "--channels", "#it, eng").exit_code == 0
    listed = cli("sources", "list").output
    assert "handbook\tchannels: eng,it\t6 files" in listed
