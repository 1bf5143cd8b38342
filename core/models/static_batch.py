"""The static batcher: gather requests with identical decoding settings and adapter for a short window, then run
them as one left-padded `model.generate` call; a request that arrives meanwhile waits for the whole batch.

Kept for beam search (which needs `generate`'s beam bookkeeping) and selectable with
`model.batching = "static"` so bench/serving.py can compare it with the continuous scheduler.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import TYPE_CHECKING

from core.decoding import to_generation_kwargs

from .base import Generation
from .requests import Request, call_in_loop, deliver, fail

if TYPE_CHECKING:
    from .transformers_backend import TransformersChatModel

__all__ = ["GreedyOpening", "generate_static", "run_static"]

logger = logging.getLogger(__name__)


def run_static(owner: TransformersChatModel) -> None:
    """Worker loop: serve `owner._queue` batch by batch until it yields None."""
    pending: list[Request] = []
    while True:
        # 1. Take the oldest waiting request, then gather compatible ones that arrive within a short window.
        first = pending.pop(0) if pending else owner._queue.get()
        if first is None:
            return
        batch = [first]
        batch += [r for r in pending if r.key() == first.key()][: owner.max_batch_size - 1]
        pending = [r for r in pending if all(r is not b for b in batch)]
        deadline = time.perf_counter() + owner.batch_wait_s
        while len(batch) < owner.max_batch_size:
            try:
                nxt = owner._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if nxt is None:
                owner._queue.put(None)
                break
            (batch if nxt.key() == first.key() else pending).append(nxt)
        # 2. Run them together; any failure is delivered to every caller in the batch.
        try:
            results = generate_static(owner, batch)
        except Exception as e:  # noqa: BLE001 - handed to the awaiting coroutines
            logger.exception("generation failed")
            for r in batch:
                fail(r, e)
            continue
        for r, res in zip(batch, results, strict=True):
            deliver(r, res)


def generate_static(owner: TransformersChatModel, batch: list[Request]) -> list[list[Generation]]:
    """One `generate` call for requests sharing decoding settings (max_new_tokens may differ) and adapter.
    Returns, per request, its `num_return_sequences` generations."""
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList

    d = batch[0].decoding
    # Left-pad so every prompt ends where generation starts.
    width = max(len(r.prompt_ids) for r in batch)
    ids = torch.full((len(batch), width), owner._pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, r in enumerate(batch):
        ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
        mask[i, width - len(r.prompt_ids):] = 1
    limits = [r.decoding.max_new_tokens for r in batch]
    n = d.num_return_sequences
    gen_kw = to_generation_kwargs(d)
    gen_kw["max_new_tokens"] = max(limits)
    config = GenerationConfig(**gen_kw, eos_token_id=owner._eos_ids, pad_token_id=owner._pad_id)
    stream = d.strategy != "beam" and n == 1
    streamer = _BatchStreamer(owner, batch) if stream else None
    stopping = StoppingCriteriaList([_RowLimits(limits, width)])
    if d.seed is not None:
        torch.manual_seed(d.seed)
    device = owner.model.device
    with owner._lock, torch.inference_mode(), owner._adapter_context(batch[0].adapter):
        out = owner.model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
            streamer=streamer, stopping_criteria=stopping,
            **({"logits_processor": [GreedyOpening(d.greedy_opening, width)]}
               if d.strategy == "sample" and d.greedy_opening else {}),
        )
    out = out[:, width:].tolist()
    results = []
    for i, r in enumerate(batch):
        gens = []
        for row in out[i * n:(i + 1) * n]:
            tokens = _cut(row, limits[i], owner._eos_ids)
            gens.append(Generation(
                text=owner.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                prompt_tokens=len(r.prompt_ids),
                completion_tokens=len(tokens),
                first_token_s=streamer.first_token_s[i] if streamer else None,
                extra={"batch_size": len(batch)},
            ))
        results.append(gens)
    return results


def _cut(row: list[int], limit: int, eos_ids: list[int]) -> list[int]:
    for j, t in enumerate(row[:limit]):
        if t in eos_ids:
            return row[:j]
    return row[:limit]


class GreedyOpening:  # duck-typed transformers LogitsProcessor
    """Sampling that takes the most likely token for the answer's first `n` tokens (decoding.greedy_opening)."""

    def __init__(self, n: int, width: int) -> None:
        self.n, self.width = n, width

    def __call__(self, input_ids, scores):
        import torch

        if input_ids.shape[1] - self.width >= self.n:
            return scores
        top = scores.argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter(1, top, scores.gather(1, top))


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

    def __init__(self, owner: TransformersChatModel, batch: list[Request]) -> None:
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
                    call_in_loop(r, r.on_text, text.strip())

    def end(self) -> None:
        pass
