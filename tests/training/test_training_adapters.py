"""core.adapters: the promotion file, hot reload into a serving model, and the vLLM runtime-LoRA call."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from training_helpers import tiny_overrides

from core.adapters import (
    AdapterError,
    check_adapter_dir,
    current_adapter,
    vllm_load_adapter,
    watch_adapter,
    write_current,
)
from core.decoding import DecodingConfig


@pytest.fixture(scope="module")
def two_adapters(tiny_base, datasets, tmp_path_factory):
    """Two real LoRA adapters for the tiny model (SFT, two steps each, different seeds)."""
    from training import sft
    from training.common import load_recipe

    out = []
    for seed in (1, 2):
        recipe = load_recipe(sft.SFTRecipe, overrides=tiny_overrides(seed=seed, learning_rate=5e-2), stage="sft")
        out.append(sft.run(recipe, base_model=tiny_base, train=datasets["sft"],
                           out_dir=tmp_path_factory.mktemp(f"a{seed}"), progress=False).adapter)
    return out


@pytest.fixture
def serving_model(tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.models import TransformersChatModel

    model = TransformersChatModel(AutoModelForCausalLM.from_pretrained(tiny_base).eval(),
                                  AutoTokenizer.from_pretrained(tiny_base), name="tiny", context_window=512)
    yield model
    model.close()


def test_current_file_round_trip_and_corruption(tmp_path, two_adapters):
    assert current_adapter(tmp_path) is None
    inside = tmp_path / "adapters" / "kaizen-0001"
    shutil.copytree(two_adapters[0], inside)
    write_current(tmp_path, "kaizen-0001", inside, base_model="tiny")
    stored = json.loads((tmp_path / "adapters" / "current.json").read_text())
    assert stored["path"] == "kaizen-0001" and stored["base_model"] == "tiny"  # relative: the data dir can move
    assert current_adapter(tmp_path) == ("kaizen-0001", tmp_path / "adapters" / "kaizen-0001")
    # A folder that is not an adapter is refused and the promotion stays as it was.
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not JSON"):
        write_current(tmp_path, "junk", tmp_path / "junk")
    assert current_adapter(tmp_path)[0] == "kaizen-0001"
    (tmp_path / "adapters" / "current.json").write_text("{")
    with pytest.raises(AdapterError, match="corrupt"):
        current_adapter(tmp_path)
    write_current(tmp_path, None)
    assert current_adapter(tmp_path) is None


async def test_watch_adapter_hot_reloads_and_keeps_serving_on_a_bad_adapter(tmp_path, two_adapters, serving_model):
    decoding = DecodingConfig(strategy="greedy", max_new_tokens=4)
    messages = [{"role": "user", "content": "hi"}]
    watcher = asyncio.create_task(watch_adapter(tmp_path, serving_model, interval_s=0.05))

    async def until(name: str) -> None:
        for _ in range(200):
            if serving_model.adapter == name:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"still serving {serving_model.adapter!r}, expected {name!r}")

    try:
        write_current(tmp_path, "v1", two_adapters[0])
        await until("v1")
        # A request in flight while the next adapter is promoted still gets its answer.
        in_flight = asyncio.create_task(serving_model.generate(messages, decoding))
        write_current(tmp_path, "v2", two_adapters[1])
        await until("v2")
        (answer,) = await in_flight
        assert answer.prompt_tokens > 0 and serving_model.adapters == ["v1", "v2"]
        # A corrupt adapter promoted behind the registry's back: the model keeps serving v2, unchanged.
        (before,) = await serving_model.generate(messages, decoding)
        broken = tmp_path / "broken"
        shutil.copytree(two_adapters[0], broken)
        (broken / "adapter_model.safetensors").write_bytes(b"garbage")
        (tmp_path / "adapters" / "current.json").write_text(json.dumps({"name": "v3", "path": str(broken)}))
        await asyncio.sleep(0.5)
        assert serving_model.adapter == "v2"
        (after,) = await serving_model.generate(messages, decoding)
        assert after.text == before.text and after.prompt_tokens == before.prompt_tokens
        # Promotion cleared (rolled back to nothing): the base model serves.
        write_current(tmp_path, None)
        await until("")
    finally:
        watcher.cancel()


class _FakeVLLM(BaseHTTPRequestHandler):
    calls: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeVLLM.calls.append((self.path, body, self.headers.get("Authorization")))
        loaded = {b["lora_name"] for p, b, _ in _FakeVLLM.calls[:-1] if p == "/v1/load_lora_adapter"}
        if "missing" in body["lora_path"]:
            status, text = 400, "The lora adapter path does not exist"
        elif body["lora_name"] in loaded:  # vLLM's answer for a name it has
            status, text = 400, f"The lora adapter '{body['lora_name']}' has already been loaded."
        else:
            status, text = 200, f"Success: LoRA adapter '{body['lora_name']}' added successfully."
        self.send_response(status)
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args):
        pass


def test_vllm_runtime_lora_loading_against_a_fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeVLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        vllm_load_adapter(url, "kaizen-0002", "/srv/adapters/kaizen-0002", api_key="k")
        assert _FakeVLLM.calls[-1] == ("/v1/load_lora_adapter",
                                       {"lora_name": "kaizen-0002", "lora_path": "/srv/adapters/kaizen-0002"},
                                       "Bearer k")
        # Already loaded there (a rollback to it, say): nothing to do, and it is not unloaded meanwhile.
        vllm_load_adapter(url, "kaizen-0002", "/srv/adapters/kaizen-0002", api_key="k")
        assert [c[0] for c in _FakeVLLM.calls[-2:]] == ["/v1/load_lora_adapter"] * 2
        with pytest.raises(AdapterError, match="vLLM refused adapter 'x'.*400.*does not exist"):
            vllm_load_adapter(url + "/v1", "x", "/missing")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(AdapterError, match="unreachable"):
        vllm_load_adapter(url, "x", "/a", timeout_s=2)


def test_check_adapter_dir_names_the_problem(tmp_path, two_adapters):
    assert check_adapter_dir(two_adapters[0]) == two_adapters[0]
    with pytest.raises(AdapterError, match="does not exist"):
        check_adapter_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="adapter_config.json is missing"):
        check_adapter_dir(tmp_path / "empty")
    shutil.copytree(two_adapters[0], tmp_path / "noweights")
    (tmp_path / "noweights" / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="no adapter weights"):
        check_adapter_dir(tmp_path / "noweights")


def test_promotion_through_vllm_is_all_or_nothing(tmp_path, two_adapters):
    from training.registry import Registry, RegistryError

    registry = Registry(tmp_path)
    run = registry.new_run("manual", base_model="tiny")
    first, second = (registry.register(run, a).name for a in two_adapters)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeVLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        registry.promote(first, vllm_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
        assert _FakeVLLM.calls[-1][1] == {"lora_name": first, "lora_path": str(tmp_path / "adapters" / first)}
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(RegistryError, match=f"not serving {second}: vLLM server .* unreachable"):
        registry.promote(second, vllm_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    assert current_adapter(tmp_path)[0] == first


def test_a_corrupted_promoted_adapter_is_not_trained_on(tmp_path, two_adapters):
    from training.registry import Registry

    registry = Registry(tmp_path)
    run = registry.new_run("manual", base_model="tiny")
    name = registry.register(run, two_adapters[0]).name
    registry.promote(name)
    assert registry.serving_adapter("tiny") == tmp_path / "adapters" / name
    assert registry.serving_adapter("another-base") is None  # trained for another base model
    (tmp_path / "adapters" / name / "adapter_model.safetensors").write_bytes(b"")
    assert registry.serving_adapter("tiny") is None and current_adapter(tmp_path)[0] == name
