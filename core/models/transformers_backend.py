"""The in-process transformers backend: loading, tokens, LoRA adapters, and the worker thread that runs requests.

Requests go through a queue to one worker thread, so the asyncio event loop is never blocked. The worker is the
static batcher (static_batch.py) or the continuous scheduler (scheduler.py), chosen by `batching`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Literal

from core.config import ModelSettings

from .base import Generation
from .constrained import ConstrainedDecoding
from .requests import Request
from .scheduler import ContinuousScheduler
from .static_batch import run_static
from .weights import pick_device, pick_dtype, resolve_source

__all__ = ["TransformersChatModel"]

logger = logging.getLogger(__name__)


class TransformersChatModel(ConstrainedDecoding):
    """A Hugging Face causal LM run in-process by one worker thread.

    `batching="continuous"` (default): requests join the running batch at the next decode step and leave it as
    soon as they finish, each with its own decoding settings and adapter (scheduler.py).
    `batching="static"`: concurrent requests with compatible decoding (same strategy and knobs, same adapter)
    are gathered into one left-padded `generate` call (static_batch.py; kept for comparison).
    """

    def __init__(self, model, tokenizer, *, name: str, context_window: int, max_batch_size: int = 8,
                 batch_wait_ms: int = 15, adapter: str = "", batching: Literal["static", "continuous"] = "continuous",
                 ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.context_window = context_window
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.batching = batching
        self._adapter = adapter
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._lock = threading.Lock()  # guards the model between generation and adapter changes
        self._eos_ids = self._collect_eos_ids()
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos_ids[0]
        if batching not in ("static", "continuous"):
            raise ValueError(f"unknown batching {batching!r}; valid: continuous, static")
        target = functools.partial(run_static, self) if batching == "static" else ContinuousScheduler(self).run
        self._worker = threading.Thread(target=target, name="kaizen-generate", daemon=True)
        self._worker.start()

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, m: ModelSettings, *, data_dir: Path) -> TransformersChatModel:
        """Load the configured model (raises ModelNotFoundError saying what to install or set)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from .base import ModelNotFoundError

        hf_logging.disable_progress_bar()  # a load bar per start is noise in chat and logs
        if m.threads:
            torch.set_num_threads(m.threads)
        source, display = resolve_source(m, Path(data_dir))
        device = pick_device(m.device)
        dtype = pick_dtype(m.dtype, device)
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
                   batch_wait_ms=m.batch_wait_ms, batching=getattr(m, "batching", "continuous"))
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

    def _adapter_context(self, adapter: str):
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return contextlib.nullcontext()
        if not adapter:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    # -- generation --------------------------------------------------------------------------------------

    async def generate(self, messages, decoding, *, adapter=None, on_text=None) -> list[Generation]:
        """`decoding.num_return_sequences` generations for the chat `messages`; `on_text` receives the answer so
        far while it is decoded (one sequence, not beam search). Raises ValueError for an unknown adapter."""
        adapter = self._adapter if adapter is None else adapter
        if adapter and adapter not in self.adapters:
            raise ValueError(f"unknown adapter {adapter!r}; loaded: {', '.join(self.adapters) or 'none'}")
        return await self._submit(self._encode_chat(messages), decoding, adapter, on_text)

    async def continue_answer(self, messages, prefix: str, decoding, *, adapter=None,
                              on_text=None) -> list[Generation]:
        """Like `generate`, but the assistant's answer already begins with `prefix` (its tokens follow the chat
        prompt's assistant header); the generations hold only what comes after it, and so does `on_text`."""
        adapter = self._adapter if adapter is None else adapter
        if adapter and adapter not in self.adapters:
            raise ValueError(f"unknown adapter {adapter!r}; loaded: {', '.join(self.adapters) or 'none'}")
        return await self._submit(self._prefixed_ids(messages, prefix), decoding, adapter, on_text)

    async def _submit(self, prompt_ids: list[int], decoding, adapter: str, on_text=None, *, mask=None,
                      stop: tuple[str, ...] = ()) -> list[Generation]:
        loop = asyncio.get_running_loop()
        req = Request(prompt_ids, decoding, adapter, loop, loop.create_future(), on_text, mask=mask, stop=stop)
        self._queue.put(req)
        return await req.future

    def close(self) -> None:
        """Stop the worker thread (after the requests already queued)."""
        self._queue.put(None)
        self._worker.join(30)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
