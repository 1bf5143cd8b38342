"""The base model with a candidate adapter and the serving one loaded side by side: what each answers (greedy, or
sampled as people are answered) and how likely each finds a given answer. The gate (`training/gate.py`) and replay
(`training/replay.py`) ask it; what the serving policy and the base model say is computed once per night (`memo`).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Policies"]


class Policies:
    """The base model with the candidate and (if any) the serving adapter loaded side by side ("candidate", "serving",
    "base" name them). What the serving policy and the base model answered and scored is computed once (the gate's
    knife-edge check asks for serving's fact twice); with a `memo` dict it is kept there, so judging several
    candidates against the same serving policy (the nightly job's pull-back) computes their side once."""

    def __init__(self, base_model: str, candidate: Path | None, serving: Path | None, batch_size: int,
                 memo: dict | None = None) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from training.common import load_tokenizer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = load_tokenizer(base_model)
        self.tokenizer.padding_side = "left"  # generation continues where each prompt ends
        base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype).to(self.device)
        self.batch_size = batch_size
        self.has_serving = serving is not None
        self.memo = {} if memo is None else memo
        if candidate is None:  # the base model alone (e.g. to replay what it answers while nothing is promoted)
            self.model = base.eval()
            return
        self.model = PeftModel.from_pretrained(base, str(candidate), adapter_name="candidate").eval()
        if serving is not None:
            self.model.load_adapter(str(serving), adapter_name="serving")

    @contextmanager
    def use(self, which: str):
        if not hasattr(self.model, "disable_adapter"):
            yield
        elif which == "base" or (which == "serving" and not self.has_serving):
            with self.model.disable_adapter():  # the base model (nothing promoted yet: it serves)
                yield
        else:
            self.model.set_adapter(which)
            yield

    def generate(self, which: str, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        return [text for text, _ in self.generate_ended(which, prompts, max_new_tokens)]

    def memoised(self, which: str, key: tuple, compute):
        """`compute()`, kept in the memo under (which, *key) unless `which` is "candidate" (it changes with every
        call): what serving, the base model or the judge say is the same for every candidate judged tonight."""
        if which == "candidate":
            return compute()
        if (which, *key) not in self.memo:
            self.memo[(which, *key)] = compute()
        return self.memo[(which, *key)]

    def generate_ended(self, which: str, prompts: list[list[dict[str, str]]], max_new_tokens: int
                       ) -> list[tuple[str, bool]]:
        """Greedy answers, each with whether it ended by itself (False: cut off at `max_new_tokens`)."""
        key = ("generate", json.dumps(prompts), max_new_tokens)
        return list(self.memoised(which, key, lambda: self._generate_ended(which, prompts, max_new_tokens)))

    def _generate_ended(self, which: str, prompts: list[list[dict[str, str]]], max_new_tokens: int
                        ) -> list[tuple[str, bool]]:
        import torch

        out: list[tuple[str, bool]] = []
        tok = self.tokenizer
        with self.use(which):
            for i in range(0, len(prompts), self.batch_size):
                enc = tok.apply_chat_template(prompts[i:i + self.batch_size], add_generation_prompt=True,
                                              return_tensors="pt", padding=True, return_dict=True
                                              ).to(self.device)
                with torch.inference_mode():
                    ids = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                              pad_token_id=tok.pad_token_id)
                width = enc["input_ids"].shape[1]
                for row in ids[:, width:]:
                    ended = bool((row == tok.eos_token_id).any() or (row == tok.pad_token_id).any())
                    out.append((tok.decode(row, skip_special_tokens=True).strip(), ended))
        return out

    def sample(self, which: str, prompts: list[list[dict[str, str]]], max_new_tokens: int, n: int,
               seed: int = 0) -> list[list[str]]:
        """`n` answers per prompt, sampled as people are answered by default (core's "balanced" preset: temperature
        0.5, min-p 0.1, repetition penalty 1.1, the first token greedy), the same for the same `seed`. Why sampled:
        a greedy answer says whether the policy's likeliest answer does a thing; n sampled answers say how often it
        does, which moves with every night, not only where the likeliest answer flips."""
        key = ("sample", json.dumps(prompts), max_new_tokens, n, seed)
        return list(self.memoised(which, key, lambda: self._sample(which, prompts, max_new_tokens, n, seed)))

    def _sample(self, which: str, prompts: list[list[dict[str, str]]], max_new_tokens: int, n: int,
                seed: int) -> list[list[str]]:
        import torch

        from core.decoding import BUILTIN_PRESETS, to_generation_kwargs
        from core.models.static_batch import GreedyOpening

        preset = BUILTIN_PRESETS["balanced"]
        kw = to_generation_kwargs(preset) | {"max_new_tokens": max_new_tokens, "num_return_sequences": n}
        tok = self.tokenizer
        out: list[list[str]] = []
        torch.manual_seed(seed)
        with self.use(which):
            for i in range(0, len(prompts), self.batch_size):
                enc = tok.apply_chat_template(prompts[i:i + self.batch_size], add_generation_prompt=True,
                                              return_tensors="pt", padding=True, return_dict=True).to(self.device)
                width = enc["input_ids"].shape[1]
                with torch.inference_mode():
                    # Keyword arguments over the model's own generation config (its end-of-turn tokens kept).
                    ids = self.model.generate(**enc, **kw, pad_token_id=tok.pad_token_id,
                                              logits_processor=[GreedyOpening(preset.greedy_opening, width)])
                texts = [tok.decode(row, skip_special_tokens=True).strip() for row in ids[:, width:]]
                out += [texts[j:j + n] for j in range(0, len(texts), n)]
        return out

    def logp(self, which: str, prompt: list[dict[str, str]], answer: str) -> float:
        """Mean log-probability per answer token (the end-of-turn token included)."""
        return self.memoised(which, ("logp", json.dumps(prompt), answer), lambda: self._logp(which, prompt, answer))

    def fact_logp(self, which: str, prompt: list[dict[str, str]], answer: str, span: tuple[int, int]) -> float:
        """Log-probability (nats) of answer[start:end], the whitespace before it included, after the prompt and
        answer[:start], in any of its casings (as written, lower, Capitalized, Title: their probabilities summed, as
        a fact is matched case-insensitively): how likely the policy finds the fact where the answer states it. Why
        the casings: after night 2 of bench/loop.py (2026-12-06) the model found " blue whale" as likely as the base
        model did (-1.64 vs -1.65 nats) and " Blue Whale", the base model's spelling, 1.2 nats less likely."""
        start, end = span
        fact = answer[start:end]
        spellings = (fact, fact.lower(), fact.capitalize(), fact.title())
        variants = dict.fromkeys(v for v in spellings if len(v) == len(fact))  # a casing that keeps the offsets
        scores = [self.memoised(which, ("fact", json.dumps(prompt), answer[:start] + v, (start, end)),
                                 lambda v=v: self._fact_logp(which, prompt, answer[:start] + v, (start, end)))
                  for v in variants]
        top = max(scores)
        return top + math.log(sum(math.exp(x - top) for x in scores))

    def _fact_logp(self, which: str, prompt: list[dict[str, str]], answer: str, span: tuple[int, int]) -> float:
        """Summed log-probability of answer[start:end] (one spelling) after the prompt and answer[:start]."""
        import torch

        tok = self.tokenizer
        start = len(answer[:span[0]].rstrip())  # " blue whale" is one piece with its space, as generated
        head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        before = tok(head + answer[:start], add_special_tokens=False)["input_ids"]
        ids = tok(head + answer[:span[1]], add_special_tokens=False)["input_ids"]
        # The fact's tokens: from where the two tokenizations part (a merge across the boundary moves it earlier).
        first = next((i for i, (a, b) in enumerate(zip(before, ids, strict=False)) if a != b), len(before))
        if first == 0 or first >= len(ids):
            return 0.0
        t = torch.tensor([ids], device=self.device)
        with self.use(which), torch.inference_mode():
            logits = self.model(input_ids=t).logits[0, first - 1:-1].float()
        return float(torch.log_softmax(logits, -1).gather(1, t[0, first:, None]).sum())

    def _logp(self, which: str, prompt: list[dict[str, str]], answer: str) -> float:
        import torch

        tok = self.tokenizer
        head = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
        full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": answer}],
                                       return_dict=True)["input_ids"]
        ids = torch.tensor([full], device=self.device)
        with self.use(which), torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0, :-1].float()
        targets = ids[0, 1:]
        logps = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
        return float(logps[len(head) - 1:].mean())
