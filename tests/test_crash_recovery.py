"""A run killed with SIGKILL at each kind of point, then run again, ends exactly as an uninterrupted run: the same
rows, ids and drop reasons in every step, the same mixture bytes, the same fine-tuned model and evaluation numbers.

The kills are real (`curate.data.faults`: the process sends itself SIGKILL at a named point, so nothing is flushed or
cleaned up); the points cover a map stage's task, a global stage's `prepare` (a reference LM trained), its
`decide`, a shard half-written, the mixture, a fine-tune's training and an evaluation's. Every point is checked in
the slow run (`pytest -m slow`, about 80 s); the default run checks two of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate.data.dataset import Dataset
from curate.data.faults import ENV
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from tests.recipe_digest import digest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "ingest"
LM = {"vocab_size": 512, "n_embd": 32, "n_head": 2, "n_layer": 1, "seq_len": 64, "steps": 12, "batch_size": 8}
TUNE = {"init": "scratch", "lm": {"vocab_size": 512, "n_embd": 32, "n_head": 2, "n_layer": 1, "seq_len": 128},
        "epochs": 1, "max_length": 128, "batch_size": 8, "lr": 0.003, "eval_every": 4, "save_every": 2}
SCRIPT = ("import json, sys\nfrom curate.engine.config import parse_config\n"
          "from curate.engine.runner import run_pipeline\n"
          "run_pipeline(parse_config(json.loads(sys.argv[1])))\n")

# (point, a prefix of its detail, which hit): every kind of place a run can die
POINTS = [
    ("task_done", "01-normalize/", 3),  # a map task has written its shards, not its receipt
    ("prepare", "perplexity", 1),  # the reference LM is trained and saved, the step does not know it yet
    ("decide", "dedup", 1),  # dedup's decision is written, its marker not
    ("shard_write", "part-", 12),  # a shard is fully written under its temporary name, not renamed
    ("task_done", "04-mixture/", 1),  # the mixture has written a part, not its receipt
    ("train_step", "finetune", 3),  # fine-tuning, after a checkpoint
    ("train_step", "evaluate", 5),  # an evaluation arm's training
]
DEFAULT = {("shard_write", "part-", 12), ("train_step", "evaluate", 5)}


def config(output: Path) -> dict:
    fields = {"prompt": "prompt", "response": "response"}
    return {
        "name": "crash", "output": str(output),
        "inputs": [{"path": str(DATA / "pool_sample.jsonl")},
                   {"path": str(DATA / "gsm8k_sample.jsonl"), "fields": fields, "source": "gsm8k"}],
        "heldout": {"split_from_target": 0.5, "seed": 0},
        "target": {"path": str(DATA / "gsm8k_sample.jsonl"), "fields": fields},
        "engine": {"prefect": False, "workers": 2, "shard_rows": 16},
        "stages": [
            {"normalize": {}},
            {"perplexity": {"reference": {"fraction": 0.3, "lm": LM}, "mode": "lowest", "fraction": 0.9}},
            {"dedup": {}},
            {"mixture": {"by": "source", "rows": 40, "seed": 1}},
            {"finetune": TUNE},
            {"evaluate": {"from": "mixture", "pool": "dedup", "seeds": 1, "accuracy": "off", "finetune": TUNE}},
        ],
    }


def outcome(run: Path) -> dict:
    """What must not differ: rows per step, the mixture's bytes, the fine-tune's and the evaluation's numbers."""
    mixture = next((run / "stages").glob("*-mixture"))
    metrics = json.loads((run / "models" / "finetune" / "metrics.json").read_text())
    results = json.loads((run / "eval" / "evaluate" / "results.json").read_text())
    for arm in results["arms"].values():
        arm.pop("seconds", None)
    return {"rows": digest(run), "mixture": {p.name: p.read_bytes() for p in sorted(mixture.glob("part-*"))},
            "finetune": (metrics["train_loss"], metrics["heldout_curve"]),
            "arms": {name: arm.get("heldout_loss") for name, arm in results["arms"].items()}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("crash") / "run"
    run_pipeline(parse_config(config(run)))
    return outcome(run)


@pytest.mark.parametrize("point", [pytest.param(p, marks=() if p in DEFAULT else pytest.mark.slow,
                                                id=f"{p[0]}@{p[1]}:{p[2]}") for p in POINTS])
def test_killed_at_any_point_a_rerun_ends_as_an_uninterrupted_run(uninterrupted, tmp_path, point):
    run = tmp_path / "run"
    name, prefix, nth = point
    env = {**os.environ, "PYTHONPATH": str(ROOT), ENV: f"{name}@{prefix}:{nth}"}
    killed = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(config(run))], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, f"the run was not killed at {point}: {killed.stderr[-2000:]}"
    results = run_pipeline(parse_config(config(run)))
    assert any(r.status == "skipped" for r in results) or name in ("task_done", "shard_write")
    assert outcome(run) == uninterrupted
    for kind in ("stages", "rejected"):  # no temporary file survives, and every step's rows add up
        assert not [p for p in (run / kind).rglob(".*.tmp-*")]
    assert Dataset.open(next((run / "stages").glob("*-dedup"))).count() > 0
