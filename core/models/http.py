"""The OpenAI-compatible HTTP backend (vLLM, TGI, llama.cpp server, Ollama): chat completions, streaming over
server-sent events, native tool calling."""

from __future__ import annotations

import json
import time

from core.config import ModelSettings
from core.decoding import DecodingConfig, to_openai_params

from .base import BackendError, Generation, OnText

__all__ = ["OpenAIChatModel"]


class OpenAIChatModel:
    """Chat completions over HTTP (vLLM, TGI, llama.cpp server, Ollama). The adapter is sent as the model name,
    which is how vLLM serves LoRA adapters (`--lora-modules name=path`)."""

    def __init__(self, m: ModelSettings) -> None:
        import httpx

        self.settings = m
        self.name = m.name or "default"
        self.context_window = m.context_window or 4096
        self._adapter = m.adapter
        headers = {}
        if m.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {m.api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(base_url=m.base_url.rstrip("/"), headers=headers, timeout=m.timeout_s)
        self._tokenizer = None
        if m.tokenizer:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(m.tokenizer)

    @property
    def adapter(self) -> str:
        return self._adapter

    async def set_adapter(self, name: str, path: str | None = None) -> None:
        # The server owns the adapter files; we only choose which one to ask for.
        self._adapter = name

    async def load_adapter(self, name: str, path: str) -> None:
        # The server (vLLM's LoRA resolver or runtime API) loads adapters; a request names one per call.
        return None

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                           return_dict=True)["input_ids"])
        # Without a tokenizer: ~4 characters a token plus per-message overhead, rounded up to stay safe.
        return sum(len(m["content"]) // 3 + 4 for m in messages) + 2

    def truncate(self, text: str, max_tokens: int) -> str:
        if self._tokenizer is not None:
            ids = self._tokenizer.encode(text, add_special_tokens=False)
            return text if len(ids) <= max_tokens else self._tokenizer.decode(ids[:max_tokens])
        return text[: max(0, max_tokens) * 3]

    async def generate(self, messages, decoding, *, adapter=None, on_text=None) -> list[Generation]:
        params = to_openai_params(decoding)  # raises DecodingError for beam search
        model = (self._adapter if adapter is None else adapter) or self.name
        body = {"model": model, "messages": messages, **params}
        t0 = time.perf_counter()
        if on_text is not None and decoding.num_return_sequences == 1:
            return [await self._stream(body, on_text, t0)]
        resp = await self._post(body)
        usage = resp.get("usage") or {}
        choices = resp.get("choices") or []
        if not choices:
            raise BackendError(f"model server returned no choices: {json.dumps(resp)[:300]}")
        return [
            Generation(
                text=(c.get("message") or {}).get("content") or "",
                prompt_tokens=usage.get("prompt_tokens") or self.count_tokens(messages),
                completion_tokens=usage.get("completion_tokens", 0) // max(1, len(choices)),
            )
            for c in choices
        ]

    async def generate_with_tools(self, messages: list[dict], tools: list[dict],
                                  decoding: DecodingConfig) -> tuple[str, list[dict]]:
        """Native tool calling: (text, tool_calls) from one chat completion with `tools`."""
        params = {**to_openai_params(decoding), "n": 1}
        body = {"model": self._adapter or self.name, "messages": messages, "tools": tools, "tool_choice": "auto",
                **params}
        resp = await self._post(body)
        choices = resp.get("choices") or []
        if not choices:
            raise BackendError(f"model server returned no choices: {json.dumps(resp)[:300]}")
        message = choices[0].get("message") or {}
        return message.get("content") or "", message.get("tool_calls") or []

    async def _post(self, body: dict) -> dict:
        import httpx

        try:
            r = await self._client.post("/chat/completions", json=body)
        except httpx.HTTPError as e:
            raise BackendError(f"model server at {self.settings.base_url} unreachable: {e}") from None
        if r.status_code >= 400:
            raise BackendError(f"model server answered {r.status_code}: {r.text[:300]}")
        return r.json()

    async def _stream(self, body: dict, on_text: OnText, t0: float) -> Generation:
        import httpx

        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        text, first, usage = "", None, {}
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise BackendError(f"model server answered {r.status_code}: {r.text[:300]}")
                async for line in r.aiter_lines():
                    # Server-sent events: `data: {json}` lines, ending with `data: [DONE]`.
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    usage = chunk.get("usage") or usage
                    for c in chunk.get("choices") or []:
                        delta = (c.get("delta") or {}).get("content") or ""
                        if delta:
                            first = first if first is not None else time.perf_counter() - t0
                            text += delta
                            on_text(text.strip())
        except httpx.HTTPError as e:
            raise BackendError(f"model server at {self.settings.base_url} failed while streaming: {e}") from None
        return Generation(
            text=text.strip(),
            prompt_tokens=usage.get("prompt_tokens") or self.count_tokens(body["messages"]),
            completion_tokens=usage.get("completion_tokens") or 0,
            first_token_s=first,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

