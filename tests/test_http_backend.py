"""The OpenAI-compatible backend against a real HTTP server on loopback (scripted answers)."""

import json

import pytest
from aiohttp import web

from core.config import ModelSettings, load_settings
from core.decoding import BUILTIN_PRESETS, DecodingConfig, DecodingError
from core.engine import Engine
from core.models import BackendError, OpenAIChatModel
from core.types import Turn


@pytest.fixture
async def server(unused_tcp_port_factory=None):
    seen: list[dict] = []
    state = {"fail": False}

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("Authorization")})
        if state["fail"]:
            return web.json_response({"error": {"message": "model overloaded"}}, status=503)
        if body.get("tools"):
            last = body["messages"][-1]
            if last["role"] == "tool":
                return web.json_response({"choices": [{"index": 0, "message": {
                    "role": "assistant", "content": f"The result is {last['content']}."}}]})
            call = {"id": "call_1", "type": "function",
                    "function": {"name": "calculator", "arguments": json.dumps({"expression": "17 * 23"})}}
            return web.json_response({"choices": [{"index": 0, "message": {
                "role": "assistant", "content": None, "tool_calls": [call]}}]})
        question = body["messages"][-1]["content"]
        answer = f"echo: {question} (model={body['model']})"
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for word in answer.split(" "):
                chunk = {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            usage = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}}
            await resp.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
            await resp.write_eof()
            return resp
        choices = [{"index": i, "message": {"role": "assistant", "content": f"{answer} #{i}"}}
                   for i in range(body.get("n", 1))]
        return web.json_response({"choices": choices, "usage": {"prompt_tokens": 11, "completion_tokens": 8}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1", seen, state
    await runner.cleanup()


def _model(url, **kw):
    return OpenAIChatModel(ModelSettings(backend="openai", base_url=url, name="served-model", **kw))


async def test_chat_completion_params_and_adapter(server):
    url, seen, _ = server
    model = _model(url, api_key="sk-test", adapter="", adapters={})
    d = DecodingConfig(strategy="sample", temperature=0.7, top_p=0.9, top_k=20, num_return_sequences=2, seed=3)
    gens = await model.generate([{"role": "user", "content": "hi"}], d, adapter="support-v3")
    assert [g.text for g in gens] == ["echo: hi (model=support-v3) #0", "echo: hi (model=support-v3) #1"]
    body = seen[-1]["body"]
    assert body["model"] == "support-v3" and body["n"] == 2 and body["top_k"] == 20 and body["seed"] == 3
    assert seen[-1]["auth"] == "Bearer sk-test"
    assert gens[0].prompt_tokens == 11
    await model.aclose()


async def test_streaming(server):
    url, seen, _ = server
    model = _model(url)
    parts: list[str] = []
    [g] = await model.generate([{"role": "user", "content": "stream please"}], BUILTIN_PRESETS["precise"],
                               on_text=parts.append)
    assert g.text == "echo: stream please (model=served-model)"
    assert len(parts) >= 4 and parts[-1] == g.text and all(g.text.startswith(p) for p in parts)
    assert seen[-1]["body"]["stream"] is True and seen[-1]["body"]["temperature"] == 0.0
    assert g.completion_tokens == 7 and g.first_token_s is not None
    await model.aclose()


async def test_errors_are_clear(server):
    url, _, state = server
    model = _model(url)
    with pytest.raises(DecodingError, match="beam search"):
        await model.generate([{"role": "user", "content": "x"}], BUILTIN_PRESETS["beam"])
    state["fail"] = True
    with pytest.raises(BackendError, match="503"):
        await model.generate([{"role": "user", "content": "x"}], BUILTIN_PRESETS["precise"])
    await model.aclose()
    dead = _model("http://127.0.0.1:9/v1")
    with pytest.raises(BackendError, match="unreachable"):
        await dead.generate([{"role": "user", "content": "x"}], BUILTIN_PRESETS["precise"])
    await dead.aclose()


async def test_engine_over_http(server, isolated_env):
    url, seen, _ = server
    settings = load_settings(model={"backend": "openai", "base_url": url, "name": "served-model"})
    engine = Engine(settings, OpenAIChatModel(settings.model))
    streamed: list[str] = []
    reply = await engine.answer(Turn(text="What is up?", channel="c1", preset="precise"), on_text=streamed.append)
    assert reply.answer == "echo: What is up? (model=served-model)" and streamed[-1] == reply.answer
    assert reply.prompt[-1].content == "What is up?" and reply.model == "served-model"
    follow = await engine.answer(Turn(text="And then?", channel="c1", preset="precise"))
    sent = seen[-1]["body"]["messages"]
    assert [m["content"] for m in sent[1:]] == ["What is up?", reply.answer, "And then?"]  # history kept
    assert follow.answer.startswith("echo: And then?")
    await engine.aclose()


async def test_native_tool_calling_agent(server, isolated_env):
    url, seen, _ = server
    settings = load_settings(model={"backend": "openai", "base_url": url, "name": "served-model"},
                             tools={"native": True}, default={"mode": "agent", "tools": ["calculator"]})
    engine = Engine(settings, OpenAIChatModel(settings.model))
    reply = await engine.answer(Turn(text="What is 17 * 23?", preset="precise"))
    assert reply.answer == "The result is 391."
    [action] = [s.detail for s in reply.trace if s.kind == "action"]
    assert action["tool"] == "calculator" and action["observation"] == "391" and action["native"]
    sent = seen[-1]["body"]
    assert sent["tools"][0]["function"]["name"] == "calculator"
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["expression"]
    await engine.aclose()


async def test_tolerant_agent_over_http(server, isolated_env):
    # The echo server never writes the ReAct format: the tolerant parser takes its text as the answer.
    url, seen, _ = server
    settings = load_settings(model={"backend": "openai", "base_url": url, "name": "served-model"},
                             default={"mode": "agent", "tools": ["calculator"]})
    engine = Engine(settings, OpenAIChatModel(settings.model))
    reply = await engine.answer(Turn(text="What is 2 + 2?", preset="precise"))
    assert reply.answer.startswith("echo:") and reply.mode == "agent"
    assert "calculator" in seen[-1]["body"]["messages"][0]["content"]  # tools described in the system prompt
    await engine.aclose()
