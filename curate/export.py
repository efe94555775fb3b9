"""Exporting a step's rows as files trainers read as they are.

Record shapes (`as_`): `messages` (chats: a list of `{role, content}`), `prompt-completion` (TRL's names for
instruction pairs), `text`; `auto` picks `messages` when every row has them, else `prompt-completion` when every
row has a response, else `text`. Formats: `jsonl` (one JSON object per line), `parquet` (shards of the same
records), `hf` (a `datasets` `save_to_disk` folder). Rows stream through in batches: nothing holds a whole
large step in memory, except `hf`, which `datasets` builds from the exported Parquet files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.dataset import Dataset
from curate.errors import CurateError

Shape = Literal["auto", "messages", "prompt-completion", "text"]
FORMATS = ("jsonl", "parquet", "hf")


def step_rows(run_dir: str | Path, label: str) -> Dataset:
    """The dataset holding a step's rows (an artifact step's: its input's)."""
    from curate.summary import run_steps

    steps = {s.label: s for s in run_steps(run_dir) if s.rows is not None}
    if label not in steps:
        raise CurateError(f"run {str(run_dir)!r} has no finished step {label!r}; steps with rows: "
                          f"{', '.join(steps) or '(none)'}")
    return Dataset.open(steps[label].rows)


def pick_shape(dataset: Dataset, shape: Shape = "auto") -> str:
    """The record shape for `dataset` (see the module docstring); errors name what is missing."""
    names = dataset.schema.names

    def complete(column: str) -> bool:
        return column in names and all(
            pc.all(pc.is_valid(t.column(column))).as_py() in (True, None)
            for t in dataset.iter_batches([column]))

    if shape == "auto":
        return "messages" if complete("messages") else "prompt-completion" if complete("response") else "text"
    needed = {"messages": "messages", "prompt-completion": "response", "text": "text"}[shape]
    if not complete(needed):
        raise CurateError(f"--as {shape} needs a `{needed}` on every row; the step's columns: {names}")
    return shape


def _records(table: pa.Table, shape: str) -> pa.Table:
    if shape == "messages":
        return pa.table({"messages": table.column("messages")})
    if shape == "prompt-completion":
        prompt = table.column("prompt") if "prompt" in table.column_names else pa.nulls(table.num_rows, pa.string())
        return pa.table({"prompt": pc.fill_null(prompt, ""), "completion": table.column("response")})
    return pa.table({"text": table.column("text")})


DOUBLE_DIGITS = 15  # a decimal of at most this many digits survives a float64 and back unchanged


def write_jsonl(records: pa.Table, sink: BinaryIO) -> None:
    """One JSON object per row, UTF-8 unescaped, nulls as null: polars' writer, ~10x a `json.dumps` loop
    (benchmarks/bench_tables.py). Decimals (SQL's `1.5`, `sum(...)` of a decimal) are written as JSON numbers, as
    DuckDB's own JSON writer does, when a double holds them exactly; wider ones stay strings, with no digit lost."""
    import polars as pl

    for i, field in enumerate(records.schema):
        if pa.types.is_decimal(field.type) and _fits_a_double(records.column(i)):
            records = records.set_column(i, field.name, pc.cast(records.column(i), pa.float64()))
    pl.from_arrow(records).write_ndjson(sink)


def _fits_a_double(column: pa.ChunkedArray) -> bool:
    """Whether every value has at most DOUBLE_DIGITS digits (the type's precision is often wider than the values:
    DuckDB types `sum` of a decimal DECIMAL(38, s))."""
    if column.type.precision <= DOUBLE_DIGITS:
        return True
    largest = pc.max(pc.abs(column)).as_py()  # a decimal.Decimal; None when all are null
    return largest is None or largest.scaleb(column.type.scale) < 10 ** DOUBLE_DIGITS


def export_step(run_dir: str | Path, label: str, out_dir: str | Path, fmt: str = "jsonl",
                shape: Shape = "auto") -> tuple[Path, str, int]:
    """Write step `label` of a run to `out_dir`; returns (folder, record shape, rows)."""
    if fmt not in FORMATS:
        raise CurateError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    dataset = step_rows(run_dir, label)
    shape = pick_shape(dataset, shape)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    if fmt == "jsonl":
        path = out / f"{label}.jsonl"
        with path.open("wb") as f:
            for table in dataset.iter_batches():
                write_jsonl(_records(table, shape), f)
                rows += table.num_rows
        return out, shape, rows
    parquet = out if fmt == "parquet" else out / "_parquet"
    parquet.mkdir(exist_ok=True)
    for i, name in enumerate(dataset.shard_names):
        table = _records(dataset.read_shard(name), shape)
        pq.write_table(table, parquet / f"{label}-{i:05d}.parquet", compression="zstd")
        rows += table.num_rows
    if fmt == "hf":
        try:
            import datasets
        except ImportError:
            raise CurateError("--format hf needs the `datasets` package: pip install datasets") from None
        files = sorted(str(p) for p in parquet.glob("*.parquet"))
        hf = datasets.Dataset.from_parquet(files, cache_dir=str(out / "_cache")) if files else \
            datasets.Dataset.from_dict({})
        hf.save_to_disk(str(out / label))
        shutil.rmtree(parquet, ignore_errors=True)
        shutil.rmtree(out / "_cache", ignore_errors=True)
        return out / label, shape, rows
    return out, shape, rows
