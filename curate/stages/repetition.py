"""Repetition statistics of the `heuristics` stage (Gopher-style), for a whole batch of documents at once.

Every function returns one float64 value per document; a value that cannot be measured (a document
without words, lines or paragraphs) is NaN, and NaN never fails a rule.

- *Pieces* are the lines (text split on "\\n") or paragraphs (text split on a blank line,
  `\\n\\s*\\n`) of a document, with white space trimmed from both ends; blank pieces are left out.
- duplicate piece fraction = pieces equal to an earlier piece of the same document / pieces.
- duplicate piece char fraction = code points of those repeated pieces / code points of all pieces.
- top n-gram char fraction: take the most frequent word n-gram of the document among those that occur
  at least twice (ties: the one covering most characters); the statistic is the characters of the words
  covered by its occurrences (overlapping occurrences count once) / characters of all words.
  A document whose n-grams are all distinct scores 0.
- duplicate n-gram char fraction = characters of the words covered by any non-first occurrence of an
  n-gram that occurs more than once in the document / characters of all words.

Words are white-space separated (`curate.methods.text.split_words`); a word's characters are its code points.
Equal pieces and words are found exactly (Arrow dictionary encoding); n-grams by 64-bit hashes of word
ids (`curate.methods.text.iter_ngram_hashes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.methods.text import Words, iter_ngram_hashes

PARAGRAPH_BREAK = r"\n\s*\n"
_DOC_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd constant: mixes the document into n-gram keys


@dataclass
class Pieces:
    """The non-blank, trimmed lines or paragraphs of a batch of documents, flattened."""

    text: pa.Array  # string, one entry per piece
    doc: np.ndarray  # int64, document of each piece (ascending)
    length: np.ndarray  # int64, code points of each (trimmed) piece
    n_docs: int

    def per_doc(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Sum of `weights` (default: 1 per piece) over each document's pieces."""
        return np.bincount(self.doc, weights=weights, minlength=self.n_docs).astype(np.float64)


def split_pieces(texts: pa.Array, pattern: str = "\n", regex: bool = False) -> Pieces:
    """Split texts into pieces on `pattern` (a literal, or an RE2 regex), trim them, drop blank ones."""
    split = pc.split_pattern_regex if regex else pc.split_pattern
    lists = split(texts, pattern)
    counts = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    pieces = pc.utf8_trim_whitespace(lists.flatten())
    length = pc.utf8_length(pieces).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = length > 0
    if not keep.all():
        pieces, doc, length = pieces.filter(pa.array(keep)), doc[keep], length[keep]
    return Pieces(pieces, doc, length, len(texts))


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, NaN where the denominator is 0."""
    out = np.full(len(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=np.asarray(denominator) > 0)
    return out


def first_occurrences(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group, is_first) per key: equal keys share a group id; ids number groups by first appearance."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    group = pc.dictionary_encode(pa.array(keys)).indices.to_numpy().astype(np.int64)
    seen = np.maximum.accumulate(group)  # a new group's id is one above every id seen before it
    is_first = np.empty(len(group), bool)
    is_first[0] = True
    is_first[1:] = group[1:] > seen[:-1]
    return group, is_first


def segment_max(values: np.ndarray, docs: np.ndarray, n_docs: int) -> np.ndarray:
    """Maximum of `values` per document (0 for a document without values); `docs` must be ascending."""
    out = np.zeros(n_docs, np.float64)
    if len(values):
        heads = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        out[docs[heads]] = np.maximum.reduceat(values, heads)
    return out


def duplicate_pieces(pieces: Pieces) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate piece fraction, duplicate piece char fraction) per document."""
    codes = pc.dictionary_encode(pieces.text).indices.to_numpy().astype(np.int64)
    _, is_first = first_occurrences((pieces.doc << 32) | codes)
    repeated = ~is_first
    return (ratio(pieces.per_doc(repeated.astype(np.float64)), pieces.per_doc()),
            ratio(pieces.per_doc(pieces.length * repeated), pieces.per_doc(pieces.length)))


def _top_ngram_chars(group: np.ndarray, count: np.ndarray, starts: np.ndarray, docs: np.ndarray, n: int,
                     cum_chars: np.ndarray, n_docs: int) -> np.ndarray:
    """Characters covered by each document's most frequent repeated n-gram."""
    best = segment_max(count, docs, n_docs)
    pick = (count >= 2) & (count == best[docs])
    order = np.argsort(group[pick], kind="stable")  # by n-gram, each n-gram's occurrences in text order
    g, p, d = group[pick][order], starts[pick][order], docs[pick][order]
    same = g[1:] == g[:-1]
    end = p + n
    end[:-1] = np.where(same, np.minimum(end[:-1], p[1:]), end[:-1])  # overlaps count once
    covered = (cum_chars[end] - cum_chars[p]).astype(np.float64)
    heads = np.flatnonzero(np.r_[True, ~same]) if len(g) else np.zeros(0, np.int64)
    per_ngram = np.add.reduceat(covered, heads) if len(g) else covered
    # group ids grow with the document (keys include it), so the heads' documents are ascending
    return segment_max(per_ngram, d[heads], n_docs)


def _duplicate_ngram_chars(starts: np.ndarray, is_first: np.ndarray, n: int, word_len: np.ndarray,
                           word_doc: np.ndarray, n_docs: int) -> np.ndarray:
    """Characters of the words covered by any non-first occurrence of a repeated n-gram, per document."""
    total = len(word_len)
    repeated = starts[~is_first]
    depth = np.cumsum(np.bincount(repeated, minlength=total + 1)[: total + 1]
                      - np.bincount(repeated + n, minlength=total + 1)[: total + 1])
    covered = depth[:total] > 0
    return np.bincount(word_doc, weights=word_len * covered, minlength=n_docs)


def ngram_fractions(words: Words, word_len: np.ndarray, top: Sequence[int],
                    duplicate: Sequence[int]) -> dict[tuple[str, int], np.ndarray]:
    """{("top", n): top n-gram char fraction, ("duplicate", n): duplicate n-gram char fraction}.

    An (n+1)-gram can only repeat where the n-grams at its start and one word later repeat, so each
    size only looks at the positions the size before left as candidates (a few percent in prose).
    """
    n_docs = len(words.offsets) - 1
    total = len(word_len)
    word_doc = words.doc_index
    chars = np.bincount(word_doc, weights=word_len, minlength=n_docs)
    cum_chars = np.concatenate([[0], np.cumsum(word_len)])
    word_ids = pc.dictionary_encode(words.flat).indices.to_numpy().astype(np.int64)
    sizes = range(1, max([*top, *duplicate], default=0) + 1)
    repeated = np.ones(total, bool)  # positions whose (n-1)-gram occurs again in its document
    out: dict[tuple[str, int], np.ndarray] = {}
    for n, hashes, starts in iter_ngram_hashes(word_ids, words.offsets, sizes):
        if n > 1:
            keep = repeated[starts] & repeated[starts + 1]
            hashes, starts = hashes[keep], starts[keep]
        docs = word_doc[starts]
        with np.errstate(over="ignore"):
            keys = hashes + docs.astype(np.uint64) * _DOC_MIX  # the same n-gram in two documents differs
        group, is_first = first_occurrences(keys.view(np.int64))
        count = np.bincount(group)[group] if len(group) else group
        repeated = np.zeros(total, bool)
        repeated[starts[count >= 2]] = True
        if n in top:
            out["top", n] = ratio(_top_ngram_chars(group, count, starts, docs, n, cum_chars, n_docs), chars)
        if n in duplicate:
            out["duplicate", n] = ratio(
                _duplicate_ngram_chars(starts, is_first, n, word_len, word_doc, n_docs), chars)
    return out
