"""Every path that shows the model a document records it (issue 12, item 3): restricted text reached through a
tool or the conversation makes the reply restricted, and no export format nor the nightly's data contains it.

Real parts: LanceDB and embeddings, the SQLite feedback store, a loopback HTTP server, a company tool module, the
engine and agent loop. The model is scripted (it calls the tool and quotes the code word, as a model that obeys
the user would) so every path is taken every time; tests/test_agent.py covers the real model's choices.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/feedback must not pass for the `feedback` package
    sys.path.insert(0, str(ROOT))

from core.config import Settings  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.models import Generation  # noqa: E402
from core.rag import Retriever, ingest  # noqa: E402
from core.types import Turn  # noqa: E402
from feedback import FeedbackStore  # noqa: E402

CODE = "ZEBRAFINCH-7731"
FINANCE = "slack:T0ACME:C0FIN"
ASKED_IN = {"platform": "slack", "workspace": "T0ACME", "channel": "C0FIN", "channel_name": "finance"}


class _Page(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        body = f"Quarterly close checklist. Vault code {CODE}.".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ScriptedModel:
    """A chat-only backend answering from a script (native tool calls too when given); no constrained decoding."""

    name = "scripted"
    context_window = 4096
    adapter = ""

    def __init__(self, outputs, native_calls=None):
        self.outputs = list(outputs)
        self.native_calls = list(native_calls or [])

    def count_tokens(self, messages):
        return sum(len(str(m.get("content") or "")) // 4 + 4 for m in messages)

    def truncate(self, text, n):
        return text[: n * 4]

    async def generate(self, messages, decoding, *, adapter=None, on_text=None):
        return [Generation(text=self.outputs.pop(0), prompt_tokens=1, completion_tokens=1)
                for _ in range(decoding.num_return_sequences or 1)]

    async def aclose(self):
        pass


class NativeModel(ScriptedModel):
    async def generate_with_tools(self, messages, tools, decoding):
        return self.native_calls.pop(0)


def _call(tool, **args):
    return f"Thought: look it up\nAction: {tool}\nAction Input: {json.dumps(args)}"


QUOTE = f"Final Answer: The code is {CODE}."

# Each kind of path by which restricted text reaches the model: (profile tools, scripted outputs, mode).
PATHS = {
    "search_docs": (["search_docs"], [_call("search_docs", query="vault code"), QUOTE]),
    "search_docs_after_public": (["search_docs"], [_call("search_docs", query="cafeteria lunch"),
                                                   _call("search_docs", query="vault code"), QUOTE]),
    "http_get": (["http_get"], [_call("http_get", url="{url}"), QUOTE]),
    "company_tool": (["ledger"], [_call("ledger", account="ops"), QUOTE]),
    "forced_final": (["search_docs"], [_call("search_docs", query="vault code")] * 1 + [
        _call("search_docs", query="vault code again"), f"The code is {CODE}."]),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, embedder):
    base = tmp_path_factory.mktemp("toolsources")
    (base / "public").mkdir()
    (base / "public" / "lunch.md").write_text("# Cafeteria\n\nThe cafeteria serves lunch between noon and 2 pm.\n")
    (base / "finance").mkdir()
    (base / "finance" / "vault.md").write_text(f"# Vault\n\nThe finance vault code is {CODE}. Keep it secret.\n")
    (base / "acme_ledger.py").write_text(
        "def ledger(account: str) -> str:\n"
        '    """Balance and notes of a ledger account."""\n'
        f'    return "account " + account + ": balance 12, note {CODE}"\n'
    )
    sys.path.insert(0, str(base))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    settings = Settings(
        _env_file=None, data_dir=base / "data", vector_store="lancedb",
        tools={"http_allowlist": [f"127.0.0.1:{port}"], "custom": {"ledger": "acme_ledger:ledger"}},
        presets={"short": {"strategy": "greedy", "max_new_tokens": 16}},
    )
    ingest(settings, [base / "public"], source="handbook", public=True, embedder=embedder)
    ingest(settings, [base / "finance"], source="finance", channels=[FINANCE], embedder=embedder)
    yield settings, Retriever(settings, embedder=embedder), f"http://127.0.0.1:{port}/close"
    server.shutdown()
    server.server_close()
    sys.path.remove(str(base))


def _exported(store, settings, audience="public") -> str:
    """Every export format for `audience`, plus the nightly's own data, as one text."""
    from training.nightly import NightlyConfig, _export

    out = {kind: store.examples(kind=kind, audience=audience) for kind in ("sft", "pairs", "kto")}
    out["nightly"] = _export(settings, NightlyConfig(audience=audience, scrub=False), None,
                             datetime.now(UTC) + timedelta(minutes=1))
    return json.dumps(out)


@pytest.mark.parametrize("path", list(PATHS))
async def test_restricted_text_reached_through_a_tool_stays_out_of_exports(world, path, tmp_path):
    settings, retriever, url = world
    settings = settings.model_copy(update={"data_dir": tmp_path}, deep=True)  # a fresh feedback database per path
    tools, script = PATHS[path]
    script = [s.replace("{url}", url) for s in script]
    settings.default.tools = tools
    settings.default.mode = "agent"
    settings.default.preset = "short"
    settings.tools.max_steps = 2 if path == "forced_final" else 5
    with FeedbackStore.open(settings) as store:
        engine = Engine(settings, ScriptedModel([*script, "Another: " + CODE]), retriever=retriever,
                        on_reply=store.on_reply)
        reply = await engine.answer(Turn(text=f"Use {tools[0]} to find the vault code and quote it", **ASKED_IN))
        assert CODE in reply.answer and reply.sources, reply.trace
        assert all(FINANCE in s.channels for s in reply.sources if CODE in s.text)
        sibling = await engine.another(reply)  # "try another answer": the same prompt, the same sources
        store.vote(interaction_id=reply.id, user="U1", value=1)
        store.vote(interaction_id=sibling.id, user="U1", value=-1)
        assert store.get_interaction(interaction_id=reply.id).restricted
        assert store.get_interaction(interaction_id=sibling.id).restricted
        assert CODE not in _exported(store, settings)
        # Not vacuous: exported for the channel that may read it, the answer is there.
        assert CODE in _exported(store, settings, audience=FINANCE)


async def test_native_tool_calls_record_their_sources(world, tmp_path):
    settings, retriever, _ = world
    settings = settings.model_copy(update={"data_dir": tmp_path}, deep=True)
    settings.default.tools, settings.default.mode, settings.tools.native = ["search_docs"], "agent", True
    call = {"id": "c1", "function": {"name": "search_docs", "arguments": json.dumps({"query": "vault code"})}}
    model = NativeModel([], native_calls=[("", [call]), (f"The code is {CODE}.", [])])
    with FeedbackStore.open(settings) as store:
        reply = await Engine(settings, model, retriever=retriever, on_reply=store.on_reply).answer(
            Turn(text="vault code?", **ASKED_IN))
        store.vote(interaction_id=reply.id, user="U1", value=1)
        assert store.get_interaction(interaction_id=reply.id).restricted
        assert CODE not in _exported(store, settings)


async def test_a_later_turn_that_sees_the_restricted_answer_in_its_history_is_restricted(world, tmp_path):
    settings, retriever, _ = world
    settings = settings.model_copy(update={"data_dir": tmp_path}, deep=True)
    settings.default.tools, settings.default.preset = ["search_docs"], "short"
    script = [*PATHS["search_docs"][1], f"As I said, {CODE}."]
    with FeedbackStore.open(settings) as store:
        engine = Engine(settings, ScriptedModel(script), retriever=retriever, on_reply=store.on_reply)
        first = await engine.answer(Turn(text="find the vault code", mode="agent", thread="t1", **ASKED_IN))
        later = await engine.answer(Turn(text="say it again", mode="chat", thread="t1", **ASKED_IN))
        assert any(CODE in m.content for m in later.prompt)  # the history carried it
        assert later.sources and later.sources[0].metadata["via"] == "conversation"
        for r in (first, later):
            store.vote(interaction_id=r.id, user="U1", value=1)
        assert store.get_interaction(interaction_id=later.id).restricted
        assert CODE not in _exported(store, settings)
