"""MinHash signatures: exact arithmetic mod 2^61 - 1, docs/methods.md §7.2 known answers, normalisation."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from curate.methods.dedup.exact import exact_keys, first_occurrences, key_matrix
from curate.methods.dedup.minhash import (
    EMPTY,
    MERSENNE,
    MinHashParams,
    has_signature,
    minhash_signatures,
    normalize_for_shingles,
    permutation_params,
    permute,
    rensa_signatures,
    shingles,
    signature_jaccard,
    signatures_from_shingles,
)
from curate.methods.dedup.tokens import simplified_word_hashes, tokenize
from curate.methods.text import hash_strings, split_words

# ---------------------------------------------------------------- mod-p arithmetic


def _edge_values(rng: random.Random) -> list[int]:
    edges = [0, 1, 2, MERSENNE - 1, MERSENNE, MERSENNE + 1, 2 * MERSENNE, 2**61, 2**62 - 1, 2**63,
             2**64 - 1, 2**64 - 2, 2**64 - MERSENNE, 2**32 - 1, 2**32, 2**31 - 1, 2**31]
    return edges + [rng.getrandbits(64) for _ in range(300)] + [2**64 - 1 - rng.getrandbits(20)
                                                                  for _ in range(50)]


def test_permute_matches_python_big_integers():
    rng = random.Random(7)
    x = _edge_values(rng)
    a = [1, 2, MERSENNE - 1, MERSENNE - 2, 2**31, 2**31 - 1, 2**60 + 12345] + \
        [rng.randrange(1, MERSENNE) for _ in range(40)]
    b = [0, 1, MERSENNE - 1, 2**60] + [rng.randrange(0, MERSENNE) for _ in range(len(a) - 4)]
    got = permute(np.array(x, np.uint64), np.array(a, np.uint64), np.array(b, np.uint64))
    want = [[(ak * xi + bk) % MERSENNE for ak, bk in zip(a, b, strict=True)] for xi in x]
    assert got.tolist() == want


def test_overflowing_formula_would_differ():
    """The naive uint64 (a*x + b) % p (what overflows silently) is wrong; ours is not."""
    a, b = permutation_params(112, 1)
    x = np.array([2**64 - 1, 2**63 + 12345], np.uint64)
    with np.errstate(over="ignore"):
        naive = (x[:, None] * a[None, :] + b[None, :]) % np.uint64(MERSENNE)
    exact = permute(x, a, b)
    assert (naive != exact).any()
    assert exact[0, 0] == (int(a[0]) * (2**64 - 1) + int(b[0])) % MERSENNE


def test_permutation_params_fixed_and_in_range():
    a, b = permutation_params(112, 1)
    a2, b2 = permutation_params(112, 1)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert a.min() >= 1 and a.max() < MERSENNE and b.max() < MERSENNE
    assert not np.array_equal(a, permutation_params(112, 2)[0])


# ---------------------------------------------------------------- signatures


def _reference_signatures(hashes, docs, n_docs, num_perm, seed, bits=64):
    a, b = permutation_params(num_perm, seed)
    out = np.full((n_docs, num_perm), EMPTY, np.uint64)
    values = permute(hashes, a, b)
    if bits == 32:
        values &= np.uint64(0xFFFFFFFF)
    for d in range(n_docs):
        if (docs == d).any():
            out[d] = values[docs == d].min(axis=0)
    return out


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("block", [1, 7, 512])
def test_signatures_match_reference_across_blocks(bits, block):
    rng = np.random.default_rng(3)
    counts = np.array([5, 0, 1, 23, 9, 0, 40])
    docs = np.repeat(np.arange(len(counts)), counts)
    hashes = rng.integers(0, 2**64 - 1, len(docs), dtype=np.uint64, endpoint=True)
    got = signatures_from_shingles(hashes, docs, len(counts), 16, seed=5, hash_bits=bits, block=block)
    assert np.array_equal(got, _reference_signatures(hashes, docs, len(counts), 16, 5, bits))
    assert np.array_equal(has_signature(got), counts > 0)
    if bits == 32:
        assert got[counts > 0].max() < 2**32


def _sets_with_jaccard(intersection: int, union: int, rng: np.random.Generator):
    """Two shingle sets with |A∩B| = intersection and |A∪B| = union."""
    values = rng.integers(0, 2**64 - 1, union, dtype=np.uint64, endpoint=True)
    only = (union - intersection) // 2
    a = values[: union - only]
    b = values[only:]
    hashes = np.concatenate([a, b])
    docs = np.repeat([0, 1], [len(a), len(b)])
    assert len(np.intersect1d(a, b)) == intersection and len(np.union1d(a, b)) == union
    return hashes, docs


@pytest.mark.parametrize(("inter", "low", "high"), [(90, 198, 200), (30, 0, 2)])
def test_known_answer_collisions_over_200_seeds(inter, low, high):
    """docs/methods.md §7.2: 14x8 bands, Jaccard 0.9 collides in >= 99% of 200 seeds, 0.3 in <= 1%."""
    hashes, docs = _sets_with_jaccard(inter, 100, np.random.default_rng(11))
    collided, estimates = 0, []
    for seed in range(200):
        sig = signatures_from_shingles(hashes, docs, 2, 112, seed=seed).reshape(2, 14, 8)
        collided += bool((sig[0] == sig[1]).all(axis=1).any())
        estimates.append(float((sig[0] == sig[1]).mean()))
    assert low <= collided <= high
    estimates = np.array(estimates)
    assert abs(estimates.mean() - inter / 100) < 0.02
    assert (np.abs(estimates - inter / 100) <= 0.1).mean() >= 0.95


@pytest.mark.parametrize("inter", [90, 30])
def test_known_answer_estimate_default_seed(inter):
    hashes, docs = _sets_with_jaccard(inter, 100, np.random.default_rng(5))
    sig = signatures_from_shingles(hashes, docs, 2, 112, seed=1)
    assert abs(signature_jaccard(sig, np.array([0]), np.array([1]))[0] - inter / 100) <= 0.1


@pytest.mark.parametrize("inter", [0, 30, 50, 80, 100])
def test_rensa_engine_known_answer_and_its_own_per_document_path(inter):
    import rensa

    hashes, docs = _sets_with_jaccard(inter, 100, np.random.default_rng(5))
    sig = rensa_signatures(hashes, docs, 2, 112, seed=1)
    assert sig.dtype == np.uint32
    assert abs(signature_jaccard(sig, np.array([0]), np.array([1]))[0] - inter / 100) <= 0.1
    # the flat buffer + offsets give what rensa computes from the same hashes one document at a time
    sets = [hashes[docs == d].tolist() for d in range(2)]
    rows = rensa.RMinHash.digest_matrix_from_token_hash_sets(sets, 112, 1).to_rows()
    assert np.array_equal(sig, np.array(rows, np.uint32))


@pytest.mark.parametrize("engine,dtype", [("rensa", np.uint32), ("datatrove", np.uint64)])
def test_minhash_signatures_texts(engine, dtype):
    texts = ["The quick brown fox jumps over the lazy dog again and again",
             "the QUICK brown fox, jumps over the lazy dog again and again!",
             "", None, "short text", "Something else entirely with many different words in it"]
    sig = minhash_signatures(texts, MinHashParams(engine=engine))
    assert sig.shape == (6, 112) and sig.dtype == dtype
    assert np.array_equal(sig[0], sig[1])  # same after normalisation
    assert not has_signature(sig)[2] and not has_signature(sig)[3]
    assert has_signature(sig)[4]  # fewer than 5 words: one shingle of all words
    assert (sig[4] != sig[5]).any()
    small = minhash_signatures(texts, MinHashParams(bands=4, rows=2, engine="datatrove", hash_bits=32))
    assert small.shape == (6, 8) and small[has_signature(small)].max() < 2**32


# ---------------------------------------------------------------- normalisation and shingles


def test_normalization_like_datatrove():
    texts = pa.array(["Héllo,   WORLD!\nIt costs $1,000 (or 3.14).", "naïve café — Ünïcödé", None])
    assert normalize_for_shingles(texts).to_pylist() == ["hello world it costs 0 or 0", "naive cafe unicode", ""]


def test_token_level_normalisation_equals_whole_text(data_dir):
    import json

    rows = [json.loads(line) for line in (data_dir / "dedup_pool_mixed_long.jsonl").open(encoding="utf-8")]
    texts = pa.array([r["text"] for r in rows] + ["  Mixed\u00a0spaces\tand, punctuation!!  ", "", None])
    hashes, offsets = simplified_word_hashes(tokenize(texts))
    words = split_words(normalize_for_shingles(texts))
    assert np.array_equal(hashes, hash_strings(words.flat))
    assert np.array_equal(offsets, words.offsets)


def test_shingles_short_and_empty_docs():
    hashes, docs = shingles(["a b c d e f", "a b", "", "...", "a b c d e"], ngram=5)
    assert np.bincount(docs, minlength=5).tolist() == [2, 1, 0, 0, 1]
    assert hashes[docs == 4][0] == hashes[docs == 0][0]  # same first 5-gram


def test_exact_keys():
    texts = ["a  b\nc", " a b c ", "a b c", "a b c d", "abc", None, "", "   ", "b a c"]
    first = first_occurrences(key_matrix(exact_keys(texts)))
    assert first.tolist() == [0, 0, 0, 3, 4, 5, 5, 5, 8]
    sliced = exact_keys(pa.chunked_array([pa.array(texts[:4]), pa.array(texts[4:])]))
    assert np.array_equal(key_matrix(sliced), key_matrix(exact_keys(texts)))
    assert np.array_equal(key_matrix(exact_keys(texts).slice(2)), key_matrix(exact_keys(texts))[2:])
