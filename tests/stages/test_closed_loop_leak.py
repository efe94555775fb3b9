"""The closed loop is leak-proof: held-out rows copied into the pool are found before any model trains, left out of
every arm alike (`leak: exclude`), and recorded in results.json, the console table and the model's metrics;
`leak: fail` stops the step and `warn` trains on them (curate.methods.leaks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from curate.data.dataset import Dataset
from curate.data.errors import CurateError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from tests.cli_runner import curate
from tests.lm_fixtures import read_records

GSM = read_records("finetune_gsm8k.jsonl")
TINY = {"init": "scratch", "lm": {"vocab_size": 512, "n_embd": 32, "n_head": 2, "n_layer": 1, "seq_len": 256},
        "epochs": 1, "max_length": 256, "batch_size": 8, "lr": 0.003, "eval_every": 5, "save_every": None}
FIELDS = {"prompt": "prompt", "response": "response"}
COPIES = 20


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path.name


def config(tmp_path: Path, leak: str = "exclude") -> dict:
    """Pool: 100 GSM8K rows and 20 verbatim copies of held-out rows; the selection (a mixture of 40 rows, half from
    each source) takes every copy."""
    held = GSM[300:360]
    return {
        "name": "leak",
        "inputs": [{"path": write_jsonl(tmp_path / "gsm.jsonl", GSM[:100]), "fields": FIELDS, "source": "gsm8k"},
                   {"path": write_jsonl(tmp_path / "copies.jsonl", held[:COPIES]), "fields": FIELDS,
                    "source": "copies"}],
        "heldout": {"path": write_jsonl(tmp_path / "held.jsonl", held), "fields": FIELDS},
        "output": "run", "engine": {"workers": 2},
        "stages": [
            {"mixture": {"label": "mix", "by": "source", "weights": {"gsm8k": 0.5, "copies": 0.5}, "rows": 40}},
            {"finetune": {**TINY, "leak": leak}},
            {"evaluate": {"pool": "ingest", "seeds": 1, "finetune": TINY, "accuracy": "off", "leak": leak,
                          "from": "mix"}},
        ],
    }


def test_held_out_copies_train_no_arm_and_are_recorded(tmp_path):
    (tmp_path / "leak.yaml").write_text(yaml.safe_dump(config(tmp_path)))
    shown = curate("run", "leak.yaml", "--no-prefect", cwd=tmp_path)
    printed = " ".join(shown.stdout.split())
    assert f"leak check: {COPIES} training row(s) repeat held-out rows (mix: {COPIES}, ingest: {COPIES}); left out " \
           "of every arm" in printed
    run = tmp_path / "run"
    out = json.loads((run / "eval" / "evaluate" / "results.json").read_text())
    leak = out["leak"]
    assert leak["action"] == "exclude" and leak["rows"] == COPIES
    assert {k: v["rows"] for k, v in leak["by_input"].items()} == {"mix": COPIES, "ingest": COPIES}
    assert out["arms"]["selection"]["rows"] == [40 - COPIES] and out["arms"]["selection"]["left_out"] == COPIES
    # the random draw never takes a left-out pool row
    plan = json.loads((run / "eval" / "evaluate" / "arms.json").read_text())
    pool_ids = Dataset.open(run / "stages" / "00-ingest").to_table(columns=["id", "source"])
    copies = {i for i, s in zip(pool_ids.column("id").to_pylist(), pool_ids.column("source").to_pylist(),
                                strict=True) if s == "copies"}
    left_out = set(np.array(pool_ids.column("id").to_pylist())[plan["left_out"]["ingest"]].tolist())
    assert left_out == copies
    drawn = np.load(run / "eval" / "evaluate" / "draws" / "random-seed-0.npy")
    assert not set(np.array(pool_ids.column("id").to_pylist())[drawn].tolist()) & copies
    # the fine-tuned model trained on the mixture without them
    metrics = json.loads((run / "models" / "finetune" / "_manifest.json").read_text())["metrics"]
    assert metrics["leak"]["rows"] == COPIES and metrics["leak"]["action"] == "exclude"
    assert "leak check" in (run / "report.html").read_text()


@pytest.mark.parametrize("leak", ["fail", "warn"])
def test_fail_stops_before_training_and_warn_trains_on_them(tmp_path, leak):
    cfg = config(tmp_path, leak)
    cfg["stages"] = cfg["stages"][:1] + cfg["stages"][2:]  # the evaluation only
    cfg["output"] = str(tmp_path / "run")
    cfg["engine"] = {"prefect": False, "workers": 2}
    if leak == "fail":
        with pytest.raises(CurateError, match="repeat held-out rows"):
            run_pipeline(parse_config(cfg, base_dir=tmp_path))
        assert not list((tmp_path / "run" / "eval" / "evaluate").glob("selection/seed-0/result.json"))
        return
    run_pipeline(parse_config(cfg, base_dir=tmp_path))
    out = json.loads((tmp_path / "run" / "eval" / "evaluate" / "results.json").read_text())
    assert out["leak"]["rows"] == COPIES and out["arms"]["selection"]["rows"] == [40]


def test_an_error_inside_a_prefect_task_is_one_line(tmp_path):
    """Through the Prefect flow (its ephemeral server): the CurateError `leak: fail` raises is said once, with no
    Prefect traceback (`-v` shows them)."""
    cfg = config(tmp_path, "fail")
    cfg["stages"] = cfg["stages"][:1] + cfg["stages"][2:]
    (tmp_path / "leak.yaml").write_text(yaml.safe_dump(cfg))
    failed = curate("run", "leak.yaml", cwd=tmp_path, check=False)
    said = failed.stdout + failed.stderr
    assert failed.returncode == 2 and "Traceback" not in said and said.count("repeat held-out rows") == 1
    assert "error: evaluate: 20 training row(s) repeat held-out rows" in " ".join(said.split())
