"""Benchmark: the `classifier` stage's three model kinds on one split of real data, and scoring speed against the
plain baselines (fastText called row by row as DCLM's enricher does; scikit-learn's HashingVectorizer + logistic
regression).

    python benchmarks/bench_classifier.py --data <shared data folder> [--per-class 6000] [--score-rows 200000]

Positives: instruction and question sets (GSM8K, MMLU-Redux, P3, GPTeacher, HH-RLHF, SVAMP, MATH, MBPP,
TruthfulQA, self-instruct seeds: their prompts); negatives: plain text (C4, WikiText-2, the mixed-domain pool,
Tiny Shakespeare). `--per-class` rows of each, split 50/50 (stratified, seed 0): train on one half, AUC on the other.
The embedding head trains on the packaged MiniLM's embeddings of at most `--embed-rows` rows per class (embedding
itself is not timed: curate's `embed` step does it once and caches it). Scoring speed: `--score-rows` texts (the test
half repeated), one thread, in batches of the stage's `batch_rows` (16,384), the baselines in the same batches.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

os.environ.setdefault("OMP_NUM_THREADS", "1")
BATCH = 16_384  # the classifier stage's batch_rows

POSITIVE = ["gsm8k", "mmlu_redux", "p3_t0_mix", "gpteacher_codegen", "gpteacher_roleplay", "hh_rlhf_harmless_test",
            "svamp", "math", "mbpp", "truthfulqa", "self_instruct_seed"]
NEGATIVE = ["c4_web_sample", "wikitext2_test", "pool_mixed", "tinyshakespeare"]


def texts_of(data: Path, names: list[str]) -> list[str]:
    out = []
    for name in names:
        for path in sorted((data / name).glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").split("\n"):
                if not line.strip():
                    continue
                row = json.loads(line)
                text = row.get("prompt") or row.get("text")
                if text:
                    out.append(text)
    return out


def split(data: Path, per_class: int) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    pos, neg = texts_of(data, POSITIVE), texts_of(data, NEGATIVE)
    n = min(per_class, len(pos), len(neg))
    pos = [pos[i] for i in rng.choice(len(pos), n, replace=False)]
    neg = [neg[i] for i in rng.choice(len(neg), n, replace=False)]
    texts, y = pos + neg, np.array([1] * n + [0] * n)
    order = rng.permutation(len(texts))
    train = order[: len(order) // 2]
    test = order[len(order) // 2:]
    return [texts[i] for i in train], y[train], [texts[i] for i in test], y[test]


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=6000)
    parser.add_argument("--embed-rows", type=int, default=1500)
    parser.add_argument("--score-rows", type=int, default=200_000)
    args = parser.parse_args()
    from sklearn.metrics import roc_auc_score

    from curate.methods.quality_classifier import ClassifierSpec, LinearClassifier, train_classifier

    train_x, train_y, test_x, test_y = split(args.data, args.per_class)
    train_a, test_a = pa.array(train_x), pa.array(test_x)
    print(f"{len(train_x):,} training and {len(test_x):,} test rows (half positive)")
    print(f"{'model':<16}{'train s':>9}{'train rows/s':>14}{'AUC':>8}{'score rows/s':>14}  baseline rows/s  ratio")
    reps = -(-args.score_rows // len(test_x))
    big = pa.array(test_x * reps)[: args.score_rows]

    for kind in ("fasttext", "hashing"):
        spec = ClassifierSpec(kind)
        model, train_s = timed(train_classifier, spec, train_y, 0, train_a)
        auc = roc_auc_score(test_y, model.score(test_a))
        _, score_s = timed(lambda m=model: [m.score(big.slice(i, BATCH)) for i in range(0, len(big), BATCH)])
        if kind == "fasttext":  # DCLM's enricher: one predict call per document
            from curate.methods.quality_classifier import clean_for_fasttext

            lines = clean_for_fasttext(big)
            _, base_s = timed(lambda m=model, ls=lines: [m.model.predict(t, k=2) for t in ls])
        else:  # scikit-learn: HashingVectorizer (white-space tokens, counts, 2^18) + the same weights
            from sklearn.feature_extraction.text import HashingVectorizer

            vectorizer = HashingVectorizer(n_features=spec.num_buckets, alternate_sign=False, norm=None,
                                           token_pattern=r"\S+", lowercase=True)
            _, base_s = timed(lambda v=vectorizer, m=model: [v.transform(big.slice(i, BATCH).to_pylist()) @ m.weights
                                                             for i in range(0, len(big), BATCH)])
        print(f"{kind:<16}{train_s:>9.2f}{len(train_x) / train_s:>14,.0f}{auc:>8.4f}"
              f"{len(big) / score_s:>14,.0f}  {len(big) / base_s:>15,.0f}  {base_s / score_s:.1f}x")

    from curate.stages.embed import Embed, EmbedParams

    rng = np.random.default_rng(1)
    pick = lambda y, n: np.concatenate([rng.choice(np.flatnonzero(y == c), min(n, int((y == c).sum())),  # noqa: E731
                                                   replace=False) for c in (0, 1)])
    tr, te = pick(train_y, args.embed_rows), pick(test_y, args.embed_rows)
    embedder = Embed(EmbedParams(max_seq_length=128))
    train_e = embedder.embed_texts([train_x[i] for i in tr])
    test_e = embedder.embed_texts([test_x[i] for i in te])
    spec = ClassifierSpec("embedding_head")
    model, train_s = timed(LinearClassifier.train, spec, train_e, train_y[tr], 0)
    auc = roc_auc_score(test_y[te], model.score_features(test_e))
    big_e = np.tile(test_e, (-(-args.score_rows // len(test_e)), 1))[: args.score_rows]
    _, score_s = timed(model.score_features, big_e)
    print(f"{'embedding_head':<16}{train_s:>9.2f}{len(tr) / train_s:>14,.0f}{auc:>8.4f}{len(big_e) / score_s:>14,.0f}"
          f"  (embeddings from the embed step; {len(tr):,} training rows)")
    # the same rows for the text models, for a fair AUC at the embedding head's size
    for kind in ("fasttext", "hashing"):
        small = train_classifier(ClassifierSpec(kind), train_y[tr], 0, pa.array([train_x[i] for i in tr]))
        print(f"  {kind} on the same {len(tr):,} rows: AUC "
              f"{roc_auc_score(test_y[te], small.score(pa.array([test_x[i] for i in te]))):.4f}")


if __name__ == "__main__":
    main()
