"""Every recipe in configs/ validates, and the diversity recipe runs end to end on its packaged data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from curate.config import load_config
from curate.dataset import Dataset
from curate.io.sources import plan_units
from curate.runner import run_pipeline

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_validates_and_finds_its_inputs(path):
    config = load_config(path)
    assert plan_units(config), f"{path.name}: no input files"
    assert config.stage_specs(), f"{path.name}: no stages"


def test_diverse_sft_recipe_runs(tmp_path):
    config = load_config(Path(__file__).parents[1] / "configs" / "diverse-sft.yaml", output=str(tmp_path / "run"))
    config.engine.prefect = False
    results = {r.label: r for r in run_pipeline(config)}
    selection = results["kmeans_diversity"]
    assert selection.rows_out == math.floor(0.25 * selection.rows_in)  # redistribute fills the budget
    kept = Dataset.open(tmp_path / "run" / "stages" / "06-kmeans_diversity").to_table(columns=["task", "cluster"])
    assert len(set(kept.column("cluster").to_pylist())) == 16
    assert len(set(kept.column("task").to_pylist())) >= 20  # of 31 tasks
