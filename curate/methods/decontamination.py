"""Benchmark decontamination (docs/methods.md §14): word n-grams of evaluation items found in pool texts.

- Words and their keys: `curate.methods.text_windows` (one normalization for the index and the scan; a key found
  in the index counts only when a second, independent hash of the window's words, `check_hash`, matches too).
- `EvalIndex`: the keys and checks of evaluation items (n-grams of questions, answers and question→answer
  straddles; items of `min_item_words` to n−1 words whole), stored as a Parquet table, never pickled.
- `scan`: per row and column, the hits with the matched n-gram and its span in the original string.
- `cut_fragments`: NeMo's cut rule on original offsets (margin, sentence boundaries, min_chars, max_splits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from curate.methods.text_windows import (
    Normalization,
    fold_texts,
    ngram_keys,
    normalize_text,
    window_text,
    words_with_spans,
)

FIELDS = ("question", "answer", "overlap")
SHORT_ITEM = "short_item"
FILTER_BITS = 24  # the index's bitmap of key prefixes: 16 MB, nearly empty for up to millions of keys


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
