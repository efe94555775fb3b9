"""Hashed word n-gram features, vectorised over a whole batch of texts (DSIR, docs/methods.md §6.6).

`hashed_ngrams(texts, num_buckets, ngrams)` lowercases the texts, splits them as NLTK's `WordPunctTokenizer` does
(runs of word characters, and runs of other non-space characters), and hashes every unigram and every n-gram up
to `ngrams` (within one text) into `num_buckets` buckets. It returns one (text index, bucket) pair per feature,
so a text's count vector is a `bincount` and a text's log-importance weight is a weighted `bincount`: no vector
of B counts per text is ever stored.

No Python loop runs per token or per text:
- tokenising is two Arrow kernels (space out the punctuation runs with a regex, split on white space);
- `hash: fast` (this function's default; the `dsir` stage's is sha256) hashes each token's UTF-8 bytes as a
  polynomial mod 2^64 (one multiply-add per byte in numpy, summed per token with `reduceat`), finished by
  splitmix64's mixer (`curate.methods.text`); an n-gram's hash mixes its tokens';
- `hash: sha256` is the `data-selection` package's bucket function (sha256 of the token, or of the n-gram joined by
  spaces, mod B): it loops over the distinct tokens and n-grams of the batch only (distinct n-grams by an int64 key
  of their token ids, joined by Arrow). Buckets decide which features collide, so only the same bucket function
  gives the package's weights: a different hash is a different random projection (on 32k documents the fast
  hash's log-weights rank-correlate with the package's at 0.96, and share 78% of the top 2,000).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.methods.text import finalize_hash

HashName = Literal["fast", "sha256"]
# a run of characters that are neither word characters (Python's \w: letters, numbers, underscore) nor white space
_PUNCT_RUN = r"([^\p{L}\p{N}_\s\p{Z}\x{85}\x{1c}-\x{1f}]+)"
_BASE = np.uint64(1_000_003)  # polynomial base for the byte hash
_PAIR = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio constant that separates n-gram orders


def word_tokens(texts: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Lowercased WordPunct tokens of each text (a null text has none)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    lowered = pc.utf8_lower(pc.fill_null(texts.cast(pa.string()), ""))
    # space out the punctuation runs (fewer than the word runs, so a third of the regex work), then split on white
    # space: what is left between spaces is a word run or a punctuation run
    spaced = pc.replace_substring_regex(lowered, _PUNCT_RUN, r" \1 ")
    pieces = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(spaced))
    flat = pc.list_flatten(pieces)
    keep = pc.greater(pc.binary_length(flat), 0)  # the split of an empty text is [""]
    parents = pc.list_parent_indices(pieces).to_numpy(zero_copy_only=False)
    kept = keep.to_numpy(zero_copy_only=False)
    counts = np.bincount(parents[kept], minlength=len(texts))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat.filter(keep))


def _byte_hashes(tokens: pa.Array) -> np.ndarray:
    """A 64-bit hash of each (non-empty) string's UTF-8 bytes: Σ_k byte_k · BASE^(len-1-k) mod 2^64, mixed."""
    tokens = tokens.cast(pa.large_string()) if not pa.types.is_large_string(tokens.type) else tokens
    offsets = np.frombuffer(tokens.buffers()[1], np.int64)[tokens.offset:tokens.offset + len(tokens) + 1]
    data = np.frombuffer(tokens.buffers()[2], np.uint8)[offsets[0]:offsets[-1]].astype(np.uint64)
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    if not len(lengths):
        return np.zeros(0, np.uint64)
    powers = np.ones(int(lengths.max()), np.uint64)  # BASE^0, BASE^1, ... (wrapping mod 2^64)
    powers[1:] = np.cumprod(np.full(len(powers) - 1, _BASE, np.uint64), dtype=np.uint64)
    ends = np.repeat(starts + lengths, lengths)
    exponent = ends - 1 - np.arange(len(data))
    with np.errstate(over="ignore"):
        return finalize_hash(np.add.reduceat(data * powers[exponent], starts))


def _sha256_buckets(strings: list[str], num_buckets: int) -> np.ndarray:
    sha = hashlib.sha256
    return np.fromiter((int.from_bytes(sha(s.encode("utf-8")).digest(), "big") % num_buckets for s in strings),
                       np.int64, count=len(strings))


def hashed_ngrams(texts: pa.Array | pa.ChunkedArray, num_buckets: int = 10_000, ngrams: int = 2,
                  hash: HashName = "fast") -> tuple[np.ndarray, np.ndarray]:
    """(text index, bucket) of every n-gram feature (orders 1..ngrams) of every text, as int64 arrays."""
    tokens = word_tokens(texts)
    flat = pc.list_flatten(tokens)
    doc = pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
    if hash == "sha256":
        return _sha256_features(flat, doc, num_buckets, ngrams)
    with np.errstate(over="ignore"):
        unigram = _byte_hashes(flat)
        docs, hashes, current = [doc], [unigram], unigram
        for order in range(2, ngrams + 1):
            same = doc[order - 1:] == doc[: len(doc) - order + 1]
            current = finalize_hash(current[:-1] * _PAIR + unigram[order - 1:] + np.uint64(order))
            docs.append(doc[: len(doc) - order + 1][same])
            hashes.append(current[same])  # windows across two texts are dropped at every order
        all_hashes = np.concatenate(hashes)
    return np.concatenate(docs), (all_hashes % np.uint64(num_buckets)).astype(np.int64)


def _sha256_features(flat: pa.Array, doc: np.ndarray, num_buckets: int,
                     ngrams: int) -> tuple[np.ndarray, np.ndarray]:
    """The package's buckets: sha256 of each distinct token, and of each distinct n-gram joined by spaces."""
    encoded = pc.dictionary_encode(flat)
    vocab = encoded.dictionary
    ids = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    docs, buckets = [doc], [_sha256_buckets(vocab.to_pylist(), num_buckets)[ids]]
    key, width = ids, len(vocab)  # an n-gram's key: its token ids in base `width` (fits int64 up to ~3M^3)
    for order in range(2, ngrams + 1):
        n = len(ids) - order + 1
        if n <= 0:
            break
        if float(width) ** order >= 2**62:
            raise ValueError(f"n-grams of order {order} over {width:,} distinct tokens: give smaller batches")
        key = key[:n] * width + ids[order - 1:]
        same = doc[order - 1:] == doc[:n]
        distinct, inverse = np.unique(key[same], return_inverse=True)
        parts, rest = [], distinct
        for _ in range(order):  # the distinct n-grams' token ids, last first
            rest, last = np.divmod(rest, width)
            parts.append(vocab.take(pa.array(last)))
        joined = pc.binary_join_element_wise(*reversed(parts), " ")
        docs.append(doc[:n][same])
        buckets.append(_sha256_buckets(joined.to_pylist(), num_buckets)[inverse.ravel()])
    return np.concatenate(docs), np.concatenate(buckets)


def bucket_counts(buckets: np.ndarray, num_buckets: int) -> np.ndarray:
    return np.bincount(buckets, minlength=num_buckets).astype(np.int64)
