"""Access by identity (issue 12, item 1): audiences name platform + workspace/server + channel id; names never
grant access. Real LanceDB store and embeddings; the askers are `Turn`s as the front ends fill them."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from bot import cli_rag
from core.config import Settings
from core.rag import RagError, Retriever, SourceRegistry, ingest
from core.rag.sources import normalize_channel
from core.types import Turn

CODE = "Project Bluefin"
SECRET = f"# Bluefin\n\n{CODE} has a confidential budget of 7.7 million euros, approved by the board.\n"
PUBLIC = "# Cafeteria\n\nThe cafeteria on the third floor serves lunch between noon and 2 pm.\n"
QUESTION = "What is the budget of Project Bluefin?"
PROBE = "budget of Project Bluefin or Project Marlin: 7.7 million euros"
FINANCE = ("slack:T0ACME:C0FIN", "discord:111:222")


@pytest.fixture(scope="module")
def stores(tmp_path_factory, embedder):
    base = tmp_path_factory.mktemp("identity")
    settings = Settings(_env_file=None, data_dir=base / "data", vector_store="lancedb")
    for name, text in (("public", PUBLIC), ("finance", SECRET), ("legacy", SECRET.replace("Bluefin", "Marlin"))):
        (base / name).mkdir()
        (base / name / f"{name}.md").write_text(text)
    ingest(settings, [base / "public"], source="handbook", public=True, embedder=embedder)
    ingest(settings, [base / "finance"], source="finance", channels=list(FINANCE), embedder=embedder)
    # A source ingested before identities: its audience is the bare name "finance".
    ingest(settings, [base / "legacy"], source="legacy", channels=["#finance"], embedder=embedder)
    return settings, Retriever(settings, embedder=embedder)


def _restricted(hits):
    return [h for h in hits if h.source in ("finance", "legacy") or "budget" in h.text]


# Every one of these asks from somewhere that is not an allowed channel, though its name or an id matches.
HOSTILE_ASKERS = [
    Turn(text=QUESTION, platform="slack", workspace="T0EVIL", channel="C0FIN", channel_name="finance"),
    Turn(text=QUESTION, platform="slack", workspace="T0ACME", channel="C0NEW", channel_name="finance"),
    Turn(text=QUESTION, platform="slack", workspace="T0ACME", channel="finance", channel_name="finance"),
    Turn(text=QUESTION, platform="slack", workspace="", channel="C0FIN"),
    Turn(text=QUESTION, platform="slack", workspace="T0ACME", channel=""),
    Turn(text=QUESTION, platform="discord", workspace="999", channel="222", channel_name="finance"),
    Turn(text=QUESTION, platform="discord", workspace="999", channel="333", channel_name="finance"),
    Turn(text=QUESTION, platform="discord", workspace="111", channel="223", channel_name="#finance"),
    Turn(text=QUESTION, platform="discord", workspace="", channel="222"),
    Turn(text=QUESTION, platform="discord", workspace="111:222", channel="x"),
    Turn(text=QUESTION, platform="slack", workspace="", channel="slack:T0ACME:C0FIN"),
    Turn(text=QUESTION, platform="slack", workspace="T0ACME", channel="C0FIN:x"),
    Turn(text=QUESTION, platform="discord", workspace="111", channel="finance"),
    Turn(text=QUESTION, platform="teams", workspace="T0ACME", channel="C0FIN"),
    Turn(text=QUESTION, platform="console", channel="C0FIN", channel_name="#finance"),
    Turn(text=QUESTION, platform="console", channel="slack:T0EVIL:C0FIN"),
]


@pytest.mark.parametrize("turn", HOSTILE_ASKERS, ids=lambda t: f"{t.platform}:{t.workspace}:{t.channel}")
def test_a_same_named_channel_elsewhere_reads_nothing_restricted(stores, turn):
    _, retriever = stores
    # "7.7" is quoted verbatim by both restricted chunks: were either readable, it would pass the relevance gate.
    assert _restricted(retriever.search(PROBE, channel=turn.audience, k=50)) == []


@pytest.mark.parametrize("turn", [
    Turn(text=QUESTION, platform="slack", workspace="T0ACME", channel="C0FIN", channel_name="renamed-later"),
    Turn(text=QUESTION, platform="discord", workspace="111", channel="222"),
    # The operator console may ask as any identity.
    Turn(text=QUESTION, platform="console", channel="slack:T0ACME:C0FIN"),
], ids=["slack", "discord", "operator"])
def test_the_allowed_channel_reads_it_whatever_its_name(stores, turn):
    _, retriever = stores
    hits = retriever.search(PROBE, channel=turn.audience, k=5)
    assert hits[0].source == "finance" and "7.7 million" in hits[0].text
    assert hits[0].channels == tuple(sorted(FINANCE))
    assert all(h.source != "legacy" for h in hits)  # a bare name is not this channel


def test_a_bare_name_is_readable_only_on_the_operator_console(stores):
    _, retriever = stores
    hits = retriever.search(PROBE, channel=Turn(text="", channel="finance").audience, k=5)
    assert "legacy" in {h.source for h in hits} and "finance" not in {h.source for h in hits}
    slack = Turn(text="", platform="slack", workspace="T0ACME", channel="C0FIN", channel_name="finance")
    assert all(h.source != "legacy" for h in retriever.search("Project Marlin budget", channel=slack.audience))


@pytest.mark.parametrize("bad", ["slack:acme/#finance", "slack:T1", "slak:T1:C2", "discord:1:2:3", "a/b"])
def test_a_malformed_audience_is_one_clear_error(stores, bad, tmp_path, embedder):
    with pytest.raises(RagError, match="audience"):
        normalize_channel(bad)
    settings, _ = stores
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "x.md").write_text("# X\n\nsome text\n")
    with pytest.raises(RagError, match="audience"):
        ingest(settings, [folder], source="bad", channels=[bad], embedder=embedder)
    assert SourceRegistry.for_settings(settings).get("bad") is None


def _cli(settings, monkeypatch, tmp_path):
    app = typer.Typer()
    app.command("ingest")(cli_rag.ingest)
    app.add_typer(cli_rag.sources_app, name="sources")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("KAIZEN_VECTOR_STORE", "lancedb")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_sources_list_resolves_audiences_and_warns_about_bare_names(stores, monkeypatch, tmp_path):
    settings, _ = stores
    listed = _cli(settings, monkeypatch, tmp_path)("sources", "list")
    assert listed.exit_code == 0, listed.output
    out = listed.output
    assert "slack:T0ACME:C0FIN\tSlack workspace T0ACME, channel C0FIN" in out
    assert "discord:111:222\tDiscord server 111, channel 222" in out
    assert "finance\tbare name: no Slack or Discord channel can read it" in out
    assert "kaizen sources qualify legacy --channels" in out


def test_qualify_replaces_bare_names_without_widening(tmp_path, embedder, monkeypatch):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", vector_store="lancedb")
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "b.md").write_text(SECRET)
    ingest(settings, [tmp_path / "legacy"], source="legacy", channels=["finance"], embedder=embedder)
    cli = _cli(settings, monkeypatch, tmp_path)
    warned = cli("ingest", tmp_path / "legacy", "--source", "legacy", "--channels", "finance")
    assert warned.exit_code == 0 and "bare name, so no Slack or Discord channel can read it" in warned.output
    refused = cli("sources", "qualify", "legacy", "--channels", "finance")
    assert refused.exit_code == 2 and "give channel identities" in refused.output
    done = cli("sources", "qualify", "legacy", "--channels", "slack:T0ACME:C0FIN")
    assert done.exit_code == 0, done.output
    assert SourceRegistry.for_settings(settings).get("legacy").channels == ["slack:T0ACME:C0FIN"]
    retriever = Retriever(settings, embedder=embedder)
    [hit] = retriever.search(QUESTION, channel="slack:T0ACME:C0FIN", k=1)
    assert hit.channels == ("slack:T0ACME:C0FIN",)  # the chunks carry the new access too
    assert retriever.search(QUESTION, channel="finance") == []  # the bare name no longer reads it


def test_the_operator_console_asks_as_an_identity_with_that_channels_profile():
    from core.engine import Engine

    settings = Settings(_env_file=None, channels={"C0FIN": {"preset": "precise"}, "finance": {"preset": "creative"}})
    engine = Engine(settings, model=None)
    operator = Turn(text="q", platform="console", channel="slack:T0ACME:C0FIN")
    assert operator.audience == "slack:T0ACME:C0FIN" and engine._profile(operator).preset == "precise"
    # On Slack the profile still follows the channel's id first.
    slack = Turn(text="q", platform="slack", workspace="T0ACME", channel="C0FIN", channel_name="finance")
    assert engine._profile(slack).preset == "precise"
