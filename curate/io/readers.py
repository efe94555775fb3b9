"""Readers: one input file -> chunks of Arrow rows plus the records that could not be read.

Fast paths use Arrow's C++ readers on large blocks (JSON Lines and JSON arrays: `curate.io.json_lines`; which
reader reads a file: `curate.io.formats`). Every chunk is cleaned the same way (`clean_columns`): repeated column
names get `_1`, `_2`, ...; view, large and dictionary-encoded columns become plain ones; rows whose strings are
not valid UTF-8 are rejected as `undecodable_bytes`. Parquet files are read row group by row group, so a broken
group costs only its own rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from curate.io.decompress import DecompressedStream
from curate.io.sources import InputUnit

# source column -> (contract field, the Python type(s) its raw value must have)
TypedFields = dict[str, tuple[str, type | tuple[type, ...]]]
BLOCK_BYTES = 8 << 20
MAX_LINE_BYTES = 64 << 20  # a longer record (a line of JSON Lines or CSV) is rejected, never held whole
log = logging.getLogger("curate")


@dataclass
class BadRecord:
    reason: str
    row: int | None  # 0-based record index in the file (None where the reader cannot tell)
    line: int | None  # 1-based line number, where the format has lines
    raw: str


@dataclass
class Chunk:
    table: pa.Table
    row: np.ndarray  # record index in the file of each table row
    line: np.ndarray | None = None  # line number of each table row (JSON Lines)
    bad: list[BadRecord] = field(default_factory=list)


def records_to_table(records: list[dict]) -> pa.Table:
    """Python records -> table. A column whose values mix types keeps non-strings as JSON text."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    columns = {}
    for name in names:
        values = [r.get(name) for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns[name] = pa.array(
                [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values],
                pa.string())
    if not columns:  # records without fields ({}): rows with no columns, rejected later for their missing text
        return pa.Table.from_struct_array(pa.array([{}] * len(records), pa.struct([])))
    return pa.table(columns)


def decode_utf8(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Binary -> string. Returns the strings (null where undecodable) and a mask of undecodable rows."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    try:
        return pc.cast(column, pa.string()), np.zeros(len(column), bool)
    except pa.ArrowInvalid:
        out, bad = [], np.zeros(len(column), bool)
        for i, value in enumerate(column.to_pylist()):
            try:
                out.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
                bad[i] = True
        return pa.array(out, pa.string()), bad


def open_bytes(unit: InputUnit) -> Any:
    """The file's bytes as a stream; a compressed file's damage is on the stream's `damage` at its end."""
    if unit.compression:
        return DecompressedStream(unit.path, unit.compression)
    return pa.input_stream(unit.path)


def damage_record(unit: InputUnit, stream: Any, row: int, line: int | None) -> list[BadRecord]:
    """The rejected entry for a cut or corrupt compressed file (read to its end), if it was damaged."""
    damage = getattr(stream, "damage", None)
    if damage is None:
        return []
    log.warning("%s", damage.describe(unit.path))
    return [BadRecord(damage.reason, row, line, damage.describe(unit.path))]


def wrong_type(record: dict, typed: TypedFields) -> str | None:
    """The contract name of the first mapped field whose value has the wrong type, if any."""
    return next((name for column, (name, kind) in typed.items()
                 if record.get(column) is not None and not isinstance(record[column], kind)), None)


# ---------------------------------------------------------------- other formats


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A view, large or dictionary-encoded column as its plain type (what every later step reads)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _plain(pc.cast(column, kind.value_type))
    plain = {pa.string_view(): pa.string(), pa.large_string(): pa.string(), pa.binary_view(): pa.binary(),
             pa.large_binary(): pa.binary()}.get(kind)
    if plain is not None:
        try:
            return pc.cast(column, plain)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # over 2 GB in one chunk: keep the large type
            return pc.cast(column, pa.large_string()) if pa.types.is_string_view(kind) else column
    return column


def unique_names(names: list[str]) -> list[str]:
    """Column names with repeats made unique: `text`, `text_1`, `text_2`, ..."""
    out, seen = [], set()
    for name in names:
        unique, k = name, 0
        while unique in seen:
            k += 1
            unique = f"{name}_{k}"
        seen.add(unique)
        out.append(unique)
    return out


def _empty_struct_inside(kind: pa.DataType) -> bool:
    """Whether a type holds a struct without fields (JSON's `{}`), which Parquet cannot store."""
    if pa.types.is_struct(kind):
        return kind.num_fields == 0 or any(_empty_struct_inside(f.type) for f in kind)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _empty_struct_inside(kind.value_type)
    if pa.types.is_map(kind):
        return _empty_struct_inside(kind.key_type) or _empty_struct_inside(kind.item_type)
    return False


def as_json_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column's values as JSON text (nulls stay null)."""
    return pa.array([None if v is None else orjson.dumps(v).decode() for v in column.to_pylist()], pa.string())


def clean_columns(table: pa.Table, first_row: int) -> tuple[pa.Table, list[BadRecord], np.ndarray]:
    """Unique column names, plain column types, and rows with invalid UTF-8 rejected: (the table, the rejected
    records, the kept rows' positions in `table`)."""
    if not table.num_columns:  # records without fields ({}): rows with no columns, rejected later
        return table, [], np.arange(table.num_rows)
    table = pa.Table.from_arrays([as_json_text(c) if _empty_struct_inside(c.type) else _plain(c)
                                  for c in table.columns], names=unique_names(table.column_names))
    invalid = np.zeros(table.num_rows, bool)
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                invalid |= decode_utf8(pc.cast(column, pa.binary()))[1]
    keep = np.flatnonzero(~invalid)
    if not invalid.any():
        return table, [], keep
    bad = [BadRecord("undecodable_bytes", first_row + int(i), None, repr(_raw_row(table, int(i)))[:1000])
           for i in np.flatnonzero(invalid)]
    return table.take(pa.array(keep)), bad, keep


def _raw_row(table: pa.Table, i: int) -> dict[str, Any]:
    row = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        value = column[i]
        row[name] = pc.cast(value, pa.binary()).as_py() if pa.types.is_string(column.type) else value.as_py()
    return row


def _rebatched(batches: Iterator[pa.RecordBatch], batch_rows: int) -> Iterator[Chunk]:
    """Group small record batches (Hugging Face writes 1,000 rows each) into chunks of `batch_rows`."""
    pending, pending_rows, row = [], 0, 0

    def flush() -> Chunk:
        table, bad, kept = clean_columns(pa.Table.from_batches(pending), row)
        return Chunk(table, row + kept.astype(np.int64), bad=bad)

    for batch in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= batch_rows:
            chunk = flush()
            row += pending_rows
            pending, pending_rows = [], 0
            yield chunk
    if pending:
        yield flush()


def read_parquet(unit: InputUnit, batch_rows: int) -> Iterator[Chunk]:
    """Row group by row group: a group that cannot be read is one rejected `unreadable_row_group` entry (with its
    rows' positions and count), and the groups after it are still read."""
    file = pq.ParquetFile(unit.path)
    row = 0
    for group in range(file.num_row_groups):
        rows = file.metadata.row_group(group).num_rows
        try:
            for chunk in _rebatched(file.iter_batches(batch_size=batch_rows, row_groups=[group]), batch_rows):
                chunk.row += row
                for record in chunk.bad:
                    record.row = None if record.row is None else record.row + row
                yield chunk
        except (pa.ArrowInvalid, OSError) as error:
            message = f"{unit.path}: row group {group} (rows {row:,} to {row + rows:,}) cannot be read: {error}"
            log.warning("%s", message)
            yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=[BadRecord("unreadable_row_group", row, None,
                                                                                message)])
        row += rows


def read_arrow(unit: InputUnit, batch_rows: int) -> Iterator[Chunk]:
    """Arrow IPC, file or stream format (Hugging Face `save_to_disk` writes streams)."""
    source = pa.memory_map(unit.path)
    try:
        reader = pa.ipc.open_file(source)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        batches = iter(pa.ipc.open_stream(pa.memory_map(unit.path)))
    yield from _rebatched(batches, batch_rows)


def read_csv(unit: InputUnit) -> Iterator[Chunk]:
    """CSV/TSV: every column read as text; rows with the wrong number of fields or bad bytes are rejected. The
    header is decoded by curate (undecodable bytes shown as U+FFFD, repeated names made unique), and lines of up
    to `MAX_LINE_BYTES` are read whole."""
    bad: list[BadRecord] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        bad.append(BadRecord("malformed_csv_row", None, row.number, row.text))
        return "skip"

    streams: list[Any] = []

    def open_reader(read: pcsv.ReadOptions, types: dict[str, pa.DataType] | None) -> pcsv.CSVStreamingReader:
        streams.append(open_bytes(unit))
        return pcsv.open_csv(
            pa.PythonFile(streams[-1], mode="r") if unit.compression else streams[-1], read_options=read,
            parse_options=pcsv.ParseOptions(delimiter=unit.delimiter, newlines_in_values=True,
                                            invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )

    try:  # the header as a row of bytes: its names are decoded here, not by Arrow (which fails on bad bytes)
        probe = open_reader(pcsv.ReadOptions(block_size=MAX_LINE_BYTES, autogenerate_column_names=True), None)
        width = len(probe.schema)
        probe = open_reader(pcsv.ReadOptions(block_size=MAX_LINE_BYTES, autogenerate_column_names=True),
                            {f"f{i}": pa.binary() for i in range(width)})
        header = probe.read_next_batch().slice(0, 1).to_pylist()[0]
    except (pa.ArrowInvalid, StopIteration):  # an empty file (or one cut before its header's end)
        damaged = damage_record(unit, streams[-1], 0, None) if unit.compression else []
        if damaged:
            yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=damaged)
        return
    decoded = [(v or b"").decode("utf-8", "replace") for v in header.values()]
    if any("\ufffd" in name for name in decoded):
        log.warning("%s: its header is not UTF-8; undecodable bytes in column names read as U+FFFD: %s", unit.path,
                    decoded)
    names = unique_names(decoded)
    read = pcsv.ReadOptions(block_size=MAX_LINE_BYTES, column_names=names, skip_rows=1)
    bad.clear()
    reader = open_reader(read, {n: pa.binary() for n in names})
    row = 0
    for batch in reader:
        table = pa.Table.from_batches([batch])
        undecodable = np.zeros(table.num_rows, bool)
        columns = []
        for column in table.columns:
            text, mask = decode_utf8(column)
            columns.append(text)
            undecodable |= mask
        table = pa.Table.from_arrays(columns, names=names)
        rows = np.arange(row, row + table.num_rows, dtype=np.int64)
        chunk_bad, bad[:] = list(bad), []
        for i in np.flatnonzero(undecodable).tolist():
            raw = unit.delimiter.join("" if v is None else v.decode("utf-8", "replace")
                                      for v in batch.slice(i, 1).to_pylist()[0].values())
            chunk_bad.append(BadRecord("undecodable_bytes", int(rows[i]), None, raw))
        if undecodable.any():
            table, rows = table.filter(pa.array(~undecodable)), rows[~undecodable]
        row += batch.num_rows
        yield Chunk(table, rows, bad=chunk_bad)
    bad += damage_record(unit, streams[-1], row, None)
    if bad:
        yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=list(bad))


def unreadable_after(unit: InputUnit, chunks: Callable[[], Iterator[Chunk]]) -> Iterator[Chunk]:
    """A binary file whose footer or pages are broken: the rows read before the break are kept, and the break is
    one rejected `unreadable_file` entry naming the file (bad data: never retried as if the disk had failed)."""
    row = 0
    try:
        for chunk in chunks():
            row += chunk.table.num_rows + len(chunk.bad)
            yield chunk
    except (FileNotFoundError, PermissionError):
        raise
    except (pa.ArrowInvalid, OSError) as error:
        message = f"{unit.path} cannot be read past record {row}: {error}"
        log.warning("%s", message)
        yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=[BadRecord("unreadable_file", row, None, message)])

