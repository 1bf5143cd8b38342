"""Constrained decoding for the agent: greedy continuation over an allowed-token mask with stop strings
(`complete`) and a choice among fixed options over a token trie (`choose`). Mixed into TransformersChatModel."""

from __future__ import annotations

import asyncio

from core.decoding import DecodingConfig

__all__ = ["ConstrainedDecoding"]


class ConstrainedDecoding:
    """Needs from its host: model, tokenizer, _lock, _eos_ids, _adapter, _encode_chat, _adapter_context, _submit,
    batching ("continuous": `complete` runs as a masked greedy row of the running batch)."""


    async def complete(self, messages: list[dict[str, str]], prefix: str, *, max_new_tokens: int = 48,
                       stop: tuple[str, ...] = ("\n",), banned: str = "", allowed: str = "",
                       adapter: str | None = None) -> str:
        """Greedy continuation of the assistant's partial answer `prefix`, cut at the first stop string.
        `allowed` limits tokens to those made only of these characters; `banned` forbids tokens containing any
        of them (tokens that begin with a stop string are always allowed, so the model can finish)."""
        adapter = self._adapter if adapter is None else adapter
        if getattr(self, "batching", "static") == "continuous":  # a masked greedy row in the running batch
            mask = await asyncio.to_thread(self._token_mask, stop, banned, allowed)
            gens = await self._submit(self._prefixed_ids(messages, prefix), DecodingConfig(
                max_new_tokens=max_new_tokens), adapter, mask=mask, stop=stop)
            out = gens[0].text
            for s in stop:
                out = out.split(s)[0]
            return out
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
