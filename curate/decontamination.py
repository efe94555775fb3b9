"""Benchmark decontamination (docs/methods.md §14): word n-grams of evaluation items found in pool texts.

- `normalize_text`: NFKC, casefold, punctuation (and whitespace) to one space; numbers and diacritics optional. The
  index and the scan use this one function, so they can never disagree on what a word is.
- `fold_texts` + `ngram_keys`: 64-bit keys of every window of L words in a batch of texts, vectorised: ASCII
  texts are folded by one byte-table lookup over the batch; a polynomial prefix hash over the UTF-8 bytes gives
  each word's hash in O(1), and a second one over the words each window's, so a window costs a few array
  operations whatever L is. Equal windows have equal keys; a key found in the index counts only when a second,
  independent hash of the window's words (`check_hash`) matches too.
- `EvalIndex`: the keys and checks of evaluation items (n-grams of questions, answers and question→answer
  straddles; items of `min_item_words` to n−1 words whole), stored as a Parquet table, never pickled.
- `scan`: per row and column, the hits with the matched n-gram and its span in the original string.
- `cut_fragments`: NeMo's cut rule on original offsets (margin, sentence boundaries, min_chars, max_splits).
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

FIELDS = ("question", "answer", "overlap")
SHORT_ITEM = "short_item"
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
WORD = re.compile(r"\S+")  # the original's words: maximal runs without white space (str.split's white space)
_MULT = 0x100000001B3  # odd, so invertible modulo 2**64
_MULT_INV = pow(_MULT, -1, 2**64)
FILTER_BITS = 24  # the index's bitmap of key prefixes: 16 MB, nearly empty for up to millions of keys
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


# ---------------------------------------------------------------- keys


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


# ---------------------------------------------------------------- the index


@dataclass
class IndexReport:
    """Per evaluation set: items, keys indexed, items too short to index."""

    sets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"sets": self.sets}


def check_hash(ngram: str) -> int:
    """A second, independent hash of an n-gram's words: a window whose key and check both match an entry is that
    n-gram (a false match needs two 64-bit hashes to collide at once), so the index need not keep the text."""
    return xxhash.xxh3_64_intdigest(ngram.encode("utf-8"))


class EvalIndex:
    """Keys of evaluation items, each with the check hash of its n-gram and the (set, item, field) it comes from.

    A key may come from several items (two questions sharing a 13-gram): `entry_records(key)` gives them all.
    """

    COLUMNS = ("key", "check", "set", "item", "field", "words")

    def __init__(self, table: pa.Table, n: int, norm: Normalization, report: dict[str, Any] | None = None):
        table = table.sort_by("key") if table.num_rows else table
        self.table = table
        self.n = n
        self.norm = norm
        self.report = report or {}
        self.keys = table.column("key").to_numpy() if table.num_rows else np.zeros(0, np.uint64)
        self.checks = table.column("check").to_numpy() if table.num_rows else np.zeros(0, np.uint64)
        self.lengths = sorted(set(pc.unique(table.column("words")).to_pylist())) if table.num_rows else [n]
        self._bitmap = np.zeros(1 << FILTER_BITS, bool)
        self._bitmap[(self.keys >> np.uint64(64 - FILTER_BITS)).astype(np.int64)] = True
        self._entries: dict[int, list[dict[str, Any]]] = {}

    @classmethod
    def build(cls, sets: dict[str, pa.Table], n: int = 13, min_item_words: int = 8,
              fields: Sequence[str] = FIELDS, norm: Normalization = Normalization()) -> EvalIndex:
        """Index evaluation sets: per set a table with `item` (an id), `question` and `answer` (either may be null)."""
        parts, report = [], {}
        for name, items in sets.items():
            entries, too_short = _index_set(items, n, min_item_words, fields, norm)
            report[name] = {"items": items.num_rows, "keys": entries.num_rows, "too_short": len(too_short),
                            "too_short_items": too_short[:100]}
            parts.append(entries.append_column("set", pa.array([name] * entries.num_rows, pa.string())))
        schema = pa.schema([("key", pa.uint64()), ("check", pa.uint64()), ("set", pa.string()),
                            ("item", pa.string()), ("field", pa.string()), ("words", pa.int32())])
        table = pa.concat_tables([p.select(schema.names).cast(schema) for p in parts]) if parts else \
            schema.empty_table()
        return cls(_unique_entries(table), n, norm, {"n": n, "min_item_words": min_item_words, "sets": report})

    def save(self, path: Path) -> None:
        meta = {b"n": str(self.n).encode(), b"norm": repr((self.norm.numbers, self.norm.diacritics,
                                                            self.norm.symbols)).encode()}
        pq.write_table(self.table.replace_schema_metadata(meta), path)

    @classmethod
    def load(cls, path: Path, report: dict[str, Any] | None = None) -> EvalIndex:
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        numbers, diacritics, symbols = (part.strip() == "True" for part in meta[b"norm"].decode()[1:-1].split(","))
        return cls(table.replace_schema_metadata(None), int(meta[b"n"]), Normalization(numbers, diacritics, symbols),
                   report)

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key is in the index: a bitmap of the keys' top bits rules out nearly every window at the
        cost of one lookup, and only the rest are searched for."""
        found = np.zeros(len(keys), bool)
        if not len(self.keys):
            return found
        maybe = np.flatnonzero(self._bitmap[(keys >> np.uint64(64 - FILTER_BITS)).astype(np.int64)])
        at = np.minimum(np.searchsorted(self.keys, keys[maybe]), len(self.keys) - 1)
        found[maybe] = self.keys[at] == keys[maybe]
        return found

    def span(self, key: int) -> tuple[int, int]:
        """The rows `[lo, hi)` of the index table that hold `key`."""
        lows, highs = self.spans(np.array([key], np.uint64))
        return int(lows[0]), int(highs[0])

    def spans(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per key, the rows `[lo, hi)` of the index table that hold it."""
        return np.searchsorted(self.keys, keys, side="left"), np.searchsorted(self.keys, keys, side="right")

    def holds(self, lo: int, hi: int, ngram: str) -> bool:
        """Whether the entries `[lo, hi)` of a found key are this n-gram (its check hash is among theirs)."""
        return check_hash(ngram) in self.checks[lo:hi]

    def entry_records(self, key: int) -> list[dict[str, Any]]:
        """The (set, item, field) entries of a key, as dicts."""
        if key not in self._entries:
            lo, hi = self.span(key)
            self._entries[key] = self.table.slice(lo, hi - lo).select(["set", "item", "field"]).to_pylist()
        return self._entries[key]


def _unique_entries(table: pa.Table) -> pa.Table:
    """One entry per (key, set, item, field): an item that repeats an n-gram lists it once."""
    if not table.num_rows:
        return table
    return table.group_by(["key", "set", "item", "field"], use_threads=False).aggregate(
        [("check", "first"), ("words", "first")]).rename_columns(["key", "set", "item", "field", "check", "words"])


FIELD_CODES = ("question", "answer", SHORT_ITEM, "overlap")


def _index_set(items: pa.Table, n: int, min_item_words: int, fields: Sequence[str],
               norm: Normalization) -> tuple[pa.Table, list[str]]:
    """The entries of one set (key, check, item, field, words) and the ids of its items too short to index."""
    ids = [str(i) for i in items.column("item").to_pylist()]
    question = items.column("question").to_pylist() if "question" in items.column_names else [None] * len(ids)
    answer = items.column("answer").to_pylist() if "answer" in items.column_names else [None] * len(ids)
    texts: list[str] = []
    owners: list[tuple[int, int, int, int]] = []  # item, field code, window length, question words (overlap)
    too_short = []
    for i, (q, a) in enumerate(zip(question, answer, strict=True)):
        nq = normalize_text(str(q), norm) if q not in (None, "") else ""
        na = normalize_text(str(a), norm) if a not in (None, "") else ""
        indexed = False
        for name, value in (("question", nq), ("answer", na)):
            words = len(value.split())
            if name not in fields or not words:
                continue
            if words >= min_item_words:
                texts.append(value)
                field = FIELD_CODES.index(name if words >= n else SHORT_ITEM)
                owners.append((i, field, min(words, n), 0))
                indexed = True
        if "overlap" in fields and nq and na:
            texts.append(f"{nq} {na}")
            owners.append((i, FIELD_CODES.index("overlap"), n, len(nq.split())))
        if not indexed:
            too_short.append(ids[i])
    parts = []
    for length in sorted({o[2] for o in owners}):
        members = [t for t, o in enumerate(owners) if o[2] == length]
        member_texts = [texts[t] for t in members]
        w = ngram_keys(member_texts, [length])[length]
        item, field, question_words = (np.array([owners[t][k] for t in members], np.int64)[w.text] for k in (0, 1, 3))
        keep = ~((field == FIELD_CODES.index(SHORT_ITEM)) & (w.word != 0))  # a short item whole, never its parts
        straddles = (w.word < question_words) & (question_words < w.word + length)
        keep &= ~((field == FIELD_CODES.index("overlap")) & ~straddles)  # only windows across question→answer
        chosen = np.flatnonzero(keep)
        checks = [check_hash(window_text(member_texts[t], s, e)) for t, s, e in
                  zip(w.text[chosen].tolist(), w.start[chosen].tolist(), w.end[chosen].tolist(), strict=True)]
        parts.append(pa.table({
            "key": pa.array(w.keys[chosen], pa.uint64()), "check": pa.array(checks, pa.uint64()),
            "item": pa.array(ids, pa.string()).take(pa.array(item[chosen])),
            "field": pa.array(FIELD_CODES, pa.string()).take(pa.array(field[chosen])),
            "words": pa.array(np.full(len(chosen), length, np.int32))}))
    schema = pa.schema([("key", pa.uint64()), ("check", pa.uint64()), ("item", pa.string()), ("field", pa.string()),
                        ("words", pa.int32())])
    return (pa.concat_tables(parts) if parts else schema.empty_table()), too_short


# ---------------------------------------------------------------- scanning


HIT_TYPE = pa.struct([("column", pa.string()), ("key", pa.uint64()), ("ngram", pa.string()),
                      ("start", pa.int64()), ("end", pa.int64())])


def scan(values: Sequence[Any], column: str, index: EvalIndex) -> list[list[dict[str, Any]]]:
    """Per value (a string, or a chat's list of turns), the windows found in the index: column (`messages[i]` for
    a chat turn), key, normalised n-gram, and its span `[start, end)` in the original string."""
    texts, owners = [], []
    for row, value in enumerate(values):
        if isinstance(value, str):
            texts.append(value)
            owners.append((row, column))
        elif isinstance(value, list):
            for turn, message in enumerate(value):
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, str):
                    texts.append(content)
                    owners.append((row, f"{column}[{turn}]"))
    hits: list[list[dict[str, Any]]] = [[] for _ in values]
    if not texts or not len(index):
        return hits
    folded = fold_texts(texts, index.norm)
    spans: dict[int, tuple[list[tuple[str, int, int]], bool]] = {}  # per text with a hit: its words' spans
    for windows in ngram_keys(folded, index.lengths).values():
        found = np.flatnonzero(index.find(windows.keys))
        lows, highs = index.spans(windows.keys[found])
        for w, lo, hi in zip(found.tolist(), lows.tolist(), highs.tolist(), strict=True):
            t = int(windows.text[w])
            ngram = window_text(folded[t].as_py(), int(windows.start[w]), int(windows.end[w]))
            key = int(windows.keys[w])
            if not index.holds(lo, hi, ngram):
                continue  # a collision of keys, not a match
            if t not in spans:
                words = words_with_spans(texts[t], index.norm)
                spans[t] = (words, [w for w, _, _ in words] == folded[t].as_py().split())
            start, end = _original_span(*spans[t], int(windows.word[w]), ngram)
            row, where = owners[t]
            hits[row].append({"column": where, "key": key, "ngram": ngram, "start": start, "end": end})
    return hits


def _original_span(spans: list[tuple[str, int, int]], aligned: bool, word: int,
                   ngram: str) -> tuple[int | None, int | None]:
    """The span in the original text of the window `ngram` that starts at normalised word `word`; where folding
    word by word gave other words than folding the whole text (a rare NFKC case), the n-gram is looked for in the
    word-by-word form, and has no span when it is not there."""
    wanted = ngram.split()
    if not aligned:
        joined = [w for w, _, _ in spans]
        word = next((i for i in range(len(joined) - len(wanted) + 1) if joined[i:i + len(wanted)] == wanted), -1)
        if word < 0:
            return None, None
    return spans[word][1], spans[word + len(wanted) - 1][2]


# ---------------------------------------------------------------- cutting


def cut_fragments(text: str, spans: Sequence[tuple[int, int]], margin: int = 200, min_chars: int = 200,
                  max_splits: int = 10, boundaries: str = ".!?") -> list[str] | None:
    """NeMo's cut (§14.2) on the original string: around each match (left to right), text within `margin`
    characters, extended to the next sentence boundary on each side, is removed; the pieces left that are longer
    than `min_chars` are kept. None when no piece is left or more than `max_splits` are."""
    fragments = []
    cursor = 0
    for start, end in sorted(spans):
        if start < cursor:
            continue  # inside what an earlier match removed
        p = start - margin
        while p > cursor and text[p] not in boundaries:
            p -= 1
        if p > cursor:
            fragments.append(text[cursor:p + 1])
        q = end + margin
        while q < len(text) and text[q] not in boundaries:
            q += 1
        cursor = q + 1
    if cursor < len(text):
        fragments.append(text[cursor:])
    kept = [f for f in fragments if len(f) > min_chars]
    return kept if 0 < len(kept) <= max_splits else None
