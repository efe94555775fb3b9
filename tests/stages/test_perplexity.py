"""The `perplexity` stage through the runner: a reference LM trained on a split of the pool (§6.4), `ppl`
equal to the scorer's own numbers, held-out training rows, re-deciding from stored scores, a named model,
response-only scoring and grouped percentiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curate.data.dataset import Dataset
from curate.data.errors import ConfigError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.models.lm_scorer import LMScorer
from curate.models.lm_train import LMTrainConfig, train_lm
from tests.lm_fixtures import TINY_LM, read_records
from tests.run_copy import copy_run

TINY = {**TINY_LM, "seq_len": 128, "steps": 40, "warmup_steps": 5}
STAGE = "01-perplexity"


def write_pool(folder: Path) -> None:
    """200 web (C4) texts + 40 GSM8K problems as text, with their domain."""
    with (folder / "pool.jsonl").open("w") as f:
        for row in read_records("heuristics_c4_web_sample.jsonl"):
            f.write(json.dumps({"id": row["id"], "text": row["text"], "domain": "web"}) + "\n")
        for row in read_records("heuristics_gsm8k.jsonl")[:40]:
            f.write(json.dumps({"id": row["id"], "text": row["prompt"] + "\n" + row["response"],
                                "domain": "math"}) + "\n")


def config(folder: Path, stage: dict) -> dict:
    return {"name": "ppl", "inputs": [{"path": "pool.jsonl"}], "output": "run", "engine": {"prefect": False},
            "stages": [{"perplexity": stage}]}


def outputs(run: Path) -> tuple[dict, dict]:
    kept = Dataset.open(run / "stages" / STAGE).to_table().to_pylist()
    rejected = Dataset.open(run / "rejected" / STAGE).to_table().to_pylist()
    return {r["id"]: r for r in kept}, {r["id"]: r for r in rejected}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ppl")
    write_pool(folder)
    stage = {"reference": {"fraction": 0.25, "lm": TINY}, "mode": "lowest", "fraction": 0.5}
    run_pipeline(parse_config(config(folder, stage), base_dir=folder))
    return folder / "run"


def test_reference_model_split_and_ppl(reference_run):
    kept, rejected = outputs(reference_run)
    assert len(kept) + len(rejected) == 240
    held = [r for r in rejected.values() if r["reason"] == "reference_split"]
    assert len(held) == 60  # floor(0.25 * 240) rows trained the reference and are not judged
    assert len(kept) == 90  # floor(0.5 * 180) of the rest
    # ppl is exp(mean NLL) under the saved reference model, for every row (held-out rows too)
    models = reference_run / "models"
    (folder,) = list(models.iterdir())
    scorer = LMScorer(folder / "reference")
    rows = list(kept.values()) + list(rejected.values())
    expected = np.exp(scorer.score([r["text"] for r in rows]).mean)
    np.testing.assert_allclose([r["ppl"] for r in rows], expected, rtol=1e-5)
    # "lowest": every kept row has a lower PPL than every judged row that was dropped
    dropped = [r["ppl"] for r in rejected.values() if r["reason"] != "reference_split"]
    assert max(r["ppl"] for r in kept.values()) <= min(dropped)
    assert {r["reason"] for r in rejected.values()} == {"reference_split", "ppl_above_p50"}


def test_a_new_decision_reuses_the_scores_and_the_model(reference_run, tmp_path):
    reference_run, data = copy_run(reference_run, tmp_path)
    scores = next((reference_run / "scores").iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in scores.iterdir()}
    model_files = {p: p.stat().st_mtime_ns for p in (reference_run / "models").rglob("*") if p.is_file()}
    data["stages"][0]["perplexity"].update({"mode": "percentile_buckets", "keep": ["head", "middle"]})
    del data["stages"][0]["perplexity"]["fraction"]
    results = run_pipeline(parse_config(data, base_dir=reference_run.parent))
    assert results[-1].status == "ran"
    assert {p.name: p.stat().st_mtime_ns for p in scores.iterdir()} == stamps
    assert {p: p.stat().st_mtime_ns for p in model_files} == model_files
    kept, rejected = outputs(reference_run)
    assert {r["ppl_bucket"] for r in kept.values()} == {"head", "middle"}
    tail = [r for r in rejected.values() if r["reason"] == "ppl_bucket_tail"]
    assert len(tail) == 72 and min(r["ppl"] for r in tail) >= max(r["ppl"] for r in kept.values())


def test_named_model_prefers_its_own_domain(tmp_path):
    """A model trained on GSM8K (other rows) gives math rows the lowest PPL of the pool. Per-token PPL under a
    tokenizer trained on math alone is only a rough domain signal (web text splits into short, easier tokens):
    measured 0.78 math among the lowest 40, against a pool share of 0.17 (0.85 at 150 steps)."""
    write_pool(tmp_path)
    texts = [r["prompt"] + "\n" + r["response"] for r in read_records("dedup_gsm8k.jsonl")[:150]]
    model = train_lm(texts, tmp_path / "math-lm", LMTrainConfig(**{**TINY, "steps": 100}))
    stage = {"model": str(model), "mode": "lowest", "fraction": 40 / 240}
    run_pipeline(parse_config(config(tmp_path, stage), base_dir=tmp_path))
    kept, _ = outputs(tmp_path / "run")
    precision = np.mean([r["domain"] == "math" for r in kept.values()])
    print(f"math-LM lowest 1/6 of the pool: {precision:.3f} math")
    assert len(kept) == 40 and precision >= 0.6


def test_response_scoring_and_groups(tmp_path):
    """`part: response` scores the response given its prompt; `group_by` takes the fraction per group."""
    rows = read_records("heuristics_gsm8k.jsonl")[:30] + read_records("heuristics_mbpp.jsonl")[:30]
    with (tmp_path / "pool.jsonl").open("w") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({"id": row["id"], "prompt": row["prompt"], "response": row["response"],
                                "domain": "math" if i < 30 else "code"}) + "\n")
    # a 256-token context: whole prompts and responses fit (at 128, long prompts leave no response token)
    model = train_lm([r["prompt"] + "\n" + r["response"] for r in rows], tmp_path / "lm",
                     LMTrainConfig(**{**TINY, "seq_len": 256}))
    stage = {"model": str(model), "part": "response", "mode": "highest", "fraction": 0.2, "group_by": "domain"}
    run_pipeline(parse_config(config(tmp_path, stage), base_dir=tmp_path))
    kept, rejected = outputs(tmp_path / "run")
    assert sorted(r["domain"] for r in kept.values()) == ["code"] * 6 + ["math"] * 6
    assert {r["reason"] for r in rejected.values()} == {"ppl_below_p80"}
    scorer = LMScorer(model)
    every = list(kept.values()) + list(rejected.values())
    nll = scorer.score(prompts=[r["prompt"] for r in every], responses=[r["response"] for r in every]).mean
    np.testing.assert_allclose([r["ppl"] for r in every], np.exp(nll), rtol=1e-5)


def test_config_errors_name_the_problem(tmp_path):
    write_pool(tmp_path)
    with pytest.raises(ConfigError, match="exactly one of `model`"):
        parse_config(config(tmp_path, {"mode": "band"}), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="mode 'lowest' needs `fraction`"):
        parse_config(config(tmp_path, {"model": "x", "mode": "lowest"}), base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"stages\[0\]\.perplexity\.model: no model folder at './nope'"):
        parse_config(config(tmp_path, {"model": "./nope"}), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="2 cutoffs make 3 buckets"):
        parse_config(config(tmp_path, {"model": "x", "mode": "percentile_buckets", "buckets": ["a", "b"]}),
                     base_dir=tmp_path)
