"""The adapter registry and the record of every training run, under KAIZEN_DATA_DIR.

    data_dir/adapters/<version>/          a PEFT adapter + kaizen.json (kind, base model, run, data window, metrics)
    data_dir/adapters/current.json        the promoted one (core.adapters; serving watches it)
    data_dir/adapters/history.jsonl       every promote / rollback, so rollback knows what came before
    data_dir/training/runs/<run>/run.json one run: data window, config, stage metrics, gate metrics, decision

Versions are `kaizen-0001`, `kaizen-0002`, ... (policies) and `reward-0001`, ... (reward models); files are written
to a temporary name and renamed, so a crash never leaves half a version or half a record.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.adapters import (
    AdapterError,
    adapters_dir,
    check_adapter_dir,
    current_adapter,
    vllm_load_adapter,
    write_current,
)

__all__ = ["FINISHED", "Registry", "RegistryError", "Run", "Version"]

logger = logging.getLogger(__name__)

FINISHED = ("promoted", "rejected", "trained")
META_FILE = "kaizen.json"


class RegistryError(ValueError):
    """A registry operation that cannot be done as asked (unknown version, nothing to roll back...)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Run:
    id: str
    kind: str  # "nightly", or the stage of a manual `kaizen train <stage>`
    status: str  # running | failed | skipped | trained | promoted | rejected | abandoned
    started_at: str
    finished_at: str | None = None
    base_model: str = ""
    window: dict[str, Any] = field(default_factory=dict)  # since, until, audience, example counts
    config: dict[str, Any] = field(default_factory=dict)  # the recipes used
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> metrics, adapter
    metrics: dict[str, Any] = field(default_factory=dict)  # the gate's
    decision: dict[str, Any] = field(default_factory=dict)  # promote, reason
    version: str | None = None
    reward_version: str | None = None
    error: str | None = None
    attempts: int = 1

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass
class Version:
    name: str
    kind: str  # policy | reward
    path: Path
    run_id: str
    base_model: str
    created_at: str
    metrics: dict[str, Any] = field(default_factory=dict)
    window: dict[str, Any] = field(default_factory=dict)


class Registry:
    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.adapters = adapters_dir(self.data_dir)
        self.runs_dir = self.data_dir / "training" / "runs"
        self.history = self.adapters / "history.jsonl"

    # -- runs ------------------------------------------------------------------------------------------------

    def new_run(self, kind: str, *, base_model: str, window: dict[str, Any] | None = None,
                config: dict[str, Any] | None = None) -> Run:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        run = Run(id=f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}", kind=kind, status="running", started_at=_now(),
                  base_model=base_model, window=window or {}, config=config or {})
        self.save(run)
        return run

    def run_dir(self, run: Run) -> Path:
        return self.runs_dir / run.id

    def save(self, run: Run) -> None:
        _write_json(self.run_dir(run) / "run.json", dataclasses.asdict(run))

    def finish(self, run: Run, status: str, **changes: Any) -> Run:
        for key, value in changes.items():
            setattr(run, key, value)
        run.status, run.finished_at = status, _now()
        self.save(run)
        return run

    def runs(self) -> list[Run]:
        """Every recorded run, oldest first (an unreadable record is skipped, not fatal)."""
        out = []
        for file in sorted(self.runs_dir.glob("*/run.json")):
            try:
                out.append(Run(**json.loads(file.read_text(encoding="utf-8"))))
            except (ValueError, TypeError):
                continue
        return sorted(out, key=lambda r: (r.started_at, r.id))

    def last_finished(self, kind: str) -> Run | None:
        done = [r for r in self.runs() if r.kind == kind and r.finished]
        return done[-1] if done else None

    def unfinished(self, kind: str) -> Run | None:
        """The newest run of `kind` that crashed or failed and was not given up on (to resume it)."""
        runs = [r for r in self.runs() if r.kind == kind]
        return runs[-1] if runs and runs[-1].status in ("running", "failed") else None

    # -- versions --------------------------------------------------------------------------------------------

    def register(self, run: Run, adapter: Path, *, kind: str = "policy", metrics: dict[str, Any] | None = None
                 ) -> Version:
        """Copy a finished adapter into the registry as the next version of `kind`."""
        check_adapter_dir(adapter)
        prefix = "kaizen" if kind == "policy" else kind
        self.adapters.mkdir(parents=True, exist_ok=True)
        tmp = self.adapters / f".incoming-{uuid.uuid4().hex[:8]}"
        shutil.copytree(adapter, tmp)
        n = len([v for v in self.versions() if v.kind == kind])
        while True:  # the next free number; rename is atomic, so two writers never get the same one
            n += 1
            name = f"{prefix}-{n:04d}"
            version = Version(name, kind, self.adapters / name, run.id, run.base_model, _now(), metrics or {},
                              run.window)
            _write_json(tmp / META_FILE, {**dataclasses.asdict(version), "path": name})
            try:
                tmp.rename(version.path)
                return version
            except OSError:
                if not version.path.exists():
                    raise

    def versions(self, kind: str | None = None) -> list[Version]:
        out = []
        for meta in sorted(self.adapters.glob(f"*/{META_FILE}")):
            try:
                d = json.loads(meta.read_text(encoding="utf-8"))
                out.append(Version(**{**d, "path": meta.parent}))
            except (ValueError, TypeError):
                continue
        return [v for v in out if kind is None or v.kind == kind]

    def version(self, name: str) -> Version:
        for v in self.versions():
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.versions("policy")) or "none yet"
        raise RegistryError(f"unknown version {name!r}; known: {known}")

    def latest_reward(self, base_model: str) -> Version | None:
        rewards = [v for v in self.versions("reward") if v.base_model == base_model]
        return rewards[-1] if rewards else None

    # -- promotion -------------------------------------------------------------------------------------------

    def current(self) -> Version | None:
        found = current_adapter(self.data_dir)
        if found is None:
            return None
        try:
            return self.version(found[0])
        except RegistryError:
            return Version(found[0], "policy", found[1], "", "", "")

    def serving_adapter(self, base_model: str) -> Path | None:
        """The promoted adapter's folder if it was trained on `base_model` (else training starts from the base)."""
        try:
            cur = self.current()
        except AdapterError:
            return None
        if cur is None or (cur.base_model and cur.base_model != base_model):
            return None
        try:
            return check_adapter_dir(cur.path)
        except AdapterError as e:
            # Serving keeps what it loaded; training starts from (and is judged against) the base model instead.
            logger.error("the promoted adapter %s is unusable for training (%s); starting from the base model",
                         cur.name, e)
            return None

    def promote(self, name: str, *, reason: str = "manual", vllm_url: str = "", vllm_api_key: str = "") -> Version:
        """Serve `name` from now on. The folder is validated (and, with `vllm_url`, loaded into that vLLM server)
        first: if anything fails, serving is untouched."""
        version = self.version(name)
        if version.kind != "policy":
            raise RegistryError(f"{name} is a {version.kind} model, not an adapter to serve")
        self._switch(version, vllm_url, vllm_api_key)
        self._log("promote", version.name, reason)
        return version

    def rollback(self, *, vllm_url: str = "", vllm_api_key: str = "") -> Version | None:
        """Serve what was promoted before the current version (None: the base model)."""
        stack = self._stack()
        if not stack:
            raise RegistryError("nothing to roll back: no version was promoted")
        stack.pop()
        previous = self.version(stack[-1]) if stack else None
        self._switch(previous, vllm_url, vllm_api_key)
        self._log("rollback", previous.name if previous else None, "rollback")
        return previous

    def _switch(self, version: Version | None, vllm_url: str, vllm_api_key: str) -> None:
        if version is None:
            write_current(self.data_dir, None)
            return
        try:
            check_adapter_dir(version.path)
            if vllm_url:
                vllm_load_adapter(vllm_url, version.name, version.path, api_key=vllm_api_key)
            write_current(self.data_dir, version.name, version.path, base_model=version.base_model,
                          run=version.run_id)
        except AdapterError as e:
            raise RegistryError(f"not serving {version.name}: {e}") from None

    def _stack(self) -> list[str]:
        # Replaying the history: a promote pushes, a rollback pops.
        stack: list[str] = []
        if self.history.is_file():
            for line in self.history.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                if entry["action"] == "promote":
                    stack.append(entry["version"])
                elif stack:
                    stack.pop()
        return stack

    def _log(self, action: str, version: str | None, reason: str) -> None:
        self.adapters.mkdir(parents=True, exist_ok=True)
        with open(self.history, "a", encoding="utf-8") as f:
            f.write(json.dumps({"at": _now(), "action": action, "version": version, "reason": reason}) + "\n")
