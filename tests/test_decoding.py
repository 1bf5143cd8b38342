import pytest
from transformers import GenerationConfig

from core.decoding import (
    BUILTIN_PRESETS,
    DecodingConfig,
    DecodingError,
    resolve_decoding,
    to_generation_kwargs,
    to_openai_params,
)


def test_presets_map_to_valid_generation_configs():
    for name, d in BUILTIN_PRESETS.items():
        cfg = GenerationConfig(**to_generation_kwargs(d))
        cfg.validate(strict=True)  # transformers rejects inconsistent flag combinations
        match d.strategy:
            case "greedy":
                assert not cfg.do_sample and cfg.num_beams == 1, name
            case "beam":
                assert cfg.num_beams >= 2 and not cfg.do_sample and cfg.early_stopping is True, name
            case "sample":
                assert cfg.do_sample and cfg.temperature == d.temperature and cfg.top_p == d.top_p, name


def test_override_per_message():
    d = resolve_decoding(BUILTIN_PRESETS, "precise", {"max_new_tokens": 12, "repetition_penalty": 1.3})
    assert d.strategy == "greedy" and d.max_new_tokens == 12 and d.repetition_penalty == 1.3
    beam = resolve_decoding(BUILTIN_PRESETS, "beam", {"strategy": "sample", "temperature": 0.3})
    assert beam.num_beams == 1 and beam.strategy == "sample"
    to_beam = resolve_decoding(BUILTIN_PRESETS, "balanced", {"strategy": "beam"})
    assert to_beam.num_beams == 4


def test_unknown_preset_lists_valid():
    with pytest.raises(DecodingError, match="valid presets: balanced, beam, creative, precise"):
        resolve_decoding(BUILTIN_PRESETS, "spicy")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"temperature": 0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"warmth": 3}, "unknown decoding option"),
        ({"num_return_sequences": 3}, "greedy decoding returns one sequence"),
    ],
)
def test_invalid_overrides(overrides, needle):
    with pytest.raises(DecodingError, match=needle):
        resolve_decoding(BUILTIN_PRESETS, "precise", overrides)


def test_openai_mapping():
    assert to_openai_params(BUILTIN_PRESETS["precise"])["temperature"] == 0.0
    p = to_openai_params(DecodingConfig(strategy="sample", temperature=0.8, top_p=0.9, top_k=40, seed=7,
                                        num_return_sequences=2, max_new_tokens=64))
    assert p == {"max_tokens": 64, "n": 2, "temperature": 0.8, "top_p": 0.9, "top_k": 40, "seed": 7}
    with pytest.raises(DecodingError, match="beam search is not available over the OpenAI-compatible HTTP backend"):
        to_openai_params(BUILTIN_PRESETS["beam"])


def test_batch_key_ignores_length_only():
    a = DecodingConfig(max_new_tokens=10)
    assert a.batch_key() == DecodingConfig(max_new_tokens=99).batch_key()
    assert a.batch_key() != DecodingConfig(repetition_penalty=1.2).batch_key()
