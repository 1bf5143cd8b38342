"""`kaizen vote` and `kaizen feedback export|stats`, mounted on a small typer app as bot/cli.py mounts them."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from bot.cli_feedback import feedback_app, vote
from core.config import load_settings
from feedback import FeedbackStore

app = typer.Typer()
app.add_typer(feedback_app, name="feedback")
app.command("vote")(vote)
runner = CliRunner()


@pytest.fixture
def cli_store(isolated_env, monkeypatch):
    """The store the CLI will open: SQLite under KAIZEN_DATA_DIR."""
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env / "state"))
    store = FeedbackStore.open(load_settings())
    yield store
    store.close()


def test_vote_up_down_retract(cli_store, make_reply):
    reply = make_reply()
    cli_store.record(reply=reply)

    result = runner.invoke(app, ["vote", reply.id, "up", "--user", "ana", "--reason", "spot on"])
    assert result.exit_code == 0, result.output
    assert f"up vote by ana on {reply.id} recorded" in result.output
    result = runner.invoke(app, ["vote", reply.id, "down", "--user", "bo"])
    assert result.exit_code == 0, result.output
    assert [(v.user_id, v.value, v.reason) for v in cli_store.get_votes(interaction_id=reply.id)] == [
        ("ana", 1, "spot on"),
        ("bo", -1, None),
    ]
    assert runner.invoke(app, ["vote", reply.id, "retract", "--user", "bo"]).exit_code == 0
    assert [v.user_id for v in cli_store.get_votes(interaction_id=reply.id)] == ["ana"]


def test_vote_bad_input_is_one_clear_error(cli_store, make_reply):
    cli_store.record(reply=make_reply())
    result = runner.invoke(app, ["vote", "0123abcd", "up", "--user", "ana"])
    assert result.exit_code == 2
    assert "error: unknown interaction '0123abcd'" in result.output
    assert "Traceback" not in result.output
    assert runner.invoke(app, ["vote", "0123abcd", "sideways"]).exit_code == 2


def test_unsupported_database_url_is_a_clear_error(isolated_env, monkeypatch):
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env))
    monkeypatch.setenv("KAIZEN_DATABASE_URL", "mysql://kaizen@db/kaizen")
    result = runner.invoke(app, ["feedback", "stats"])
    assert result.exit_code == 2
    assert "error: unsupported database 'mysql' in KAIZEN_DATABASE_URL" in result.output


def test_export_and_stats(cli_store, make_reply, isolated_env):
    first = make_reply()
    second = make_reply(answer="Ask IT.", sibling_of=first.id)
    for reply, value in ((first, 1), (second, -1)):
        cli_store.record(reply=reply)
        cli_store.vote(interaction_id=reply.id, user="ana", value=value)

    out = isolated_env / "out" / "pairs.jsonl"
    result = runner.invoke(app, ["feedback", "export", "--format", "pairs", "--out", str(out), "--since", "2000-01-01"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 pairs example(s) for audience 'public'" in result.output
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["chosen"] == [{"role": "assistant", "content": first.answer}]
    assert row["rejected"] == [{"role": "assistant", "content": "Ask IT."}]

    result = runner.invoke(app, ["feedback", "stats"])
    assert result.exit_code == 0, result.output
    assert "interactions: 2  votes: 2 (👍 1 / 👎 1)  like rate: 50%" in result.output
    assert "slack:general" in result.output and "smollm2-135m + base" in result.output
    assert "1 pair(s), 1 sft, 2 kto" in result.output

    result = runner.invoke(app, ["feedback", "export", "--format", "dpo", "--out", str(out)])
    assert result.exit_code == 2
    result = runner.invoke(app, ["feedback", "export", "--format", "sft", "--out", str(out), "--since", "last week"])
    assert result.exit_code == 2 and "--since 'last week' is not a date" in result.output
