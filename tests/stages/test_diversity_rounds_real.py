"""Iterative kMQ with real models on real rows: 200 GSM8K problems and 100 P3 rows (31 tasks, mostly short label
answers), embedded with the packaged MiniLM, 6 clusters, 3 rounds of fine-tuning a tiny scratch GPT-2, `loss_gap`
scores. Clusters of P3 rows, whose gold answers fine-tuning barely learns, lose weight; GSM8K clusters gain it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.inspect.sql import query
from tests.lm_fixtures import read_records

GSM = read_records("finetune_gsm8k.jsonl")[:200]
P3 = read_records("p3_sample.jsonl")[:100]
K = 6


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_three_rounds_move_weight_from_off_target_clusters(tmp_path):
    fields = {"prompt": "prompt", "response": "response"}
    finetune = {"init": "scratch", "lm": {"vocab_size": 1024, "n_embd": 64, "n_head": 4, "n_layer": 2, "seq_len": 256},
                "epochs": 2, "max_length": 256, "batch_size": 8, "lr": 0.003, "eval_every": None,
                "save_every": None}
    config = {"name": "kmq", "output": str(tmp_path / "run"), "engine": {"prefect": False, "workers": 2},
              "inputs": [{"path": write_jsonl(tmp_path / "gsm.jsonl", GSM), "fields": fields, "source": "gsm8k"},
                         {"path": write_jsonl(tmp_path / "p3.jsonl", P3), "fields": fields, "source": "p3"}],
              "stages": [{"embed": {"max_seq_length": 64}},
                         {"kmeans_diversity": {"clusters": K, "fraction": 0.5, "rounds": 3, "niter": 50, "nredo": 2,
                                               "redistribute": True, "finetune": finetune}}]}
    run_pipeline(parse_config(config, base_dir=tmp_path))
    run = tmp_path / "run"
    share = {r["cluster"]: r["p3"] for r in query(
        run, "SELECT cluster, avg((source = 'p3')::int) AS p3 FROM kmeans_diversity_all GROUP BY cluster").to_pylist()}
    final = {r["cluster"]: r["weight"] for r in query(
        run, "SELECT cluster, weight FROM kmeans_diversity_rounds WHERE round = 2").to_pylist()}
    p3_clusters = [c for c, s in share.items() if s >= 0.8]
    gsm_clusters = [c for c, s in share.items() if s <= 0.2]
    assert p3_clusters and gsm_clusters
    # measured: P3 clusters 0.148 and 0.080, GSM8K clusters 0.252 and 0.223 (uniform 1/6 = 0.167)
    assert all(final[c] < 1 / K for c in p3_clusters)
    assert all(final[c] > 1 / K for c in gsm_clusters)
    picks = {(r["source"], r["kmq_round"]): r["n"] for r in query(
        run, "SELECT source, kmq_round, count(*) AS n FROM kmeans_diversity GROUP BY ALL").to_pylist()}
    # B = 0.5 x 300 in rounds of B/R = 50: round 0 takes its 50; a later round takes fewer where a drawn
    # cluster has no unselected rows left (§4.5: not redistributed). Measured: 50, 43, 42
    assert picks[("p3", 0)] + picks[("gsm8k", 0)] == 50 and 120 <= sum(picks.values()) <= 150
    assert picks[("p3", 2)] < picks[("p3", 0)]  # measured: 28, 20, 15 P3 rows per round


def test_perplexity_and_reward_scores_through_real_models(tmp_path):
    """Two rounds on 60 rows with fixed clusters (GSM8K 0, P3 1): the round-0 rows' scores are the gold responses'
    perplexities under the saved round-0 model, or finite reward gaps from a tiny local reward model."""
    import numpy as np
    import pyarrow as pa

    from curate.models.lm_scorer import LMScorer
    from curate.stages.base import TableRows
    from curate.stages.diversity import KMeansDiversityParams
    from curate.stages.diversity_rounds import Rounds, gold_losses
    from tests.models.test_reward import tiny_reward_model

    rows = [{"text": r["prompt"] + "\n\n" + r["response"], "prompt": r["prompt"], "response": r["response"]}
            for r in GSM[:40] + [r for r in P3 if len(r["prompt"]) < 300 and r["response"].strip()][:20]]
    labels = np.array([0] * 40 + [1] * 20)
    table = TableRows(pa.Table.from_pylist(rows))
    finetune = {"init": "scratch", "lm": {"vocab_size": 400, "n_embd": 32, "n_head": 2, "n_layer": 1, "seq_len": 256},
                "epochs": 1, "max_length": 256, "batch_size": 8, "eval_every": None, "save_every": None}
    reward = tiny_reward_model(tmp_path / "rm", [r["text"] for r in rows])
    for score in ("perplexity", "reward"):
        params = KMeansDiversityParams.model_validate({"clusters": 2, "count": 20, "rounds": 2, "score": score,
                                                       "reward_model": str(reward), "max_new_tokens": 16,
                                                       "finetune": finetune})
        result = Rounds(params, table, 60, tmp_path / score).run(labels, 2, 20, np.random.default_rng(0))
        first = np.flatnonzero(result.picked_in == 0)
        assert len(first) == 10 and np.isfinite(result.scores[first]).all()
        assert len(np.unique(result.scores[first])) == 10
        if score == "perplexity":
            tuned = LMScorer(tmp_path / score / "round-0", device="cpu", max_length=256)
            expected = np.exp(gold_losses(tuned, [rows[i] for i in first]))
            assert np.allclose(result.scores[first], expected, rtol=1e-5)
        assert sum(result.rounds[1]["weights"]) == pytest.approx(1.0)
