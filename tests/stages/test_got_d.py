"""The `got_d` stage (docs/methods.md §5): selection by the OT gradient from given embeddings, weighted targets, a
new budget without a new solve, rows without an embedding, a solve that does not converge, length normalisation,
and the stage through the runner with the packaged embedder (the target embedded by the stage itself)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.data.arrays import matrix_to_column
from curate.data.dataset import Dataset, side_path
from curate.data.inputs import StepInput
from curate.data.targets import TARGET_NAME, TARGET_WEIGHT
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.stages.base import StageContext, TableRows
from curate.stages.got_d import GotD, normalize_lengths, split_pieces

DATA = Path(__file__).resolve().parents[1] / "data"
SOLVE = {"epsilon": 0.05, "tolerance": 1e-2}


def points(*modes: tuple[float, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(mu, 0.1, (n, 1)) for mu, n in modes]).astype(np.float32)


def embedded(vectors: np.ndarray, prefix: str = "r", **columns: list) -> pa.Table:
    return pa.table({"id": [f"{prefix}{i}" for i in range(len(vectors))], "embedding": matrix_to_column(vectors),
                     **columns})


def prepared(target: pa.Table, tmp_path: Path, **params) -> GotD:
    """A got_d stage whose `prepare` ran on `target` (rows with an `embedding` column: used as they are)."""
    Dataset.write(tmp_path / "target", target)
    Dataset.write(tmp_path / "pool", pa.table({"id": ["x"], "text": ["x"]}))
    stage = GotD({"budget": 1, "sinkhorn": SOLVE, **params})
    context = StageContext(input=StepInput.open([tmp_path / "pool"], ["pool"]),
                           target=Dataset.open(tmp_path / "target"), models_dir=tmp_path / "models", label="got_d")
    stage.prepared = stage.prepare(context)
    return stage


def decide(stage: GotD, pool: pa.Table, **params) -> tuple[np.ndarray, list, dict]:
    """Kept positions, reasons and report of a decision (with other parameters, on the same prepared target)."""
    if params:
        again = GotD({**stage.config(), **params})
        again.prepared, stage = stage.prepared, again
    decision = stage.decide(stage.summarize(pool.select(["id"])), TableRows(pool))
    reasons = decision.reason.to_pylist()
    assert decision.adds["ot_grad"].equals(decision.score)
    return np.array([i for i, r in enumerate(reasons) if r is None]), reasons, decision.report


def test_picks_the_under_represented_mode_of_the_target(tmp_path: Path) -> None:
    """§5.9.2 through the stage: the target half at +1, half at +3; the pool 90% at +1; a budget of 10% keeps
    (almost) only +3 rows, the rows the target needs more of; a fraction budget means the same."""
    stage = prepared(embedded(points((1, 100), (3, 100)), "t"), tmp_path)
    pool = embedded(points((1, 900), (3, 100), seed=1))
    kept, reasons, report = decide(stage, pool, budget=100)
    assert len(kept) == 100 and (kept >= 900).mean() >= 0.9
    assert reasons.count("not_selected") == 900
    assert report["converged"] and report["budget"] == 100 and report["iterations"] > 0
    assert np.array_equal(decide(stage, pool, budget=0.1)[0], kept)


def test_target_weights_set_the_target_mass(tmp_path: Path) -> None:
    """Two targets, one at +1 and one at +3, over a 50/50 pool: weights 9:1 make the +1 rows the ones to add, 1:9
    the +3 rows."""
    target = embedded(points((1, 50), (3, 50)), "t", **{TARGET_NAME: ["a"] * 50 + ["b"] * 50})
    pool = embedded(points((1, 200), (3, 200), seed=2))
    for weights, side in (((9.0, 1.0), "low"), ((1.0, 9.0), "high")):
        weighted = target.append_column(TARGET_WEIGHT, pa.array([weights[0]] * 50 + [weights[1]] * 50))
        kept, _, _ = decide(prepared(weighted, tmp_path / side), pool, budget=80)
        share_high = (kept >= 200).mean()
        assert share_high <= 0.1 if side == "low" else share_high >= 0.9, (weights, share_high)


def test_new_budget_reuses_the_stored_solve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = prepared(embedded(points((1, 50), (3, 50)), "t"), tmp_path)
    pool = embedded(points((1, 300), (3, 100), seed=3))
    first, _, report = decide(stage, pool, budget=40)
    import curate.methods.ot

    monkeypatch.setattr(curate.methods.ot, "sinkhorn", lambda *a, **k: pytest.fail("solved again"))
    second, _, again = decide(stage, pool, budget=80)
    assert set(first) <= set(second) and len(second) == 80  # the same ranking, a longer prefix
    assert again["ot_cost"] == report["ot_cost"]


def test_rows_without_an_embedding_are_dropped_with_a_reason(tmp_path: Path) -> None:
    stage = prepared(embedded(points((1, 40)), "t"), tmp_path)
    vectors = points((1, 30), (-1, 30), seed=4)
    mask = np.zeros(60, bool)
    mask[[0, 35]] = True
    column = pa.FixedSizeListArray.from_arrays(matrix_to_column(vectors).values, 1, mask=pa.array(mask))
    pool = pa.table({"id": [f"r{i}" for i in range(60)], "embedding": column})
    kept, reasons, report = decide(stage, pool, budget=29)
    assert reasons[0] == reasons[35] == "missing_embedding"
    assert set(kept) == set(range(1, 30)) and report["with_embedding"] == 58


def test_a_solve_that_does_not_converge_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stage = prepared(embedded(points((1, 40)), "t"), tmp_path, sinkhorn={"epsilon": 1e-4, "max_iter": 2})
    with caplog.at_level("WARNING", logger="curate"):
        _, _, report = decide(stage, embedded(points((1, 20), (2, 20), seed=5)), budget=10)
    assert report["converged"] is False and "did not converge" in report["summary"]["warning"]
    assert "did not converge" in caplog.text


def test_length_normalisation() -> None:
    """§5.3: consecutive short texts joined to 1000 characters and cut there; long texts cut into pieces."""
    assert normalize_lengths(["a" * 600, "b" * 600, "c" * 1500, "d" * 10], 1000) == [
        "a" * 600 + " " + "b" * 399, "c" * 1000, "d" * 10]
    assert split_pieces("x" * 2500, 1000) == ["x" * 1000, "x" * 1000, "x" * 500]
    assert split_pieces("", 1000) == [""]


def test_runner_embeds_the_target_with_the_upstream_embedder(tmp_path: Path) -> None:
    """embed -> got_d on real rows (GSM8K problems, web pages, code) with a GSM8K target: got_d embeds the target with
    the `embed` step's settings (inherited: the frozen config shows them), keeps math problems, and with
    `length_normalize` embeds 1000-character pieces of each row itself."""
    rows = []
    for name, field in (("heuristics_gsm8k.jsonl", "prompt"), ("heuristics_c4_web_sample.jsonl", "text"),
                        ("heuristics_mbpp.jsonl", "text")):
        with open(DATA / name, encoding="utf-8") as f:
            rows += [json.loads(line)[field] for line in f][:40]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"id": f"p{i:03d}", "text": t}) + "\n"
                                                 for i, t in enumerate(rows[:20] + rows[40:])))
    (tmp_path / "target.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows[20:40]))
    config = {"name": "got_d", "inputs": [{"path": "pool.jsonl"}], "target": {"path": "target.jsonl"},
              "output": "run", "engine": {"prefect": False},
              "stages": [{"embed": {"max_seq_length": 64}},
                         {"got_d": {"budget": 20, "sinkhorn": {"epsilon": 0.05}}},
                         {"got_d": {"label": "pieces", "from": "embed", "budget": 20, "length_normalize": True,
                                    "chars": 300, "sinkhorn": {"epsilon": 0.05}}}]}
    parsed = parse_config(config, base_dir=tmp_path)
    assert parsed.stage_specs()[1].params["embed"]["max_seq_length"] == 64  # from the embed step
    results = run_pipeline(parsed)
    for label in ("02-got_d", "03-pieces"):
        out = Dataset.open(tmp_path / "run" / "stages" / label).to_table()
        math = sum(int(i[1:]) < 20 for i in out.column("id").to_pylist())
        assert out.num_rows == 20 and math >= 16, (label, math)  # measured: 20 and 18 of 20
        report = json.loads(side_path(tmp_path / "run" / "stages" / label, "sinkhorn.json").read_text())
        assert report["converged"] and report["targets"] >= 1
    assert all(r.status == "ran" for r in results)


def test_auto_budget_keeps_the_recommended_gradient_buckets(tmp_path: Path) -> None:
    """`budget: auto` with a tenth of the pool's words as the compute: the best tenth by `ot_grad` (most negative
    first), and the recommendation in the report."""
    stage = prepared(embedded(points((1, 100), (3, 100)), "t"), tmp_path)
    pool = embedded(points((1, 900), (3, 100), seed=1), text=["two words"] * 1000)
    kept, _, report = decide(stage, pool, budget="auto", compute={"tokens": 200})
    assert len(kept) == 100 and (kept >= 900).mean() >= 0.9
    assert report["summary"]["auto_budget"]["m"] == 1 and report["budget"] == 100
