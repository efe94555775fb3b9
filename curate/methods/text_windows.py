"""Word windows of texts as 64-bit keys: the normalization and the vectorised hashing that decontamination
(`curate.methods.decontamination`) uses for evaluation items and pool texts alike.

- `normalize_text`: NFKC, casefold, punctuation (and whitespace) to one space; numbers and diacritics optional. The
  index and the scan use this one function, so they can never disagree on what a word is.
- `fold_texts` + `ngram_keys`: 64-bit keys of every window of L words in a batch of texts, vectorised: ASCII
  texts are folded by one byte-table lookup over the batch; a polynomial prefix hash over the UTF-8 bytes gives
  each word's hash in O(1), and a second one over the words each window's, so a window costs a few array
  operations whatever L is. Equal windows have equal keys.
- `words_with_spans` and `window_text`: a window's words in the original string, for reports and cuts.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
WORD = re.compile(r"\S+")  # the original's words: maximal runs without white space (str.split's white space)
_MULT = 0x100000001B3  # odd, so invertible modulo 2**64
_MULT_INV = pow(_MULT, -1, 2**64)
CHUNK_BYTES = 1 << 20  # texts hashed at once: bounds the per-byte arrays to a few tens of MB


@dataclass(frozen=True)
class Normalization:
    """What `normalize_text` folds besides case, compatibility forms, punctuation and white space: digit runs (with
    a decimal part) to `0`, combining marks (diacritics), and Unicode symbols (`S*`: `$`, `+`, `=`, `©`)."""

    numbers: bool = False
    diacritics: bool = False
    symbols: bool = False


@lru_cache(maxsize=4)
def _space_table(symbols: bool) -> dict[int, str]:
    """Every punctuation (`P*`), white-space and, with `symbols`, symbol (`S*`) character, mapped to a space."""
    classes = ("P", "S") if symbols else ("P",)
    table = {}
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char)[0] in classes or char.isspace():
            table[code] = " "
    return table


@lru_cache(maxsize=1)
def _marks_table() -> dict[int, None]:
    return {code: None for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) == "Mn"}


@lru_cache(maxsize=4)
def _ascii_table(symbols: bool) -> bytes:
    """`_space_table` for the ASCII bytes of UTF-8 text, as a `bytes.translate` table (C speed, no dictionary
    lookup per character); bytes of multi-byte characters (all >= 0x80) are left as they are."""
    spaces = _space_table(symbols)
    return bytes(32 if code < 128 and code in spaces else code for code in range(256))


ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _bmp_class(codes: Iterable[int]) -> re.Pattern[str]:
    """One regular expression for the non-ASCII characters of `codes` in the Basic Multilingual Plane: `re` keeps
    such a class as a bitmap (about 12 ns a character, against 40 for `str.translate`'s dictionary lookups)."""
    ranges: list[list[int]] = []
    for code in sorted(c for c in codes if 128 <= c <= 0xFFFF):
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    char = lambda c: re.escape(chr(c))  # noqa: E731
    return re.compile("[" + "".join(char(lo) if lo == hi else f"{char(lo)}-{char(hi)}" for lo, hi in ranges) + "]")


@lru_cache(maxsize=4)
def _space_class(symbols: bool) -> re.Pattern[str]:
    return _bmp_class(_space_table(symbols))


@lru_cache(maxsize=1)
def _marks_class() -> re.Pattern[str]:
    return _bmp_class(_marks_table())


def _fold(text: str, norm: Normalization) -> str:
    """`normalize_text` before the words are joined: folded, with spaces where punctuation and white space were."""
    if text.isascii():  # NFKC, casefold and combining marks change nothing but case here
        text = text.lower()
        if norm.numbers:
            text = NUMBER.sub("0", text)
        return text.encode("ascii").translate(_ascii_table(norm.symbols)).decode("ascii")
    # non-ASCII characters of the Basic Multilingual Plane through a regular expression's bitmap, the rare ones
    # beyond it through the dictionaries, ASCII through the byte table
    text = unicodedata.normalize("NFKC", text).casefold()
    astral = ASTRAL.search(text) is not None
    if norm.diacritics:
        text = _marks_class().sub("", unicodedata.normalize("NFD", text))
        text = text.translate(_marks_table()) if astral else text
    if norm.numbers:
        text = NUMBER.sub("0", text)
    text = _space_class(norm.symbols).sub(" ", text)
    text = text.translate(_space_table(norm.symbols)) if astral else text
    return text.encode("utf-8").translate(_ascii_table(norm.symbols)).decode("utf-8")


def normalize_text(text: str, norm: Normalization = Normalization()) -> str:
    """Words joined by single spaces: NFKC, casefold, punctuation and white space to a space (§14.4 step 1)."""
    return " ".join(_fold(text, norm).split())


WORD_SEPARATOR = "\ue000"  # a private-use character: no fold changes it, and no word of a text holds it


def words_with_spans(text: str, norm: Normalization = Normalization()) -> list[tuple[str, int, int]]:
    """The normalised words of `text`, each with the span `[start, end)` of the original word it comes from (a word
    that normalises to several, such as `fox's`, gives each of them its span). The original's words are folded in
    one call, joined by a separator that folding keeps."""
    matches = list(WORD.finditer(text))
    if WORD_SEPARATOR in text:  # never in real text; fold word by word rather than mistake a boundary
        folded = [_fold(m.group(), norm) for m in matches]
    else:
        folded = _fold(WORD_SEPARATOR.join(m.group() for m in matches), norm).split(WORD_SEPARATOR)
    return [(word, m.start(), m.end()) for m, piece in zip(matches, folded, strict=True) for word in piece.split()]


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads a polynomial hash's bits (uint64, wrapping)."""
    z = values.copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


@lru_cache(maxsize=2)
def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """MULT**k and MULT**-k modulo 2**64 for k < size (a power of two, so few sizes are cached)."""
    with np.errstate(over="ignore"):
        up = np.cumprod(np.full(size, _MULT, np.uint64), dtype=np.uint64)
        down = np.cumprod(np.full(size, _MULT_INV, np.uint64), dtype=np.uint64)
    up = np.concatenate([[np.uint64(1)], up[:-1]])
    down = np.concatenate([[np.uint64(1)], down[:-1]])
    return up, down


@dataclass
class Windows:
    """The L-word windows of a batch of normalised texts: `keys`, the `text` each is in, its first `word` there, and
    its byte span in that text's UTF-8 (`start`, `end`), for reading the window back."""

    keys: np.ndarray
    text: np.ndarray
    word: np.ndarray
    start: np.ndarray
    end: np.ndarray


def ngram_keys(texts: Sequence[str] | pa.Array, lengths: Iterable[int]) -> dict[int, Windows]:
    """Keys of every window of each length in `lengths` words, in texts folded by `fold_texts` (or normalised by
    `normalize_text`: the keys depend on the words only, not on the spaces between them)."""
    lengths = sorted(set(lengths))
    found: dict[int, list[Windows]] = {n: [] for n in lengths}
    array = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(texts, pa.large_string())
    array = pc.cast(array, pa.large_string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    for first, chunk in _chunks(array):
        for n, windows in _chunk_keys(chunk, lengths, first).items():
            found[n].append(windows)
    return {n: Windows(*(np.concatenate([getattr(w, f) for w in parts]) if parts else np.zeros(0, dtype)
                         for f, dtype in (("keys", np.uint64), ("text", np.int64), ("word", np.int64),
                                          ("start", np.int64), ("end", np.int64))))
            for n, parts in found.items()}


def _chunks(array: pa.LargeStringArray) -> Iterable[tuple[int, pa.LargeStringArray]]:
    """Consecutive slices of at most CHUNK_BYTES of text (a longer text alone), with their first text's index."""
    offsets = np.frombuffer(array.buffers()[1], np.int64, len(array) + 1, array.offset * 8)
    first = 0
    while first < len(array):
        last = int(np.searchsorted(offsets, offsets[first] + CHUNK_BYTES, side="right")) - 1
        last = max(last, first + 1)
        yield first, array.slice(first, last - first)
        first = last


def fold_texts(texts: Sequence[str], norm: Normalization = Normalization()) -> pa.LargeStringArray:
    """`_fold` of each text, as one Arrow array, without joining the words: ASCII texts (most) are folded by one
    byte-table lookup over the whole batch; the others by `_fold` first (the table leaves them as they are)."""
    prepared = [(NUMBER.sub("0", t) if norm.numbers else t) if t.isascii() else _fold(t, norm) for t in texts]
    array = pa.array(prepared, pa.large_string())
    if not len(array):
        return array
    offsets = np.frombuffer(array.buffers()[1], np.int64, len(array) + 1)
    data = np.frombuffer(array.buffers()[2], np.uint8, int(offsets[-1])) if offsets[-1] else np.zeros(0, np.uint8)
    folded = _byte_table(norm.symbols)[data]
    return pa.LargeStringArray.from_buffers(len(array), pa.py_buffer(offsets), pa.py_buffer(folded))


@lru_cache(maxsize=4)
def _byte_table(symbols: bool) -> np.ndarray:
    """`_ascii_table` with upper-case letters lowered, as a numpy lookup table."""
    table = np.frombuffer(_ascii_table(symbols), np.uint8).copy()
    table[ord("A"):ord("Z") + 1] += 32
    return table


def _chunk_keys(array: pa.LargeStringArray, lengths: list[int], first: int) -> dict[int, Windows]:
    n_texts = len(array)
    offsets = np.frombuffer(array.buffers()[1], np.int64, n_texts + 1, array.offset * 8)
    base, total = int(offsets[0]), int(offsets[-1] - offsets[0])
    offsets = offsets - base
    data = np.frombuffer(array.buffers()[2], np.uint8, total, base) if total else np.zeros(0, np.uint8)
    up, down = _powers(1 << max(total + 1, 2).bit_length())
    with np.errstate(over="ignore"):
        prefix = np.zeros(total + 1, np.uint64)
        np.cumsum(data.astype(np.uint64) * up[:total], out=prefix[1:])
    # words: maximal runs of non-space bytes inside one text
    word = data != 32
    text_start = np.zeros(total + 1, bool)
    text_start[offsets[:-1]] = True
    before = np.zeros(total, bool)
    before[1:] = word[:-1]
    after = np.zeros(total, bool)
    after[:-1] = word[1:]
    starts = np.flatnonzero(word & ~(before & ~text_start[:total]))
    ends = np.flatnonzero(word & ~(after & ~text_start[1:])) + 1
    doc = np.searchsorted(offsets, starts, side="right") - 1  # the text of each word
    word_in_doc = np.arange(len(starts)) - np.searchsorted(starts, offsets[doc])
    with np.errstate(over="ignore"):  # a word's hash, then windows of words by a prefix sum over the words
        words = _mix(((prefix[ends] - prefix[starts]) * down[starts]) ^ (ends - starts).astype(np.uint64))
        word_up, word_down = _powers(1 << max(len(words) + 1, 2).bit_length())
        word_prefix = np.zeros(len(words) + 1, np.uint64)
        np.cumsum(words * word_up[:len(words)], out=word_prefix[1:])
    out = {}
    for n in lengths:
        head = np.arange(max(len(starts) - n + 1, 0))
        tail = head + n - 1
        valid = doc[head] == doc[tail]
        head, tail = head[valid], tail[valid]
        with np.errstate(over="ignore"):
            raw = (word_prefix[tail + 1] - word_prefix[head]) * word_down[head]
            keys = _mix(raw ^ np.uint64(n) * np.uint64(0x9E3779B97F4A7C15))
        text = doc[head]
        out[n] = Windows(keys, text + first, word_in_doc[head], starts[head] - offsets[text],
                         ends[tail] - offsets[text])
    return out


def window_text(text: str, start: int, end: int) -> str:
    """A window's words joined by single spaces, from its byte span in the UTF-8 of its folded text."""
    return " ".join(text.encode()[start:end].decode().split())
