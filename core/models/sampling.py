"""Per-row logits processing and token choice for a batch whose rows each have their own decoding settings.

One decode step of the continuous scheduler hands this module the last-position logits of every row, [B, vocab],
and gets back one token id per row. Row i follows its own DecodingConfig: repetition penalty over its prompt and
answer so far, then greedy argmax, or temperature → top-k → top-p → min-p and a draw from its own
`torch.Generator` (seeded when the request gives a seed, so a seeded row draws the same tokens in any batch).
The order and meaning of the knobs are those of transformers' logits processors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.decoding import DecodingConfig

__all__ = ["RowSampler", "choose_tokens"]


@dataclass(eq=False)
class RowSampler:
    """One row's settings and state. `history`: prompt and answer token ids so far (for the repetition penalty);
    `mask`: optional bool [vocab] of allowed tokens (constrained decoding)."""

    decoding: DecodingConfig
    history: list[int]
    seed: int | None = None
    mask: Any = None
    device: str = "cpu"
    generator: Any = field(default=None, repr=False)
    prompt_len: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        import torch

        self.prompt_len = len(self.history)

        if self.decoding.strategy == "sample":
            self.generator = torch.Generator(device=self.device)
            if self.seed is not None:
                self.generator.manual_seed(self.seed)
            else:
                self.generator.seed()

    @property
    def greedy(self) -> bool:
        return self.decoding.strategy != "sample"


def choose_tokens(logits, rows: list[RowSampler]) -> list[int]:
    """logits: float tensor [B, vocab] (one row per RowSampler, same order); returns B token ids."""
    import torch

    logits = logits.float().clone()  # ours to change in place (also when the model's were float32 already)
    # Repetition penalty (CTRL, Keskar et al. 2019): divide positive / multiply negative logits of seen tokens.
    for i, r in enumerate(rows):
        p = r.decoding.repetition_penalty
        if p != 1.0 and r.history:
            seen = torch.tensor(sorted(set(r.history)), device=logits.device)
            s = logits[i, seen]
            logits[i, seen] = torch.where(s < 0, s * p, s / p)
        if r.mask is not None:
            logits[i, ~r.mask.to(logits.device)[: logits.shape[1]]] = float("-inf")
    out = logits.argmax(dim=-1).tolist()
    # Sampling rows still in their greedy opening (decoding.greedy_opening) take the argmax too.
    sampled = [i for i, r in enumerate(rows)
               if not r.greedy and len(r.history) - r.prompt_len >= r.decoding.greedy_opening]
    if not sampled:
        return out
    idx = torch.tensor(sampled, device=logits.device)
    x = logits.index_select(0, idx)
    ds = [rows[i].decoding for i in sampled]
    x = x / torch.tensor([d.temperature for d in ds], device=x.device).unsqueeze(1)
    vocab = x.shape[1]
    top_k = torch.tensor([min(d.top_k, vocab) if d.top_k else vocab for d in ds], device=x.device)
    top_p = torch.tensor([d.top_p for d in ds], device=x.device)
    min_p = torch.tensor([d.min_p for d in ds], device=x.device)
    if bool((top_k < vocab).any() or (top_p < 1.0).any()):
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        ranks = torch.arange(vocab, device=x.device).unsqueeze(0)
        remove = ranks >= top_k.unsqueeze(1)  # top-k: keep the k most likely
        sorted_x = sorted_x.masked_fill(remove, float("-inf"))
        probs = sorted_x.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
        # top-p: the smallest set whose mass reaches p (the most likely token always kept; p = 1 keeps all)
        remove |= (before >= top_p.unsqueeze(1)) & (top_p < 1.0).unsqueeze(1)
        x = x.scatter(1, order, sorted_x.masked_fill(remove, float("-inf")))
    probs = x.softmax(dim=-1)
    if bool((min_p > 0).any()):
        floor = min_p.unsqueeze(1) * probs.max(dim=-1, keepdim=True).values
        probs = probs.masked_fill(probs < floor, 0.0)
    for j, i in enumerate(sampled):
        out[i] = int(torch.multinomial(probs[j], 1, generator=rows[i].generator))
    return out
