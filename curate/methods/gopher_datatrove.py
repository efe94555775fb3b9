"""DataTrove's Gopher filters, reproduced for a whole batch of documents at once (no DataTrove, no spaCy).

`GopherStats` computes, per document, the statistics of DataTrove 0.10.1's `GopherRepetitionFilter` and
`GopherQualityFilter` exactly as they define them; `RULES` lists their checks in the order DataTrove runs
them by default (repetition first, then quality), each with DataTrove's drop reason. Definitions:

- words: `datatrove.utils.text.split_into_words(text, "en")`, i.e. the non-blank tokens of spaCy's blank
  English tokenizer ("don't" -> "do", "n't"; "(see" -> "(", "see"), here `curate.methods.spacy_words`.
  A *symbol word* consists only of DataTrove's `PUNCTUATION_SET` characters; an *alpha word* has a
  character for which `str.isalpha()` holds. Characters are code points (Python `len`).
- repetition: paragraphs = `re.split(r"\\n{2,}", text.strip())`, lines = `re.split(r"\\n+", text)` (blank
  pieces count); duplicate fraction = pieces equal to an earlier piece / pieces; duplicate char fraction =
  characters of those pieces / characters of the text. Top n-gram (n = 2, 3, 4): the most frequent
  `" ".join` of n consecutive words (ties: the one seen first; a count of 1 counts), its length times its
  count / characters of the text; a document with fewer than n words passes. Duplicate n-gram
  (n = 5..10): scanning positions left to right, an n-gram (`"".join` of its words) already seen at a
  visited position adds its length and the scan jumps n words ahead; otherwise it is remembered and the
  scan moves one word on; the sum / characters of the text.
- quality: word count and mean word length are over non-symbol words; `text.count("#")` and
  `text.count("...") + text.count("…")` per word (all words); lines = `text.splitlines()` (blank lines
  count) starting with "•" or "-" / ending with "..." or "…" after trimming; alpha words / words;
  distinct `stop_words` among the words, matched exactly (case-sensitive).

Equal pieces are found exactly (Arrow dictionary encoding); n-grams by 64-bit polynomial hashes of their
exact strings (`" ".join` or `"".join` of the words).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, cached_property
from itertools import chain
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.methods.spacy_words import SpacyEnglishWords
from curate.methods.text import split_words

# DataTrove's `PUNCTUATION_SET` (ASCII punctuation, control characters, `PUNCTUATION`, `TERMINAL_PUNCTUATION`)
_PUNCTUATION = (
    r"\x{0}-\x{8}\x{b}-\x{1f}\x{21}-\x{2f}\x{3a}-\x{40}\x{5b}-\x{60}\x{7b}-\x{9f}\x{ab}\x{b4}\x{bb}\x{589}"
    r"\x{61d}-\x{61f}\x{6d4}\x{700}-\x{702}\x{7f9}\x{837}\x{839}\x{83d}-\x{83e}\x{964}-\x{965}\x{104a}-\x{104b}"
    r"\x{1362}\x{1367}-\x{1368}\x{166e}\x{1735}-\x{1736}\x{17d4}-\x{17d6}\x{17d9}-\x{17da}\x{1803}\x{1809}"
    r"\x{1944}-\x{1945}\x{1aa8}-\x{1aab}\x{1b5a}-\x{1b5b}\x{1b5e}-\x{1b5f}\x{1b7d}-\x{1b7e}\x{1c3b}-\x{1c3c}"
    r"\x{1c7e}-\x{1c7f}\x{2013}-\x{2014}\x{2019}\x{201c}-\x{201e}\x{2026}\x{203c}-\x{203d}\x{2047}-\x{2049}"
    r"\x{2236}\x{2501}\x{25ba}\x{2e2e}\x{2e3c}\x{2e53}-\x{2e54}\x{3001}-\x{3002}\x{3008}-\x{300d}\x{3010}-\x{3011}"
    r"\x{a4ff}\x{a60e}-\x{a60f}\x{a6f3}\x{a6f7}\x{a876}-\x{a877}\x{a8ce}-\x{a8cf}\x{a92f}\x{a9c8}-\x{a9c9}"
    r"\x{aa5d}-\x{aa5f}\x{aaf0}-\x{aaf1}\x{abeb}\x{fe52}\x{fe56}-\x{fe57}\x{ff01}\x{ff05}\x{ff08}-\x{ff09}\x{ff0c}"
    r"\x{ff0e}\x{ff11}\x{ff1a}-\x{ff1b}\x{ff1f}\x{ff5e}\x{ff61}\x{10a56}-\x{10a57}\x{10f55}-\x{10f59}"
    r"\x{10f86}-\x{10f89}\x{11047}-\x{11048}\x{110be}-\x{110c1}\x{11141}-\x{11143}\x{111c5}-\x{111c6}\x{111cd}"
    r"\x{111de}-\x{111df}\x{11238}-\x{11239}\x{1123b}-\x{1123c}\x{112a9}\x{1144b}-\x{1144c}\x{115c2}-\x{115c3}"
    r"\x{115c9}-\x{115d7}\x{11641}-\x{11642}\x{1173c}-\x{1173e}\x{11944}\x{11946}\x{11a42}-\x{11a43}"
    r"\x{11a9b}-\x{11a9c}\x{11c41}-\x{11c42}\x{11ef7}-\x{11ef8}\x{11f43}-\x{11f44}\x{16a6e}-\x{16a6f}\x{16af5}"
    r"\x{16b37}-\x{16b38}\x{16b44}\x{16e98}\x{1bc9f}\x{1da88}")
_SPACE = r"\t-\r\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"  # isspace
_LINE_BREAK = r"\r\n|[\r\x{b}\x{c}\x{1c}-\x{1e}\x{85}\x{2028}\x{2029}]"  # what str.splitlines splits on, besides \n
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")  # DataTrove's, matched case-sensitively
_BASE = 0xC2B2AE3D27D4EB4F  # odd: invertible modulo 2**64
_SPACE_BYTE = np.uint64(ord(" ") + 1)
_DOC_MIX = np.uint64(0x9E3779B97F4A7C15)


@cache
def english_words() -> SpacyEnglishWords:
    """The process-wide word splitter (its chunk cache is shared by every batch)."""
    return SpacyEnglishWords()


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(len(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=np.asarray(denominator) > 0)
    return out


def _numpy(values: pa.Array | pa.ChunkedArray, dtype: type = np.int64) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False)).astype(dtype)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE**i and BASE**-i modulo 2**64 for i < n."""
    up = np.full(n, _BASE, np.uint64)
    down = np.full(n, pow(_BASE, -1, 2**64), np.uint64)
    up[0] = down[0] = 1
    return np.cumprod(up, dtype=np.uint64), np.cumprod(down, dtype=np.uint64)


def string_hashes(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(h, BASE**bytes) per string: h = sum of (byte + 1) * BASE**(bytes after it), modulo 2**64, so that
    h(a + b) = h(a) * BASE**len(b) + h(b)."""
    strings = pc.cast(strings, pa.large_string())
    offsets = np.frombuffer(strings.buffers()[1], np.int64)[strings.offset:strings.offset + len(strings) + 1]
    data = np.frombuffer(strings.buffers()[2], np.uint8)[offsets[0]:offsets[-1]].astype(np.uint64) + np.uint64(1)
    offsets = offsets - offsets[0]
    up, down = _powers(len(data) + 1)
    sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(data * down[:-1], dtype=np.uint64)])
    end = np.maximum(offsets[1:] - 1, 0)
    return (sums[offsets[1:]] - sums[offsets[:-1]]) * up[end], up[np.diff(offsets)]


def _firsts(keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group, is_first): equal (doc, key) pairs share a group, numbered by first appearance."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    group = _numpy(pc.dictionary_encode(pa.array(_mix(keys, docs).view(np.int64))).indices)
    is_first = np.ones(len(group), bool)
    is_first[1:] = group[1:] > np.maximum.accumulate(group)[:-1]
    return group, is_first


def _mix(keys: np.ndarray, docs: np.ndarray) -> np.ndarray:
    return keys + docs.astype(np.uint64) * _DOC_MIX


def _maybe_repeated(keys: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Mask of the (doc, key) pairs that may occur more than once; the others surely occur once."""
    bits = max(int(4 * len(keys)).bit_length(), 4)
    bucket = ((_mix(keys, docs) * _DOC_MIX) >> np.uint64(64 - bits)).astype(np.intp)
    return np.bincount(bucket, minlength=1 << bits)[bucket] > 1


class Pieces(NamedTuple):
    """Duplicate statistics of the paragraphs or lines of a batch."""

    duplicate_fraction: np.ndarray
    duplicate_chars: np.ndarray


class GopherStats:
    """DataTrove's Gopher statistics of a batch of texts, each computed on first use (one value per text)."""

    def __init__(self, texts: pa.Array, stop_words: Sequence[str] = STOP_WORDS, words: SpacyEnglishWords | None = None):
        self.texts = pc.fill_null(texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts, "")
        self.n = len(self.texts)
        self.stop_word_list = list(dict.fromkeys(stop_words))
        self.splitter = words or english_words()
        self._grams: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ words

    @cached_property
    def chars(self) -> np.ndarray:
        return _numpy(pc.utf8_length(self.texts), np.float64)

    @cached_property
    def _split(self) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """(vocabulary: the words of each distinct chunk, concatenated; the vocabulary entry of each word
        position of the batch; offsets: text i's words are positions offsets[i]:offsets[i+1])."""
        chunks = split_words(self.texts)  # spaCy tokenizes each white-space-free chunk on its own
        encoded = pc.dictionary_encode(chunks.flat)
        split = self.splitter.chunk
        parts = [split(chunk) for chunk in encoded.dictionary.to_pylist()]
        sizes = np.fromiter(map(len, parts), np.int64, len(parts))
        chunk = _numpy(encoded.indices)
        counts = sizes[chunk]
        starts = np.concatenate([[0], np.cumsum(sizes)])[chunk] - (np.cumsum(counts) - counts)
        take = np.repeat(starts, counts) + np.arange(counts.sum())
        per_doc = np.bincount(chunks.doc_index, weights=counts, minlength=self.n).astype(np.int64)
        vocabulary = pa.array(list(chain.from_iterable(parts)), pa.string())
        return vocabulary, take, np.concatenate([[0], np.cumsum(per_doc)])

    @property
    def words(self) -> tuple[pa.Array, np.ndarray]:
        """(every word of every text, flat; offsets: text i's words are flat[offsets[i]:offsets[i+1]])."""
        vocabulary, take, offsets = self._split
        return vocabulary.take(pa.array(take)), offsets

    def _each_word(self, per_entry: pa.Array | np.ndarray, dtype: type = np.int64) -> np.ndarray:
        """A value per vocabulary entry, gathered to every word position."""
        values = per_entry if isinstance(per_entry, np.ndarray) else _numpy(per_entry, dtype)
        return values[self._split[1]]

    @cached_property
    def word_doc(self) -> np.ndarray:
        return np.repeat(np.arange(self.n), np.diff(self._split[2]))

    @cached_property
    def word_chars(self) -> np.ndarray:
        return self._each_word(pc.utf8_length(self._split[0]))

    def _per_doc(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.word_doc, weights=weights, minlength=self.n)

    @cached_property
    def word_count(self) -> np.ndarray:
        return np.diff(self._split[2]).astype(np.float64)

    @cached_property
    def non_symbol(self) -> np.ndarray:
        return ~self._each_word(pc.match_substring_regex(self._split[0], f"^[{_PUNCTUATION}]+$"), bool)

    @cached_property
    def non_symbol_words(self) -> np.ndarray:
        return self._per_doc(self.non_symbol.astype(np.float64))

    @cached_property
    def mean_word_length(self) -> np.ndarray:
        return _ratio(self._per_doc(self.word_chars * self.non_symbol), self.non_symbol_words)

    @cached_property
    def alpha_fraction(self) -> np.ndarray:
        alpha = self._each_word(pc.match_substring_regex(self._split[0], r"\pL"), np.float64)
        return _ratio(self._per_doc(alpha), self.word_count)

    @cached_property
    def stop_words(self) -> np.ndarray:
        index = self._each_word(pc.fill_null(pc.index_in(self._split[0], value_set=pa.array(
            self.stop_word_list, pa.string())), -1))
        found = index >= 0
        kinds = max(len(self.stop_word_list), 1)
        which = index[found]
        distinct = np.unique(self.word_doc[found] * kinds + which) // kinds
        return np.bincount(distinct, minlength=self.n).astype(np.float64)

    def _count_ratio(self, *patterns: str) -> np.ndarray:
        count = sum(_numpy(pc.count_substring(self.texts, p), np.float64) for p in patterns)
        return _ratio(count, self.word_count)

    @cached_property
    def hash_ratio(self) -> np.ndarray:
        return self._count_ratio("#")

    @cached_property
    def ellipsis_ratio(self) -> np.ndarray:
        return self._count_ratio("...", "…")

    # ------------------------------------------------------------------ lines (`str.splitlines`)

    @cached_property
    def lines(self) -> tuple[pa.Array, np.ndarray]:
        lists = pc.split_pattern(pc.replace_substring_regex(self.texts, _LINE_BREAK, "\n"), "\n")
        counts = _numpy(pc.list_value_length(lists))
        lines = lists.flatten()
        last = np.cumsum(counts) - 1
        keep = np.ones(len(lines), bool)
        keep[last[_numpy(pc.utf8_length(lines.take(pa.array(last))), bool) == 0]] = False  # no line after the end
        doc = np.repeat(np.arange(self.n), counts)[keep]
        return lines.filter(pa.array(keep)), doc

    def _line_fraction(self, pattern: str) -> np.ndarray:
        lines, doc = self.lines
        hit = _numpy(pc.match_substring_regex(lines, pattern), np.float64)
        return _ratio(np.bincount(doc, hit, self.n), np.bincount(doc, minlength=self.n).astype(np.float64))

    @cached_property
    def bullet_fraction(self) -> np.ndarray:
        return self._line_fraction(f"^[{_SPACE}]*[•-]")

    @cached_property
    def end_ellipsis_fraction(self) -> np.ndarray:
        return self._line_fraction(f"(?:\\.\\.\\.|…)[{_SPACE}]*$")

    # ------------------------------------------------------------------ repetition

    def _pieces(self, texts: pa.Array, pattern: str) -> Pieces:
        lists = pc.split_pattern_regex(texts, pattern)
        doc = np.repeat(np.arange(self.n), _numpy(pc.list_value_length(lists)))
        pieces = lists.flatten()
        _, is_first = _firsts(_numpy(pc.dictionary_encode(pieces).indices).astype(np.uint64), doc)
        repeated = (~is_first).astype(np.float64)
        chars = _numpy(pc.utf8_length(pieces), np.float64) * repeated
        return Pieces(_ratio(np.bincount(doc, repeated, self.n), np.bincount(doc, minlength=self.n).astype(float)),
                      _ratio(np.bincount(doc, chars, self.n), self.chars))

    @cached_property
    def paragraphs(self) -> Pieces:
        return self._pieces(pc.utf8_trim_whitespace(self.texts), r"\n{2,}")

    @cached_property
    def repeated_lines(self) -> Pieces:
        return self._pieces(self.texts, r"\n+")

    def _ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hash of `" ".join`, hash of `"".join`, characters of `"".join`) of the n words starting at each word
        position (only the first `words - n + 1` positions of a text are n-grams); valid until the next call."""
        if self._grams is None or self._grams[0] > n:
            h = self._word_hashes[0]
            self._grams = (1, h.copy(), h.copy(), self.word_chars.copy())
        have, spaced, joined, chars = self._grams
        h, power = self._word_hashes
        for k in range(have, n):  # k-grams -> (k+1)-grams, in place
            end = len(h) - k
            spaced[:end] = (spaced[:end] * np.uint64(_BASE) + _SPACE_BYTE) * power[k:] + h[k:]
            joined[:end] = joined[:end] * power[k:] + h[k:]
            chars[:end] += self.word_chars[k:]
        self._grams = (n, spaced, joined, chars)
        return spaced, joined, chars

    @cached_property
    def _word_hashes(self) -> tuple[np.ndarray, np.ndarray]:
        h, power = string_hashes(self._split[0])
        return self._each_word(h), self._each_word(power)

    def _starts(self, n: int) -> np.ndarray:
        """Positions where an n-gram starts (inside its document)."""
        room = self._split[2][1:][self.word_doc] - np.arange(len(self.word_doc))
        return np.flatnonzero(room >= n)

    def _ngram_groups(self, n: int, which: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(start, document, group, characters) of the n-grams that occur more than once in their document
        (groups numbered by first appearance), and of the first n-gram of every document as group -1."""
        grams = self._ngrams(n)
        starts = self._starts(n)
        keys, docs = grams[which][starts], self.word_doc[starts]
        maybe = np.flatnonzero(_maybe_repeated(keys, docs))
        group, _ = _firsts(keys[maybe], docs[maybe])
        repeats = np.bincount(group)[group] > 1 if len(group) else group.astype(bool)
        picked = np.full(len(starts), -2)
        if len(docs):
            picked[np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])] = -1
        picked[maybe[repeats]] = group[repeats]
        keep = picked > -2
        start = starts[keep]
        return start, docs[keep], picked[keep], grams[2][start]

    def top_ngram(self, n: int) -> np.ndarray:
        """Characters of the most frequent n-gram times its count / characters (NaN: fewer than n words)."""
        _, doc, group, chars = self._ngram_groups(n, 0)
        top = np.full(self.n, np.nan)
        top[doc] = chars + n - 1  # all n-grams distinct: the first one, once
        repeated = group >= 0
        group, doc, chars = group[repeated], doc[repeated], chars[repeated]
        count = np.bincount(group)[group] if len(group) else group
        first = _first_of(group)
        order = np.lexsort((group[first], -count[first], doc[first]))  # per document: highest count, first seen
        best = order[np.r_[True, doc[first][order][1:] != doc[first][order][:-1]]] if len(order) else order
        top[doc[first][best]] = (chars[first][best] + n - 1) * count[first][best]
        return top / self.chars

    def duplicate_ngram(self, n: int) -> np.ndarray:
        """Characters of the repeated n-grams met by DataTrove's scan (which skips n words after each) / characters."""
        start, doc, group, chars = self._ngram_groups(n, 1)
        keep = group >= 0
        start, doc, group, chars = start[keep], doc[keep], group[keep], chars[keep]
        hit = ~_first_of(group)
        # where no repeated n-gram starts within n words after a later occurrence, nothing is skipped: every later
        # occurrence is a hit; other documents are scanned as DataTrove does
        crowded = np.zeros(self.n, bool)
        close = hit[:-1] & (doc[1:] == doc[:-1]) & (start[1:] < start[:-1] + n)
        crowded[doc[:-1][close]] = True
        repeated = np.bincount(doc, chars * hit, self.n) * ~crowded
        scan = crowded[doc]
        at, seen, after = -1, set(), 0
        for p, g, d, size in zip(start[scan].tolist(), group[scan].tolist(), doc[scan].tolist(),
                                 chars[scan].tolist(), strict=True):
            if d != at:
                at, seen, after = d, set(), 0
            if p < after:  # skipped
                continue
            if g in seen:
                repeated[d] += size
                after = p + n
            else:
                seen.add(g)
        return _ratio(repeated, self.chars)


def _first_of(group: np.ndarray) -> np.ndarray:
    """Mask of the first element of each group (in array order)."""
    first = np.zeros(len(group), bool)
    if len(group):
        _, index = np.unique(group, return_index=True)
        first[index] = True
    return first


class Rule(NamedTuple):
    """One DataTrove check: `reason` when `stat` is below (`min`) or above (`max`) the bound in `param` (the
    name of the `heuristics` stage parameter that holds it)."""

    reason: str
    param: str
    bound: str
    stat: Callable[[GopherStats], np.ndarray]


RULES: tuple[Rule, ...] = (  # GopherRepetitionFilter, then GopherQualityFilter
    Rule("dup_para_frac", "max_duplicate_paragraph_fraction", "max", lambda s: s.paragraphs.duplicate_fraction),
    Rule("dup_para_char_frac", "max_duplicate_paragraph_char_fraction", "max", lambda s: s.paragraphs.duplicate_chars),
    Rule("dup_line_frac", "max_duplicate_line_fraction", "max", lambda s: s.repeated_lines.duplicate_fraction),
    Rule("dup_line_char_frac", "max_duplicate_line_char_fraction", "max", lambda s: s.repeated_lines.duplicate_chars),
    *(Rule(f"top_{n}_gram", f"max_top_{n}gram_char_fraction", "max", lambda s, n=n: s.top_ngram(n)) for n in (2, 3, 4)),
    *(Rule(f"duplicated_{n}_n_grams", f"max_duplicate_{n}gram_char_fraction", "max",
           lambda s, n=n: s.duplicate_ngram(n)) for n in range(5, 11)),
    Rule("gopher_short_doc", "min_words", "min", lambda s: s.non_symbol_words),
    Rule("gopher_long_doc", "max_words", "max", lambda s: s.non_symbol_words),
    Rule("gopher_below_avg_threshold", "min_mean_word_length", "min", lambda s: s.mean_word_length),
    Rule("gopher_above_avg_threshold", "max_mean_word_length", "max", lambda s: s.mean_word_length),
    Rule("gopher_too_many_hashes", "max_symbol_word_ratio", "max", lambda s: s.hash_ratio),
    Rule("gopher_too_many_ellipsis", "max_symbol_word_ratio", "max", lambda s: s.ellipsis_ratio),
    Rule("gopher_too_many_bullets", "max_bullet_line_fraction", "max", lambda s: s.bullet_fraction),
    Rule("gopher_too_many_end_ellipsis", "max_ellipsis_line_fraction", "max", lambda s: s.end_ellipsis_fraction),
    Rule("gopher_below_alpha_threshold", "min_alpha_word_fraction", "min", lambda s: s.alpha_fraction),
    Rule("gopher_enough_stop_words", "min_stop_words", "min", lambda s: s.stop_words),
)
EMPTY = "empty"  # GopherRepetitionFilter's reason for an empty text, before every rule
