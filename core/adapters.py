"""Which LoRA adapter is promoted: the one small file training writes and serving watches.

`data_dir/adapters/current.json` holds `{"name": ..., "path": ..., "promoted_at": ...}` (a path inside
`data_dir/adapters` is stored relative to it, so the data folder can move). No file means: serve the base model.
Training writes it atomically (`write_current`); a running server polls it (`watch_adapter`) and switches with
`model.set_adapter(name, path)`, keeping the adapter it has whenever the new one cannot be loaded.

`data_dir/adapters/canary.json` (same form, plus `share`, `serving` and `started_at`) names a candidate on trial:
the watcher loads it next to the served adapter (`model.load_adapter`) and tells a `core.canary.CanaryRouter`,
which sends a stable share of conversations to it (per request: in-process and vLLM alike). No file: no canary.
Dependency-free on purpose: serving imports it, and so may a cron job without torch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "CANARY_FILE",
    "CURRENT_FILE",
    "AdapterError",
    "Canary",
    "adapters_dir",
    "check_adapter_dir",
    "current_adapter",
    "current_canary",
    "vllm_load_adapter",
    "watch_adapter",
    "write_canary",
    "write_current",
]

logger = logging.getLogger(__name__)

CURRENT_FILE = "current.json"
CANARY_FILE = "canary.json"
_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterError(ValueError):
    """An adapter folder or the promotion file is unusable; the message says what is wrong."""


@dataclass(frozen=True)
class Canary:
    """The adapter on trial: `share` (0..1) of conversations, next to `serving` ("" = the base model)."""

    name: str
    path: Path
    share: float
    serving: str
    started_at: datetime


class _Switchable(Protocol):
    @property
    def adapter(self) -> str: ...

    async def set_adapter(self, name: str, path: str | None = None) -> None: ...

    async def load_adapter(self, name: str, path: str) -> None: ...


class _Router(Protocol):
    def set(self, name: str, share: float) -> None: ...

    def clear(self) -> None: ...


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


def _read_entry(file: Path, fix: str) -> Any:
    """The parsed JSON of `file`, or None when it does not exist. Raises AdapterError naming the file and `fix`."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise AdapterError(f"{file} is corrupt ({e}); {fix}") from None


def current_adapter(data_dir: Path | str) -> tuple[str, Path] | None:
    """(name, folder) of the promoted adapter, or None when the base model is to be served.
    Raises AdapterError when current.json exists but cannot be read."""
    file = adapters_dir(data_dir) / CURRENT_FILE
    fix = "promote a version again to rewrite it"
    if (entry := _read_entry(file, fix)) is None:
        return None
    try:
        name, path = str(entry["name"]), Path(entry["path"])
    except (ValueError, KeyError, TypeError) as e:
        raise AdapterError(f"{file} is corrupt ({e}); {fix}") from None
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
    _write_atomic(file, entry)


def _write_atomic(file: Path, entry: dict[str, Any]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, file)


def _stored_path(data_dir: Path | str, folder: Path) -> str:
    try:
        return str(folder.relative_to(adapters_dir(data_dir).resolve()))
    except ValueError:
        return str(folder)


def current_canary(data_dir: Path | str) -> Canary | None:
    """The adapter on trial, or None. Raises AdapterError when canary.json exists but cannot be read."""
    file = adapters_dir(data_dir) / CANARY_FILE
    fix = "start or end the canary again to rewrite it"
    if (entry := _read_entry(file, fix)) is None:
        return None
    try:
        path = Path(entry["path"])
        canary = Canary(str(entry["name"]), path if path.is_absolute() else adapters_dir(data_dir) / path,
                        float(entry["share"]), str(entry.get("serving") or ""),
                        datetime.fromisoformat(entry["started_at"]))
    except (ValueError, KeyError, TypeError) as e:
        raise AdapterError(f"{file} is corrupt ({e}); {fix}") from None
    if not canary.name or not 0 < canary.share < 1:
        raise AdapterError(f"{file} names no adapter or has a share outside (0, 1)")
    return canary


def write_canary(data_dir: Path | str, name: str | None, path: Path | str | None = None, *, share: float = 0.2,
                 serving: str = "", **extra: Any) -> None:
    """Put `name` at `path` (validated first) on trial for `share` of conversations, or with name=None end the
    trial. Atomic like `write_current`."""
    file = adapters_dir(data_dir) / CANARY_FILE
    if name is None:
        file.unlink(missing_ok=True)
        return
    if path is None:
        raise ValueError("write_canary needs the adapter's folder")
    if not 0 < share < 1:
        raise ValueError(f"canary share must be between 0 and 1 (exclusive), got {share}")
    folder = check_adapter_dir(path).resolve()
    _write_atomic(file, {"name": name, "path": _stored_path(data_dir, folder), "share": share, "serving": serving,
                         "started_at": datetime.now(UTC).isoformat(), **extra})


async def watch_adapter(data_dir: Path | str, model: _Switchable, interval_s: float = 30.0,
                        router: _Router | None = None) -> None:
    """Poll current.json (and, with a `router`, canary.json) forever; when the promoted adapter changes, load it
    into `model` and serve it; when a canary starts, load it next to it and route its share of conversations.

    Requests already running finish on the adapter they started with (the model switches between batches).
    A folder that fails to validate or load is logged once and skipped: the model keeps what it serves."""
    applied: tuple[str, str] | None = (model.adapter, "") if model.adapter else None
    failed: object = None
    trial: object = None  # the canary applied to the router: (name, path, share) or None
    trial_failed: object = None
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
        if router is not None:
            trial, trial_failed = await _apply_canary(data_dir, model, router, trial, trial_failed)
        await asyncio.sleep(interval_s)


async def _apply_canary(data_dir: Path | str, model: _Switchable, router: _Router, trial: object,
                        trial_failed: object) -> tuple[object, object]:
    """One poll of canary.json: load a new canary and route to it; end routing when the trial ends (or the canary
    became the served adapter). A canary that cannot be loaded is logged once; everyone keeps the served one."""
    wanted: object = "canary.json"
    try:
        canary = current_canary(data_dir)
        wanted = None if canary is None or canary.name == model.adapter else (
            canary.name, str(canary.path), canary.share)
        if wanted == trial or (wanted is not None and wanted == trial_failed):
            return trial, trial_failed
        if wanted is None:
            router.clear()
            if trial is not None:
                logger.warning("canary %s ended", trial[0])  # type: ignore[index]
            return None, None
        name, path, share = wanted  # type: ignore[misc]
        router.clear()  # a new canary (or new share): nobody is routed to a half-loaded adapter
        check_adapter_dir(path)
        await model.load_adapter(name, path)
        router.set(name, share)
        logger.warning("canary %s from %s answers %.0f%% of conversations", name, path, share * 100)
        return wanted, None
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - serving must survive any bad canary
        router.clear()
        if wanted != trial_failed:
            logger.error("not running canary %s (everyone gets %r): %s", wanted, model.adapter, e)
        return None, wanted


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
