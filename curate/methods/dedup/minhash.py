"""MinHash signatures for near-dedup (docs/methods.md §7.2), vectorised over whole Arrow columns.

- Shingles: DataTrove-style normalisation (lowercase, numbers -> 0, punctuation -> space, diacritics
  stripped, white space collapsed) done with Arrow compute on the distinct tokens (`curate.methods.dedup.tokens`),
  then hashed word n-grams (`curate.methods.text.ngram_hashes`).
- Signatures, by `engine`:
  - `rensa` (default): the shingle hashes of a whole batch go to `rensa` (Rust, MIT) in one flat buffer with
    document offsets; it applies its own permutation family and keeps 32-bit minima. 8x faster than the exact
    permutations below, at the same recall and precision (benchmarks/bench_dedup.py);
  - `datatrove`: DataTrove's family h_k(x) = (a_k·x + b_k) mod p with p = 2^61 − 1, computed exactly in uint64
    numpy (31-bit halves keep every partial product below 2^62 and the Mersenne identity 2^61 ≡ 1 folds the
    rest), then the segmented minimum per document (`np.minimum.reduceat`) over shingle blocks of bounded size;
    `hash_bits: 32` masks each value to 32 bits first, as DataTrove does.
- A document without shingles has a signature of all `EMPTY` (the largest value of the signature's dtype).
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.methods.dedup.tokens import Tokens, collapse_whitespace, simplified_word_hashes, simplify, tokenize
from curate.methods.text import ngram_hashes

MERSENNE = (1 << 61) - 1
EMPTY = np.uint64(np.iinfo(np.uint64).max)  # signature value of a document without shingles (> any hash)
EMPTY32 = np.uint32(np.iinfo(np.uint32).max)

_P = np.uint64(MERSENNE)
_LOW31 = np.uint64((1 << 31) - 1)
_LOW32 = np.uint64(0xFFFFFFFF)
_S30, _S31, _S61 = np.uint64(30), np.uint64(31), np.uint64(61)
_BLOCK = 1024  # shingles per block: 3 buffers of num_perm x 1024 uint64 (~0.9 MB each at 112 perms)


class MinHashParams(BaseModel):
    """MinHash-LSH settings (DataTrove's defaults: word 5-grams, 14 bands x 8 rows, seed 1).

    `engine`: `rensa` (32-bit signatures) or `datatrove` (DataTrove's exact permutations; `hash_bits` 64 by
    default, or 32).

    `threshold` is used only when `verify` is not "none": a candidate pair is merged only if its
    estimated ("signature": fraction of equal minhashes) or exact ("exact": Jaccard of the shingle sets,
    recomputed from the texts of candidate documents) Jaccard similarity is >= threshold. Without
    verification the banding alone decides (collision probability 1 − (1 − s^rows)^bands).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ngram: int = Field(5, ge=1)
    bands: int = Field(14, ge=1)
    rows: int = Field(8, ge=1)
    engine: Literal["rensa", "datatrove"] = "rensa"
    hash_bits: Literal[32, 64] | None = None  # datatrove only (default 64); rensa's signatures are 32-bit
    seed: int = Field(1, ge=0)
    threshold: float = Field(0.8, ge=0.0, le=1.0)
    verify: Literal["none", "signature", "exact"] = "none"

    @model_validator(mode="after")
    def _bits_fit_the_engine(self) -> MinHashParams:
        if self.engine == "rensa" and self.hash_bits not in (None, 32):
            raise ValueError(f"hash_bits: {self.hash_bits} needs engine: datatrove (rensa's signatures are 32-bit)")
        return self

    @property
    def bits(self) -> int:
        """Bits of each signature value."""
        return 32 if self.engine == "rensa" else (self.hash_bits or 64)

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


# ---------------------------------------------------------------- normalisation and shingles


def normalize_for_shingles(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The text that shingles are made of: simplified (see `tokens.simplify`), white space collapsed."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    return collapse_whitespace(simplify(texts))


def shingles(texts: pa.Array | pa.ChunkedArray | list[str | None] | Tokens,
             ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the word n-grams of each simplified text, and the document of each (sorted).

    A text with 1..ngram-1 words has one shingle made of all its words; an empty text has none.
    """
    tokens = texts if isinstance(texts, Tokens) else tokenize(texts)
    word_hashes, offsets = simplified_word_hashes(tokens)
    return ngram_hashes(word_hashes, offsets, ngram, short_docs=True)


def shingle_sets(hashes: np.ndarray, docs: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct shingles per document: (hashes sorted by (doc, hash), offsets of length n_docs + 1)."""
    order = np.lexsort((hashes, docs))
    h, d = hashes[order], docs[order]
    keep = np.ones(len(h), bool)
    keep[1:] = (h[1:] != h[:-1]) | (d[1:] != d[:-1])
    h, d = h[keep], d[keep]
    return h, np.searchsorted(d, np.arange(n_docs + 1)).astype(np.int64)


# ---------------------------------------------------------------- exact permutations mod 2^61 - 1


def permutation_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with a in [1, p), b in [0, p), from a fixed seed (RandomState: a stream numpy keeps stable)."""
    rng = np.random.RandomState(seed)
    a = rng.randint(1, MERSENNE, size=num_perm, dtype=np.uint64)
    b = rng.randint(0, MERSENNE, size=num_perm, dtype=np.uint64)
    return a, b


def _mod_p(x: np.ndarray) -> np.ndarray:
    """x mod p for any uint64 x."""
    r = (x & _P) + (x >> _S61)
    return np.where(r >= _P, r - _P, r)


class _Permuter:
    """Evaluates all permutations on blocks of shingles into reusable (num_perm, block) buffers."""

    def __init__(self, a: np.ndarray, b: np.ndarray, block: int = _BLOCK):
        a = _mod_p(np.asarray(a, np.uint64))
        self.a_lo = (a & _LOW31)[:, None]  # < 2^31
        self.a_hi = (a >> _S31)[:, None]  # < 2^30
        self.a_hi2 = self.a_hi * np.uint64(2)  # 2^62 ≡ 2 (mod p)
        self.b = _mod_p(np.asarray(b, np.uint64))[:, None]
        self.buffers = [np.empty((len(a), block), np.uint64) for _ in range(3)]

    def __call__(self, x_lo: np.ndarray, x_hi: np.ndarray) -> np.ndarray:
        """(a·x + b) mod p for x = x_hi·2^31 + x_lo < p, shape (num_perm, len(x)); exact.

        a·x = a_hi·x_hi·2^62 + (a_hi·x_lo + a_lo·x_hi)·2^31 + a_lo·x_lo, every product < 2^62.
        With mid = m_hi·2^30 + m_lo: mid·2^31 = m_hi·2^61 + m_lo·2^31 ≡ m_hi + m_lo·2^31.
        The sum of the parts and b stays below 5·2^61 < 2^64, then one fold and one correction.
        """
        n = len(x_lo)
        res, t1, t2 = (buf[:, :n] for buf in self.buffers)
        np.multiply(self.a_lo, x_lo, out=res)
        np.multiply(self.a_hi2, x_hi, out=t1)
        np.add(res, t1, out=res)
        np.multiply(self.a_hi, x_lo, out=t1)
        np.multiply(self.a_lo, x_hi, out=t2)
        np.add(t1, t2, out=t1)  # mid < 2^62
        np.right_shift(t1, _S30, out=t2)
        np.add(res, t2, out=res)
        np.left_shift(t1, _S31, out=t1)  # keeps m_lo·2^31 (and bits above 2^61, masked next)
        np.bitwise_and(t1, _P, out=t1)
        np.add(res, t1, out=res)
        np.add(res, self.b, out=res)
        np.right_shift(res, _S61, out=t1)
        np.bitwise_and(res, _P, out=res)
        np.add(res, t1, out=res)  # < p + 5: congruent, possibly not fully reduced
        if res.max() >= _P:  # chance ~2^-58 per value: correct only when needed
            np.subtract(res, _P, out=t1)
            np.minimum(res, t1, out=res)  # r - p wraps to a huge value when r < p
        return res


def _split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = _mod_p(np.asarray(x, np.uint64))
    return x & _LOW31, x >> _S31


def permute(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a_k·x_i + b_k) mod (2^61 − 1) exactly, shape (len(x), len(a)) (reference and tests)."""
    x = np.asarray(x, np.uint64)
    permuter = _Permuter(a, b, block=max(len(x), 1))
    return permuter(*_split(x)).T.copy()


# ---------------------------------------------------------------- signatures


def signatures_from_shingles(hashes: np.ndarray, docs: np.ndarray, n_docs: int, num_perm: int = 112,
                             seed: int = 1, hash_bits: int = 64, block: int = _BLOCK) -> np.ndarray:
    """MinHash signatures (n_docs, num_perm) uint64 of shingle hashes grouped by sorted `docs`.

    Rows of documents without shingles are all `EMPTY`. With hash_bits=32 every permuted value is
    masked to 32 bits before the minimum (as DataTrove does).
    """
    a, b = permutation_params(num_perm, seed)
    permuter = _Permuter(a, b, block)
    sig = np.full((num_perm, n_docs), EMPTY, np.uint64)
    x_lo, x_hi = _split(hashes)
    docs = np.asarray(docs, np.int64)
    for start in range(0, len(hashes), block):
        stop = min(start + block, len(hashes))
        values = permuter(x_lo[start:stop], x_hi[start:stop])
        if hash_bits == 32:
            np.bitwise_and(values, _LOW32, out=values)
        d = docs[start:stop]
        first = np.flatnonzero(np.concatenate([[True], d[1:] != d[:-1]]))
        mins = np.minimum.reduceat(values, first, axis=1)
        run_docs = d[first]
        sig[:, run_docs] = np.minimum(sig[:, run_docs], mins)
    return np.ascontiguousarray(sig.T)


def rensa_signatures(hashes: np.ndarray, docs: np.ndarray, n_docs: int, num_perm: int = 112,
                     seed: int = 1) -> np.ndarray:
    """rensa's MinHash signatures (n_docs, num_perm) uint32 of shingle hashes grouped by sorted `docs`; rows of
    documents without shingles are all `EMPTY32`."""
    import rensa

    offsets = np.searchsorted(np.asarray(docs, np.int64), np.arange(n_docs + 1)).astype(np.uint64)
    hashes = np.ascontiguousarray(hashes, np.uint64)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, num_perm, seed)
    # rensa hands its matrix back as Python rows; one flat pass is the cheapest way into numpy
    flat = itertools.chain.from_iterable(matrix.to_rows())
    sig = np.fromiter(flat, np.uint32, count=n_docs * num_perm).reshape(n_docs, num_perm)
    sig[offsets[1:] == offsets[:-1]] = EMPTY32
    return sig


def minhash_signatures(texts: pa.Array | pa.ChunkedArray | list[str | None] | Tokens,
                       params: MinHashParams | None = None) -> np.ndarray:
    """MinHash signatures of texts (n, bands·rows): uint32 from rensa, uint64 from the datatrove engine; rows of
    empty texts are all the dtype's largest value."""
    params = params or MinHashParams()
    tokens = texts if isinstance(texts, Tokens) else tokenize(texts)
    hashes, docs = shingles(tokens, params.ngram)
    n_docs = len(tokens.offsets) - 1
    if params.engine == "rensa":
        return rensa_signatures(hashes, docs, n_docs, params.num_perm, params.seed)
    return signatures_from_shingles(hashes, docs, n_docs, params.num_perm, params.seed, params.bits)


def has_signature(signatures: np.ndarray) -> np.ndarray:
    """Which rows are real signatures (documents with at least one shingle)."""
    if not signatures.size:
        return np.zeros(len(signatures), bool)
    return signatures[:, 0] != np.iinfo(signatures.dtype).max


def signature_jaccard(signatures: np.ndarray, left: np.ndarray, right: np.ndarray,
                      chunk: int = 65_536) -> np.ndarray:
    """Estimated Jaccard of row pairs: the fraction of equal minhashes (float64, one per pair)."""
    out = np.empty(len(left), np.float64)
    for s in range(0, len(left), chunk):
        eq = signatures[left[s:s + chunk]] == signatures[right[s:s + chunk]]
        out[s:s + chunk] = eq.mean(axis=1) if eq.shape[1] else 0.0
    return out
