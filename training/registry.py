"""The adapter registry and the record of every training run, under KAIZEN_DATA_DIR.

    data_dir/adapters/<version>/          a PEFT adapter + kaizen.json (kind, base model, run, data window, metrics)
    data_dir/adapters/current.json        the promoted one (core.adapters; serving watches it)
    data_dir/adapters/canary.json         the adapter on trial next to the promoted one (core.adapters)
    data_dir/adapters/history.jsonl       every promote / rollback / canary start and decision, with its numbers
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
from typing import TYPE_CHECKING, Any

from core.adapters import (
    AdapterError,
    Canary,
    adapters_dir,
    check_adapter_dir,
    current_adapter,
    current_canary,
    vllm_load_adapter,
    write_canary,
    write_current,
)
from core.canary import CanaryRule, Decision, Tally, decide

if TYPE_CHECKING:
    import sqlalchemy as sa

    from core.config import CanarySettings

__all__ = ["FINISHED", "CanaryStatus", "Registry", "RegistryError", "Run", "Version", "canary_rule", "tally_votes"]

logger = logging.getLogger(__name__)

FINISHED = ("promoted", "canary", "rejected", "trained")
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
    status: str  # running | failed | skipped | trained | promoted | canary | rejected | abandoned
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

    def promote(self, name: str, *, reason: str = "manual", vllm_url: str = "", vllm_api_key: str = "",
                **numbers: Any) -> Version:
        """Serve `name` from now on. The folder is validated (and, with `vllm_url`, loaded into that vLLM server)
        first: if anything fails, serving is untouched. A canary running for `name` ends (it won); a canary of
        another version keeps running against the new serving adapter only if the operator restarts it, so it
        is ended too. `numbers` go to history.jsonl with the decision."""
        version = self.version(name)
        if version.kind != "policy":
            raise RegistryError(f"{name} is a {version.kind} model, not an adapter to serve")
        self._switch(version, vllm_url, vllm_api_key)
        self._log("promote", version.name, reason, **numbers)
        self._end_canary(f"{name} promoted" if self._canary_name() != name else "")
        return version

    def rollback(self, *, vllm_url: str = "", vllm_api_key: str = "") -> Version | None:
        """Serve what was promoted before the current version (None: the base model). A running canary ends
        (it was being compared with the adapter that is no longer served)."""
        stack = self._stack()
        if not stack:
            raise RegistryError("nothing to roll back: no version was promoted")
        stack.pop()
        previous = self.version(stack[-1]) if stack else None
        self._switch(previous, vllm_url, vllm_api_key)
        self._log("rollback", previous.name if previous else None, "rollback")
        self._end_canary("the serving adapter was rolled back: its comparison no longer holds")
        return previous

    # -- canary ----------------------------------------------------------------------------------------------

    def canary(self) -> Canary | None:
        """The version on trial, or None. Raises AdapterError when canary.json is corrupt."""
        return current_canary(self.data_dir)

    def _canary_name(self) -> str:
        try:
            found = current_canary(self.data_dir)
        except AdapterError:
            return ""
        return found.name if found else ""

    def _end_canary(self, why: str) -> None:
        name = self._canary_name()
        write_canary(self.data_dir, None)
        if name and why:
            self._log("canary_end", name, why)

    def start_canary(self, name: str, *, share: float, reason: str = "manual", vllm_url: str = "",
                     vllm_api_key: str = "", **numbers: Any) -> Canary:
        """Put `name` on trial for `share` (0..1) of conversations next to what is served now. Validated (and, with
        `vllm_url`, loaded into that vLLM server) first; a canary already running is replaced (logged)."""
        version = self.version(name)
        if version.kind != "policy":
            raise RegistryError(f"{name} is a {version.kind} model, not an adapter to serve")
        current = self.current()
        if current is not None and current.name == name:
            raise RegistryError(f"{name} is already the serving adapter")
        if not 0 < share < 1:
            raise RegistryError(f"canary share must be between 0 and 1 (exclusive), got {share}")
        previous = self._canary_name()
        try:
            check_adapter_dir(version.path)
            if vllm_url:
                vllm_load_adapter(vllm_url, version.name, version.path, api_key=vllm_api_key)
            write_canary(self.data_dir, version.name, version.path, share=share,
                         serving=current.name if current else "", base_model=version.base_model, run=version.run_id)
        except AdapterError as e:
            raise RegistryError(f"not starting canary {name}: {e}") from None
        if previous and previous != name:
            self._log("canary_end", previous, f"replaced by canary {name}")
        self._log("canary", name, reason, share=share, serving=current.name if current else None, **numbers)
        return current_canary(self.data_dir)  # type: ignore[return-value]

    def canary_status(self, engine: sa.Engine, rule: CanaryRule, *, now: datetime | None = None
                      ) -> CanaryStatus | None:
        """The running canary with its live votes and what the rule says now; None without a canary.
        `engine`: the feedback database (FeedbackStore.engine)."""
        canary = self.canary()
        if canary is None:
            return None
        tallies = tally_votes(engine, [canary.name, canary.serving], since=canary.started_at)
        age = ((now or datetime.now(UTC)) - canary.started_at).total_seconds() / 86400
        decision = decide(tallies[canary.name], tallies[canary.serving], rule, age_days=age)
        return CanaryStatus(canary, decision, rule)

    def check_canary(self, engine: sa.Engine, rule: CanaryRule, *, vllm_url: str = "", vllm_api_key: str = "",
                     now: datetime | None = None) -> CanaryStatus | None:
        """`canary_status`, and when the rule has decided, apply it (promote or roll back, with its numbers in
        history.jsonl). Safe to call from several replicas: the decision is applied only if canary.json still
        names the same trial."""
        status = self.canary_status(engine, rule, now=now)
        if status is None or status.decision.action == "continue":
            return status
        again = self.canary()
        if again is None or (again.name, again.started_at) != (status.canary.name, status.canary.started_at):
            return status  # somebody else decided meanwhile
        self.decide_canary(status.decision, vllm_url=vllm_url, vllm_api_key=vllm_api_key)
        return status

    def decide_canary(self, decision: Decision, *, vllm_url: str = "", vllm_api_key: str = "") -> Version | None:
        """Apply `decision` to the running canary: promote it (returns its version) or roll it back (None: the
        serving adapter stays). Written to history.jsonl with the votes, P(canary better) and thresholds."""
        canary = self.canary()
        if canary is None:
            raise RegistryError("no canary is running")
        numbers = {"serving": canary.serving or None, "share": canary.share, "started_at": canary.started_at,
                   "decision": decision.to_dict()}
        if decision.action == "promote":
            return self.promote(canary.name, reason=f"canary: {decision.reason}", vllm_url=vllm_url,
                                vllm_api_key=vllm_api_key, **numbers)
        if decision.action == "rollback":
            write_canary(self.data_dir, None)
            self._log("canary_rollback", canary.name, f"canary: {decision.reason}", **numbers)
            logger.warning("canary %s rolled back: %s", canary.name, decision.reason)
            return None
        raise RegistryError(f"nothing to apply: the canary is still running ({decision.reason})")

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
                elif entry["action"] == "rollback" and stack:
                    stack.pop()  # canary starts and canary rollbacks never changed what was served
        return stack

    def history_entries(self) -> list[dict[str, Any]]:
        """Every line of history.jsonl, oldest first (an unreadable line is skipped)."""
        out = []
        if self.history.is_file():
            for line in self.history.read_text(encoding="utf-8").splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def _log(self, action: str, version: str | None, reason: str, **numbers: Any) -> None:
        self.adapters.mkdir(parents=True, exist_ok=True)
        entry = {"at": _now(), "action": action, "version": version, "reason": reason, **numbers}
        with open(self.history, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=str) + "\n")



@dataclass(frozen=True)
class CanaryStatus:
    """A running canary, the rule it is judged by, and the rule's verdict on the votes so far."""

    canary: Canary
    decision: Decision
    rule: CanaryRule


def canary_rule(settings: CanarySettings) -> CanaryRule:
    """The decision rule configured in `[canary]`."""
    return CanaryRule(min_votes=settings.min_votes, promote_at=settings.promote_at, rollback_at=settings.rollback_at,
                      min_rollback_votes=settings.min_rollback_votes, max_days=settings.max_days,
                      default=settings.default)


def tally_votes(engine: sa.Engine, adapters: list[str], *, since: datetime | None = None) -> dict[str, Tally]:
    """👍/👎 counts per adapter name ("" = the base model) on model-written answers created at or after `since`
    (each vote counts once; a user's changed vote counts as its latest value). Every name asked for is in the
    result, with zero counts if nothing was voted on."""
    import sqlalchemy as sa

    from feedback.models import Interaction, Vote

    i, v = Interaction.__table__, Vote.__table__
    stmt = (sa.select(i.c.adapter, v.c.value, sa.func.count())
            .select_from(v.join(i, v.c.interaction_id == i.c.id))
            .where(i.c.adapter.in_(set(adapters)), i.c.called_model.is_(True))
            .group_by(i.c.adapter, v.c.value))
    if since is not None:
        stmt = stmt.where(i.c.created_at >= since)
    counts: dict[str, dict[int, int]] = {a: {} for a in adapters}
    with engine.connect() as conn:
        for adapter, value, n in conn.execute(stmt):
            counts.setdefault(adapter, {})[int(value)] = int(n)
    return {a: Tally(c.get(1, 0), c.get(-1, 0)) for a, c in counts.items()}
