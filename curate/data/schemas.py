"""Column types across shards: one schema for shards that inferred theirs apart (`unify_schemas`), and a table cast
to it (`conform`)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc


def unify_schemas(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for shards whose inferred types differ (JSON blocks infer types separately).

    Types that Arrow can promote (int -> double, null -> anything) are promoted; columns whose
    types conflict (a string in one shard, a number in another) become strings.
    """
    order: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for field in schema:
            order.setdefault(field.name, []).append(field.type)
    fields = []
    for name, types in order.items():
        try:
            merged = pa.unify_schemas([pa.schema([(name, t)]) for t in types], promote_options="permissive")
            fields.append(merged.field(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


def _cast_column(column: pa.ChunkedArray | pa.Array, target: pa.DataType) -> pa.ChunkedArray | pa.Array:
    if column.type == target:
        return column
    try:
        return pc.cast(column, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        if not pa.types.is_string(target):
            raise
        # Nested values have no Arrow cast to string: keep them readable as JSON.
        values = [None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
                  for v in column.to_pylist()]
        return pa.array(values, type=target)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder, cast and null-fill `table` so it has exactly `schema`'s columns (those present in it)."""
    if table.schema == schema:
        return table
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(_cast_column(table.column(field.name), field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
