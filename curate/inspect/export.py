"""Exporting a step's rows as files trainers read as they are.

Record shapes (`as_`): `messages` (chats: a list of `{role, content}`), `prompt-completion` (TRL's names for
instruction pairs; the prompt ends with the blank line curate puts before a response, so TRL, which tokenises
`prompt + completion`, trains on the tokens curate's own fine-tuning does), `text`. `auto` gives each row its
kind: chats as `messages`, instruction pairs as `prompt-completion`, the rest as `text`; a step with one kind of
row is one file, a mixed step one file per kind (`<label>.<kind>.jsonl`; `hf`: a `DatasetDict` with a split per
kind). Formats: `jsonl` (one JSON object per line), `parquet` (shards of the same records), `hf` (a `datasets`
`save_to_disk` folder: `load_from_disk(out)` loads it). Rows stream through in batches: nothing holds a whole
large step in memory, except `hf`, which `datasets` builds from Parquet files in a temporary folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.data.dataset import Dataset
from curate.data.errors import CurateError
from curate.io.mapping import PAIR_SEPARATOR

Shape = Literal["auto", "messages", "prompt-completion", "text"]
FORMATS = ("jsonl", "parquet", "hf")
KINDS = ("messages", "prompt-completion", "text")  # what a row is, in the order `auto` looks


def step_rows(run_dir: str | Path, label: str) -> Dataset:
    """The dataset holding a step's rows (an artifact step's: its input's)."""
    from curate.inspect.summary import run_steps

    steps = {s.label: s for s in run_steps(run_dir) if s.rows is not None}
    if label not in steps:
        raise CurateError(f"run {str(run_dir)!r} has no finished step {label!r}; steps with rows: "
                          f"{', '.join(steps) or '(none)'}")
    return Dataset.open(steps[label].rows)


def _present(table: pa.Table, column: str) -> np.ndarray:
    if column not in table.column_names:
        return np.zeros(table.num_rows, bool)
    values = table.column(column)
    valid = pc.is_valid(values)
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        valid = pc.and_(valid, pc.greater(pc.fill_null(pc.list_value_length(values), 0), 0))
    return pc.fill_null(valid, False).to_numpy(zero_copy_only=False).astype(bool)


def row_kinds(table: pa.Table) -> np.ndarray:
    """Per row its kind (an index into KINDS): a chat, an instruction pair (a response), or text."""
    kinds = np.full(table.num_rows, 2)
    kinds[_present(table, "response")] = 1
    kinds[_present(table, "messages")] = 0
    return kinds


def pick_shapes(dataset: Dataset, shape: Shape = "auto") -> list[str]:
    """The record shapes to write: with `auto`, the kinds of row the step has; a named shape needs its column
    (`messages`, `response`, `text`) on every row, else the error says on how many it is missing and names a few."""
    needed = {"auto": None, "messages": "messages", "prompt-completion": "response", "text": "text"}[shape]
    columns = [c for c in ("id", "messages", "response", "text") if c in dataset.schema.names]
    counts = np.zeros(len(KINDS), np.int64)
    missing, examples = 0, []
    for table in dataset.iter_batches(columns):
        counts += np.bincount(row_kinds(table), minlength=len(KINDS))
        if needed is not None:
            lacking = np.flatnonzero(~_present(table, needed))
            missing += len(lacking)
            if "id" in table.column_names:
                examples += [str(table.column("id")[int(i)]) for i in lacking[: 3 - len(examples)]]
    if needed is None:
        return [KINDS[k] for k in range(len(KINDS)) if counts[k]] or ["text"]
    total = int(counts.sum())
    if needed not in dataset.schema.names or missing:
        which = f" (ids {', '.join(examples)}, ...)" if examples else ""
        raise CurateError(f"--as {shape} needs a `{needed}` on every row; {missing or total:,} of {total:,} rows "
                          f"have none{which}. `--as auto` writes each kind of row in its own file; `--as text` "
                          "writes every row's text")
    return [shape]


def _records(table: pa.Table, shape: str) -> pa.Table:
    if shape == "messages":
        return pa.table({"messages": table.column("messages")})
    if shape == "prompt-completion":
        prompt = table.column("prompt") if "prompt" in table.column_names else pa.nulls(table.num_rows, pa.string())
        prompt = pc.fill_null(prompt, "")
        # curate.io.mapping.completion_prompt, vectorised: the blank line after a non-empty prompt
        with_separator = pc.binary_join_element_wise(prompt, pa.scalar(PAIR_SEPARATOR), "")
        prompt = pc.if_else(pc.equal(prompt, ""), prompt, with_separator)
        return pa.table({"prompt": prompt, "completion": table.column("response")})
    return pa.table({"text": table.column("text")})


def _shaped(table: pa.Table, shape: str, shapes: list[str]) -> pa.Table:
    """The records of `table`'s rows of kind `shape` (all its rows when it is the only shape written)."""
    if len(shapes) > 1:
        table = table.filter(pa.array(row_kinds(table) == KINDS.index(shape)))
    return _records(table, shape)


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
    """Write step `label` of a run to `out_dir`; returns (folder, record shape(s), rows)."""
    if fmt not in FORMATS:
        raise CurateError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    from curate.engine.runlock import run_lock

    with run_lock(run_dir, "curate export"):  # never a step that a run is rewriting
        return _export(run_dir, label, Path(out_dir), fmt, shape)


def _export(run_dir: str | Path, label: str, out: Path, fmt: str, shape: Shape) -> tuple[Path, str, int]:
    dataset = step_rows(run_dir, label)
    shapes = pick_shapes(dataset, shape)
    if fmt == "hf" and out.exists() and any(out.iterdir()):
        raise CurateError(f"--format hf writes a `datasets` folder: {str(out)!r} must be a new or empty folder "
                          "(curate never writes into a folder of other files)")
    out.mkdir(parents=True, exist_ok=True)
    name = (lambda kind: label) if len(shapes) == 1 else (lambda kind: f"{label}.{kind}")
    rows = 0
    if fmt == "jsonl":
        for kind in shapes:
            with (out / f"{name(kind)}.jsonl").open("wb") as f:
                for table in dataset.iter_batches():
                    records = _shaped(table, kind, shapes)
                    write_jsonl(records, f)
                    rows += records.num_rows
        return out, "+".join(shapes), rows
    if fmt == "parquet":
        return out, "+".join(shapes), _write_parquet(dataset, shapes, out, name)
    try:
        import datasets
    except ImportError:
        raise CurateError("--format hf needs the `datasets` package: pip install datasets") from None
    with tempfile.TemporaryDirectory(prefix="curate-export-") as tmp:
        rows = _write_parquet(dataset, shapes, Path(tmp), name)
        parts = {}
        for kind in shapes:
            files = sorted(str(p) for p in Path(tmp).glob(f"{name(kind)}-*.parquet"))
            parts[kind.replace("-", "_")] = datasets.Dataset.from_parquet(files, cache_dir=str(Path(tmp) / "cache"))
        built = next(iter(parts.values())) if len(parts) == 1 else datasets.DatasetDict(parts)
        built.save_to_disk(str(out))
    return out, "+".join(shapes), rows


def _write_parquet(dataset: Dataset, shapes: list[str], out: Path, name: object) -> int:
    """Records of each shape as `<name(shape)>-NNNNN.parquet`, a file per input shard that has such rows (a step
    with no rows at all: one empty file, with the columns)."""
    rows = 0
    for kind in shapes:
        written = 0
        for i, shard in enumerate(dataset.shard_names):
            records = _shaped(dataset.read_shard(shard), kind, shapes)
            if records.num_rows or (not written and i == len(dataset.shard_names) - 1):
                pq.write_table(records, out / f"{name(kind)}-{written:05d}.parquet",  # type: ignore[operator]
                               compression="zstd")
                written += 1
            rows += records.num_rows
    return rows
