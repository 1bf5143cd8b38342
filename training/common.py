"""What every training stage shares: the recipe base class and its loader, the base model, LoRA, precision,
checkpoint resume and the atomic save of the finished adapter. Heavy imports stay inside the functions."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from core.config import Settings

__all__ = [
    "RECIPES_DIR",
    "RecipeError",
    "StageResult",
    "TrainRecipe",
    "base_model_path",
    "finish_stage",
    "load_recipe",
    "merge_overrides",
    "recipe_dict",
]

logger = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
DONE_FILE = "stage.json"


class RecipeError(ValueError):
    """A recipe file or override is invalid; the message names the key and what is allowed."""


@dataclass
class TrainRecipe:
    """Settings every stage has. Each stage's recipe adds its own; `recipes/<stage>.toml` holds the defaults."""

    # LoRA on the base model.
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    # Adapt only the last N transformer layers (0 = all). Backward then stops at the lowest adapted layer, and the
    # lower layers, where general knowledge sits, are left exactly as they were.
    lora_layers: int = 0
    # Optimisation.
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 4
    grad_accum: int = 1
    warmup_steps: float = 0.0  # steps, or a fraction of all steps when below 1
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    max_length: int = 512
    # Where and how: auto = bf16 on a GPU that has it (fp16 otherwise), fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    seed: int = 42
    logging_steps: int = 10
    # Checkpoints (for resuming after a crash) every N optimizer steps; the newest `keep_checkpoints` are kept.
    save_steps: int = 50
    keep_checkpoints: int = 2

    def check(self) -> None:
        """Cross-field rules; a stage recipe extends it."""
        if self.lora_layers < 0:
            raise RecipeError(f"lora_layers must be 0 (all) or a positive count, got {self.lora_layers}")
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise RecipeError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise RecipeError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise RecipeError("set epochs > 0 or max_steps > 0")

    # -- what the trainers get -----------------------------------------------------------------------------

    def lora_config(self, task_type: str = "CAUSAL_LM", *, model: Any = None):
        """peft's LoraConfig for `model` (needed when `lora_layers` > 0: its layer count and linear modules)."""
        from peft import LoraConfig

        targets, layers = self.target_modules, None
        if self.lora_layers and model is not None:
            count = model.config.num_hidden_layers
            layers = list(range(max(0, count - self.lora_layers), count))
            if targets == "all-linear":  # peft takes a layer subset only with named modules: the blocks' linears
                import torch

                targets = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                                  if isinstance(module, torch.nn.Linear) and ".layers." in name})
        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=targets, task_type=task_type, layers_to_transform=layers)

    def device_setup(self) -> tuple[Any, dict[str, Any]]:
        """(dtype to load the base model in, trainer precision arguments)."""
        import torch

        cuda = torch.cuda.is_available()
        precision = self.precision
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
        match precision:
            case "bf16":
                # bf16 weights halve memory; LoRA weights stay fp32 (peft up-casts adapters) under autocast.
                return torch.bfloat16 if cuda else torch.float32, {"bf16": True, "fp16": False, "use_cpu": not cuda}
            case "fp16":
                return torch.float32, {"bf16": False, "fp16": True, "use_cpu": not cuda}
            case _:
                return torch.float32, {"bf16": False, "fp16": False, "use_cpu": not cuda}

    def trainer_args(self, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
        """Keyword arguments shared by every trl *Config."""
        _, precision = self.device_setup()
        return dict(
            output_dir=str(out_dir / "checkpoints"),
            learning_rate=self.learning_rate,
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            lr_scheduler_type=self.lr_scheduler,
            gradient_checkpointing=self.gradient_checkpointing,
            seed=self.seed,
            logging_steps=self.logging_steps,
            save_strategy="steps",
            save_steps=self.save_steps,
            save_total_limit=self.keep_checkpoints,
            report_to=[],
            disable_tqdm=not progress,
            dataloader_num_workers=0,
            **precision,
        )


def recipe_dict(recipe: Any) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def load_recipe(cls: type, path: Path | str | None = None, overrides: dict[str, Any] | None = None,
                *, stage: str | None = None) -> Any:
    """A recipe of type `cls` from the packaged `recipes/<stage>.toml` (or `path`), then `overrides`.
    Unknown keys and wrong types are errors naming the key."""
    import pydantic

    values: dict[str, Any] = {}
    file = Path(path) if path is not None else (RECIPES_DIR / f"{stage}.toml" if stage else None)
    if file is not None:
        try:
            values = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if path is not None:
                raise RecipeError(f"recipe file not found: {file}") from None
        except tomllib.TOMLDecodeError as e:
            raise RecipeError(f"{file}: not valid TOML ({e})") from None
    values = merge_overrides(values, overrides or {})
    where = file.name if file is not None else cls.__name__
    _reject_unknown(cls, values, where)
    try:
        recipe = pydantic.TypeAdapter(cls).validate_python(values, strict=False)
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise RecipeError(f"{where}: {problems}") from None
    recipe.check()
    return recipe


def merge_overrides(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`base` with `top` laid over it, nested tables merged key by key (neither argument is changed)."""
    out = dict(base)
    for key, value in top.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge_overrides(out[key], value) if nested else value
    return out


def _reject_unknown(cls: type, values: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    for name, value in values.items():
        nested = hints.get(name)
        if isinstance(value, dict) and dataclasses.is_dataclass(nested):
            _reject_unknown(nested, value, f"{where} [{name}]")


def base_model_path(settings: Settings) -> str:
    """The base model trl trains on: the configured one, the default converted once to safetensors."""
    from core.models import resolve_source

    if settings.model.backend != "transformers" and not settings.model.name:
        raise RecipeError("training needs a local base model: set model.name to its Hugging Face id or folder")
    return resolve_source(settings.model, Path(settings.data_dir))[0]


@dataclass
class StageResult:
    """A finished stage: the adapter it wrote and what it measured."""

    stage: str
    adapter: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    resumed_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "adapter": str(self.adapter), "metrics": self.metrics,
                "resumed_from": self.resumed_from}


def completed_stage(out_dir: Path) -> StageResult | None:
    """The stage's result if it already finished in `out_dir` (a rerun of the same run skips it)."""
    try:
        d = json.loads((out_dir / DONE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    adapter = Path(d["adapter"])
    if not (adapter / "adapter_config.json").is_file():
        return None
    return StageResult(d["stage"], adapter, d.get("metrics", {}), d.get("resumed_from"))


def last_checkpoint(out_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = out_dir / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def load_tokenizer(base_model: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(base_model: str, recipe: TrainRecipe, init_adapter: Path | None):
    """(model, peft_config): the causal LM with `init_adapter` trainable on top, or a fresh LoRA config."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype, _ = recipe.device_setup()
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    if init_adapter is None:
        return model, recipe.lora_config(model=model)
    # Continue from the adapter being served (or the previous stage's): the new one replaces it when promoted.
    return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True), None


def train_and_save(trainer, stage: str, out_dir: Path, *, started: float, extra: dict[str, Any] | None = None
                   ) -> StageResult:
    """Train (resuming from the newest checkpoint in out_dir), then save the adapter atomically and mark done."""
    resume = last_checkpoint(out_dir)
    if resume:
        logger.warning("%s: resuming from %s", stage, resume)
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = {"train_loss": round(float(output.training_loss), 6), "steps": int(output.global_step),
               "runtime_s": round(time.perf_counter() - started, 2),
               "train_runtime_s": round(float(output.metrics.get("train_runtime", 0.0)), 3)}
    metrics |= _last_logged(trainer.state.log_history)
    metrics |= extra or {}
    return finish_stage(trainer, stage, out_dir, metrics, resumed_from=resume)


def _last_logged(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The most recent value of each training metric trl logged (rewards, accuracies, kl, tokens...)."""
    keep: dict[str, Any] = {}
    skip = {"epoch", "step", "learning_rate", "grad_norm", "loss", "train_loss", "train_runtime",
            "train_samples_per_second", "train_steps_per_second", "total_flos"}
    for entry in history:
        for key, value in entry.items():
            if key not in skip and isinstance(value, int | float):
                if key == "reward" and "reward_first" not in keep:
                    keep["reward_first"] = round(float(value), 6)  # with the last: did the policy improve?
                keep[key.replace("/", "_")] = round(float(value), 6)
    return keep


def finish_stage(trainer, stage: str, out_dir: Path, metrics: dict[str, Any], *,
                 resumed_from: str | None = None) -> StageResult:
    model = trainer.accelerator.unwrap_model(trainer.model)
    # trl adds a frozen "ref" copy when it continues a pretrained adapter; only the trained one is served.
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
        model.set_adapter("default")
    final = out_dir / "adapter"
    tmp = out_dir / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    result = StageResult(stage, final, metrics, resumed_from)
    if trainer.accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        (out_dir / DONE_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    trainer.accelerator.wait_for_everyone()
    return result


def stage_cli(description: str, argv: list[str] | None = None):
    """The argument parser every stage script shares (`python -m training.<stage>` or `accelerate launch -m`)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base", required=True, help="base model folder or Hugging Face id")
    parser.add_argument("--data", required=True, action="append", type=Path, help="JSONL dataset (repeatable)")
    parser.add_argument("--out", required=True, type=Path, help="stage folder (checkpoints, adapter)")
    parser.add_argument("--recipe", type=Path, default=None, help="recipe TOML (default: the packaged one)")
    parser.add_argument("--init-adapter", type=Path, default=None, help="continue training this adapter")
    return parser.parse_args(argv)
