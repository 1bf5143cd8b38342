"""One training stage of the nightly job, in this process or under `accelerate launch` (one process per GPU)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from training.config import NightlyConfig

__all__ = ["run_stage"]

logger = logging.getLogger(__name__)


def run_stage(stage: str, recipe: Any, cfg: NightlyConfig, *, base: str, rows: list[dict[str, Any]], out: Path,
              init: Path | None, reward_path: Path | None, progress: bool):
    """Train `stage` ("sft", "reward", "rl", "dpo" or "kto") on `rows` into `out`, continuing adapter `init` (not for
    "reward"); the stage module's result (`.adapter`, `.to_dict()`). "rl" scores with the reward model at
    `reward_path`."""
    from training import dpo, kto, reward, rl, sft

    if cfg.launcher == "accelerate":
        return _launch(stage, recipe, cfg, base=base, rows=rows, out=out, init=init, reward_path=reward_path)
    match stage:
        case "sft":
            return sft.run(recipe, base_model=base, train=rows, out_dir=out, init_adapter=init, progress=progress)
        case "reward":
            return reward.run(recipe, base_model=base, train=rows, out_dir=out, progress=progress)
        case "rl":
            return rl.run(recipe, base_model=base, prompts=rows, reward_adapter=reward_path, out_dir=out,
                          init_adapter=init, progress=progress)
        case "dpo":
            return dpo.run(recipe, base_model=base, train=rows, out_dir=out, init_adapter=init, progress=progress)
        case "kto":
            return kto.run(recipe, base_model=base, train=rows, out_dir=out, init_adapter=init, progress=progress)
    raise ValueError(f"unknown stage {stage!r}")


def _launch(stage: str, recipe: Any, cfg: NightlyConfig, *, base: str, rows: list[dict[str, Any]], out: Path,
            init: Path | None, reward_path: Path | None):
    """Run one stage script under `accelerate launch` (one process per GPU) and read back its result."""
    import json
    import subprocess
    import sys

    from feedback.preferences import write_jsonl
    from training.common import completed_stage, recipe_dict

    if (done := completed_stage(out)) is not None:
        return done
    # The stage script reads its data and recipe from files: both are written next to its checkpoints.
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(rows, out / "train.jsonl")
    (out / "recipe.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in recipe_dict(recipe).items()),
                                     encoding="utf-8")
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["--config_file", cfg.accelerate_config] if cfg.accelerate_config else []
    cmd += ["-m", f"training.{stage}", "--base", base, "--data", str(out / "train.jsonl"), "--out", str(out),
            "--recipe", str(out / "recipe.toml")]
    cmd += ["--init-adapter", str(init)] if init is not None else []
    cmd += ["--reward", str(reward_path)] if stage == "rl" else []
    logger.warning("%s: %s", stage, " ".join(cmd))
    subprocess.run(cmd, check=True)
    done = completed_stage(out)
    if done is None:
        raise RuntimeError(f"{stage}: `accelerate launch` finished but left no adapter in {out}")
    return done
