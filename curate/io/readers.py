"""Readers: one input file -> chunks of Arrow rows plus the records that could not be read.

Fast paths use Arrow's C++ readers on large blocks. When a JSON Lines block fails (a malformed line,
invalid UTF-8, a field whose type changes), only that block is re-read line by line, so each bad
record becomes a `BadRecord` with its line number and the rest of the block is kept.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from curate.io.decompress import DecompressedStream
from curate.io.sources import InputUnit

# source column -> (contract field, the Python type(s) its raw value must have)
TypedFields = dict[str, tuple[str, type | tuple[type, ...]]]
BLOCK_BYTES = 8 << 20
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


# ---------------------------------------------------------------- JSON Lines


def _line_layout(block: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets of all lines in `block`, and which of them hold more than white space."""
    arr = np.frombuffer(block, np.uint8)
    newlines = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(arr)]])
    if starts[-1] == len(arr):  # the block ends with a newline: no trailing partial line
        starts, ends = starts[:-1], ends[:-1]
    solid = ~np.isin(arr, (9, 10, 13, 32))
    counts = np.concatenate([[0], np.cumsum(solid, dtype=np.int64)])
    return starts, (counts[ends] - counts[starts]) > 0


def wrong_type(record: dict, typed: TypedFields) -> str | None:
    """The contract name of the first mapped field whose value has the wrong type, if any."""
    return next((name for column, (name, kind) in typed.items()
                 if record.get(column) is not None and not isinstance(record[column], kind)), None)


def _slow_jsonl(lines: list[bytes], numbers: np.ndarray, rows: np.ndarray,
                typed: TypedFields) -> tuple[pa.Table, np.ndarray, np.ndarray, list[BadRecord]]:
    records, keep_rows, keep_lines, bad = [], [], [], []
    for raw, line_no, row in zip(lines, numbers.tolist(), rows.tolist(), strict=True):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(BadRecord("undecodable_bytes", row, line_no, raw.decode("utf-8", "replace")))
            continue
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError:
            bad.append(BadRecord("malformed_json", row, line_no, text))
            continue
        if not isinstance(record, dict):
            bad.append(BadRecord("not_an_object", row, line_no, text))
            continue
        wrong = wrong_type(record, typed)
        if wrong:
            bad.append(BadRecord(f"wrong_type:{wrong}", row, line_no, text))
            continue
        records.append(record)
        keep_rows.append(row)
        keep_lines.append(line_no)
    return (records_to_table(records), np.array(keep_rows, np.int64),
            np.array(keep_lines, np.int64), bad)


def _jsonl_block(block: bytes, first_line: int, first_row: int, typed: TypedFields) -> Chunk:
    starts, solid = _line_layout(block)
    numbers = first_line + np.flatnonzero(solid)
    rows = first_row + np.arange(int(solid.sum()), dtype=np.int64)
    try:
        block.decode("utf-8")  # Arrow replaces invalid bytes silently; we want to reject them
        longest = int(np.diff(np.append(starts, len(block))).max()) if len(starts) else 0
        options = pjson.ReadOptions(block_size=max(1 << 20, longest + 16))
        table = pjson.read_json(io.BytesIO(block), read_options=options)
        if table.num_rows != len(rows):
            raise pa.ArrowInvalid("row count differs from line count")
        return Chunk(table, rows, numbers)
    except (UnicodeDecodeError, pa.ArrowInvalid):
        ends = np.append(starts[1:], len(block))
        lines = [block[s:e].rstrip(b"\r\n") for s, e, ok in zip(starts, ends, solid, strict=True) if ok]
        table, kept_rows, kept_lines, bad = _slow_jsonl(lines, numbers, rows, typed)
        return Chunk(table, kept_rows, kept_lines, bad)


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


def read_jsonl(unit: InputUnit, typed: TypedFields, data: bytes | None = None) -> Iterator[Chunk]:
    stream = open_bytes(unit) if data is None else io.BytesIO(data)
    carry, line_no, row_no = b"", 1, 0
    while True:
        data_block = stream.read(BLOCK_BYTES)
        buf = carry + data_block
        if data_block:
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                carry = buf
                continue
            block, carry = buf[:cut], buf[cut:]
        else:
            block, carry = buf, b""
        if block:
            chunk = _jsonl_block(block, line_no, row_no, typed)
            line_no += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            row_no += len(chunk.row) + len(chunk.bad)
            yield chunk
        if not data_block:
            if data is None and (bad := damage_record(unit, stream, row_no, line_no)):
                yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=bad)
            return


# ---------------------------------------------------------------- other formats


def read_json(unit: InputUnit, typed: TypedFields, batch_rows: int) -> Iterator[Chunk]:
    """A `.json` file: a JSON array of objects, or (when it does not start with '[') JSON Lines."""
    stream = open_bytes(unit)
    data = stream.read()
    damaged = damage_record(unit, stream, 0, None)
    if damaged:
        yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=damaged)
    if not data.lstrip().startswith(b"["):
        yield from read_jsonl(unit, typed, data)
        return
    try:
        records = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=[
            BadRecord("malformed_json", 0, None, f"{err}: {data.decode('utf-8', 'replace')}")])
        return
    for start in range(0, len(records), batch_rows):
        part = records[start:start + batch_rows]
        good, rows, bad = [], [], []
        for offset, record in enumerate(part):
            row = start + offset
            wrong = isinstance(record, dict) and wrong_type(record, typed)
            if not isinstance(record, dict) or wrong:
                reason = f"wrong_type:{wrong}" if wrong else "not_an_object"
                bad.append(BadRecord(reason, row, None, orjson.dumps(record).decode()))
            else:
                good.append(record)
                rows.append(row)
        yield Chunk(records_to_table(good), np.array(rows, np.int64), bad=bad)


def _rebatched(batches: Iterator[pa.RecordBatch], batch_rows: int) -> Iterator[Chunk]:
    """Group small record batches (Hugging Face writes 1,000 rows each) into chunks of `batch_rows`."""
    pending, pending_rows, row = [], 0, 0

    def flush() -> Chunk:
        table = pa.Table.from_batches(pending)
        return Chunk(table, np.arange(row, row + table.num_rows, dtype=np.int64))

    for batch in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= batch_rows:
            chunk = flush()
            row += chunk.table.num_rows
            pending, pending_rows = [], 0
            yield chunk
    if pending:
        yield flush()


def read_parquet(unit: InputUnit, batch_rows: int) -> Iterator[Chunk]:
    file = pq.ParquetFile(unit.path)
    yield from _rebatched(file.iter_batches(batch_size=batch_rows), batch_rows)


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
    """CSV/TSV: every column read as text; rows with the wrong number of fields or bad bytes are rejected."""
    bad: list[BadRecord] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        bad.append(BadRecord("malformed_csv_row", None, row.number, row.text))
        return "skip"

    streams: list[Any] = []

    def open_reader(types: dict[str, pa.DataType]) -> pcsv.CSVStreamingReader:
        streams.append(open_bytes(unit))
        return pcsv.open_csv(
            pa.PythonFile(streams[-1], mode="r") if unit.compression else streams[-1],
            read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(delimiter=unit.delimiter, newlines_in_values=True,
                                            invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )

    try:
        names = open_reader({}).schema.names
    except pa.ArrowInvalid:  # an empty file (or one cut before its header's end)
        damaged = damage_record(unit, streams[-1], 0, None) if unit.compression else []
        if damaged:
            yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=damaged)
        return
    bad.clear()
    reader = open_reader({n: pa.binary() for n in names})
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


def _unreadable_after(unit: InputUnit, chunks: Callable[[], Iterator[Chunk]]) -> Iterator[Chunk]:
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


def read_unit(unit: InputUnit, typed: TypedFields, batch_rows: int = 65_536) -> Iterator[Chunk]:
    """All chunks of one input file. `typed`: source column -> (field, type) checked on raw records."""
    if unit.format == "jsonl":
        return read_jsonl(unit, typed)
    if unit.format == "json":
        return read_json(unit, typed, batch_rows)
    if unit.format == "parquet":
        return _unreadable_after(unit, lambda: read_parquet(unit, batch_rows))
    if unit.format in ("arrow", "hf"):
        return _unreadable_after(unit, lambda: read_arrow(unit, batch_rows))
    if unit.format == "csv":
        return read_csv(unit)
    raise ValueError(f"unknown format {unit.format!r}")
