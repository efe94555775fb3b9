"""Evaluation items as `decontaminate` and the closed loop's leak check index them: a table of `item` (an id),
`question` and `answer` (either may be null), from benchmark files or from a run's sample (held-out, target)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.data.errors import CurateError
from curate.methods.text import hash_strings

ITEMS = pa.schema([("item", pa.string()), ("question", pa.string()), ("answer", pa.string())])


def _text(values: list[Any]) -> pa.Array:
    """Values as strings (a list of choices, a number): what their words are."""
    return pa.array([None if v is None else v if isinstance(v, str) else str(v) for v in values], pa.string())


def items_from_rows(table: pa.Table) -> pa.Table:
    """Items of curate rows: the question is the `prompt` (or the `text` of a row without one), the answer the
    `response` (or `answer`)."""
    def column(*names: str) -> pa.ChunkedArray | None:
        present = [table.column(n) for n in names if n in table.column_names]
        if not present:
            return None
        return pc.coalesce(*present) if len(present) > 1 else present[0]

    n = table.num_rows
    question = column("prompt", "text")
    answer = column("response", "answer")
    return pa.table({"item": pc.cast(table.column("id"), pa.string()),
                     "question": pa.nulls(n, pa.string()) if question is None else pc.cast(question, pa.string()),
                     "answer": pa.nulls(n, pa.string()) if answer is None else pc.cast(answer, pa.string())},
                    schema=ITEMS)


def sample_items(dataset: Any) -> pa.Table:
    """A run sample's (`curate.data.dataset.Dataset`) rows as items."""
    columns = [c for c in ("id", "prompt", "text", "response", "answer") if c in dataset.schema.names]
    return items_from_rows(dataset.to_table(columns=columns))


def read_eval_set(spec: Any) -> pa.Table:
    """The items of an `EvalSet` (files read as they are, fields named by `spec.fields`); the item id is the `id`
    field, else the row number."""
    from curate.data.errors import ConfigError
    from curate.io.formats import read_unit
    from curate.io.sources import units_for
    from curate.io.specs import InputSpec

    input_spec = InputSpec(path=spec.path, format=spec.format, split=spec.split)
    try:
        units = units_for(input_spec, f"against.{spec.name}")
    except ConfigError as error:
        raise CurateError(str(error)) from None
    parts, rows = [], 0
    for unit in units:
        for chunk in read_unit(unit, {}):
            table = chunk.table
            if not table.num_rows:
                continue
            missing = [f"{key}: {name!r}" for key, name in spec.fields.items() if name not in table.column_names]
            if missing:
                raise CurateError(f"against.{spec.name}.fields: {unit.path} has no column for {', '.join(missing)}; "
                                  f"it has {table.column_names}")
            values = {key: table.column(name).to_pylist() for key, name in spec.fields.items()}
            none = [None] * table.num_rows
            ids = values.get("id") or [str(rows + i) for i in range(table.num_rows)]
            parts.append(pa.table({"item": _text(ids), "question": _text(values.get("question", none)),
                                   "answer": _text(values.get("answer", none))}, schema=ITEMS))
            rows += table.num_rows
    if not rows:
        raise CurateError(f"against.{spec.name}: {spec.path} holds no rows")
    return pa.concat_tables(parts)


REPEATED = ("text", "prompt")  # a row repeats a held-out row when one of these is the same string


def heldout_keys(held: Any) -> dict[str, np.ndarray]:
    """Hashes of the held-out rows' `text` and `prompt` values (what `repeats_heldout` compares)."""
    keys = {}
    for column in REPEATED:
        if column in held.schema.names:
            values = held.to_table(columns=[column]).column(column).combine_chunks()
            keys[column] = hash_strings(values.filter(pc.is_valid(values)))
    return keys


def repeats_heldout(table: pa.Table, keys: dict[str, np.ndarray]) -> np.ndarray:
    """Which rows have the same `text` or `prompt` as a held-out row."""
    overlap = np.zeros(table.num_rows, bool)
    for column, seen in keys.items():
        if column in table.column_names:
            mine = table.column(column).combine_chunks()
            present = pc.is_valid(mine).to_numpy(zero_copy_only=False)
            overlap |= present & np.isin(hash_strings(pc.fill_null(mine, "")), seen)
    return overlap
