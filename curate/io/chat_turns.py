"""Chat `messages` columns mapped with Arrow compute, not a loop per row.

When the column is typed `list<struct<role|from: string, content|value: string>>` (what JSON and Parquet readers
give for OpenAI- and ShareGPT-style chats; a struct with both names takes the first that is not null, as the loop
does), the turns are flattened once, each distinct role is normalised and named in Python (a handful of values),
and the rendered texts are joined per row with `binary_join`. The result is
the row loop's (`curate.io.mapping._messages`), value for value (tests/io/test_chat_turns.py); any other type
returns None and the loop runs. 21x the loop on 100k real chats (benchmarks/bench_tables.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Turns(NamedTuple):
    """Per row: the normalised messages, the texts, and which rows are missing, malformed or end without an
    assistant turn (rows that are not ok have null messages and texts)."""

    messages: pa.Array
    text: pa.Array
    prompt: pa.Array
    response: pa.Array
    missing: np.ndarray
    bad: np.ndarray
    no_answer: np.ndarray


def _keys(fields: dict[str, pa.DataType], names: tuple[str, str]) -> list[str] | None:
    """Which of a turn field's two names the struct has (None: neither, or one that holds no strings)."""
    present = [name for name in names if name in fields]
    if not present or not all(pa.types.is_string(fields[n]) or pa.types.is_null(fields[n]) for n in present):
        return None
    return present


def _turn_field(flat: pa.Array, keys: list[str]) -> pa.Array:
    """A turn's role (or content) under either name, the first that is not null, as the row loop takes it."""
    values = [pc.cast(pc.struct_field(flat, key), pa.string()) for key in keys]
    return values[0] if len(values) == 1 else pc.coalesce(*values)


def _per_distinct(values: pa.Array, fn: Callable[[str], str]) -> pa.Array:
    """`fn` applied to each distinct value only (roles: a few distinct strings over millions of turns)."""
    encoded = pc.dictionary_encode(values)
    mapped = pa.array([fn(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return mapped.take(encoded.indices)


def _lists(lengths: np.ndarray, values: pa.Array, valid: np.ndarray) -> pa.ListArray:
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~valid))


def vectorised_turns(column: pa.Array, aliases: dict[str, str], names: dict[str, str],
                     separator: str) -> Turns | None:
    """The turns of a typed chat column (see the module docstring), or None when its type needs the row loop."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) or not pa.types.is_struct(
            column.type.value_type):
        return None
    fields = {f.name: f.type for f in column.type.value_type}
    role_keys, content_keys = _keys(fields, ("role", "from")), _keys(fields, ("content", "value"))
    if role_keys is None or content_keys is None:
        return None
    n = len(column)
    missing = np.asarray(column.is_null().to_numpy(zero_copy_only=False), bool)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0).to_numpy(), np.int64)
    flat = column.flatten()  # the turns of the non-null rows, in order
    parent = np.repeat(np.arange(n), lengths)
    roles, contents = _turn_field(flat, role_keys), _turn_field(flat, content_keys)
    turn_ok = np.asarray(pc.and_(pc.and_(flat.is_valid(), roles.is_valid()), contents.is_valid())
                         .to_numpy(zero_copy_only=False), bool)
    bad = ~missing & ((lengths == 0) | (np.bincount(parent[~turn_ok], minlength=n) > 0))
    ok = ~missing & ~bad
    keep = ok[parent]  # the turns of good rows only
    roles, contents = roles.filter(pa.array(keep)), contents.filter(pa.array(keep))
    lengths = np.where(ok, lengths, 0)

    role = _per_distinct(roles, lambda r: aliases.get(r.lower(), r.lower()))
    shown = _per_distinct(role, lambda r: names.get(r, r.title()))
    lines = pc.binary_join_element_wise(shown, contents, ": ")
    text = pc.binary_join(_lists(lengths, lines, ok), separator)
    structs = pa.StructArray.from_arrays([role, contents], names=["role", "content"])
    messages = _lists(lengths, structs, ok)

    ends = np.cumsum(lengths) - 1  # each good row's last turn
    last = np.where(ok, ends, 0)
    answered = ok & (np.asarray(role.take(pa.array(last)).to_numpy(zero_copy_only=False), object) == "assistant") \
        if len(role) else np.zeros(n, bool)
    no_answer = ok & ~answered
    starts = ends - lengths + 1
    response = pc.if_else(pa.array(answered), contents.take(pa.array(last)) if len(contents) else
                          pa.nulls(n, pa.string()), pa.scalar(None, pa.string()))
    not_last = np.ones(len(lines), bool)
    not_last[ends[ok]] = False  # the turns before each row's last one
    before = pc.binary_join(_lists(np.maximum(lengths - 1, 0), lines.filter(pa.array(not_last)), ok), separator)
    first = contents.take(pa.array(np.where(ok, starts, 0))) if len(contents) else pa.nulls(n, pa.string())
    prompt = pc.if_else(pa.array(answered & (lengths == 2)), first, pc.if_else(pa.array(answered), before,
                                                                                 pa.scalar(None, pa.string())))
    return Turns(messages, text, prompt, response, missing, bad, no_answer)
