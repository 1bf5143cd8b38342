"""Decoding strategies: one validated config, named presets, and the mapping onto each backend."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "BUILTIN_PRESETS",
    "DecodingConfig",
    "DecodingError",
    "resolve_decoding",
    "to_generation_kwargs",
    "to_openai_params",
]


class DecodingError(ValueError):
    """A decoding request that is invalid, or that the backend cannot do."""


class DecodingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["greedy", "beam", "sample"] = "greedy"
    max_new_tokens: int = Field(default=256, ge=1, le=32768)
    # beam search
    num_beams: int = Field(default=1, ge=1, le=32)
    length_penalty: float = 1.0
    early_stopping: bool = False
    # sampling
    temperature: float = Field(default=1.0, gt=0.0, le=5.0)
    top_k: int = Field(default=0, ge=0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    # min-p (Nguyen et al. 2024): keep tokens with p >= min_p * p(most likely); 0 = off
    min_p: float = Field(default=0.0, ge=0.0, lt=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=5.0)
    # sampling: the answer's first N tokens are the most likely ones, then sampling takes over (in-process backend;
    # HTTP backends sample from the first token). The opening is where a 135M model derails for good.
    greedy_opening: int = Field(default=0, ge=0, le=64)
    num_return_sequences: int = Field(default=1, ge=1, le=16)
    seed: int | None = None

    @model_validator(mode="after")
    def _check(self) -> DecodingConfig:
        if self.strategy == "beam" and self.num_beams < 2:
            raise ValueError("beam search needs num_beams >= 2")
        if self.strategy != "beam" and self.num_beams != 1:
            raise ValueError(f"num_beams is only for strategy 'beam' (strategy is {self.strategy!r})")
        if self.strategy == "beam" and self.num_return_sequences > self.num_beams:
            raise ValueError("num_return_sequences cannot exceed num_beams")
        if self.strategy == "greedy" and self.num_return_sequences > 1:
            raise ValueError("greedy decoding returns one sequence; use 'sample' or 'beam' for several")
        return self

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one `generate` call (max_new_tokens may differ)."""
        return tuple(v for k, v in self.model_dump().items() if k != "max_new_tokens")


BUILTIN_PRESETS: dict[str, DecodingConfig] = {
    "precise": DecodingConfig(strategy="greedy", max_new_tokens=256, repetition_penalty=1.1),
    # The shipped default (issue 17, bench/quality.py). min-p drops what the model itself finds unlikely next to its
    # best guess: the 135M model's French or off-topic openings at T=0.6/top-p 0.9 were such tails. Its first token
    # is the most likely one: "The" and a French "L" are a near-tie for "What is the capital of France?" (4 of 8
    # sampled answers opened in French; 0 of 8 with the greedy opening), and on the general set (66 questions,
    # 2 runs, one run of all three) the greedy opening scored 0.697 ± 0.021 vs 0.614 ± 0.011 without it and 0.591
    # for greedy. Sampling stays after it, so "try another answer" still words the answer differently (0.95).
    "balanced": DecodingConfig(strategy="sample", temperature=0.5, top_p=1.0, top_k=0, min_p=0.1,
                               repetition_penalty=1.1, greedy_opening=1),
    "creative": DecodingConfig(strategy="sample", temperature=1.0, top_p=0.95, top_k=0, repetition_penalty=1.05),
    "beam": DecodingConfig(strategy="beam", num_beams=4, length_penalty=1.0, early_stopping=True),
}


def resolve_decoding(
    presets: dict[str, DecodingConfig], preset: str, overrides: dict[str, Any] | None = None
) -> DecodingConfig:
    """A preset by name with per-message overrides applied; errors list what is valid."""
    if preset not in presets:
        raise DecodingError(f"unknown preset {preset!r}; valid presets: {', '.join(sorted(presets))}")
    base = presets[preset]
    if not overrides:
        return base
    unknown = set(overrides) - set(DecodingConfig.model_fields)
    if unknown:
        raise DecodingError(
            f"unknown decoding option(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(DecodingConfig.model_fields)}"
        )
    merged = {**base.model_dump(), **overrides}
    # Switching strategy by override should not inherit knobs that belong to the old one.
    if overrides.get("strategy") in ("greedy", "sample") and "num_beams" not in overrides:
        merged["num_beams"] = 1
    if overrides.get("strategy") == "beam" and "num_beams" not in overrides and merged["num_beams"] < 2:
        merged["num_beams"] = 4
    if overrides.get("strategy") == "greedy" and "num_return_sequences" not in overrides:
        merged["num_return_sequences"] = 1
    try:
        return DecodingConfig(**merged)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'decoding'}: {x['msg']}" for x in e.errors())
        raise DecodingError(f"invalid decoding options: {msgs}") from None


def to_generation_kwargs(d: DecodingConfig) -> dict[str, Any]:
    """Arguments for transformers' GenerationConfig."""
    kw: dict[str, Any] = {
        "max_new_tokens": d.max_new_tokens,
        "num_return_sequences": d.num_return_sequences,
        "repetition_penalty": d.repetition_penalty,
    }
    match d.strategy:
        case "greedy":
            kw.update(do_sample=False, num_beams=1)
        case "beam":
            kw.update(
                do_sample=False,
                num_beams=d.num_beams,
                length_penalty=d.length_penalty,
                early_stopping=d.early_stopping,
            )
        case "sample":
            kw.update(do_sample=True, num_beams=1, temperature=d.temperature, top_p=d.top_p, top_k=d.top_k)
            if d.min_p:
                kw["min_p"] = d.min_p
    return kw


def to_openai_params(d: DecodingConfig) -> dict[str, Any]:
    """Chat-completions parameters. top_k and repetition_penalty are extensions that vLLM,
    llama.cpp server and Ollama's OpenAI endpoint accept; they are sent only when not neutral."""
    if d.strategy == "beam":
        raise DecodingError(
            "beam search is not available over the OpenAI-compatible HTTP backend; "
            "use a 'greedy' or 'sample' preset (e.g. 'precise') or the transformers backend"
        )
    p: dict[str, Any] = {"max_tokens": d.max_new_tokens, "n": d.num_return_sequences}
    if d.strategy == "greedy":
        p["temperature"] = 0.0
    else:
        p.update(temperature=d.temperature, top_p=d.top_p)
        if d.top_k:
            p["top_k"] = d.top_k
        if d.min_p:
            p["min_p"] = d.min_p
    if d.repetition_penalty != 1.0:
        p["repetition_penalty"] = d.repetition_penalty
    if d.seed is not None:
        p["seed"] = d.seed
    return p
