"""The scaling law for data filtering (docs/methods.md §8): the known values of §8.3, quality buckets, the
recommendation and its heuristic defaults, `auto` budgets in a stage's decision, and `curate budget` on a run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.methods.scaling import (
    ComputeParams,
    effective_utility,
    heuristic_parameters,
    pool_utility,
    quality_buckets,
    recommend,
)


def test_no_decay_telescopes() -> None:
    """τ = 1e9, d = 0, a = 1, Z = 1e5, P = 1e6, N = 2e6, b = -0.2: y = 20^(-0.2) = 0.549280."""
    assert effective_utility(2e6, 1e6, -0.2, tau=1e9) == pytest.approx(0.549280, abs=1e-6)
    assert effective_utility(2e6, 1e6, -0.2, tau=1e9) == pytest.approx(20 ** -0.2, rel=1e-6)


def test_decay_with_half_life_one() -> None:
    """τ = 1, same numbers: y = 10^(-0.2) · 2^(-0.1) = 0.588704 (the second pass is worth half)."""
    assert effective_utility(2e6, 1e6, -0.2, tau=1.0) == pytest.approx(0.588704, abs=1e-6)


def test_pool_choice_flips_with_compute() -> None:
    """Two buckets b = (-0.2, -0.1), τ = (1, 1), P_b = 1e6: one pass (N = 1e6) picks the top bucket alone; at
    N = 5e7 the repeated top bucket has lost its utility and both buckets win."""
    b, tau = np.array([-0.2, -0.1]), np.array([1.0, 1.0])
    for n, best in ((1e6, 1), (5e7, 2)):
        errors = [pool_utility(n, 1e6, b, tau, m) for m in (1, 2)]
        assert int(np.argmin(errors)) + 1 == best, (n, errors)


def test_d_additive_and_bad_inputs() -> None:
    # one pass: the two forms agree; then the authors' form multiplies d by the later passes' factors
    assert effective_utility(1e6, 1e6, -0.2, d=0.1) == pytest.approx(effective_utility(1e6, 1e6, -0.2, d=0.1,
                                                                                       d_additive=True))
    assert effective_utility(3e6, 1e6, -0.2, d=0.1) < effective_utility(3e6, 1e6, -0.2, d=0.1, d_additive=True)
    with pytest.raises(ValueError):
        effective_utility(0, 1e6, -0.2)


def test_quality_buckets() -> None:
    scores = np.array([0.5, np.nan, 3.0, 1.0, 2.0, -1.0, 0.0, 4.0, 2.5, 1.5, 3.5])
    high = quality_buckets(scores, 5)
    assert high[1] == -1 and high[7] == 0 and high[5] == 4  # best first; NaN unscored
    assert np.bincount(high[high >= 0]).tolist() == [2, 2, 2, 2, 2]
    low = quality_buckets(scores, 5, higher_is_better=False)
    assert low[5] == 0 and low[7] == 4


def test_recommendation_follows_the_budget() -> None:
    """With our heuristic defaults (b_1 = -0.1, 10% less per bucket, τ = 4): a budget of a tenth of the data keeps
    the best tenth; more compute keeps more buckets, never fewer (measured m = 1, 2, 2, 3, 4 at 0.1 .. 40 epochs:
    the weak buckets' exponents are so small that repeating the good ones still wins); the rule of thumb
    (at most τ passes) widens faster and reaches the whole pool at 4 epochs."""
    rng = np.random.default_rng(0)
    scores, tokens = rng.normal(size=10_000), rng.integers(50, 150, 10_000)
    total = tokens.sum()
    small = recommend(scores, tokens, ComputeParams(tokens=0.1 * total))
    assert small.m == 1 and small.fraction == pytest.approx(0.1) and small.parameters == "heuristic"
    assert small.budget_tokens == pytest.approx(0.1 * total) and small.rule_of_thumb_m == 1
    chosen = [recommend(scores, tokens, ComputeParams(epochs=e)) for e in (0.1, 0.5, 2, 4, 40)]
    assert [r.m for r in chosen] == [1, 2, 2, 3, 4]
    assert [r.rule_of_thumb_m for r in chosen] == [1, 2, 5, 10, 10]
    for r in chosen:  # the chosen m minimises the predicted curve
        assert r.curve[r.m - 1]["predicted_error"] == min(c["predicted_error"] for c in r.curve)
        assert r.fraction == pytest.approx(r.m / 10)
    b, tau = heuristic_parameters(10)
    assert b[0] == -0.1 and b[9] == pytest.approx(-0.01) and (tau == 4).all()
    fitted = recommend(scores, tokens, ComputeParams(epochs=4, buckets=2, utility=[-0.3, -0.05],
                                                     half_life=[2, 2]))
    assert fitted.parameters == "fitted" and fitted.buckets == 2


def test_compute_params_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ComputeParams()
    with pytest.raises(ValueError, match="3 values for 10 buckets"):
        ComputeParams(tokens=1e6, utility=[-0.1, -0.2, -0.3])
    with pytest.raises(ValueError, match="< 0"):
        ComputeParams(tokens=1e6, buckets=2, utility=[-0.1, 0.2])


def test_auto_budget_in_dsir_decision_and_manifest(tmp_path: Path) -> None:
    """`budget: auto` with `compute:` in a real run: DSIR keeps the recommended buckets of its log-weights (one
    pass over a tenth of the tokens: the best tenth), and the manifest records the recommendation."""
    from curate.data.dataset import Dataset
    from curate.data.errors import ConfigError
    from curate.engine.config import parse_config
    from curate.engine.runner import run_pipeline

    lines = (Path(__file__).parent / "data" / "finetune_gsm8k.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["prompt"] for line in lines]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:300]))
    (tmp_path / "target.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[300:]))
    words = sum(len(t.split()) for t in texts[:300])
    config = {"name": "auto", "inputs": [{"path": "pool.jsonl"}], "target": {"path": "target.jsonl"},
              "output": "run", "engine": {"prefect": False},
              "stages": [{"dsir": {"budget": "auto", "compute": {"tokens": words / 10}, "min_words": 0}}]}
    results = run_pipeline(parse_config(config, base_dir=tmp_path))
    assert results[-1].rows_kept == 30
    manifest = Dataset.open(tmp_path / "run" / "stages" / "01-dsir").manifest
    auto = manifest["stats"]["decision"]["auto_budget"]
    assert auto["m"] == 1 and auto["parameters"] == "heuristic" and len(auto["curve"]) == 10
    with pytest.raises(ConfigError, match="auto needs `compute"):
        parse_config({**config, "stages": [{"dsir": {"budget": "auto"}}]}, base_dir=tmp_path)
    assert math.isclose(auto["budget_tokens"], words / 10)


def test_curate_budget_command(tmp_path: Path) -> None:
    """`curate budget RUN --score ot_grad --epochs E` on a got_d run: the JSON names the step and the direction
    (lower ot_grad is better, from the stage), and more compute recommends a larger share."""
    from curate.data.arrays import matrix_to_column
    from tests.test_cli import curate

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(400, 8)).astype(np.float32)
    pq_rows = pa.table({"id": [f"r{i}" for i in range(400)], "text": [f"row {i} " * (5 + i % 7) for i in range(400)],
                        "embedding": matrix_to_column(vectors)})
    target = pa.table({"id": [f"t{i}" for i in range(60)], "text": ["t"] * 60,
                       "embedding": matrix_to_column(rng.normal(size=(60, 8)).astype(np.float32) + 1)})
    import pyarrow.parquet as pq

    pq.write_table(pq_rows, tmp_path / "pool.parquet")
    pq.write_table(target, tmp_path / "target.parquet")
    from curate.engine.config import parse_config
    from curate.engine.runner import run_pipeline

    run_pipeline(parse_config({
        "name": "b", "inputs": [{"path": "pool.parquet"}], "target": {"path": "target.parquet"}, "output": "run",
        "engine": {"prefect": False}, "stages": [{"got_d": {"budget": 0.5, "sinkhorn": {"epsilon_relative": True,
                                                                                        "epsilon": 0.05}}}]},
        base_dir=tmp_path))
    shares = []
    for epochs in ("0.1", "20"):
        out = json.loads(curate("budget", "run", "--score", "ot_grad", "--epochs", epochs, "--json",
                                cwd=tmp_path).stdout)
        assert out["step"] == "got_d" and out["higher_is_better"] is False and out["parameters"] == "heuristic"
        shares.append(out["fraction"])
    assert shares[0] < shares[1] and shares[0] == pytest.approx(0.1)
    table = curate("budget", "run", "--score", "ot_grad", "--tokens", "500", cwd=tmp_path).stdout
    assert "recommended selection ratio" in table and "heuristic defaults" in table
    (tmp_path / "runs.csv").write_text("bucket,samples,pool,error\n0,1000,1000,0.6\n0,4000,1000,0.5\n"
                                       "1,1000,1000,0.7\n1,4000,1000,0.62\n")
    fitted = json.loads(curate("budget", "run", "--score", "ot_grad", "--epochs", "2", "--fit", "runs.csv", "--json",
                               cwd=tmp_path).stdout)
    assert fitted["parameters"] == "fitted" and fitted["buckets"] == 2 and len(fitted["b"]) == 2
    missing = curate("budget", "run", "--score", "nope", "--tokens", "5", cwd=tmp_path, check=False)
    assert missing.returncode != 0 and "no column 'nope'" in missing.stdout + missing.stderr


def test_kmq_fraction_auto_takes_the_recommended_quality_buckets() -> None:
    """kMQ with `quality` and `fraction: auto`: the budget is the rows of the recommended quality buckets (a tenth
    of the tokens, one pass: the best tenth), spread over the clusters; without `quality` the config says why."""
    from curate.data.arrays import matrix_to_column
    from curate.stages.diversity import KMeansDiversity

    rng = np.random.default_rng(2)
    n = 400
    table = pa.table({"id": [f"r{i}" for i in range(n)], "text": ["some words here"] * n,
                      "embedding": matrix_to_column(rng.normal(size=(n, 8)).astype(np.float32)),
                      "quality": rng.normal(size=n)})
    stage = KMeansDiversity(clusters=4, niter=5, nredo=1, quality="quality", fraction="auto",
                            compute={"tokens": 0.1 * 3 * n}, redistribute=True)
    kept, rejected = stage(table)
    assert kept.num_rows == 40 and rejected.num_rows == 360
    with pytest.raises(ValueError, match="name the `quality` column"):
        KMeansDiversity(clusters=4, fraction="auto", compute={"tokens": 100})
    with pytest.raises(ValueError, match="auto needs `compute"):
        KMeansDiversity(clusters=4, quality="quality", fraction="auto")


def test_perplexity_and_color_filter_auto_decide_from_their_scores(tmp_path: Path) -> None:
    """`fraction: auto` (perplexity, lowest) and `tau: auto` (CoLoR-Filter) on given scores: a tenth of the tokens
    in one pass keeps the best tenth (the lowest perplexities; the highest CoLoR scores), and the decision reports
    the recommendation for the manifest."""
    from curate.stages.base import TableRows
    from curate.stages.color_filter import ColorFilter
    from curate.stages.perplexity import Perplexity

    rng = np.random.default_rng(3)
    n = 500
    rows = TableRows(pa.table({"id": [f"r{i}" for i in range(n)], "text": ["one two three four"] * n}))
    nll = rng.normal(3, 0.5, n)
    summary = pa.table({"id": rows.table.column("id"), "lm_nll_mean": nll, "lm_nll_sum": nll * 4,
                        "lm_tokens": np.full(n, 4)})
    ppl = Perplexity(model="gpt2", mode="lowest", fraction="auto", compute={"tokens": 0.1 * 4 * n})
    decision = ppl.decide(summary, rows)
    kept = np.flatnonzero(np.array(decision.reason.to_pylist(), dtype=object) == None)  # noqa: E711
    assert len(kept) == 50 and set(kept) == set(np.argsort(nll)[:50])
    assert decision.report["summary"]["auto_budget"]["m"] == 1

    score = rng.normal(size=n)
    summary = pa.table({"id": rows.table.column("id"), "prior_nll_mean": score + 5, "cond_nll_mean": np.full(n, 5.0),
                        "prior_tokens": np.full(n, 4)})
    color = ColorFilter(tau="auto", compute={"tokens": 0.1 * 4 * n}, prior={"model": "gpt2"},
                        conditional={"model": "gpt2"})
    decision = color.decide(summary, rows)
    kept = np.flatnonzero(np.array(decision.reason.to_pylist(), dtype=object) == None)  # noqa: E711
    assert len(kept) == 50 and set(kept) == set(np.argsort(-score)[:50])
    assert decision.report["auto_budget"]["tau"] == pytest.approx(10.0)


def test_fit_recovers_known_parameters_and_feeds_curate_budget(tmp_path: Path) -> None:
    """Measurements made by the law itself (a = 0.02, b = (-0.2, -0.1), τ = (2, 6); 1..8 passes over buckets of 1e6)
    are fitted back to the grid points nearest the truth, with a squared error of ~0."""
    from curate.methods.scaling_fit import Measurement, fit_parameters, read_measurements

    truth = {"a": 0.02, "b": [-0.2, -0.1], "tau": [2.0, 6.0]}
    rows = [Measurement(i, passes * 1e6, 1e6, effective_utility(passes * 1e6, 1e6, truth["b"][i], truth["tau"][i],
                                                                a=truth["a"]))
            for i in range(2) for passes in (1, 2, 4, 8)]
    fit = fit_parameters(rows, a_grid=np.array([0.01, 0.02, 0.04]))
    assert fit.a == 0.02 and fit.sse < 1e-6
    assert fit.b == pytest.approx(truth["b"], abs=0.005) and fit.tau == pytest.approx(truth["tau"], abs=0.1)
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([r.__dict__ for r in rows]))
    assert read_measurements(path) == rows
    with pytest.raises(ValueError, match=r"numbered 0\.\.0"):
        fit_parameters([Measurement(1, 1e6, 1e6, 0.5)])
