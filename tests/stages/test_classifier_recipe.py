"""configs/pretrain-quality.yaml as it ships: PII redaction, a classifier towards the GSM8K target, and the closed
loop. Measured: validation AUC 1.0 (28 rows), 694 rows kept, held-out loss 4.83 (selection) vs 5.71 (random),
paired -0.88 [-1.55, -0.21] over 3 seeds; about 55 s on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

from curate.data.dataset import side_path
from curate.engine.config import load_config
from curate.engine.runner import run_pipeline
from curate.inspect.sql import query

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_classifier_selection_beats_random_on_held_out_target_rows(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "pretrain-quality.yaml", output=str(tmp_path / "run"))
    config.engine.prefect = False
    run_pipeline(config)
    run = tmp_path / "run"
    report = json.loads(side_path(next((run / "stages").glob("*-classifier")), "classifier.json").read_text())
    assert report["metrics"]["validation"]["roc_auc"] >= 0.95
    assert report["metrics"]["label_counts"] == {"positive (target)": 140, "negative (pool)": 140}
    results = json.loads((run / "eval" / "evaluate" / "results.json").read_text())
    assert results["paired"]["excludes_zero"] and results["paired"]["ci95"][1] < 0  # the selection beats random
    found = query(run, "SELECT count(*) AS n FROM pii_pii WHERE action = 'redacted'").column("n")[0].as_py()
    assert found > 0
