"""Every recipe in configs/ validates; recipes give the outputs they gave before the plan became a graph; the
diversity recipe and the SFT-mixture recipe (two selections -> mixture -> fine-tuning) run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from curate.data.dataset import Dataset, side_path
from curate.engine.config import load_config
from curate.engine.runner import run_pipeline
from curate.io.sources import plan_units
from tests.recipe_digest import digest

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_validates_and_finds_its_inputs(path):
    config = load_config(path)
    assert plan_units(config), f"{path.name}: no input files"
    assert config.stage_specs(), f"{path.name}: no stages"


RECORDED = json.loads((Path(__file__).parent / "data" / "recipe_outputs.json").read_text())


def test_diverse_sft_recipe_runs_and_gives_the_recorded_outputs(tmp_path):
    """The diverse-SFT recipe end to end, and tests/data/recipe_outputs.json (see test_cli's demo test for its
    history): the same rows kept and dropped (ids and reasons) and the same columns in every step folder."""
    config = load_config(Path(__file__).parents[1] / "configs" / "diverse-sft.yaml", output=str(tmp_path / "run"))
    config.engine.prefect = False
    results = {r.label: r for r in run_pipeline(config)}
    selection = results["kmeans_diversity"]
    assert selection.rows_out == math.floor(0.25 * selection.rows_in)  # redistribute fills the budget
    kept = Dataset.open(tmp_path / "run" / "stages" / "06-kmeans_diversity").to_table(columns=["task", "cluster"])
    assert len(set(kept.column("cluster").to_pylist())) == 16
    assert len(set(kept.column("task").to_pylist())) >= 20  # of 31 tasks
    assert digest(tmp_path / "run") == RECORDED["diverse-sft"]


@pytest.mark.slow  # ~110 s; the demo's digest covers the same stages (perplexity, CoLoR-Filter) with tinier LMs
def test_targeted_pretrain_gives_the_recorded_outputs(tmp_path):
    config = load_config(Path(__file__).parents[1] / "configs" / "targeted-pretrain.yaml",
                         output=str(tmp_path / "run"))
    config.engine.prefect = False
    run_pipeline(config)
    # demo-html-000 (a row for the report's escaping test) joined the demo pool after the digests were recorded
    assert digest(tmp_path / "run", ignore=frozenset({"demo-html-000"})) == RECORDED["targeted-pretrain"]


@pytest.mark.slow  # about 55 s; branches, merges, mixtures and fine-tunes each have faster tests, the demo runs the CLI
def test_sft_mixture_recipe_runs_through_the_cli(tmp_path):
    """Two selections branch from dedup, meet in a mixture, and a model is fine-tuned on it and measured on the
    held-out target rows; through the CLI, in-process (tests/flows run `curate run` as a Prefect flow on a server)."""
    from transformers import AutoModelForCausalLM

    from curate.data.artifacts import Artifacts
    from curate.inspect.sql import query
    from tests.test_cli import curate

    recipe = Path(__file__).parents[1] / "configs" / "sft-mixture.yaml"
    run = tmp_path / "run"
    result = curate("run", str(recipe), "-o", str(run), "--no-prefect", cwd=tmp_path)
    assert "finetune" in result.stdout
    steps = {s["label"]: s for s in query(run, "SELECT label, parents, output, rows_out FROM steps").to_pylist()}
    assert steps["targeted"]["parents"] == steps["embed"]["parents"] == ["dedup"]
    assert steps["mixture"]["parents"] == ["targeted", "diverse"] and steps["finetune"]["output"] == "artifacts"
    report = json.loads(side_path(next((run / "stages").glob("*-mixture")), "mixture.json").read_text())
    assert report["parts"]["targeted"]["share"] == pytest.approx(0.7, abs=0.02)
    assert report["budget"]["unit"] == "response tokens" and abs(report["budget"]["taken"] - 20000) < 500
    artifacts = Artifacts.open(run / "models" / "finetune")
    assert artifacts.verify() == [] and any(f["file"] == "model.safetensors" for f in artifacts.manifest["files"])
    metrics = artifacts.metrics
    # measured on the 60 held-out target rows: 7.64 -> 5.84 nats per response token; asked: 1.5 nats lower
    assert metrics["heldout_examples"] == 60
    assert metrics["heldout_loss_initial"] - metrics["heldout_loss_final"] > 1.5
    AutoModelForCausalLM.from_pretrained(run / "models" / "finetune")
    held = set(json.loads((run / "heldout_split.json").read_text())["heldout_ids"])
    seen = {r["id"] for r in query(run, "SELECT id FROM ingest UNION ALL SELECT id FROM target").to_pylist()}
    assert len(held) == 60 and not held & seen
    inspect = curate("inspect", str(run), cwd=tmp_path).stdout
    assert "<- targeted, diverse" in inspect and "held-out loss" in inspect
    curate("export", str(run), "mixture", "-o", str(tmp_path / "out"), cwd=tmp_path)
    first = json.loads((tmp_path / "out" / "mixture.jsonl").read_text().splitlines()[0])
    assert set(first) == {"prompt", "completion"}


@pytest.mark.slow  # about 70 s: each stage has its own real-model tests; this runs the whole recipe
def test_math_sft_recipe_runs_through_the_cli(tmp_path):
    """clean -> dedup -> base LM -> CLEAR filter -> fine-tune -> CLEAR correct -> DART resample -> mixture ->
    closed-loop evaluation, on the packaged GSM8K sample, through the CLI."""
    import numpy as np

    from curate.inspect.sql import query
    from tests.test_cli import curate

    recipe = Path(__file__).parents[1] / "configs" / "math-sft.yaml"
    run = tmp_path / "run"
    curate("run", str(recipe), "-o", str(run), "--no-prefect", cwd=tmp_path)
    steps = {s["label"]: s for s in query(run, "SELECT label, parents, rows_in, rows_out FROM steps").to_pylist()}
    assert steps["clear"]["rows_out"] == steps["clear"]["rows_in"] - int(0.1 * steps["clear"]["rows_in"])
    reasons = query(run, "SELECT DISTINCT reason FROM rejected WHERE stage = 'clear'").column("reason").to_pylist()
    assert reasons == ["low_confidence"]
    dart = query(run, "SELECT num_steps, repeats FROM dart").to_pandas()
    expected = np.maximum(1, np.ceil(np.round(3 * dart.num_steps / dart.num_steps.max(), 9)))
    assert (dart.repeats == expected).all()
    corrected = query(run, "SELECT count(*) AS n FROM corrected WHERE change_reason = 'corrected'")
    originals = query(run, "SELECT count(*) AS n FROM corrected WHERE response_original IS NOT NULL")
    assert corrected.column("n")[0].as_py() == originals.column("n")[0].as_py()
    results = json.loads((run / "eval" / "evaluate" / "results.json").read_text())
    assert {"selection", "random"} <= set(results["arms"])
