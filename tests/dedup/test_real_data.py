"""Near-dedup on real texts (tests/data samples): recall on injected copies, no false merges on GSM8K."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pytest

from curate.methods.dedup.evaluate import inject_near_duplicates, pair_jaccard, similar_pairs
from curate.methods.dedup.lsh import exact_pair_jaccard, lsh_clusters
from curate.methods.dedup.minhash import MinHashParams, minhash_signatures
from curate.stages.dedup import Dedup

RATES = [0.003, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2]
BUCKETS = [(0.9, 1.01), (0.8, 0.9), (0.7, 0.8), (0.6, 0.7), (0.5, 0.6), (0.0, 0.5)]


def _rows(data_dir, name):
    with (data_dir / name).open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def _theory(s: np.ndarray, bands: int = 14, rows: int = 8) -> np.ndarray:
    return 1 - (1 - s**rows) ** bands


@pytest.fixture(scope="module")
def recall_curve(request):
    """Copies of 150+-word texts at several edit rates: (true Jaccard, found) per copy, 4 rounds."""
    data_dir = request.config.rootpath / "tests" / "data"
    texts = [r["text"] for r in _rows(data_dir, "dedup_pool_mixed_long.jsonl")]
    assert min(len(t.split()) for t in texts) >= 150
    jaccard, found = [], []
    for seed in range(4):
        injected = inject_near_duplicates(texts, 1.0, RATES, seed=seed)
        docs = texts + injected.texts
        cluster = lsh_clusters(minhash_signatures(docs))
        copy = np.arange(len(texts), len(docs))
        found.append(cluster[copy] == cluster[injected.original])
        jaccard.append(pair_jaccard(injected.texts, [texts[i] for i in injected.original]))
    return np.concatenate(jaccard), np.concatenate(found)


def test_recall_vs_jaccard_curve(recall_curve):
    jaccard, found = recall_curve
    print("\nrecall of injected copies by true word-5-gram Jaccard (14x8 bands):")
    print("  bucket       pairs  recall  theory")
    recalls = []
    for low, high in BUCKETS:
        inside = (jaccard >= low) & (jaccard < high)
        if inside.sum() == 0:
            continue
        recall, expected = found[inside].mean(), _theory(jaccard[inside]).mean()
        recalls.append(recall)
        print(f"  [{low:.1f}, {min(high, 1):.1f})  {inside.sum():5d}  {recall:6.3f}  {expected:6.3f}")
        if inside.sum() >= 20:
            assert abs(recall - expected) <= 0.15, (low, recall, expected)
    high = jaccard >= 0.9
    assert high.sum() >= 50
    assert found[high].mean() >= 0.95
    assert found[jaccard < 0.5].mean() <= 0.05
    assert all(a >= b - 0.1 for a, b in itertools.pairwise(recalls))  # monotone-ish


def test_about_one_word_in_a_hundred_gives_jaccard_090(recall_curve):
    jaccard, _ = recall_curve
    # rate 0.01 copies (every 8th, in turn) of 150-400 word texts land near 0.9
    assert np.median(jaccard) < 0.9 < jaccard.max()


KNOWN_PAIRS = {("00228", "03544"), ("01137", "05002"), ("01174", "07233"), ("01314", "05162"),
               ("02483", "06691"), ("02527", "03643"), ("04997", "05419"), ("05518", "06320")}


def _merges(rows, texts):
    table = pa.table({"id": [r["id"] for r in rows], "text": texts})
    kept, rejected = Dedup()(table)
    assert kept.num_rows + rejected.num_rows == len(rows)
    index = {r["id"]: i for i, r in enumerate(rows)}
    dropped, into = rejected.column("id").to_pylist(), rejected.column("duplicate_of").to_pylist()
    true = exact_pair_jaccard(pa.array(texts), np.array([index[i] for i in into]),
                              np.array([index[i] for i in dropped]))
    for a, b, j, s in zip(dropped, into, true, rejected.column("score").to_pylist(), strict=True):
        print(f"  {a} -> {b}: true Jaccard {j:.3f}, estimate {s:.3f}")
    return {(b[-5:], a[-5:]) for a, b in zip(dropped, into, strict=True)}, true


def test_no_false_merges_among_gsm8k(data_dir):
    """GSM8K has near-duplicate problems (same problem, other numbers); nothing else may merge."""
    rows = _rows(data_dir, "dedup_gsm8k.jsonl")
    full = [f"{r['prompt']}\n{r['response']}" for r in rows]
    left, right, _ = similar_pairs(full, 0.2)  # every pair of the sample above 0.2: the 8 known ones
    assert {(rows[a]["id"][-5:], rows[b]["id"][-5:]) for a, b in zip(left, right, strict=True)} == KNOWN_PAIRS
    print("\nGSM8K problem + solution merges:")
    merged, true = _merges(rows, full)
    assert merged <= KNOWN_PAIRS and (true >= 0.5).all()
    print("GSM8K problem-only merges:")
    merged, true = _merges(rows, [r["prompt"] for r in rows])
    assert merged <= KNOWN_PAIRS and (true >= 0.5).all()
    assert {("01314", "05162"), ("02483", "06691")} <= merged  # prompt Jaccard 1.0 and 0.93


def test_gsm8k_copies_found_and_verify_exact_blocks_low_pairs(data_dir):
    rows = _rows(data_dir, "dedup_gsm8k.jsonl")
    texts = [f"{r['prompt']}\n{r['response']}" for r in rows]
    injected = inject_near_duplicates(texts, 0.25, [0.01], seed=1, min_words=100)
    docs = pa.array(texts + injected.texts)
    copy = np.arange(len(texts), len(docs))
    true = pair_jaccard(injected.texts, [texts[i] for i in injected.original])
    strict = MinHashParams(verify="exact", threshold=0.7)
    cluster = lsh_clusters(minhash_signatures(docs), strict, texts=docs)
    found = cluster[copy] == cluster[injected.original]
    assert found[true >= 0.9].all()
    assert np.array_equal(np.unique(cluster[: len(texts)]), np.arange(len(texts)))  # no originals merged
