"""The flow against a real Prefect server: runs are recorded there, and transient failures are retried."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from curate.dataset import Dataset

ROOT = Path(__file__).resolve().parents[2]
POOL = ROOT / "tests" / "data" / "ingest" / "pool_sample.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_UI_ENABLED": "false",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None, "prefect server exited"
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("prefect server did not become healthy in 120 s")
    yield url, env
    server.terminate()
    server.wait(timeout=30)


def test_run_is_recorded_on_the_server_and_transient_errors_retried(prefect_server, tmp_path):
    url, env = prefect_server
    config = {
        "name": "server-test",
        "plugins": ["tests.stage_fixtures"],
        "inputs": [{"path": str(POOL)}],
        "output": str(tmp_path / "run"),
        "engine": {"workers": 2, "shard_rows": 20, "retries": 2},
        "stages": [{"normalize": {}}, {"test_flaky": {"marker_dir": str(tmp_path / "markers")}}],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    curate = shutil.which("curate", path=str(Path(sys.executable).parent)) or "curate"
    result = subprocess.run([curate, "run", str(tmp_path / "c.yaml")], cwd=ROOT, capture_output=True, text=True,
                            env={**env, "PREFECT_API_URL": url, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert Dataset.open(tmp_path / "run" / "stages" / "02-test_flaky").count() == 60

    flow_runs = api(url, "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["curate-server-test"]}}})
    assert [r["state_type"] for r in flow_runs] == ["COMPLETED"]
    # task run states reach the server as events, handled after the flow returns: wait until they have settled
    deadline = time.time() + 60
    while True:
        task_runs = api(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_runs[0]["id"]]}}})
        flaky = [r for r in task_runs if r["name"].startswith("test_flaky[")]
        settled = len(flaky) == 3 and all(r["state_type"] == "COMPLETED" and r["run_count"] == 2 for r in flaky)
        if settled or time.time() > deadline:
            break
        time.sleep(1)
    names = {r["name"] for r in task_runs}
    assert {"ingest[pool_sample.jsonl]", "normalize[part-00000-0000]", "test_flaky[part-00000-0002]"} <= names
    assert len(flaky) == 3 and all(r["state_type"] == "COMPLETED" and r["run_count"] == 2 for r in flaky), flaky
