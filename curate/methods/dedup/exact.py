"""Exact dedup: a 128-bit key per text with white space collapsed; the first occurrence is kept."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.methods.dedup.tokens import Tokens, sequence_keys, tokenize

KEY_TYPE = pa.binary(16)


def exact_keys(texts: pa.Array | pa.ChunkedArray | list[str | None] | Tokens) -> pa.Array:
    """128-bit key (binary(16)) of each text after collapsing white space and stripping (null = "")."""
    keys = sequence_keys(texts if isinstance(texts, Tokens) else tokenize(texts))
    return pa.FixedSizeBinaryArray.from_buffers(KEY_TYPE, len(keys), [None, pa.py_buffer(keys.tobytes())])


def key_matrix(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """binary(16) keys as an (n, 2) uint64 array."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks() if keys.num_chunks else pa.array([], KEY_TYPE)
    if len(keys) == 0:
        return np.zeros((0, 2), np.uint64)
    data = np.frombuffer(keys.buffers()[1], np.uint64, count=2 * (keys.offset + len(keys)))
    return data.reshape(-1, 2)[keys.offset:]


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """For each row of an (n, 2) uint64 key array, the index of the first row with the same key."""
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(len(keys)), keys[:, 1], keys[:, 0]))
    sorted_keys = keys[order]
    new = np.concatenate([[True], (sorted_keys[1:] != sorted_keys[:-1]).any(axis=1)])
    group = np.cumsum(new) - 1
    first = np.empty(len(keys), np.int64)
    first[order] = order[np.flatnonzero(new)][group]
    return first
