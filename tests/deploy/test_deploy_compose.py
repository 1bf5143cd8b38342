"""deploy/compose.yaml: services, health checks, volumes, vLLM's LoRA settings and the nightly scheduler."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from deploy_files import (
    ENV_EXAMPLE,
    ROOT,
    interpolate,
    load_compose,
    max_lora_rank,
    read_dotenv,
    service_environment,
)

from core.adapters import adapters_dir

FILLED = {"POSTGRES_PASSWORD": "pw0rd", "KAIZEN_WEAVIATE_API_KEY": "weaviate-key"}


@pytest.fixture(scope="module")
def compose():
    """compose.yaml as `docker compose config` would see it with the shipped .env.example filled in."""
    return interpolate(load_compose(), {**read_dotenv(ENV_EXAMPLE), **FILLED})


def test_compose_matches_the_compose_spec():
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("check_jsonschema")
    from importlib.resources import files

    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    errors = sorted(jsonschema.validators.validator_for(schema)(schema).iter_errors(load_compose()), key=str)
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_services_and_images(compose):
    services = compose["services"]
    assert set(services) == {"kaizen", "nightly", "postgres", "weaviate", "vllm", "model-export"}
    for name, spec in services.items():
        image = spec["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image ({image})"
    assert services["kaizen"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert services["nightly"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile.cuda"}
    for name, spec in services.items():
        if "build" in spec:
            assert (ROOT / spec["build"]["dockerfile"]).is_file(), name


def test_every_long_running_service_has_a_health_check(compose):
    for name, spec in compose["services"].items():
        if spec.get("restart") == "no":  # one-shot: others wait for it to complete instead
            assert spec["healthcheck"] == {"disable": True}
            others = compose["services"].values()
            conditions = [s.get("depends_on", {}).get(name, {}).get("condition") for s in others]
            waiting = [c for c in conditions if c == "service_completed_successfully"]
            assert waiting, f"{name} is a one-shot nobody waits for"
            continue
        check = spec["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and {"interval", "timeout", "retries"} <= set(check)
    test = {n: " ".join(s["healthcheck"]["test"][1:]) for n, s in compose["services"].items()
            if s.get("restart") != "no"}
    assert "pg_isready -U kaizen -d kaizen" in test["postgres"]
    assert "/v1/.well-known/ready" in test["weaviate"] and "localhost:8000/health" in test["vllm"]


def test_kaizen_health_check_asks_healthz_on_the_configured_port(compose):
    kaizen = compose["services"]["kaizen"]
    port = service_environment(kaizen)["KAIZEN_HTTP_PORT"]
    assert service_environment(kaizen)["KAIZEN_HTTP_HOST"] == "0.0.0.0"  # reachable through the port mapping
    assert f"http://127.0.0.1:{port}/healthz" in kaizen["healthcheck"]["test"][-1]
    assert f"127.0.0.1:{port}:{port}" in kaizen["ports"]
    slack = service_environment(kaizen)["KAIZEN_SLACK_PORT"]
    assert f"127.0.0.1:{slack}:{slack}" in kaizen["ports"]


def test_start_order_waits_for_healthy_dependencies(compose):
    deps = compose["services"]["kaizen"]["depends_on"]
    assert {name: d["condition"] for name, d in deps.items()} == {
        "postgres": "service_healthy", "weaviate": "service_healthy", "vllm": "service_healthy"}
    assert compose["services"]["nightly"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_state_lives_on_named_volumes(compose):
    volumes = set(compose["volumes"])
    assert volumes == {"kaizen-data", "postgres-data", "weaviate-data", "models"}
    mounts = {n: [v.split(":") for v in s.get("volumes", [])] for n, s in compose["services"].items()}
    data_dir = service_environment(compose["services"]["kaizen"])["KAIZEN_DATA_DIR"]
    assert ["kaizen-data", data_dir] in mounts["kaizen"] and ["kaizen-data", data_dir] in mounts["nightly"]
    assert ["postgres-data", "/var/lib/postgresql/data"] in mounts["postgres"]
    assert ["weaviate-data", "/var/lib/weaviate"] in mounts["weaviate"]
    assert ["kaizen-data", data_dir, "ro"] in mounts["vllm"]
    for name, entries in mounts.items():
        for entry in entries:
            assert entry[0] in volumes, f"{name} mounts {entry[0]}, not a named volume"


def test_vllm_serves_the_model_and_adapters_kaizen_trains(compose):
    vllm = compose["services"]["vllm"]
    kaizen = service_environment(compose["services"]["kaizen"])
    env = read_dotenv(ENV_EXAMPLE)
    command = vllm["command"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in command[1:] if "=" in arg)
    # Requests name the model (or an adapter); the base must be served under KAIZEN_MODEL__NAME.
    assert vllm["entrypoint"] == ["vllm", "serve"] and command[0] == kaizen["KAIZEN_MODEL__NAME"]
    assert kaizen["KAIZEN_MODEL__BASE_URL"] == "http://vllm:8000/v1" and flags["port"] == "8000"
    assert "--enable-lora" in command
    assert int(flags["max-lora-rank"]) >= max_lora_rank()
    assert flags["max-model-len"] == env["KAIZEN_MODEL__CONTEXT_WINDOW"]
    # A promoted version is found by name where the registry writes it.
    venv = service_environment(vllm)
    assert venv["VLLM_PLUGINS"] == "lora_filesystem_resolver"
    assert venv["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert Path(venv["VLLM_LORA_RESOLVER_CACHE_DIR"]) == adapters_dir(kaizen["KAIZEN_DATA_DIR"])
    assert venv["VLLM_API_KEY"] == env["KAIZEN_MODEL__API_KEY"]
    # The exported model lands where the served path points.
    assert ["models", str(Path(command[0]).parent), "ro"] in [v.split(":") for v in vllm["volumes"]]
    for gpu in ("vllm", "nightly"):
        devices = compose["services"][gpu]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def _scheduler(compose, tmp_path: Path, nightly_at: str):
    """Run the nightly service's script with `sleep` and `kaizen` replaced: sleep records its argument (and
    stops the loop on its second call), kaizen records its arguments and fails with 3."""
    spec = compose["services"]["nightly"]
    assert spec["entrypoint"] == ["/bin/sh", "-c"] and spec["init"] is True
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sleeps, calls = tmp_path / "sleeps", tmp_path / "calls"
    (bin_dir / "sleep").write_text(f'#!/bin/sh\necho "$1" >> {sleeps}\n'
                                   f'[ "$(wc -l < {sleeps})" -ge 2 ] && kill "$PPID"\nexit 0\n')
    (bin_dir / "kaizen").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 3\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**service_environment(spec), "NIGHTLY_AT": nightly_at, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    started = datetime.now(UTC)
    run = subprocess.run(["/bin/sh", "-c", spec["command"][0]], env=env, capture_output=True, text=True,
                         timeout=30)
    recorded = sleeps.read_text().split() if sleeps.exists() else []
    return run, recorded, calls, started


def test_nightly_scheduler_runs_the_job_at_the_configured_time(compose, tmp_path):
    run, sleeps, calls, started = _scheduler(compose, tmp_path, "02:30")
    target = started.replace(hour=2, minute=30, second=0, microsecond=0)
    if target <= started:
        target += timedelta(days=1)
    assert abs(int(sleeps[0]) - (target - started).total_seconds()) <= 5
    assert 0 < int(sleeps[1]) <= 86400  # and again the next night
    assert calls.read_text().split("\n")[0] == "train nightly"
    assert "nightly: kaizen train nightly exited with 3" in run.stdout  # a failed night is logged, not fatal
    assert re.search(r"next run at \d{4}-\d\d-\d\d 02:30 UTC", run.stdout)


def test_nightly_scheduler_refuses_a_bad_time(compose, tmp_path):
    run, sleeps, calls, _ = _scheduler(compose, tmp_path, "25:99")
    assert run.returncode == 2 and not sleeps and not calls.exists()
    assert len(run.stderr.strip().splitlines()) == 1 and "25:99" in run.stderr
