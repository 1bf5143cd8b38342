"""Every variable the deployment files use exists in the settings tree, and what they set loads cleanly."""

from __future__ import annotations

import inspect
import os
import tomllib

import pytest
from deploy_files import (
    COMPOSE,
    DEPLOY,
    DOCKERFILES,
    ENV_EXAMPLE,
    K8S,
    SECRETS_EXAMPLE,
    MissingVariable,
    compose_variables,
    container_port,
    dockerfile_env,
    documented_in_dotenv,
    interpolate,
    load_compose,
    manifest_docs,
    named,
    pod_spec,
    read_dockerfile,
    read_dotenv,
    service_environment,
    settings_names,
    variables_in,
)

from core.config import load_settings

NAMES = settings_names()
# What an operator fills in before the first start (empty in the templates on purpose).
FILLED = {"POSTGRES_PASSWORD": "pw0rd", "KAIZEN_WEAVIATE_API_KEY": "weaviate-key",
          "KAIZEN_MODEL__API_KEY": "vllm-key", "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "signing",
          "DISCORD_TOKEN": "discord-token"}


def deployment_files():
    files = [COMPOSE, ENV_EXAMPLE, SECRETS_EXAMPLE, DEPLOY / "README.md", *DOCKERFILES.values()]
    return files + sorted(K8S.glob("*.yaml"))


def test_the_walker_sees_the_whole_tree():
    assert {"KAIZEN_DATA_DIR", "KAIZEN_MODEL__BASE_URL", "KAIZEN_RAG__TOP_K", "KAIZEN_TOOLS__MAX_STEPS",
            "KAIZEN_DEFAULT__PRESET", "SLACK_BOT_TOKEN", "DISCORD_TOKEN",
            "KAIZEN_SLACK_PORT"} <= NAMES.scalars
    assert NAMES.knows("KAIZEN_CHANNELS__SUPPORT__PRESET") and NAMES.knows("KAIZEN_MODEL__ADAPTERS")
    assert not NAMES.knows("KAIZEN_MODEL__NAMES") and not NAMES.knows("KAIZEN_WEAVIATE_KEY")


def test_kaizen_config_is_read_by_load_settings():
    # The one KAIZEN_ variable that is not a field: the path of kaizen.toml.
    assert 'os.environ.get("KAIZEN_CONFIG")' in inspect.getsource(load_settings)


@pytest.mark.parametrize("path", deployment_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_variable_exists_in_the_settings(path):
    unknown = sorted(v for v in variables_in(path.read_text(encoding="utf-8")) if not NAMES.knows(v))
    assert not unknown, f"{path.name} uses variables that are not settings: {unknown}"


def test_env_example_documents_every_setting():
    # Each field under one of its names (SLACK_BOT_TOKEN stands for KAIZEN_SLACK_BOT_TOKEN too).
    documented = documented_in_dotenv(ENV_EXAMPLE)
    missing = sorted(min(names) for names in NAMES.fields if not names & documented)
    assert not missing, f".env.example does not mention {missing}"
    # Every variable compose interpolates is there too, so an operator sees all knobs in one file.
    assert set(compose_variables(load_compose())) <= documented


def test_required_compose_variables_stop_compose_when_empty():
    required = {name for name, op in compose_variables(load_compose()).items() if op in (":?", "?")}
    assert required == {"POSTGRES_PASSWORD", "KAIZEN_WEAVIATE_API_KEY"}
    example = read_dotenv(ENV_EXAMPLE)
    assert all(example.get(name) == "" for name in required)  # no shipped default password
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        interpolate(load_compose(), example)


def _clean_env(monkeypatch, tmp_path, env: dict[str, str]) -> None:
    for key in list(os.environ):
        if key.startswith(("KAIZEN_", "SLACK_", "DISCORD_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env or kaizen.toml of the developer
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("service", ["kaizen", "nightly"])
def test_compose_containers_get_valid_settings(service, monkeypatch, tmp_path):
    dotenv = {**read_dotenv(ENV_EXAMPLE), **FILLED}
    compose = interpolate(load_compose(), dotenv)
    spec = compose["services"][service]
    kind = "cuda" if spec["build"]["dockerfile"].endswith(".cuda") else "cpu"
    image = dockerfile_env(read_dockerfile(DOCKERFILES[kind])[-1])
    # Docker's order: image ENV, then env_file, then environment.
    _clean_env(monkeypatch, tmp_path, {**image, **dotenv, **service_environment(spec)})
    s = load_settings()
    assert str(s.data_dir) == "/data" and s.http_host == "0.0.0.0" and s.http_port == 8080
    assert s.model.backend == "openai" and s.model.base_url == "http://vllm:8000/v1"
    assert s.model.name == "/opt/kaizen/models/SmolLM2-135M-Instruct" and s.model.context_window == 8192
    assert s.database_url == "postgresql+psycopg://kaizen:pw0rd@postgres:5432/kaizen"
    assert s.vector_store == "weaviate" and s.weaviate_api_key.get_secret_value() == "weaviate-key"
    assert s.slack_bot_token.get_secret_value() == "xoxb-1" and s.log_format == "json"


def _container_env(doc, container, configmaps, secrets) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"].get("configMapKeyRef")
        source = secrets if "secretKeyRef" in item["valueFrom"] else configmaps[ref["name"]]
        if ref["key"] not in source:
            assert ref.get("optional"), f"{doc['metadata']['name']}: {ref['key']} is in no Secret/ConfigMap"
            continue
        env[item["name"]] = source[ref["key"]]
    return env


def kaizen_pods():
    """(manifest, container) for every container of the Kaizen images, the nightly CronJob's included."""
    out = []
    for _, doc in manifest_docs():
        if doc["kind"] not in ("Deployment", "StatefulSet", "CronJob"):
            continue
        for c in pod_spec(doc)["containers"]:
            if c["image"].split(":")[0] in ("kaizen", "kaizen-cuda"):
                out.append((doc, c))
    return out


@pytest.mark.parametrize("pod", kaizen_pods(), ids=lambda p: f"{p[0]['kind']}/{p[0]['metadata']['name']}")
def test_k8s_pods_get_valid_settings(pod, monkeypatch, tmp_path):
    doc, container = pod
    configmaps = {d["metadata"]["name"]: d["data"] for _, d in manifest_docs() if d["kind"] == "ConfigMap"}
    secrets = {**read_dotenv(SECRETS_EXAMPLE), **FILLED}
    url = secrets["KAIZEN_DATABASE_URL"]
    secrets["KAIZEN_DATABASE_URL"] = url.replace("PASSWORD", FILLED["POSTGRES_PASSWORD"])
    image = dockerfile_env(read_dockerfile(DOCKERFILES["cpu"])[-1])
    env = {**image, **_container_env(doc, container, configmaps, secrets)}
    # The kaizen.toml the pod mounts, read from the ConfigMap it mounts.
    toml_path = tmp_path / "kaizen.toml"
    toml_path.write_text(named("ConfigMap", "kaizen-toml")["data"]["kaizen.toml"], encoding="utf-8")
    tomllib.loads(toml_path.read_text(encoding="utf-8"))
    assert env.get("KAIZEN_CONFIG") == "/etc/kaizen/kaizen.toml"
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    assert mounts.get("/etc/kaizen") == "config", "KAIZEN_CONFIG points at a file the pod does not mount"
    env["KAIZEN_CONFIG"] = str(toml_path)
    _clean_env(monkeypatch, tmp_path, env)
    s = load_settings()
    assert s.database_url.startswith("postgresql+psycopg://") and s.vector_store == "weaviate"
    assert s.model.backend == "openai" and s.model.base_url == "http://vllm:8000/v1"
    assert mounts.get(str(s.data_dir)) == "data", "the data dir is not on the kaizen-data volume"
    if doc["kind"] == "Deployment":
        http = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
        assert http == [s.http_port] and s.http_host == "0.0.0.0"
        for probe in ("readinessProbe", "livenessProbe"):
            assert container_port(container, container[probe]["httpGet"]["port"]) == s.http_port
