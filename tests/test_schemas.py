"""Column types across shards: unification, the cast to a schema, and what readers widen themselves."""

from __future__ import annotations

import pyarrow as pa

from curate.schemas import conform, unify_schemas, widens_to


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


def test_widens_to_accepts_only_what_readers_cast_themselves():
    struct = pa.struct([("a", pa.int64()), ("b", pa.string())])
    assert widens_to(pa.null(), pa.string()) and widens_to(pa.int32(), pa.int64())
    assert widens_to(pa.float32(), pa.float64()) and widens_to(pa.struct([("b", pa.string())]), struct)
    assert widens_to(pa.list_(pa.int32()), pa.list_(pa.int64()))
    assert not widens_to(pa.int64(), pa.float64())  # polars' scan refuses it
    assert not widens_to(pa.int64(), pa.string()) and not widens_to(struct, pa.string())
    assert not widens_to(pa.int64(), pa.int32()) and not widens_to(pa.uint32(), pa.int64())
    assert not widens_to(pa.struct([("c", pa.int64())]), struct)
