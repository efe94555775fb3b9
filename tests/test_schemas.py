"""Column types across shards: unification and the cast to a schema."""

from __future__ import annotations

import pyarrow as pa

from curate.data.schemas import conform, unify_schemas


def test_unify_promotes_or_falls_back_to_string():
    schema = unify_schemas([pa.schema([("n", pa.int64()), ("x", pa.null())]),
                            pa.schema([("n", pa.float64()), ("x", pa.string()), ("y", pa.int64())]),
                            pa.schema([("n", pa.string())])])
    assert schema.field("x").type == pa.string() and schema.field("y").type == pa.int64()
    assert schema.field("n").type == pa.string()
    table = conform(pa.table({"n": [1, 2], "z": [{"a": 1}, None]}), pa.schema([("n", pa.string()),
                                                                             ("z", pa.string()),
                                                                             ("y", pa.int64())]))
    assert table.to_pylist() == [{"n": "1", "z": '{"a": 1}', "y": None}, {"n": "2", "z": None, "y": None}]

