"""A run folder has one writer and holds only what curate wrote: a second `curate run` on it is refused while the
first holds its lock (and the folder ends consistent), `output:` never takes a folder of other files or one inside
an input folder, and cleaning up an earlier config's steps leaves what curate did not write (curate.engine.runlock)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from curate.data.dataset import Dataset
from curate.data.errors import CurateError
from curate.data.hashing import file_sha256
from curate.engine.runlock import LOCK, MARKER, run_lock
from tests.cli_runner import curate

ROOT = Path(__file__).resolve().parents[1]
POOL = (ROOT / "tests" / "data" / "ingest" / "pool_sample.jsonl").read_text().splitlines()


@pytest.fixture(autouse=True)
def plugin_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the `curate` command imports tests.stage_fixtures as a plugin


def project(tmp_path: Path, output: str = "run", delay: float = 0.0, stages: list | None = None) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "in.jsonl").write_text("\n".join(
        json.dumps({"id": f"r{i}", "text": json.loads(POOL[i % len(POOL)])["text"][:60 + i % 50]})
        for i in range(300)) + "\n")
    config = {"name": "folder", "inputs": [{"path": "data/in.jsonl"}], "output": output, "plugins":
              ["tests.stage_fixtures"], "engine": {"prefect": False, "workers": 1, "shard_rows": 20},
              "stages": stages or [{"normalize": {}}, {"test_slow_tag": {"delay": delay}}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def consistent(run: Path) -> None:
    """Every finished dataset's manifest lists exactly the shards on disk, with their sha256."""
    for kind in ("stages", "rejected"):
        for folder in (run / kind).iterdir():
            if folder.name.endswith(".meta") or not Dataset.exists(folder):
                continue
            listed = {s.file: s.sha256 for s in Dataset.open(folder).shards}
            on_disk = {p.name for p in folder.glob("part-*.parquet")}
            assert set(listed) <= on_disk and all(file_sha256(str(folder / f)) == h for f, h in listed.items())


def test_a_second_run_on_the_folder_is_refused_and_the_folder_stays_consistent(tmp_path):
    project(tmp_path, delay=0.5)  # about 15 s of work: the second run starts while the first holds the lock
    first = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", "c.yaml", "--no-prefect", "--no-report"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "run" / "stages").glob("*-test_slow_tag.meta/_tasks/*")):
        time.sleep(0.05)
    second = curate("run", "c.yaml", "--no-prefect", "--no-report", cwd=tmp_path, check=False)
    said = " ".join((second.stdout + second.stderr).split())
    assert second.returncode == 2 and f"pid {first.pid}" in said and "in use by another curate process" in said
    assert first.wait(timeout=300) == 0, first.stdout.read()
    consistent(tmp_path / "run")
    third = curate("run", "c.yaml", "--no-prefect", "--no-report", cwd=tmp_path)
    assert third.stdout.count("skipped") >= 3  # ingest, normalize, the slow step: the first run finished them


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    (tmp_path / "run").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom curate.engine.runlock import run_lock\n"
                               f"with run_lock({str(tmp_path / 'run')!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(600)\n"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(CurateError, match=f"pid {holder.pid}"), run_lock(tmp_path / "run"):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock(tmp_path / "run"):  # the operating system dropped the dead process's lock
        assert (tmp_path / "run" / LOCK).is_file()


def test_output_on_a_folder_of_other_files_fails_before_any_work(tmp_path):
    project(tmp_path, output=".")
    planted = [tmp_path / "models" / "mine.bin", tmp_path / "eval" / "notes.txt", tmp_path / "stages" / "x.txt",
               tmp_path / "config.yaml", tmp_path / "run.json"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's")
    before = {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    for command in (["validate", "c.yaml"], ["run", "c.yaml", "--no-prefect"]):
        result = curate(*command, cwd=tmp_path, check=False)
        said = " ".join((result.stdout + result.stderr).split())
        assert result.returncode == 2 and "is a folder of other files" in said and "not a curate run" in said
    assert {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (tmp_path / MARKER).exists()


def test_output_inside_an_input_folder_fails_at_validate(tmp_path):
    project(tmp_path, output="data/run")
    config = yaml.safe_load((tmp_path / "c.yaml").read_text())
    config["inputs"] = [{"path": "data"}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = curate("validate", "c.yaml", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "which inputs[0].path reads" in " ".join(result.stdout.split())


def test_cleanup_removes_only_what_curate_wrote(tmp_path):
    project(tmp_path, stages=[{"normalize": {}}, {"heuristics": {"min_words": 3}}])
    curate("run", "c.yaml", "--no-prefect", "--no-report", cwd=tmp_path)
    run = tmp_path / "run"
    mine = [run / "stages" / "07-mine" / "notes.txt", run / "models" / "mine" / "w.bin", run / "scores" / "x" / "y"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's")
    config = yaml.safe_load((tmp_path / "c.yaml").read_text())
    config["stages"] = [{"normalize": {}}]  # heuristics is no longer a step: its folders go
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    curate("run", "c.yaml", "--no-prefect", "--no-report", cwd=tmp_path)
    assert not (run / "stages" / "02-heuristics").exists() and not (run / "stages" / "02-heuristics.meta").exists()
    assert all(path.read_text() == "the user's" for path in mine)
