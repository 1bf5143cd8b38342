"""Continuous batching for the in-process transformers backend.

One worker thread owns a running batch: a left-padded KV cache (transformers' `DynamicCache`, [rows, heads,
positions, head_dim] per layer) with a 2-D attention mask and explicit position ids. Between two decode steps it
takes every request that has arrived, prefills the newcomers together, draws their first token (time to first
token = queueing + one prefill, not the rest of somebody else's answer) and concatenates their cache rows onto the
batch, padding whichever side is shorter on the left. Each decode step feeds every row its last token; rows that
finish (end-of-turn token, their own `max_new_tokens`, a stop string, the context window, or a caller that gave
up) leave the batch at once and all-padding columns are trimmed. Rows keep their own decoding settings
(sampling.py: temperature, top-k, top-p, min-p, repetition penalty, seed) and their own LoRA adapter (peft's
`adapter_names=` mixed-adapter batches; "__base__" for the base model), so nothing waits for a compatible batch.
Beam search keeps `generate`'s own path (static_batch.generate_static), run between two steps.

Why not transformers' own continuous batching (`generation/continuous_batching`, `init_continuous_batching`,
installed 5.x): it is built around paged attention and CUDA graphs (on CPU it falls back to `paged|eager`), runs
its own background thread on the model (our adapter changes and constrained decoding share the model under one
lock), its per-request settings are only temperature/top-k/top-p (no repetition penalty, min-p or per-request
seed), and it has no way to run rows on different LoRA adapters. Hence this scheduler around the model's ordinary
KV cache, which serves CPU and GPU alike.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import Generation
from .requests import Request, call_in_loop, deliver, fail
from .sampling import RowSampler, choose_tokens
from .static_batch import generate_static

if TYPE_CHECKING:
    from .transformers_backend import TransformersChatModel

__all__ = ["ContinuousScheduler"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    """One request: its rows' generations, delivered together when the last row finishes."""

    req: Request
    gens: list[Generation | None]
    left: int


@dataclass(eq=False)
class _Row:
    job: _Job
    seq: int  # which of the request's return sequences
    sampler: RowSampler
    limit: int  # most new tokens for this row
    tokens: list[int] = field(default_factory=list)
    first_token_s: float | None = None
    done: bool = False
    peak: int = 0  # the most rows it shared a forward pass with

    @property
    def req(self) -> Request:
        return self.job.req


class ContinuousScheduler:
    """The worker loop of `TransformersChatModel(batching="continuous")`; `run()` returns after the queue yields
    None and the rows in flight have finished."""

    def __init__(self, owner: TransformersChatModel) -> None:
        self.owner = owner
        self.rows: list[_Row] = []
        self.cache = None  # DynamicCache of self.rows, or None when idle
        self.attn = None  # LongTensor [rows, positions]: 1 = a real token
        self.waiting: deque[Request] = deque()
        self.closing = False

    # -- the loop ------------------------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            self._take_arrivals(block=not self.rows and not self.waiting and not self.closing)
            if self.closing and not self.rows and not self.waiting:
                return
            try:
                self._admit()
                if self.rows:
                    self._decode_step()
            except Exception as e:  # noqa: BLE001 - a bug here must not kill the worker: fail the batch, go on
                logger.exception("scheduler step failed")
                for job in {id(r.job): r.job for r in self.rows}.values():
                    fail(job.req, e)
                self.rows, self.cache, self.attn = [], None, None

    def _take_arrivals(self, *, block: bool) -> None:
        q = self.owner._queue
        while True:
            try:
                item = q.get() if block else q.get_nowait()
            except queue.Empty:
                return
            block = False
            if item is None:
                self.closing = True
            else:
                self.waiting.append(item)

    def _admit(self) -> None:
        """Move waiting requests into the batch (up to max_batch_size rows) and prefill them."""
        new: list[_Row] = []
        while self.waiting:
            req = self.waiting[0]
            d = req.decoding
            if d.strategy == "beam":  # beam search keeps generate's bookkeeping, run between two steps
                self.waiting.popleft()
                self._run_static(req)
                continue
            free = self.owner.max_batch_size - len(self.rows) - len(new)
            if d.num_return_sequences > free and (self.rows or new):
                break
            self.waiting.popleft()
            if req.future.cancelled():
                continue
            new += self._rows_for(req)
        if new:
            self._prefill(new)

    def _rows_for(self, req: Request) -> list[_Row]:
        d = req.decoding
        n = d.num_return_sequences
        job = _Job(req, [None] * n, n)
        limit = max(1, min(d.max_new_tokens, self.owner.context_window - len(req.prompt_ids)))
        device = str(self.owner.model.device)
        return [
            _Row(job, j, RowSampler(d, list(req.prompt_ids), seed=None if d.seed is None else d.seed + j,
                                    mask=req.mask, device=device), limit)
            for j in range(n)
        ]

    def _run_static(self, req: Request) -> None:
        try:
            deliver(req, generate_static(self.owner, [req])[0])
        except Exception as e:  # noqa: BLE001 - handed to the awaiting coroutine
            logger.exception("generation failed")
            fail(req, e)

    # -- model calls ---------------------------------------------------------------------------------------

    def _forward(self, rows: list[_Row], **kw):
        import torch
        from peft import PeftModel

        model = self.owner.model
        if isinstance(model, PeftModel):  # each row on its own adapter (LoRA mixed-adapter batch)
            kw["adapter_names"] = [r.req.adapter or "__base__" for r in rows]
        for r in rows:
            r.peak = max(r.peak, len(rows))
        with self.owner._lock, torch.inference_mode():
            return model(use_cache=True, logits_to_keep=1, **kw)

    def _prefill(self, rows: list[_Row]) -> None:
        import torch

        device = self.owner.model.device
        width = max(len(r.req.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self.owner._pad_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            p = r.req.prompt_ids
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        attn = attn.to(device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        try:
            out = self._forward(rows, input_ids=ids.to(device), attention_mask=attn, position_ids=pos)
            tokens = choose_tokens(out.logits[:, -1], [r.sampler for r in rows])
        except Exception as e:  # noqa: BLE001 - only these requests fail; the running batch goes on
            logger.exception("prefill failed")
            for job in {id(r.job): r.job for r in rows}.values():
                fail(job.req, e)
            return
        self._merge(out.past_key_values, attn, rows)
        now = time.perf_counter()
        for r, tok in zip(rows, tokens, strict=True):
            self._accept(r, tok, now)
        self._drop_finished()

    def _decode_step(self) -> None:
        import torch

        rows = self.rows
        device = self.attn.device
        last = torch.tensor([[r.tokens[-1]] for r in rows], device=device)
        pos = self.attn.sum(dim=1, keepdim=True)  # real tokens so far = the new token's position
        attn = torch.cat([self.attn, torch.ones((len(rows), 1), dtype=self.attn.dtype, device=device)], dim=1)
        try:
            out = self._forward(rows, input_ids=last, attention_mask=attn, position_ids=pos,
                                past_key_values=self.cache)
            tokens = choose_tokens(out.logits[:, -1], [r.sampler for r in rows])
        except Exception as e:  # noqa: BLE001 - the whole batch failed; tell every caller, start afresh
            logger.exception("decode step failed")
            for job in {id(r.job): r.job for r in rows}.values():
                fail(job.req, e)
            self.rows, self.cache, self.attn = [], None, None
            return
        self.cache, self.attn = out.past_key_values, attn
        now = time.perf_counter()
        for r, tok in zip(rows, tokens, strict=True):
            self._accept(r, tok, now)
        self._drop_finished()

    # -- the batch's KV cache --------------------------------------------------------------------------------

    def _merge(self, cache, attn, rows: list[_Row]) -> None:
        """Append prefilled rows (their cache and mask) to the running batch, left-padding the shorter side."""
        import torch
        import torch.nn.functional as F

        if self.cache is None:
            self.cache, self.attn, self.rows = cache, attn, list(rows)
            return
        width = max(self.attn.shape[1], attn.shape[1])

        def lpad(t, dim_from_end: int):
            missing = width - t.shape[-dim_from_end]
            if not missing:
                return t
            return F.pad(t, (0, 0, missing, 0) if dim_from_end == 2 else (missing, 0))

        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([lpad(old.keys, 2), lpad(new.keys, 2)], dim=0)
            old.values = torch.cat([lpad(old.values, 2), lpad(new.values, 2)], dim=0)
        self.attn = torch.cat([lpad(self.attn, 1), lpad(attn, 1)], dim=0)
        self.rows += rows

    def _drop_finished(self) -> None:
        """Finished (or abandoned) rows leave the batch now; columns that are padding in every row go too."""
        import torch

        for r in self.rows:
            if not r.done and r.req.future.cancelled():
                r.done = True
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.attn = [], None, None
            return
        idx = torch.tensor(keep, device=self.attn.device)
        attn = self.attn.index_select(0, idx)
        start = int(attn.any(dim=0).nonzero()[0])
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, idx)[:, :, start:]
            layer.values = layer.values.index_select(0, idx)[:, :, start:]
        self.attn = attn[:, start:]
        self.rows = [self.rows[i] for i in keep]

    # -- tokens out ------------------------------------------------------------------------------------------

    def _accept(self, row: _Row, tok: int, now: float) -> None:
        """Record one new token of `row`: stream it, and finish the row at end-of-turn, its limit or a stop."""
        owner, req = self.owner, row.req
        if row.first_token_s is None:
            row.first_token_s = now - req.submitted
        if tok in owner._eos_ids:
            self._finish(row)
            return
        row.tokens.append(tok)
        row.sampler.history.append(tok)
        text = None
        if req.on_text is not None and req.decoding.num_return_sequences == 1:
            text = owner.tokenizer.decode(row.tokens, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                call_in_loop(req, req.on_text, text.strip())
        if req.stop:
            text = owner.tokenizer.decode(row.tokens)
            if any(s in text for s in req.stop):
                self._finish(row)
                return
        if len(row.tokens) >= row.limit:
            self._finish(row)

    def _finish(self, row: _Row) -> None:
        row.done = True
        req, job = row.req, row.job
        constrained = req.mask is not None or bool(req.stop)
        text = self.owner.tokenizer.decode(row.tokens, skip_special_tokens=not constrained)
        job.gens[row.seq] = Generation(
            text=text if constrained else text.strip(),
            prompt_tokens=len(req.prompt_ids),
            completion_tokens=len(row.tokens),
            first_token_s=row.first_token_s,
            extra={"batch_size": row.peak},
        )
        job.left -= 1
        if job.left == 0:
            deliver(req, job.gens)
