"""Iterative kMQ (§4.5): the §4.9 iterative-weights known answer with stand-in models, the rounds through the runner
(columns, rounds.json, the SQL view), and parameter errors. The real-model run is test_diversity_rounds_real.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from curate.data.dataset import Dataset, manifest_path, side_path
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.inspect.sql import query
from curate.stages.diversity import KMeansDiversityParams
from curate.stages.diversity_rounds import Rounds
from tests.stages.test_diversity import BLOBS, _write

BLOB = np.repeat(np.arange(8), BLOBS)
SCRATCH = {"init": "scratch", "lm": {"vocab_size": 300, "n_embd": 16, "n_head": 2, "n_layer": 1, "seq_len": 32}}


class StandIn(Rounds):
    """Δ = 2 for members of blob 0, 0 elsewhere (§4.9); no model is trained."""

    blob = BLOB

    def train(self, indices: np.ndarray, round_index: int) -> Path:
        self.trained = [*getattr(self, "trained", []), len(indices)]
        return Path("stand-in")

    def score(self, indices: np.ndarray, model: Path) -> np.ndarray:
        return np.where(self.blob[indices] == 0, 2.0, 0.0)


def params(**kw) -> KMeansDiversityParams:
    return KMeansDiversityParams.model_validate({"clusters": 8, "count": 80, "rounds": 2, "finetune": SCRATCH, **kw})


def test_iterative_weights_known_answer():
    """B = 80, R = 2: round 0 takes 40 (5 per blob), round 1 draws 40 labels from w, w_0 = e^2 / (e^2 + 7)."""
    expected = math.exp(2) / (math.exp(2) + 7)
    assert expected == pytest.approx(0.5135, abs=1e-4)
    from_zero, total = 0, 0
    for seed in range(300):
        rounds = StandIn(params(), rows=None, n=len(BLOB), models_dir=Path("unused"))
        result = rounds.run(BLOB, 8, 80, np.random.default_rng(seed))
        first = result.picked_in == 0
        assert np.bincount(BLOB[first], minlength=8).tolist() == [5] * 8  # equal quotas, B/(R·K)
        assert rounds.trained == [40]  # trained once, on S_0
        weights = result.rounds[1]["weights"]
        assert weights[0] == pytest.approx(expected) and weights[1] == pytest.approx((1 - expected) / 7)
        new = result.picked_in == 1
        assert new.sum() == 40 and not (first & new).any()
        from_zero += int((BLOB[new] == 0).sum())
        total += int(new.sum())
    sampling_error = math.sqrt(expected * (1 - expected) / total)
    assert abs(from_zero / total - expected) < 4 * sampling_error  # 12,000 draws: within ±0.018


def test_three_rounds_keep_adding_b_over_r(tmp_path):
    rounds = StandIn(params(rounds=3, count=90), rows=None, n=len(BLOB), models_dir=tmp_path)
    result = rounds.run(BLOB, 8, 90, np.random.default_rng(0))
    assert [int((result.picked_in == t).sum()) for t in range(3)] == [24, 30, 30]  # 3 per blob, then B/R
    assert rounds.trained == [24, 54]
    # scores are kept for rows of trained rounds; the last round's picks are never scored
    assert np.isnan(result.scores[result.picked_in == 2]).all()
    assert not np.isnan(result.scores[result.picked_in == 0]).any()
    repo = StandIn(params(rounds=3, count=90, draw_size="repo"), rows=None, n=len(BLOB), models_dir=tmp_path)
    assert int((repo.run(BLOB, 8, 90, np.random.default_rng(0)).picked_in == 1).sum()) == 3  # B/(R·K)


def test_rounds_through_the_runner_report_weights_and_sql(tmp_path, monkeypatch):
    import curate.stages.diversity_rounds as module

    _write(tmp_path / "in.jsonl")  # test blobs of 40, 20, 10, 10 rows, texts "blob B item I"

    def by_text(self, indices, model):
        texts = self.rows.take(np.asarray(indices), ["text"]).column("text").to_pylist()
        return np.array([2.0 if t.startswith("blob 0 ") else 0.0 for t in texts])

    monkeypatch.setattr(module.Rounds, "train", StandIn.train)
    monkeypatch.setattr(module.Rounds, "score", by_text)
    stage = {"clusters": 4, "count": 32, "rounds": 2, "seed": 3, "finetune": SCRATCH}
    config = parse_config({"name": "iter", "inputs": [{"path": "in.jsonl"}], "output": "iter",
                           "engine": {"prefect": False, "shard_rows": 7, "workers": 2},
                           "stages": [{"test_blob_embed": {}}, {"kmeans_diversity": stage}]}, base_dir=tmp_path)
    result = run_pipeline(config)[-1]
    assert result.rows_out == 32
    kept = Dataset.open(tmp_path / "iter" / "stages" / "02-kmeans_diversity").to_table()
    assert sorted(set(kept.column("kmq_round").to_pylist())) == [0, 1]
    assert kept.column("kmq_round").to_pylist().count(0) == 16  # 4 per cluster
    report = json.loads(side_path(tmp_path / "iter" / "stages" / "02-kmeans_diversity", "rounds.json").read_text())
    weights = report["rounds"][1]["weights"]
    assert sorted(weights)[-1] == pytest.approx(math.exp(2) / (math.exp(2) + 3))
    rounds = query(tmp_path / "iter", "SELECT round, cluster, weight, picked FROM kmeans_diversity_rounds "
                                      "ORDER BY cluster").to_pylist()
    assert len(rounds) == 4 and sum(r["picked"] for r in rounds) == 16
    assert [r["weight"] for r in rounds] == pytest.approx(weights)
    manifest = json.loads(manifest_path(tmp_path / "iter" / "stages" / "02-kmeans_diversity").read_text())
    summary = manifest["stats"]["decision"]["rounds"]
    assert [r["round"] for r in summary] == [0, 1] and summary[1]["trained_on"] == 16
    assert summary[1]["weights"] == pytest.approx(weights, abs=1e-4)


@pytest.mark.parametrize(("bad", "message"), [
    ({"rounds": 2, "finetune": None}, "give `finetune`"),
    ({"rounds": 2, "score": "reward"}, "needs `reward_model`"),
    ({"rounds": 2, "cluster_weights": [1.0] * 8}, "leave `cluster_weights` out"),
    ({"rounds": 0}, "greater than or equal to 1"),
])
def test_parameter_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        params(**bad)
