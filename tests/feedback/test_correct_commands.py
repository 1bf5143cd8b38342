"""Correcting an answer from the terminal (`kaizen correct ID TEXT`) and the console chat (`/correct TEXT`): the
correction is kept with who made it and reaches the SFT and pairs exports."""

from __future__ import annotations

import asyncio
import io
import json
from types import SimpleNamespace

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from bot.cli_feedback import correct, feedback_app
from bot.console import ConsoleChat
from core.config import load_settings
from core.types import Message
from feedback import FeedbackStore

app = typer.Typer()
app.add_typer(feedback_app, name="feedback")
app.command("correct")(correct)
runner = CliRunner()
Q = [Message("system", "You are Kaizen."), Message("user", "How many legs does a spider have?")]


@pytest.fixture
def cli_store(isolated_env, monkeypatch):
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(isolated_env / "state"))
    store = FeedbackStore.open(load_settings())
    yield store
    store.close()


def _exports(tmp_path) -> dict[str, list[dict]]:
    out = {}
    for kind in ("sft", "pairs"):
        path = tmp_path / f"{kind}.jsonl"
        result = runner.invoke(app, ["feedback", "export", "--format", kind, "--out", str(path)])
        assert result.exit_code == 0, result.output
        out[kind] = [json.loads(line) for line in path.read_text().splitlines()]
    return out


def _assert_learned(exports: dict[str, list[dict]], good: str, bad: str) -> None:
    assert [r["messages"][-1]["content"] for r in exports["sft"]] == [good]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in exports["pairs"]] == [(good, bad)]


def test_kaizen_correct(cli_store, make_reply, tmp_path):
    reply = make_reply(answer="Six.", prompt=Q)
    cli_store.record(reply=reply)
    result = runner.invoke(app, ["correct", reply.id, "Eight legs.", "--user", "ana"])
    assert result.exit_code == 0 and f"correction by ana on {reply.id} recorded" in result.output
    [fix] = cli_store.get_corrections(interaction_id=reply.id)
    assert (fix.user_id, fix.platform) == ("ana", "cli")
    _assert_learned(_exports(tmp_path), "Eight legs.", "Six.")

    bad = runner.invoke(app, ["correct", "0123abcd", "Eight legs.", "--user", "ana"])
    assert bad.exit_code == 2 and "unknown interaction '0123abcd'" in bad.output and "Traceback" not in bad.output
    empty = runner.invoke(app, ["correct", reply.id, "   ", "--user", "ana"])
    assert empty.exit_code == 2 and "corrected answer's text" in empty.output


def test_console_correct(cli_store, make_reply, tmp_path):
    reply = make_reply(answer="Six.", prompt=Q, platform="console")
    cli_store.record(reply=reply)
    screen = io.StringIO()
    # The engine is only asked for its presets by the command parser; the answer and the store are real.
    chat = ConsoleChat(engine=SimpleNamespace(settings=SimpleNamespace(presets={})), user="bo", store=cli_store,
                       console=Console(file=screen, width=100), last=reply)
    assert asyncio.run(chat.command("/correct"))
    assert "usage: /correct TEXT" in screen.getvalue()
    assert asyncio.run(chat.command("/correct Eight legs [not six]."))
    assert "corrected answer (by bo):\nEight legs [not six]." in screen.getvalue()  # shown in place, as typed
    [fix] = cli_store.get_corrections(interaction_id=reply.id)
    assert (fix.user_id, fix.platform, fix.text) == ("bo", "console", "Eight legs [not six].")
    _assert_learned(_exports(tmp_path), "Eight legs [not six].", "Six.")
