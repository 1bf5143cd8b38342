"""Readers for the files under deploy/: the settings' environment names, compose (with its interpolation),
.env files, Kubernetes manifests and Dockerfiles. Small and strict: a failure points at a file and a line."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel

from core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
SECRETS_EXAMPLE = K8S / "secrets.env.example"
DOCKERFILES = {"cpu": DEPLOY / "Dockerfile", "cuda": DEPLOY / "Dockerfile.cuda"}

# Variables Kaizen reads that are not settings fields (each checked against its reader in the tests).
NON_FIELD_VARIABLES = {"KAIZEN_CONFIG"}
VARIABLE = re.compile(r"\b((?:KAIZEN_[A-Z0-9_]*[A-Z0-9])|SLACK_[A-Z_]*[A-Z]|DISCORD_[A-Z_]*[A-Z])\b")


# ---- the settings tree -------------------------------------------------------------------------------------


@dataclass
class SettingsNames:
    scalars: set[str] = field(default_factory=set)  # one value each: documented one by one in .env.example
    structured: set[str] = field(default_factory=set)  # lists and dicts, set as JSON
    dict_prefixes: set[str] = field(default_factory=set)  # dicts also take KAIZEN_<FIELD>__<KEY>[__...]
    fields: list[frozenset[str]] = field(default_factory=list)  # the names of each field (aliases together)

    def knows(self, name: str) -> bool:
        return (name in self.scalars or name in self.structured or name in NON_FIELD_VARIABLES
                or any(name.startswith(prefix) for prefix in self.dict_prefixes))


def settings_names() -> SettingsNames:
    """Every environment name of the settings tree: KAIZEN_ + the field path joined by `__`, upper-case,
    plus the platform aliases (SLACK_BOT_TOKEN, ...)."""
    names = SettingsNames()

    def walk(model: type[BaseModel], path: list[str]) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            here = [*path, name]
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, here)
                continue
            env = "KAIZEN_" + "__".join(p.upper() for p in here)
            origin = getattr(annotation, "__origin__", None)
            alias = info.validation_alias
            aliases = [c for c in alias.choices if isinstance(c, str) and c.isupper()] if isinstance(
                alias, AliasChoices) else []
            every = frozenset([env, *aliases])
            (names.structured if origin in (dict, list) else names.scalars).update(every)
            if origin is dict:
                names.dict_prefixes.add(env + "__")
            names.fields.append(every)

    walk(Settings, [])
    return names


def variables_in(text: str) -> set[str]:
    return set(VARIABLE.findall(text))


# ---- .env files ----------------------------------------------------------------------------------------


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=value lines (comments and blanks skipped), as compose and kustomize read them."""
    values = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path.name}:{number}: not KEY=value: {line!r}")
        values[key] = value
    return values


def documented_in_dotenv(path: Path) -> set[str]:
    """Variables an .env file sets or shows commented out (`# KAIZEN_X=default`)."""
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line.strip())
        if m:
            found.add(m.group(1))
    return found


# ---- compose -------------------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(KeyError):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $$ -> $."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        have = env.get(name)
        empty = have is None or (op is not None and op.startswith(":") and have == "")
        if op in (":?", "?") and empty:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and empty:
            return arg
        return have or ""

    parts = value.split("$$")
    return "$".join(_INTERPOLATION.sub(one, part) for part in parts)


def compose_variables(data: Any) -> dict[str, str | None]:
    """Variables compose interpolates, with the operator (`:-`/`:?`) they are used with."""
    found: dict[str, str | None] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            for part in value.split("$$"):
                for m in _INTERPOLATION.finditer(part):
                    found.setdefault(m.group(1), m.group(2))

    walk(data)
    return found


def max_lora_rank() -> int:
    """The largest LoRA rank a training recipe asks for (vLLM's --max-lora-rank must cover it)."""
    files = (ROOT / "training" / "recipes").glob("*.toml")
    recipes = [tomllib.loads(p.read_text(encoding="utf-8")) for p in files]
    return max(r["lora_r"] for r in recipes if "lora_r" in r)


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# ---- Kubernetes ----------------------------------------------------------------------------------------


def load_kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))


def manifest_docs() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every resource kustomization.yaml lists (a missing file is left to the test
    that checks they all exist, so the other tests still run)."""
    docs = []
    for name in load_kustomization()["resources"]:
        if not (K8S / name).is_file():
            continue
        for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
            if doc:
                docs.append((name, doc))
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifest_docs() if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's port, resolved through the container's named ports."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


# ---- Dockerfiles and .dockerignore ------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def read_dockerfile(path: Path) -> list[list[Instruction]]:
    """The instructions of each build stage (continuation lines joined, comments dropped)."""
    stages: list[list[Instruction]] = [[]]  # stage 0 holds the ARGs before the first FROM
    pending, start = "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = (pending + stripped).strip()
        pending = ""
        keyword, _, args = text.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def dockerfile_env(stage: list[Instruction]) -> dict[str, str]:
    env = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for token in shlex.split(ins.args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (relative, POSIX) out of the build context; the last rule wins."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]  # a dir rule covers what is inside
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            tail = pattern[3:]
            hit = any(fnmatch(c.split("/")[-1], tail) or fnmatch(c, tail) for c in candidates)
        else:
            hit = any(fnmatch(c, pattern) for c in candidates)
        if hit:
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
