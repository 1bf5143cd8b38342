"""deploy/k8s: every manifest parses (and matches the Kubernetes schema), probes ask /healthz on the port
KAIZEN_HTTP_PORT names, referenced secrets and volumes exist, and Slack and Discord scale as each needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deploy_files import (
    K8S,
    SECRETS_EXAMPLE,
    container_port,
    load_kustomization,
    manifest_docs,
    max_lora_rank,
    named,
    of_kind,
    pod_spec,
    read_dotenv,
)

from bot.slack.app import EVENTS_PATH
from core.adapters import adapters_dir

KUBERNETES_VERSION = "1.33.0"


def kaizen_env() -> dict[str, str]:
    return named("ConfigMap", "kaizen-env")["data"]


def test_kustomization_lists_every_manifest_and_they_exist():
    resources = load_kustomization()["resources"]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resources) == on_disk | {"nightly-cronjob.yaml"}
    missing = [name for name in resources if not (K8S / name).is_file()]
    assert not missing, f"kustomization.yaml lists files that do not exist: {missing}"


def test_secret_generator_reads_the_template_keys():
    kustomization = load_kustomization()
    generator = kustomization["secretGenerator"][0]
    assert generator["name"] == "kaizen-secrets" and generator["envs"] == ["secrets.env"]
    keys = set(read_dotenv(SECRETS_EXAMPLE))
    for _, doc in manifest_docs():
        if doc["kind"] not in ("Deployment", "StatefulSet", "CronJob"):
            continue
        spec = pod_spec(doc)
        for c in spec.get("initContainers", []) + spec["containers"]:
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "kaizen-secrets", (doc["metadata"]["name"], ref)
                    assert ref["key"] in keys, (doc["metadata"]["name"], ref)
            for source in c.get("envFrom", []):
                assert "secretRef" not in source, "envFrom a Secret hands every token to every pod"


@pytest.mark.parametrize("doc", [d for _, d in manifest_docs()],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_matches_the_kubernetes_schema(doc):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_check_catches_a_typo():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = named("Deployment", "kaizen-slack")
    broken = {**doc, "spec": {**doc["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_images_are_pinned_and_known_to_kustomize():
    images = {entry["name"] for entry in load_kustomization()["images"]}
    for _, doc in manifest_docs():
        if doc["kind"] not in ("Deployment", "StatefulSet", "CronJob"):
            continue
        spec = pod_spec(doc)
        for c in spec.get("initContainers", []) + spec["containers"]:
            name, _, tag = c["image"].rpartition(":")
            assert name and tag and tag != "latest", c["image"]
            if name.startswith("kaizen"):
                assert name in images, f"{c['image']}: kustomization.yaml cannot point it at your registry"


@pytest.mark.parametrize("name", ["kaizen-slack", "kaizen-discord"])
def test_front_end_probes_ask_healthz_on_kaizen_http_port(name):
    container = pod_spec(named("Deployment", name))["containers"][0]
    port = int(kaizen_env()["KAIZEN_HTTP_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and container_port(container, get["port"]) == port, probe
    # Startup may take minutes (model, stores); liveness must not kill it meanwhile.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180
    assert container["args"] == ["serve", "--no-console"]


def test_slack_runs_http_mode_replicas_behind_a_service():
    deployment = named("Deployment", "kaizen-slack")
    container = pod_spec(deployment)["containers"][0]
    env_names = {e["name"] for e in container["env"]}
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # HTTP mode: the signing secret and no app token (that would switch to Socket Mode); no Discord token
    # (every replica would answer every Discord message).
    assert {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"} <= env_names
    assert not env_names & {"SLACK_APP_TOKEN", "DISCORD_TOKEN"}
    service = named("Service", "kaizen-slack")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    slack = next(p for p in service["spec"]["ports"] if p["name"] == "slack")
    assert container_port(container, slack["targetPort"]) == int(kaizen_env()["KAIZEN_SLACK_PORT"])
    rule = named("Ingress", "kaizen-slack")["spec"]["rules"][0]["http"]["paths"][0]
    assert rule["path"] == EVENTS_PATH
    assert rule["backend"]["service"] == {"name": "kaizen-slack", "port": {"name": "slack"}}
    pdb = named("PodDisruptionBudget", "kaizen-slack")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_discord_is_one_sharded_pod():
    deployment = named("Deployment", "kaizen-discord")
    container = pod_spec(deployment)["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert env["KAIZEN_DISCORD_SHARDED"]["value"] == "true" and "DISCORD_TOKEN" in env
    assert not {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"} & set(env)


def test_kaizen_pods_run_unprivileged_on_the_shared_data_volume():
    claim = named("PersistentVolumeClaim", "kaizen-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # replicas, the CronJob and vLLM share it
    data_dir = kaizen_env()["KAIZEN_DATA_DIR"]
    for name in ("kaizen-slack", "kaizen-discord"):
        spec = pod_spec(named("Deployment", name))
        container = spec["containers"][0]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts[data_dir]]["persistentVolumeClaim"]["claimName"] == "kaizen-data"
        assert {"/tmp", "/home/kaizen"} <= set(mounts)  # writable scratch with a read-only root


@pytest.mark.parametrize("name", ["postgres", "weaviate"])
def test_databases_keep_their_data_on_their_own_claims(name):
    statefulset = named("StatefulSet", name)
    templates = statefulset["spec"]["volumeClaimTemplates"]
    container = pod_spec(statefulset)["containers"][0]
    assert templates[0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert templates[0]["metadata"]["name"] in {m["name"] for m in container["volumeMounts"]}
    assert "readinessProbe" in container and "livenessProbe" in container
    service = named("Service", name)
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    env = kaizen_env()
    if name == "weaviate":
        assert container["readinessProbe"]["httpGet"]["path"] == "/v1/.well-known/ready"
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert env["KAIZEN_WEAVIATE_URL"] == f"http://weaviate:{ports['http']}" and ports["grpc"] == 50051
    else:
        assert container["readinessProbe"]["exec"]["command"][0] == "pg_isready"
        url = read_dotenv(SECRETS_EXAMPLE)["KAIZEN_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://kaizen:") and url.endswith("@postgres:5432/kaizen")


def test_vllm_serves_the_configured_model_with_lora_from_the_data_volume():
    deployment = named("Deployment", "vllm")
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    env = kaizen_env()
    args = container["args"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in args[1:] if "=" in a)
    assert container["command"] == ["vllm", "serve"] and args[0] == env["KAIZEN_MODEL__NAME"]
    assert "--enable-lora" in args and flags["max-model-len"] == env["KAIZEN_MODEL__CONTEXT_WINDOW"]
    assert int(flags["max-lora-rank"]) >= max_lora_rank()
    assert env["KAIZEN_MODEL__BASE_URL"] == f"http://vllm:{flags['port']}/v1"
    venv = {e["name"]: e.get("value") for e in container["env"]}
    assert Path(venv["VLLM_LORA_RESOLVER_CACHE_DIR"]) == adapters_dir(env["KAIZEN_DATA_DIR"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[env["KAIZEN_DATA_DIR"]]["readOnly"] is True
    assert mounts[str(Path(args[0]).parent)]["name"] == spec["initContainers"][0]["volumeMounts"][0]["name"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"


def test_nightly_cronjob_runs_the_job_on_the_shared_volume():
    cronjobs = of_kind("CronJob")
    assert len(cronjobs) == 1, "nightly-cronjob.yaml should hold the nightly CronJob"
    job = cronjobs[0]
    fields = job["spec"]["schedule"].split()
    assert len(fields) == 5 and all(re.fullmatch(r"[\d*/,\-]+", f) for f in fields), job["spec"]["schedule"]
    spec = pod_spec(job)
    container = spec["containers"][0]
    command = " ".join(container.get("command", []) + container.get("args", []))
    assert "nightly" in command and ("train" in command or "training" in command), command
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    data_dir = kaizen_env()["KAIZEN_DATA_DIR"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == data_dir)
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "kaizen-data"
