"""No silent drops: DSIR's `min_words` follows the target (short multiple-choice rows are no longer dropped by a
default), and a step that drops more than `warn_drop_share` of its rows besides its budget is named in the console,
run.json and at the top of the report (curate.engine.drops)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from curate.data.dataset import side_path
from curate.engine.drops import drop_warning
from tests.cli_runner import curate
from tests.lm_fixtures import read_records

MMLU = read_records("decontam_mmlu_redux.jsonl")
WEB = read_records("heuristics_c4_web_sample.jsonl")


def project(tmp_path: Path, dsir: dict) -> Path:
    pool = [{"text": r["prompt"], "kind": "mc"} for r in MMLU[:200]] + [{"text": r["text"], "kind": "web"}
                                                                        for r in WEB[:100]]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (tmp_path / "target.jsonl").write_text("".join(json.dumps({"text": r["prompt"]}) + "\n" for r in MMLU[200:260]))
    config = {"name": "drops", "inputs": [{"path": "pool.jsonl"}], "target": {"path": "target.jsonl"},
              "output": "run", "stages": [{"dsir": {"budget": 100, "seed": 0, **dsir}}]}
    (tmp_path / "drops.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_dsir_keeps_rows_as_short_as_the_target_by_default(tmp_path):
    project(tmp_path, {})
    shown = curate("run", "drops.yaml", "--no-prefect", cwd=tmp_path)
    report = json.loads(side_path(tmp_path / "run" / "stages" / "01-dsir", "dsir.json").read_text())
    assert report["min_words_auto"] and report["min_words"] < 100
    assert report["eligible"] >= 290  # nearly every row (measured: all 300)
    assert "dropped" not in shown.stdout
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["warnings"] == []


def test_a_default_that_drops_most_rows_is_named_everywhere(tmp_path):
    project(tmp_path, {"min_words": 100})
    shown = curate("run", "drops.yaml", "--no-prefect", cwd=tmp_path)
    said = " ".join(shown.stdout.split() + shown.stderr.split())
    assert "dsir: dropped" in said and "too_few_words" in said and "warn_drop_share 0.3" in said
    (warning,) = json.loads((tmp_path / "run" / "run.json").read_text())["warnings"]
    assert warning["step"] == "dsir" and warning["share"] > 0.5 and set(warning["reasons"]) == {"too_few_words"}
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.index("<h2>Warnings</h2>") < page.index("<h2>", page.index("<h2>Warnings</h2>") + 1)
    # a higher warn_drop_share is the user's to set
    config = yaml.safe_load((tmp_path / "drops.yaml").read_text())
    config["warn_drop_share"] = 0.9
    (tmp_path / "drops.yaml").write_text(yaml.safe_dump(config))
    curate("run", "drops.yaml", "--no-prefect", "--no-report", cwd=tmp_path)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["warnings"] == []


def test_the_budget_is_not_a_drop_to_warn_about():
    assert drop_warning("got_d", 1000, {"not_selected": 900}, ("not_selected",), 0.3) is None
    assert drop_warning("mix", 1000, {"not_sampled": 500, "zero_weight": 400}, ("not_sampled", "zero_weight"),
                        0.3) is None
    warned = drop_warning("perplexity", 1000, {"ppl_above_p50": 500, "too_few_tokens": 350},
                          ("not_selected", "ppl_above_p", "ppl_below_p"), 0.3)
    assert warned is not None and warned["reasons"] == {"too_few_tokens": 350}
    assert drop_warning("heuristics", 1000, {"too_short": 300}, ("not_selected",), 0.3) is None  # not above 30%
