"""CLEAR on real GSM8K with 20% of the final answers corrupted (seeded), scored by a tiny GPT-2 trained on the clean
first half (tests/data/finetune_gsm8k.jsonl, 200 + 200 problems): detection precision, recall and AUROC against the
known corruptions, with the log-prob variant (likelihood + P(True)).

Measured (2 CPU cores): AUROC 0.546, precision 0.20 and recall 0.22 at drop_fraction 0.2, i.e. barely above chance
(0.5 / 0.2 / 0.2). A 1.5M-parameter LM cannot tell a wrong final number from a right one in a GSM8K solution: the
corruption moves 1-3 of ~100 response tokens, and its P(True) carries no knowledge. The test pins the figures so a
change in the scorer shows; a real base model is what makes CLEAR work (docs/methods.md §2.9).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import rankdata

from curate.models.lm_train import LMTrainConfig, train_lm
from curate.stages.clear import Clear
from tests.lm_fixtures import TINY_LM, read_records


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    ranks = rankdata(scores)
    positives = labels.sum()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * (len(labels) - positives)))


@pytest.mark.slow  # about 45 s (training the scorer)
def test_clear_detects_corrupted_gsm8k_answers(tmp_path: Path):
    import torch

    torch.set_num_threads(2)
    rows = read_records("finetune_gsm8k.jsonl")
    train, test = rows[:200], rows[200:]
    model = train_lm([r["prompt"] + "\n\n" + r["response"] for r in train], tmp_path / "lm",
                     LMTrainConfig(**{**TINY_LM, "steps": 300, "seq_len": 256}))
    rng = np.random.default_rng(0)
    bad = rng.random(len(test)) < 0.2

    def corrupt(row: dict) -> str:
        wrong = int(row["answer"]) + int(rng.integers(1, 10)) * (1 if rng.random() < 0.5 else -1)
        return row["response"].rsplit("####", 1)[0] + f"#### {wrong}"

    table = pa.table({"id": [r["id"] for r in test], "prompt": [r["prompt"] for r in test],
                      "response": [corrupt(r) if b else r["response"] for r, b in zip(test, bad, strict=True)]})
    stage = Clear(generator={"model": str(model), "device": "cpu"}, confidence={"k": 0},
                  filter={"drop_fraction": 0.2, "threshold": None}, max_length=256)
    kept, rejected = stage(table)
    confidence = dict(zip(kept["id"].to_pylist(), kept["clear_confidence"].to_pylist(), strict=True))
    confidence |= dict(zip(rejected["id"].to_pylist(), rejected["score"].to_pylist(), strict=True))
    scores = np.array([confidence[r["id"]] for r in test])
    dropped = np.isin([r["id"] for r in test], rejected["id"].to_pylist())
    area = auroc(bad, -scores)
    precision, recall = bad[dropped].mean(), dropped[bad].mean()
    print(f"CLEAR on corrupted GSM8K: AUROC {area:.3f}, precision {precision:.2f}, recall {recall:.2f}")
    assert dropped.sum() == int(0.2 * len(test))
    assert area == pytest.approx(0.546, abs=0.03)
    assert precision == pytest.approx(0.20, abs=0.05) and recall == pytest.approx(0.22, abs=0.05)
