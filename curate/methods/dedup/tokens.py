"""Texts as white-space tokens over a dictionary of distinct tokens, for exact and near dedup.

Texts are split once; per-token work (hashing, DataTrove-style normalisation with regexes) is done on
the distinct tokens only and broadcast back with numpy indexing. Every normalisation step is local to
a token (no pattern spans white space), so normalising tokens then splitting again gives the same words
as normalising whole texts then splitting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curate.methods.text import hash_strings, split_words

# DataTrove's number pattern: digits in any script, with an optional decimal part.
_NUMBER = r"\p{Nd}+(?:[.,،٫⎖⎗⎘]\p{Nd}+)?"
_PUNCTUATION = r"[\p{P}\p{S}]+"  # Unicode punctuation and symbols
_MARKS = r"\p{Mn}+"  # combining marks left by NFD (diacritics)
_SPACE = r"[\s\p{Z}\x{85}\x{0b}]+"


@dataclass
class Tokens:
    """Document i's tokens are dictionary[indices[offsets[i]:offsets[i+1]]] (no empty tokens)."""

    dictionary: pa.Array  # distinct tokens, string
    indices: np.ndarray  # int64, one per token occurrence
    offsets: np.ndarray  # int64, n_docs + 1


def tokenize(texts: pa.Array | pa.ChunkedArray | list[str | None]) -> Tokens:
    """White-space tokens of each text (null texts are empty)."""
    if isinstance(texts, list):
        texts = pa.array(texts, pa.string())
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        texts = texts.cast(pa.string())  # string_view, dictionary or null columns
    words = split_words(texts)
    flat, offsets = words.flat, words.offsets
    encoded = pc.dictionary_encode(flat)
    return Tokens(encoded.dictionary, encoded.indices.to_numpy().astype(np.int64), offsets)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (full avalanche)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _hash128(values: pa.Array) -> np.ndarray:
    """xxh3-128 of each string as an (n, 2) uint64 array."""
    digest = xxhash.xxh3_128_digest
    buffer = b"".join(digest(v.encode("utf-8", "surrogatepass")) for v in values.to_pylist())
    return np.frombuffer(buffer, np.uint64).reshape(len(values), 2)


def sequence_keys(tokens: Tokens) -> np.ndarray:
    """A 128-bit key (n, 2) uint64 per document: equal iff the token sequences are equal (up to hashing).

    Equal token sequences = equal texts after collapsing white space and stripping. Each token's hash is
    mixed with its position and summed per document (order-sensitive, vectorised).
    """
    token_hash = _hash128(tokens.dictionary)[tokens.indices]
    counts = np.diff(tokens.offsets)
    position = np.arange(len(tokens.indices), dtype=np.int64) - np.repeat(tokens.offsets[:-1], counts)
    keys = np.empty((len(counts), 2), np.uint64)
    with np.errstate(over="ignore"):
        shift = position.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        for half, salt in ((0, 0x243F6A8885A308D3), (1, 0x13198A2E03707344)):
            terms = _mix(token_hash[:, half] + shift + np.uint64(salt))
            total = np.concatenate([np.zeros(1, np.uint64), np.cumsum(terms, dtype=np.uint64)])
            keys[:, half] = _mix((total[tokens.offsets[1:]] - total[tokens.offsets[:-1]])
                                 ^ counts.astype(np.uint64))
    return keys


def simplify(texts: pa.Array) -> pa.Array:
    """DataTrove-style simplification: lowercase, numbers -> "0", punctuation -> " ", no diacritics."""
    texts = pc.utf8_lower(pc.fill_null(texts, ""))
    texts = pc.replace_substring_regex(texts, _NUMBER, "0")
    texts = pc.replace_substring_regex(texts, _PUNCTUATION, " ")
    return pc.replace_substring_regex(pc.utf8_normalize(texts, "NFD"), _MARKS, "")


def collapse_whitespace(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Runs of (Unicode) white space become one space, ends stripped; null becomes ""."""
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.fill_null(texts, ""), _SPACE, " "))


def simplified_word_hashes(tokens: Tokens) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the words of the simplified texts, and per-document offsets.

    Each distinct token is simplified and re-split (punctuation may split it, or leave nothing).
    """
    simplified = split_words(simplify(tokens.dictionary))
    words, word_offsets = simplified.flat, simplified.offsets
    word_hash = hash_strings(words)
    per_token = np.diff(word_offsets)[tokens.indices]  # words per token occurrence (0, 1 or more)
    if np.all(per_token == 1):
        hashes = word_hash[word_offsets[:-1][tokens.indices]]
    else:
        starts = word_offsets[:-1][tokens.indices]
        before = np.concatenate([[0], np.cumsum(per_token)[:-1]])
        flat = np.repeat(starts - before, per_token) + np.arange(int(per_token.sum()))
        hashes = word_hash[flat]
    total = np.concatenate([[0], np.cumsum(per_token)])
    return hashes, total[tokens.offsets]
