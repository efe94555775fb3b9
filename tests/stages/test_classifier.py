"""The `classifier` stage (docs/methods.md §15): the known-answer tests of §15.9, a planted feature learned by every
model kind, `apply:` of a saved model, and real data (instruction sets against web text; a pool pointed at GSM8K)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.data.dataset import Dataset
from curate.data.errors import CurateError, ParamsError
from curate.data.inputs import StepInput
from curate.methods.quality import binary_metrics, keep_mask, parse_grade
from curate.methods.quality_classifier import (
    ClassifierSpec,
    FastTextClassifier,
    LinearClassifier,
    fit_ridge,
    load_classifier,
)
from curate.stages.base import StageContext, TableRows
from curate.stages.classifier import Classifier
from tests.cli_runner import curate

DATA = Path(__file__).resolve().parents[1] / "data"


def vocab_docs(rng: np.random.Generator, words: list[str], n: int, length: int = 30) -> list[str]:
    function = ["the", "a", "of", "and", "to", "in", "is", "it"]  # shared by both classes
    return [" ".join(rng.choice(words + function, length)) for _ in range(n)]


def separable(n: int = 1000, seed: int = 0) -> pa.Table:
    """§15.9.1: positives from vocabulary A, negatives from a disjoint B, function words shared."""
    rng = np.random.default_rng(seed)
    a = vocab_docs(rng, [f"alpha{i}" for i in range(300)], n)
    b = vocab_docs(rng, [f"beta{i}" for i in range(300)], n)
    texts = [t for pair in zip(a, b, strict=True) for t in pair]
    return pa.table({"id": [f"r{i}" for i in range(2 * n)], "text": texts,
                     "label": pa.array([1.0, 0.0] * n)})


def run_stage(tmp_path: Path, pool: pa.Table, target: pa.Table | None = None, models: Path | None = None,
              **params) -> tuple[Classifier, dict]:
    """A classifier prepared on `pool` as a run prepares it, then scoring and deciding over the same rows."""
    folder = tmp_path / f"pool-{len(list(tmp_path.glob('pool-*')))}"
    Dataset.write(folder, pool)
    if target is not None:
        Dataset.write(tmp_path / "target", target)
    stage = Classifier(params)
    context = StageContext(input=StepInput.open([folder], ["pool"]),
                           target=Dataset.open(tmp_path / "target") if target is not None else None,
                           models_dir=models or tmp_path / "models" / folder.name, label="classifier")
    stage.prepared = stage.prepare(context)
    stage.ensure_setup()
    summary = stage.summarize(pool.select(stage.reads(pool.schema)))
    decision = stage.decide(summary, TableRows(pool))
    return stage, {"scores": summary.column("score").to_numpy(zero_copy_only=False),
                   "kept": np.array([r is None for r in decision.reason.to_pylist()]) if decision.reason else None,
                   "report": decision.report, "models": context.models_dir}


@pytest.mark.parametrize("model", ["fasttext", "hashing"])
def test_separable_vocabularies_are_learned_and_kept(tmp_path: Path, model: str) -> None:
    """§15.9.1: held-out AUC ≥ 0.99, and top_fraction 0.5 on a 50/50 pool keeps ≥ 98% A."""
    pool = separable()
    _, out = run_stage(tmp_path, pool, labels={"column": "label"}, model=model, keep={"top_fraction": 0.5})
    assert out["report"]["metrics"]["validation"]["roc_auc"] >= 0.99
    kept = out["kept"]
    assert kept.sum() == 1000
    assert pool.column("label").to_numpy()[kept].mean() >= 0.98
    metrics = json.loads((out["models"] / "metrics.json").read_text())
    assert metrics["validation"]["rows"] == 200 and metrics["label_counts"] == {"0": 1000, "1": 1000}


def test_fasttext_orientation_follows_the_top_label(tmp_path: Path) -> None:
    """§15.9.2: the score is P(pos): p when fastText's top label is the positive one, 1 - p when it is not."""
    pool = separable(300)
    texts, y = pool.column("text").combine_chunks(), pool.column("label").to_numpy()
    model = FastTextClassifier.train(ClassifierSpec("fasttext"), texts, y, seed=0)
    labels, probs = model.model.predict(texts.to_pylist(), k=1)
    expected = [p[0] if lab[0] == "__label__pos" else 1 - p[0] for lab, p in zip(labels, probs, strict=True)]
    np.testing.assert_allclose(model.score(texts), expected, atol=1e-6)
    assert {lab[0] for lab in labels} == {"__label__pos", "__label__neg"}  # both orientations occur


@pytest.mark.parametrize(("alpha", "expected"), [(9, [0.001953, 0.026012, 0.424098, 1.0]),
                                                 (3, [0.125, 0.296296, 0.751315, 1.0])])
def test_pareto_keep_rate_matches_its_formula(alpha: float, expected: list[float]) -> None:
    """§15.9.3: P(keep) = (2 - s)^-α, over 10^6 seeded draws (±0.001)."""
    for s, want in zip([0.0, 0.5, 0.9, 1.0], expected, strict=True):
        rate = keep_mask(np.full(1_000_000, s), pareto_alpha=alpha, seed=1).mean()
        assert abs(rate - want) < 0.001
        assert abs(want - (2 - s) ** -alpha) < 1e-6


def test_ridge_recovers_the_weights() -> None:
    """§15.9.4: y = Xw* + 0.01ε, λ = 1e-6: w within 0.01."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 16))
    w = rng.normal(size=16)
    weights, bias = fit_ridge(x, x @ w + 0.01 * rng.normal(size=1000), 1e-6, 0)
    assert np.abs(weights - w).max() < 0.01 and abs(bias) < 0.01


def test_logistic_head_finds_the_direction() -> None:
    """§15.9.5: two Gaussians at ±0.5·e1 in R^32: cos(ŵ, e1) ≥ 0.95."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 10_000)
    x = rng.normal(size=(10_000, 32))
    x[:, 0] += np.where(y == 1, 0.5, -0.5)
    model = LinearClassifier.train(ClassifierSpec("embedding_head"), x, y, seed=0)
    assert model.weights[0] / np.linalg.norm(model.weights) >= 0.95


def test_top_fraction_keeps_exactly_the_top_ids() -> None:
    """§15.9.6: scores 0..999, f = 0.1: exactly ids 900-999; ties go to the lower index."""
    assert np.array_equal(np.flatnonzero(keep_mask(np.arange(1000.0), top_fraction=0.1)), np.arange(900, 1000))
    assert np.array_equal(np.flatnonzero(keep_mask(np.ones(10), top_fraction=0.3)), [0, 1, 2])
    assert not keep_mask(np.array([np.nan, 1.0]), threshold=0.5)[0]


def test_grade_parser() -> None:
    """§15.9.7: the last `score: n` on the scale; out of range or missing: None."""
    scale = (0.0, 5.0)
    assert parse_grade("The extract is ...\nEducational score: 3", scale) == 3
    assert parse_grade("score: 2 at first, then Educational score: 4", scale) == 4
    assert parse_grade("score: 9", scale) is None
    assert parse_grade("no grade here", scale) is None
    assert parse_grade(None, scale) is None


@pytest.mark.parametrize("model", ["fasttext", "hashing"])
def test_same_seed_same_scores_and_apply_reproduces_them(tmp_path: Path, model: str) -> None:
    """§15.9.8: the same seed gives a bitwise-identical score column; a saved model, applied to the same rows
    (`apply:`), gives the same scores without training."""
    pool = separable(300)
    _, first = run_stage(tmp_path, pool, labels={"column": "label"}, model=model, seed=3)
    _, second = run_stage(tmp_path, pool, labels={"column": "label"}, model=model, seed=3)
    assert first["scores"].tobytes() == second["scores"].tobytes()
    _, applied = run_stage(tmp_path, pool, apply=str(first["models"]))
    assert applied["report"]["trained"] is False
    np.testing.assert_array_equal(applied["scores"], first["scores"])


def test_apply_takes_a_foreign_fasttext_bin(tmp_path: Path) -> None:
    """A fastText model trained elsewhere with DCLM's labels (`__label__hq` / `__label__cc`) scores P(hq)."""
    import fasttext

    pool = separable(300)
    lines = [f"__label__{'hq' if y else 'cc'} {t}" for t, y in zip(pool.column("text").to_pylist(),
                                                                       pool.column("label").to_pylist(), strict=True)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    trained = fasttext.train_supervised(str(tmp_path / "train.txt"), wordNgrams=2, thread=1, seed=0, verbose=0)
    trained.save_model(str(tmp_path / "dclm.bin"))
    _, out = run_stage(tmp_path, pool, apply=str(tmp_path / "dclm.bin"), keep={"threshold": 0.5})
    assert binary_metrics(pool.column("label").to_numpy(), out["scores"])["roc_auc"] > 0.99
    assert load_classifier(tmp_path / "dclm.bin").positive == "__label__hq"


def test_a_damaged_saved_model_gives_a_reason_before_any_work(tmp_path: Path) -> None:
    """`apply:` of a file that is not a fastText model, a cut one, or a folder whose classifier.json is damaged:
    `curate validate` names the file before any work (fastText itself spends minutes on a cut file before it fails);
    a file damaged after validation fails its step with the cause, never a traceback."""
    import fasttext

    pool = separable(200)
    lines = [f"__label__{'hq' if y else 'cc'} {t}" for t, y in zip(pool.column("text").to_pylist(),
                                                                       pool.column("label").to_pylist(), strict=True)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    fasttext.train_supervised(str(tmp_path / "train.txt"), wordNgrams=2, thread=1, seed=0, verbose=0).save_model(
        str(tmp_path / "good.bin"))
    (tmp_path / "cut.bin").write_bytes((tmp_path / "good.bin").read_bytes()[:5000])
    (tmp_path / "junk.bin").write_bytes(b"\x00 not a model")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "classifier.json").write_text("{not json")
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(
        pool.column("text").to_pylist())))
    for name, said in (("junk.bin", "its header is not fastText's"), ("cut.bin", "whole fastText model"),
                       ("broken", "readable classifier.json")):
        (tmp_path / "c.yaml").write_text(f"name: c\ninputs: [{{path: pool.jsonl}}]\noutput: run\nstages:\n"
                                         f"  - classifier: {{apply: '{name}'}}\n")
        result = curate("validate", "c.yaml", cwd=tmp_path, check=False)
        said_all = " ".join((result.stdout + result.stderr).split())  # the console wraps long lines
        assert result.returncode != 0 and said in said_all and name in said_all, said_all
        assert "Traceback" not in said_all
    assert load_classifier(tmp_path / "good.bin").positive == "__label__hq"  # a whole file passes the same checks
    with pytest.raises(CurateError, match="could not load the saved classifier"):  # damaged past the checks
        data = bytearray((tmp_path / "good.bin").read_bytes())
        data[4:8] = (99).to_bytes(4, "little")  # a file format version fastText does not know
        (tmp_path / "odd.bin").write_bytes(bytes(data))
        load_classifier(tmp_path / "odd.bin")


def test_embedding_head_learns_a_planted_direction_and_applies(tmp_path: Path) -> None:
    """Embedding rows whose label is carried by one coordinate: the head ranks them (binary) and predicts the grade
    (graded labels, ridge), and a saved head applied again scores the same."""
    rng = np.random.default_rng(0)
    n, d = 2000, 16
    x = rng.normal(size=(n, d)).astype(np.float32)
    grade = rng.integers(0, 6, n).astype(np.float64)
    x[:, 3] += 3 * grade
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    table = pa.table({"id": [f"e{i}" for i in range(n)], "text": ["t"] * n,
                      "embedding": pa.array(list(x), pa.list_(pa.float32())),
                      "good": grade >= 3, "grade": grade})
    _, binary = run_stage(tmp_path, table, labels={"column": "good"}, model="embedding_head")
    assert binary["report"]["metrics"]["validation"]["roc_auc"] > 0.95
    _, graded = run_stage(tmp_path, table, labels={"column": "grade"}, model="embedding_head",
                          keep={"threshold": 2.5})
    validation = graded["report"]["metrics"]["validation"]
    assert graded["report"]["metrics"]["task"] == "graded" and validation["spearman"] > 0.9
    _, applied = run_stage(tmp_path, table, apply=str(graded["models"]), keep={"threshold": 2.5})
    np.testing.assert_array_equal(applied["scores"], graded["scores"])


@pytest.mark.parametrize("model", ["fasttext", "hashing"])
def test_a_planted_word_is_learned(tmp_path: Path, model: str) -> None:
    """Rows of the same vocabulary, positive when they contain one planted word: the model finds that word."""
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(400)]
    texts = vocab_docs(rng, words, 2000, 25)
    positive = rng.random(2000) < 0.5
    texts = [t + " zzplanted" if p else t for t, p in zip(texts, positive, strict=True)]
    table = pa.table({"id": [f"p{i}" for i in range(2000)], "text": texts, "label": positive})
    _, out = run_stage(tmp_path, table, labels={"column": "label"}, model=model)
    assert out["report"]["metrics"]["validation"]["roc_auc"] > 0.99


def test_class_labels_need_positive(tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "b", "c", "d"], "text": ["x y", "y z", "z w", "w x"],
                      "kind": ["good", "bad", "good", "bad"]})
    with pytest.raises(CurateError, match=r"labels\.positive"):
        run_stage(tmp_path, table, labels={"column": "kind"})
    _, out = run_stage(tmp_path, table, labels={"column": "kind", "positive": "good"}, validation=0,
                       model="hashing")
    assert out["report"]["metrics"]["label_counts"] == {"0": 2, "1": 2}


def test_bad_configs_fail_before_any_work() -> None:
    with pytest.raises(ParamsError, match="labels"):
        Classifier({})
    with pytest.raises(ParamsError, match="keep"):
        Classifier({"labels": "target", "keep": {"top_fraction": 0.1, "threshold": 0.5}})
    with pytest.raises(ParamsError, match="model"):
        Classifier({"labels": "target", "model": "bert"})


def read_jsonl(name: str, field: str) -> list[str]:
    rows = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line]
    return [r.get(field) or r.get("text") or "" for r in rows]


def test_real_instructions_rank_above_web_text(tmp_path: Path) -> None:
    """Trained on half of real instruction sets (P3, GSM8K, MMLU-Redux, GPTeacher) against half of real web and
    encyclopedia text (C4, WikiText-2, the mixed pool), the classifier ranks the other halves: AUC ≥ 0.95."""
    positives = (read_jsonl("p3_sample.jsonl", "prompt")[:300] + read_jsonl("heuristics_gsm8k.jsonl", "prompt")
                 + read_jsonl("decontam_mmlu_redux.jsonl", "prompt")[:200]
                 + read_jsonl("heuristics_gpteacher_codegen.jsonl", "prompt"))
    negatives = (read_jsonl("heuristics_c4_web_sample.jsonl", "text") + read_jsonl("heuristics_wikitext2_test.jsonl",
                 "text") + read_jsonl("dedup_pool_mixed_long.jsonl", "text"))
    rng = np.random.default_rng(0)
    texts = np.array(positives + negatives, dtype=object)
    y = np.array([1.0] * len(positives) + [0.0] * len(negatives))
    half = rng.random(len(texts)) < 0.5
    label = np.where(half, y, np.nan)  # rows without a label are scored, not trained on
    table = pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": list(texts),
                      "label": pa.array(label, mask=~half)})
    _, out = run_stage(tmp_path, table, labels={"column": "label"}, validation=0.1, keep=None)
    assert binary_metrics(y[~half], out["scores"][~half])["roc_auc"] >= 0.95


def test_target_labels_select_gsm8k_from_a_mixed_pool(tmp_path: Path) -> None:
    """`labels: target` with GSM8K questions as the target: from a pool of GSM8K, P3, MMLU and web rows (GSM8K: 16%),
    most of the top 200 are GSM8K rows (measured 62%; the rest: MMLU math word problems and number-heavy web
    pages); pool rows equal to a target row are never negatives."""
    gsm8k = read_jsonl("heuristics_gsm8k.jsonl", "prompt")
    others = (read_jsonl("p3_sample.jsonl", "prompt") + read_jsonl("decontam_mmlu_redux.jsonl", "prompt")
              + read_jsonl("heuristics_c4_web_sample.jsonl", "text"))
    target_texts = [t for t in read_jsonl("decontam_gsm8k.jsonl", "prompt") if t not in set(gsm8k)][:300]
    texts = gsm8k + others + target_texts[:20]  # 20 pool rows are copies of target rows
    pool = pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts})
    target = pa.table({"id": [f"t{i}" for i in range(len(target_texts))], "text": target_texts})
    share = 200 / len(texts)
    _, out = run_stage(tmp_path, pool, target, labels="target", keep={"top_fraction": share})
    kept = np.flatnonzero(out["kept"])
    is_gsm8k = np.array([i < len(gsm8k) or i >= len(gsm8k) + len(others) for i in range(len(texts))])
    assert is_gsm8k[kept].mean() >= 0.55 and is_gsm8k[kept].mean() >= 3 * is_gsm8k.mean()
    counts = out["report"]["metrics"]["label_counts"]
    assert counts == {"positive (target)": 300, "negative (pool)": 300}
