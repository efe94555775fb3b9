"""The flow against a real Prefect server (started by `curate server`): runs are recorded there, transient failures
are retried, and `curate schedule` serves a config as a scheduled deployment whose triggered runs do the run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from curate.data.dataset import Dataset

ROOT = Path(__file__).resolve().parents[2]
POOL = ROOT / "tests" / "data" / "ingest" / "pool_sample.jsonl"
CURATE = shutil.which("curate", path=str(Path(sys.executable).parent)) or "curate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, path: str, body: dict, attempts: int = 10) -> list[dict]:
    """POST to the server's API; a 503 (its SQLite database busy with another client) is asked again."""
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_UI_ENABLED": "false",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([CURATE, "server", "--port", str(port), "--no-ui"],
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
    result = subprocess.run([CURATE, "run", str(tmp_path / "c.yaml")], cwd=ROOT, capture_output=True, text=True,
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


def test_the_server_binds_to_loopback_only(prefect_server):
    url, _ = prefect_server
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    outside = [a for a in {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
               if not a.startswith("127.")]
    for address in outside:
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect((address, port))


def wait_for(check, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_schedule_serves_a_cron_deployment_whose_runs_do_the_run(prefect_server, tmp_path):
    url, env = prefect_server
    env = {**env, "PREFECT_API_URL": url}
    (tmp_path / "pool").mkdir()
    shutil.copy(POOL, tmp_path / "pool" / "a.jsonl")
    config = {"name": "scheduled", "inputs": [{"path": str(tmp_path / "pool" / "*.jsonl")}],
              "output": str(tmp_path / "run"), "engine": {"workers": 1, "shard_rows": 20},
              "stages": [{"normalize": {}}, {"dedup": {}}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    serve = subprocess.Popen([CURATE, "schedule", str(tmp_path / "c.yaml"), "--cron", "0 4 1 1 *"], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deployment = wait_for(lambda: api(url, "/deployments/filter", {"deployments": {"name": {"any_": [
            "scheduled"]}}}), 120, "the deployment")[0]
        assert deployment["schedules"][0]["schedule"]["cron"] == "0 4 1 1 *"

        def run_now() -> dict:
            flow_run = api(url, f"/deployments/{deployment['id']}/create_flow_run", {})
            return wait_for(lambda: next((r for r in api(url, "/flow_runs/filter", {"flow_runs": {"id": {
                "any_": [flow_run["id"]]}}}) if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")), None),
                240, "the flow run")

        assert run_now()["state_type"] == "COMPLETED"
        assert Dataset.open(tmp_path / "run" / "stages" / "02-dedup").count() == 60
        old = {p.name: p.stat().st_ino for p in (tmp_path / "run" / "stages" / "01-normalize").glob("part-*")}
        # the pool grows: the next run takes the new file in, and takes over the old file's finished shards
        rows = [json.loads(line) for line in POOL.read_text().splitlines()][:10]
        (tmp_path / "pool" / "b.jsonl").write_text("".join(json.dumps({**r, "id": r["id"] + "-new",
                                                                        "text": r["text"] + " (new)"}) + "\n"
                                                           for r in rows))
        assert run_now()["state_type"] == "COMPLETED"
        assert Dataset.open(tmp_path / "run" / "stages" / "00-ingest").count() == 70
        now = {p.name: p.stat().st_ino for p in (tmp_path / "run" / "stages" / "01-normalize").glob("part-*")}
        assert {k: now[k] for k in old} == old and len(now) > len(old)
    finally:
        serve.terminate()  # serving stops before the server (the fixture's), never the other way round
        serve.wait(timeout=60)
