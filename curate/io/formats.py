"""One input file, read by its format's reader into chunks of rows and the records that could not be read."""

from __future__ import annotations

from collections.abc import Iterator

from curate.io.json_lines import read_json, read_jsonl
from curate.io.readers import Chunk, TypedFields, read_arrow, read_csv, read_parquet, unreadable_after
from curate.io.sources import InputUnit


def read_unit(unit: InputUnit, typed: TypedFields, batch_rows: int = 65_536) -> Iterator[Chunk]:
    """All chunks of one input file. `typed`: source column -> (field, type) checked on raw records."""
    if unit.format == "jsonl":
        return read_jsonl(unit, typed)
    if unit.format == "json":
        return read_json(unit, typed)
    if unit.format == "parquet":
        return unreadable_after(unit, lambda: read_parquet(unit, batch_rows))
    if unit.format in ("arrow", "hf"):
        return unreadable_after(unit, lambda: read_arrow(unit, batch_rows))
    if unit.format == "csv":
        return unreadable_after(unit, lambda: read_csv(unit))
    raise ValueError(f"unknown format {unit.format!r}")
