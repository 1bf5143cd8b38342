"""Which LoRA adapter is promoted: the one small file training writes and serving watches.

`data_dir/adapters/current.json` holds `{"name": ..., "path": ..., "promoted_at": ...}` (a path inside
`data_dir/adapters` is stored relative to it, so the data folder can move). No file means: serve the base model.
Training writes it atomically (`write_current`); a running server polls it (`watch_adapter`) and switches with
`model.set_adapter(name, path)`, keeping the adapter it has whenever the new one cannot be loaded.
Dependency-free on purpose: serving imports it, and so may a cron job without torch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "CURRENT_FILE",
    "AdapterError",
    "adapters_dir",
    "check_adapter_dir",
    "current_adapter",
    "vllm_load_adapter",
    "watch_adapter",
    "write_current",
]

logger = logging.getLogger(__name__)

CURRENT_FILE = "current.json"
_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterError(ValueError):
    """An adapter folder or the promotion file is unusable; the message says what is wrong."""


class _Switchable(Protocol):
    @property
    def adapter(self) -> str: ...

    async def set_adapter(self, name: str, path: str | None = None) -> None: ...


def adapters_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "adapters"


def check_adapter_dir(path: Path | str) -> Path:
    """The folder if it holds a PEFT adapter (readable adapter_config.json and a non-empty weights file)."""
    path = Path(path)
    config = path / "adapter_config.json"
    if not path.is_dir():
        raise AdapterError(f"adapter folder {path} does not exist")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{path} is not a PEFT adapter: adapter_config.json is missing") from None
    except (OSError, ValueError) as e:
        raise AdapterError(f"{config} is unreadable or not JSON ({e})") from None
    if not isinstance(parsed, dict) or "peft_type" not in parsed:
        raise AdapterError(f"{config} is not a PEFT adapter config (no peft_type)")
    weights = [path / w for w in _WEIGHTS if (path / w).is_file()]
    if not weights or weights[0].stat().st_size == 0:
        raise AdapterError(f"{path} has no adapter weights ({' or '.join(_WEIGHTS)})")
    return path


def current_adapter(data_dir: Path | str) -> tuple[str, Path] | None:
    """(name, folder) of the promoted adapter, or None when the base model is to be served.
    Raises AdapterError when current.json exists but cannot be read."""
    file = adapters_dir(data_dir) / CURRENT_FILE
    try:
        raw = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        entry = json.loads(raw)
        name, path = str(entry["name"]), Path(entry["path"])
    except (ValueError, KeyError, TypeError) as e:
        raise AdapterError(f"{file} is corrupt ({e}); promote a version again to rewrite it") from None
    if not name:
        raise AdapterError(f"{file} names no adapter")
    return name, path if path.is_absolute() else adapters_dir(data_dir) / path


def write_current(data_dir: Path | str, name: str | None, path: Path | str | None = None,
                  **extra: Any) -> None:
    """Promote `name` at `path` (validated first), or with name=None go back to the base model.
    Atomic: a reader sees the old file or the new one, never half of one."""
    root = adapters_dir(data_dir)
    file = root / CURRENT_FILE
    if name is None:
        file.unlink(missing_ok=True)
        return
    if path is None:
        raise ValueError("write_current needs the adapter's folder")
    folder = check_adapter_dir(path).resolve()
    try:
        stored = str(folder.relative_to(root.resolve()))
    except ValueError:
        stored = str(folder)
    entry = {"name": name, "path": stored, "promoted_at": datetime.now(UTC).isoformat(), **extra}
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{CURRENT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, file)


async def watch_adapter(data_dir: Path | str, model: _Switchable, interval_s: float = 30.0) -> None:
    """Poll current.json forever; when the promoted adapter changes, load it into `model` and serve it.

    Requests already running finish on the adapter they started with (the model switches between batches).
    A folder that fails to validate or load is logged once and skipped: the model keeps what it serves."""
    applied: tuple[str, str] | None = (model.adapter, "") if model.adapter else None
    failed: object = None
    while True:
        wanted: object = "current.json"
        try:
            found = current_adapter(data_dir)
            wanted = None if found is None else (found[0], str(found[1]))
            # Step 1: nothing changed (a name loaded at start counts as the same), or the same broken promotion.
            same_name = wanted is not None and applied is not None and applied[1] == "" and wanted[0] == applied[0]
            if wanted != applied and not same_name and wanted != failed:
                # Step 2: validate before touching the model, then switch (loading happens off the event loop).
                if wanted is None:
                    await model.set_adapter("")
                    logger.warning("promotion cleared: serving the base model")
                else:
                    check_adapter_dir(wanted[1])
                    await model.set_adapter(wanted[0], wanted[1])
                    logger.warning("now serving adapter %s from %s", *wanted)
                applied, failed = wanted, None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - serving must survive any bad promotion
            if wanted != failed:  # log a broken promotion once, not every poll
                logger.error("keeping adapter %r: could not switch to %s: %s", model.adapter, wanted, e)
            failed = wanted
        await asyncio.sleep(interval_s)


def vllm_load_adapter(base_url: str, name: str, path: Path | str, *, api_key: str = "",
                      timeout_s: float = 60.0) -> None:
    """Load (or reload) a LoRA adapter into a running vLLM server through its runtime API
    (`POST /v1/load_lora_adapter`; the server needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and must see `path`).
    Afterwards requests with `model=name` use it. Raises AdapterError with the server's answer on failure."""
    url = base_url.rstrip("/")
    url = url if url.endswith("/v1") else url + "/v1"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    def post(endpoint: str, body: dict[str, Any]) -> tuple[int, str]:
        req = urllib.request.Request(f"{url}/{endpoint}", data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - operator-configured URL
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as e:
            raise AdapterError(f"vLLM server at {base_url} unreachable: {e}") from None

    status, text = post("load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
    # A version's files never change, so one the server already has (a rollback, a second replica) is fine as is;
    # unloading it first would fail the requests using it meanwhile.
    if status >= 400 and "already been loaded" not in text:
        raise AdapterError(f"vLLM refused adapter {name!r} from {path}: {status} {text[:300]}")
