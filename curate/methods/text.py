"""Vectorised text primitives shared by filters and dedup: words, word hashes, word n-gram hashes.

Everything works on whole Arrow columns at once: words are flattened into one array with per-document
offsets, so per-document statistics are numpy reductions (`np.add.reduceat`, `np.bincount`), never a
Python loop per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

_MIX = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio odd constant: spreads bits when combining hashes


@dataclass
class Words:
    """All words of a column of texts: `flat[offsets[i]:offsets[i+1]]` are document i's words."""

    flat: pa.Array  # string
    offsets: np.ndarray  # int64, length n_docs + 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def doc_index(self) -> np.ndarray:
        """Document of each word."""
        return np.repeat(np.arange(len(self.offsets) - 1), self.counts)


def as_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as one string array with nulls as empty strings (what models read: every row has a text)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pc.fill_null(values.cast(pa.string()), "")


def split_words(texts: pa.Array | pa.ChunkedArray) -> Words:
    """Split on Unicode white space (null texts have no words)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = pc.fill_null(texts, "")
    # Arrow's utf8_split_whitespace (26.0) reads past the end of the data buffer: when the array's last non-empty
    # text ends in white space, it sometimes returns that white space as a word. A sentinel text ending in a letter
    # keeps the buffer's end out of every real text; its list is sliced off.
    sentinel = pa.array(["x"], texts.type)
    lists = pc.utf8_split_whitespace(pa.concat_arrays([texts, sentinel])).slice(0, len(texts))
    # zero-copy: the words of this (possibly sliced) list array, and its offsets shifted to start at 0
    offsets = lists.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]
    flat = lists.flatten()
    # utf8_split_whitespace yields empty strings at leading/trailing white space: drop them (a word's length is the
    # step of its string offsets, read without a kernel)
    width = np.int64 if pa.types.is_large_string(flat.type) else np.int32
    string_offsets = np.frombuffer(flat.buffers()[1], width)[flat.offset:flat.offset + len(flat) + 1]
    nonempty = np.diff(string_offsets) > 0
    if not nonempty.all():
        keep_count = np.concatenate([[0], np.cumsum(nonempty, dtype=np.int64)])
        offsets = keep_count[offsets]
        flat = flat.filter(pa.array(nonempty))
    return Words(flat, offsets)


def hash_strings(values: pa.Array, seed: int = 0) -> np.ndarray:
    """64-bit xxhash of each string; each distinct string is hashed once (dictionary encoding)."""
    if len(values) == 0:
        return np.zeros(0, np.uint64)
    encoded = pc.dictionary_encode(values)
    h = xxhash.xxh3_64_intdigest
    unique = np.fromiter((h(v.encode("utf-8", "surrogatepass"), seed) for v in encoded.dictionary.to_pylist()),
                         dtype=np.uint64, count=len(encoded.dictionary))
    return unique[encoded.indices.to_numpy()]


def finalize_hash(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: full avalanche, so combined hashes behave like independent random values."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def ngram_hashes(word_hashes: np.ndarray, offsets: np.ndarray, n: int,
                 short_docs: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of all word n-grams that lie inside one document, and the document of each.

    With `short_docs`, a document with 1..n-1 words yields one n-gram made of all its words (so short
    texts still get a shingle). Returns (hashes uint64, doc index int64), in document order.
    """
    counts = np.diff(offsets)
    total = len(word_hashes)
    with np.errstate(over="ignore"):
        if total >= n:
            h = word_hashes[: total - n + 1].copy()
            for j in range(1, n):
                h = finalize_hash(h * _MIX + word_hashes[j: total - n + 1 + j])
        else:
            h = np.zeros(0, np.uint64)
        doc_of_start = np.repeat(np.arange(len(counts)), counts)[: len(h)]
        starts = np.arange(len(h))
        inside = starts + n <= offsets[1:][doc_of_start] if len(h) else np.zeros(0, bool)
        hashes, docs = h[inside], doc_of_start[inside]
        if short_docs:
            short = np.flatnonzero((counts > 0) & (counts < n))
            if len(short):
                # same value as _combine(words of d) for each short doc d, computed for all at once
                start, length = offsets[short], counts[short]
                extra = word_hashes[start].copy()
                for j in range(1, n - 1):
                    more = np.flatnonzero(length > j)
                    extra[more] = finalize_hash(extra[more] * _MIX + word_hashes[start[more] + j])
                hashes = np.concatenate([hashes, extra])
                docs = np.concatenate([docs, short])
                order = np.argsort(docs, kind="stable")
                hashes, docs = hashes[order], docs[order]
    return hashes, docs


def _combine(word_hashes: np.ndarray) -> np.uint64:
    h = word_hashes[0]
    with np.errstate(over="ignore"):
        for value in word_hashes[1:]:
            h = finalize_hash(np.array([h * _MIX + value], np.uint64))[0]
    return np.uint64(h)


def iter_ngram_hashes(word_hashes: np.ndarray, offsets: np.ndarray,
                      sizes: Sequence[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(n, hashes, starts) for each n in `sizes`, built incrementally (one pass per extra word).

    `hashes` equal `ngram_hashes(word_hashes, offsets, n)[0]`; `starts` is the global index of each
    n-gram's first word (its document is `Words.doc_index[starts]`).
    """
    total = len(word_hashes)
    wanted = sorted(set(sizes))
    word_hashes = np.asarray(word_hashes, np.uint64)
    h = word_hashes
    doc_end = None  # end offset of the document of each word, once an n > 1 needs it
    with np.errstate(over="ignore"):
        for n in range(1, (wanted[-1] if wanted else 0) + 1):
            if n > 1:
                h = finalize_hash(h[:-1] * _MIX + word_hashes[n - 1:])
            if n not in wanted:
                continue
            if n == 1:  # every word is a unigram inside its document
                yield n, h, np.arange(total)
                continue
            if doc_end is None:
                doc_end = np.repeat(offsets[1:], np.diff(offsets))
            starts = np.flatnonzero(np.arange(total - n + 1) + n <= doc_end[: max(total - n + 1, 0)])
            yield n, h[starts], starts
