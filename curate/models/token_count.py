"""Counting training tokens per row: with a model's tokenizer (a local folder or hub id), or as white-space words.

For each row two counts: all tokens (of `text`) and supervised tokens (those a fine-tune puts loss on: the
`response` of instruction rows; every token of plain-text rows, which have no response).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

WORDS = "whitespace words"


def word_counts(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """White-space separated words per string (null: 0), as `len(s.split())` counts them, vectorised with Arrow
    (its kernel releases the GIL, so shards count in parallel; a numpy pass over the UTF-8 bytes was no faster)."""
    trimmed = pc.utf8_trim_whitespace(pc.fill_null(values, ""))
    lengths = pc.list_value_length(pc.utf8_split_whitespace(trimmed)).to_numpy(zero_copy_only=False)
    # "" splits into one empty word: a blank text has none
    return np.where(pc.equal(trimmed, "").to_numpy(zero_copy_only=False), 0, lengths).astype(np.int64)


class TokenCounter:
    """Tokens per text with `tokenizer` (a folder or hub id), or white-space words when it is None."""

    def __init__(self, tokenizer: str | None = None):
        self.name = tokenizer or WORDS
        self._tokenizer: Any = None
        self._lock = threading.Lock()  # HF fast tokenizers may reconfigure themselves per call
        if tokenizer is not None:
            from curate.models.locate import load_tokenizer

            self._tokenizer = load_tokenizer(tokenizer)  # counting only: long texts are not an error here

    def count(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if self._tokenizer is None:
            return word_counts(values)
        texts = pc.fill_null(values, "").to_pylist()
        with self._lock:
            ids = self._tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        return np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(texts))

    def count_rows(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(all tokens, supervised tokens) per row: `text`, and `response` where the row has one."""
        total = self.count(table.column("text"))
        if "response" not in table.column_names:
            return total, total.copy()
        response = table.column("response")
        supervised = self.count(response)
        has_response = pc.is_valid(response).to_numpy(zero_copy_only=False)
        return total, np.where(has_response, supervised, total)
