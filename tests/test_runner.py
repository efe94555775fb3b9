"""Runs, resume by fingerprint, interrupted map stages, and the rows-in = kept + rejected invariant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

import tests.stage_fixtures  # noqa: F401  (registers test_slow_tag)
from curate.data.dataset import Dataset, meta_dir
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
POOL = (ROOT / "tests" / "data" / "ingest" / "pool_sample.jsonl").read_text().splitlines()


def make_input(folder: Path, rows: int = 600) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "in.jsonl"
    with path.open("w") as f:
        for i in range(rows):
            record = json.loads(POOL[i % len(POOL)])
            f.write(json.dumps({"id": f"r{i}", "text": record["text"][: 40 + i % 97]}) + "\n")
    return path


def config_dict(input_path: Path, output: Path, delay: float = 0.0, stages=None) -> dict:
    return {"name": "resume", "inputs": [{"path": str(input_path)}], "output": str(output),
            "engine": {"prefect": False, "workers": 2, "shard_rows": 20},
            "stages": stages if stages is not None else [{"normalize": {}}, {"test_slow_tag": {"delay": delay}}]}


def step_folders(folder: Path) -> list[Path]:
    """The dataset folders under `stages/` or `rejected/` (without the `.meta` folders beside them)."""
    return [f for f in folder.iterdir() if not f.name.endswith(".meta")]


def outputs(run: Path) -> dict[str, pa.Table]:
    found = {}
    for kind in ("stages", "rejected"):
        for folder in sorted(step_folders(run / kind)):
            found[f"{kind}/{folder.name}"] = Dataset.open(folder).to_table()
    return found


def test_every_stage_keeps_rows_in_equal_kept_plus_rejected(tmp_path):
    path = make_input(tmp_path / "data")
    results = run_pipeline(parse_config(config_dict(path, tmp_path / "run")))
    previous = None
    for result, out in zip(results, sorted(step_folders(tmp_path / "run" / "stages")), strict=True):
        kept = Dataset.open(out).count()
        rejected = Dataset.open(tmp_path / "run" / "rejected" / out.name).count()
        assert result.rows_in == kept + rejected == (previous if previous is not None else result.rows_in)
        previous = kept
    assert results[-1].rows_rejected > 0 and results[-1].reasons == {"length_multiple": results[-1].rows_rejected}


def test_second_run_does_no_stage_work(tmp_path):
    cfg = parse_config(config_dict(make_input(tmp_path / "data"), tmp_path / "run"))
    run_pipeline(cfg)
    created = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*.parquet")}
    again = run_pipeline(cfg)
    assert [r.status for r in again] == ["skipped"] * 3
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*.parquet")} == created


def test_changed_params_rerun_that_stage_and_later_only(tmp_path):
    path = make_input(tmp_path / "data")
    run_pipeline(parse_config(config_dict(path, tmp_path / "run")))
    changed = config_dict(path, tmp_path / "run", stages=[{"normalize": {}}, {"test_slow_tag": {"drop_every": 7}}])
    assert [r.status for r in run_pipeline(parse_config(changed))] == ["skipped", "skipped", "ran"]
    fewer = config_dict(path, tmp_path / "run", stages=[{"normalize": {}}])
    assert [r.status for r in run_pipeline(parse_config(fewer))] == ["skipped", "skipped"]
    assert sorted(p.name for p in (tmp_path / "run" / "stages").iterdir()) == [
        "00-ingest", "00-ingest.meta", "01-normalize", "01-normalize.meta"]  # the removed step's .meta folder too


def test_killed_during_a_map_stage_resumes_to_identical_output(tmp_path):
    path = make_input(tmp_path / "data")
    reference = tmp_path / "reference"
    run_pipeline(parse_config(config_dict(path, reference)))

    interrupted = tmp_path / "interrupted"
    script = (
        "import json, sys\n"
        "import tests.stage_fixtures\n"
        "from curate.engine.config import parse_config\n"
        "from curate.engine.runner import run_pipeline\n"
        "run_pipeline(parse_config(json.loads(sys.argv[1])))\n"
    )
    cfg = config_dict(path, interrupted, delay=0.15)
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(cfg)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    receipts = interrupted / "stages" / "02-test_slow_tag.meta" / "_tasks"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(receipts.glob("*.json"))) < 6:
        assert proc.poll() is None, "the run finished before it could be interrupted"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stage_dir = interrupted / "stages" / "02-test_slow_tag"
    assert not Dataset.exists(stage_dir)
    done = {json.loads(p.read_text())["task"] for p in receipts.glob("*.json")}
    total = len(Dataset.open(interrupted / "stages" / "01-normalize").shard_names)
    assert 6 <= len(done) < total
    finished = {p: p.stat().st_mtime_ns for p in stage_dir.glob("part-*.parquet") if p.name in done}

    results = run_pipeline(parse_config(cfg))
    assert [r.status for r in results] == ["skipped", "skipped", "ran"]
    # shards finished before the kill were not redone ...
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    # ... and the output is exactly that of an uninterrupted run
    got, want = outputs(interrupted), outputs(reference)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].equals(want[name]), name
    assert not list(stage_dir.glob(".*tmp*")) and not (meta_dir(stage_dir) / "_tasks").exists()


def test_a_steps_stage_instances_are_released_when_it_ends(tmp_path, monkeypatch):
    """The engine tears down a step's set-up stages (and the models they hold) when the step ends."""
    import gc
    import weakref

    from curate.engine import step_task
    from curate.stages import registry

    class Model:
        weights = bytearray(1 << 20)

    path = make_input(tmp_path / "data", rows=60)
    held: list[weakref.ref] = []
    original = step_task.ready_stage

    def tracking(name, params, prepared=None):
        stage = original(name, params, prepared)
        stage.model = Model()  # what a setup would load
        held.append(weakref.ref(stage.model))
        return stage

    monkeypatch.setattr(step_task, "ready_stage", tracking)
    run_pipeline(parse_config(config_dict(path, tmp_path / "run")))
    gc.collect()
    assert held and all(ref() is None for ref in held)  # every loaded model freed
    assert not [s for s in registry._ready.values() if s.name in ("normalize", "test_slow_tag")]
