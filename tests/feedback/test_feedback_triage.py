"""`kaizen feedback triage`: a planted 👎 of each cause is labelled with it, from what the store recorded."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from core.types import Message, Reply, Source, Turn

EXCERPT = ('Question: {q}\n\n<documents>\nExcerpts from company documents follow.\n<excerpt id="1">\n[1] VPN guide '
           "(vpn.md)\nThe VPN gateway listens on port 443. Install the client and sign in with your SSO account.\n"
           "</excerpt>\n</documents>")
PAD = ('Thought: compute it\nAction: calculator\nAction Input: {{"expression": "12*12"}}\nObservation: '
       "<observation>144</observation>\nThought: done\nFinal Answer: 144")


def _reply(q: str, answer: str, *, mode: str = "chat", sources: list[Source] | None = None,
           prompt: list[Message] | None = None, at: datetime | None = None) -> Reply:
    turn = Turn(text=q, platform="slack", workspace="T1", channel="C1", thread=q[:20], user="asker")
    return Reply(answer=answer, turn=turn, mode=mode, sources=sources or [], model="m", adapter="kaizen-0001",
                 prompt=prompt or [Message("user", q)], created_at=at or datetime.now(UTC))


def test_triage_labels_a_planted_example_of_each_cause(isolated_env, monkeypatch):
    from bot.cli import app
    from core.config import load_settings
    from core.rag.sources import FileRecord, SourceRecord, SourceRegistry
    from feedback import FeedbackStore

    state = isolated_env / "state"
    monkeypatch.setenv("KAIZEN_DATA_DIR", str(state))
    settings = load_settings()
    doc = isolated_env / "docs" / "vpn.md"
    doc.parent.mkdir()
    doc.write_text("The VPN gateway listens on port 443.\n")
    guide = doc.with_name("install.md")
    guide.write_text("Install the client and sign in with your SSO account.\n")
    SourceRegistry.for_settings(settings).save(
        SourceRecord("handbook", [str(doc.parent)], [], {str(f): FileRecord(
            hashlib.sha256(f.read_bytes()).hexdigest(), 1, f.name) for f in (doc, guide)}), embedding_model="e")
    vpn = Source(id="c1", text="The VPN gateway listens on port 443.", title="VPN guide", uri=str(doc))
    install = Source(id="c2", text="Install the client and sign in with your SSO account.", uri=str(guide))
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    q_vpn = "Which port does the VPN gateway use?"
    planted = {
        "retrieval_miss": _reply("What is the parking policy for visitors?",
                                 "I found nothing about that in the documents I can read from this channel.",
                                 mode="rag"),
        "stale_source": _reply(q_vpn, "Port 443.", mode="rag", sources=[vpn],
                               prompt=[Message("user", EXCERPT.format(q=q_vpn))], at=hour_ago),
        "unsupported_claim": _reply("How do I install the VPN client?", "Install it from vpn.example and use port "
                                    "8080 with a hardware token.", mode="rag", sources=[install],
                                    prompt=[Message("user", EXCERPT.format(q="How do I install the VPN client?"))]),
        "refused_or_empty": _reply("Summarise the expense policy", "I'm sorry, but I can't help with that."),
        "style_length": _reply("What's our Wi-Fi name?", "The Wi-Fi network is called Kaizen-Guest."),
        "other": _reply("What is the capital of France?", "The capital of France is Paris."),
    }
    agent_ok = _reply("What is 12*12?", "144", mode="agent",
                      prompt=[Message("user", "What is 12*12?"), Message("assistant", PAD)])
    liked = _reply("Hello", "Hi!")
    with FeedbackStore.open(settings) as store:
        for cause, reply in planted.items():
            store.record(reply=reply)
            reason = "way too long, a wall of text" if cause == "style_length" else None
            store.vote(interaction_id=reply.id, user="u1", value=-1, reason=reason)
        store.vote(interaction_id=planted["other"].id, user="u2", value=-1)  # two 👎 on one answer: one item
        store.record(reply=agent_ok)
        store.vote(interaction_id=agent_ok.id, user="u1", value=-1)
        store.record(reply=liked)
        store.vote(interaction_id=liked.id, user="u1", value=1)
    doc.write_text("The VPN gateway now listens on port 8443.\n")  # the document changed after the answer

    runner = CliRunner()
    result = runner.invoke(app, ["feedback", "triage", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    causes = {item["interaction_id"]: item["cause"] for item in data["items"]}
    for cause, reply in planted.items():
        assert causes[reply.id] == cause, (cause, [i for i in data["items"] if i["interaction_id"] == reply.id])
    # A numeric answer backed by its tool observation is not an unsupported claim; a 👍 is not triaged.
    assert causes[agent_ok.id] == "other" and liked.id not in causes and len(causes) == 7
    assert data["counts"] == {"retrieval_miss": 1, "stale_source": 1, "refused_or_empty": 1,
                              "unsupported_claim": 1, "style_length": 1, "other": 2}
    by_id = {i["interaction_id"]: i for i in data["items"]}
    assert "8080" in by_id[planted["unsupported_claim"].id]["evidence"]
    assert by_id[planted["stale_source"].id]["stale"] == [f"handbook:{doc}"]

    text = runner.invoke(app, ["feedback", "triage", "--examples", "1"]).output
    assert text.startswith("7 disliked answer(s)")
    assert "## stale_source: 1" in text and f"re-ingest source handbook: {doc}" in text
    assert "action: questions for the regression set" in text and "👎 reason: way too long" in text
    # --since: only 👎 given from that date on.
    later = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d")
    assert runner.invoke(app, ["feedback", "triage", "--since", later]).output.startswith("0 disliked answer(s)")
