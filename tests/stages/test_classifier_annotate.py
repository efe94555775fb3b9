"""The `classifier` stage's LLM grader (`labels: {annotate: ...}`, the FineWeb-Edu recipe, docs/methods.md §15.3)
through a tiny real LM: the local generator, and the same model behind the OpenAI-compatible test server (requests
counted: a re-run asks nothing again, a store cut by a kill asks only for what it lost)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.generation.openai_server import OpenAIServer
from tests.lm_fixtures import read_records
from tests.stages.test_classifier import run_stage


@pytest.fixture(scope="module")
def pool_and_grader(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, Path]:
    """Grade-school math questions (grade 4) and web pages (grade 1), and a tiny GPT-2 trained to write
    `Educational score: <grade>` after each: a grader that is right most of the time."""
    from curate.models.lm_train import LMTrainConfig, train_lm

    math = [r["prompt"] for r in read_records("heuristics_gsm8k.jsonl")][:120]
    web = [r["text"][:300] for r in read_records("heuristics_c4_web_sample.jsonl")][:120]
    lines = [f"{t}\nEducational score: 4" for t in math[:80]] + [f"{t}\nEducational score: 1" for t in web[:80]]
    folder = train_lm(lines * 3, tmp_path_factory.mktemp("grader"),
                      LMTrainConfig(vocab_size=400, n_layer=2, n_embd=64, n_head=4, seq_len=128, steps=250,
                                    batch_size=16, lr=3e-3, warmup_steps=10))
    texts = math + web
    pool = pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts,
                     "truth": [4.0] * len(math) + [1.0] * len(web)})
    return pool, Path(folder)


ANNOTATE = {"prompt": "{text}\n", "sample": 60, "max_new_tokens": 8, "max_chars": 300}


def test_local_grader_labels_train_a_head(tmp_path: Path, pool_and_grader: tuple[pa.Table, Path]) -> None:
    pool, grader = pool_and_grader
    _, out = run_stage(tmp_path, pool, labels={"annotate": {**ANNOTATE, "generator": {"model": str(grader),
                                                                                      "device": "cpu"}}},
                       keep={"threshold": 2.5})
    notes = pq.read_table(out["models"] / "annotations.parquet").to_pylist()
    assert len(notes) == 60 and {"id", "score", "rationale", "model", "prompt_hash"} <= set(notes[0])
    truth = dict(zip(pool.column("id").to_pylist(), pool.column("truth").to_pylist(), strict=True))
    graded = [n for n in notes if n["score"] is not None]
    assert len(graded) >= 45 and np.mean([n["score"] == truth[n["id"]] for n in graded]) >= 0.8  # measured 0.88
    counts = out["report"]["metrics"]["label_counts"]
    assert counts["unparsed"] == 60 - len(graded)
    kept = pool.column("truth").to_numpy()[out["kept"]]
    assert out["report"]["metrics"]["task"] == "graded" and kept.mean() > 3.0  # pool 2.5; measured 3.4


def test_endpoint_grader_resumes_without_asking_again(tmp_path: Path,
                                                       pool_and_grader: tuple[pa.Table, Path]) -> None:
    pool, grader = pool_and_grader
    with OpenAIServer(str(grader)) as server:
        labels = {"annotate": {**ANNOTATE, "generator": {"endpoint": {"base_url": server.base_url, "model": "tiny",
                                                                       "concurrency": 2}}}}
        _, first = run_stage(tmp_path, pool, models=tmp_path / "grades", labels=labels, keep={"threshold": 2.5})
        assert len(server.requests) == 60
        store = next((first["models"] / "annotations").glob("grade-*.jsonl"))
        lines = store.read_bytes().splitlines(keepends=True)
        store.write_bytes(b"".join(lines[:45]) + lines[45][:20])  # a kill -9 in the middle of a line
        (first["models"] / "annotations.parquet").unlink()
        server.requests.clear()
        _, second = run_stage(tmp_path, pool, models=tmp_path / "grades", labels=labels, keep={"threshold": 2.5})
        assert len(server.requests) == 15  # the 45 whole lines stayed; the cut one and the 14 after it are asked
    np.testing.assert_array_equal(first["scores"], second["scores"])
    assert pq.read_table(tmp_path / "grades" / "annotations.parquet").num_rows == 60
