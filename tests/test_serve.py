"""`kaizen serve` as a process: health, metrics, secrets kept out of logs, bad configuration refused at once."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KAIZEN = str(Path(sys.executable).with_name("kaizen"))
SECRET = "sk-very-secret-value-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthz_metrics_and_no_secrets(model_data_dir, default_model, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIZEN_", "SLACK_", "DISCORD_"))}
    env.update(KAIZEN_DATA_DIR=str(model_data_dir), KAIZEN_HTTP_PORT=str(port), KAIZEN_LOG_LEVEL="DEBUG",
               KAIZEN_LOG_FORMAT="json", KAIZEN_MODEL__API_KEY=SECRET, KAIZEN_WEAVIATE_API_KEY=SECRET + "w",
               KAIZEN_DATABASE_URL=f"sqlite:///{tmp_path}/fb.db")
    proc = subprocess.Popen([KAIZEN, "serve", "--no-console"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        statuses = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        assert statuses and statuses[-1] == 200, statuses
        assert r.json()["status"] == "ok" and r.json()["model"] == "SmolLM2-135M-Instruct"
        m = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        body = m.text
        for family in ("kaizen_requests_total", "kaizen_request_latency_seconds", "kaizen_votes_total",
                       "kaizen_errors_total", "kaizen_tokens_total", "kaizen_time_to_first_token_seconds"):
            assert f"# TYPE {family.removesuffix('_total')}" in body, family
        assert 'kaizen_adapter_info{adapter="base"} 1.0' in body
        assert SECRET not in body
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert '"level"' in out  # JSON log lines
    assert SECRET not in out


def test_bad_variable_exits_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    env.update(KAIZEN_DATA_DIR=str(tmp_path), KAIZEN_HTTP_PORT="not-a-port")
    r = subprocess.run([KAIZEN, "serve", "--no-console"], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "http_port" in lines[0]
