"""JSON Lines and JSON arrays, streamed in blocks with bounded memory per record.

- JSON Lines are read in blocks by Arrow's C++ reader. A block that fails (a malformed line, invalid UTF-8, a field
  whose type changes, an integer too large for 64 bits) is re-read line by line, so each bad record becomes a
  `BadRecord` with its line number and the rest of the block is kept.
- Before a block reaches Arrow, each line's bracket depth is bounded (brackets inside strings count too, so the
  bound is safe): a line that may nest deeper than `MAX_DEPTH` goes the line-by-line way, where a record that
  really does is rejected as `too_deeply_nested` (Arrow's reader crashes on very deep nesting, and Parquet cannot
  store it).
- A line longer than `max_line_bytes` is never held whole: it is skipped to its end and rejected as
  `line_too_long` with its byte offsets.
- A `.json` array is streamed the same way: a vectorised scan finds its elements (commas and brackets outside
  strings, with escapes) block by block, and each element becomes one line, so one bad element is one rejected
  record and the good ones are kept.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pjson

from curate.io.readers import (
    BLOCK_BYTES,
    MAX_LINE_BYTES,
    BadRecord,
    Chunk,
    TypedFields,
    clean_columns,
    damage_record,
    open_bytes,
    records_to_table,
    wrong_type,
)
from curate.io.sources import InputUnit

MAX_DEPTH = 32  # nesting levels a record may have: Parquet readers stop at 100 schema levels (2 per list)
OPEN, CLOSE = np.isin(np.arange(256), (91, 123)), np.isin(np.arange(256), (93, 125))  # [ {  and  ] }


SOLID = bytes(0 if b in (9, 10, 13, 32) else 1 for b in range(256))  # bytes.translate tables: 1 marks a byte
OPENS = bytes(1 if b in (91, 123) else 0 for b in range(256))


def _line_layout(block: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start offsets of all lines in `block`, which of them hold more than white space, and an upper bound of each
    line's nesting depth (its count of opening brackets, strings included)."""
    arr = np.frombuffer(block, np.uint8)
    newlines = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], newlines + 1])
    if starts[-1] == len(arr):  # the block ends with a newline: no trailing partial line
        starts = starts[:-1]
    if not len(starts):
        return starts, np.zeros(0, bool), np.zeros(0, np.int64)
    solid = np.add.reduceat(np.frombuffer(block.translate(SOLID), np.uint8), starts, dtype=np.int64) > 0
    opens = np.add.reduceat(np.frombuffer(block.translate(OPENS), np.uint8), starts, dtype=np.int64)
    return starts, solid, opens


def _depth(value: Any) -> int:
    """Nesting levels of a parsed record (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _parse(raw: bytes) -> tuple[dict | None, str | None, str]:
    """One record's bytes -> (record, None, text), or (None, reason, text)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "undecodable_bytes", raw.decode("utf-8", "replace")
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error).lower() or "recursion" in str(error).lower():
            return None, "too_deeply_nested", text[:1000]
        if "integer" in str(error).lower():  # beyond 64 bits: Python's parser keeps every digit
            import json

            try:
                record = json.loads(text)
            except ValueError:
                return None, "malformed_json", text
        else:
            return None, "malformed_json", text
    if not isinstance(record, dict):
        return None, "not_an_object", text
    if _depth(record) > MAX_DEPTH:
        return None, "too_deeply_nested", text[:1000]
    return record, None, text


def _slow_lines(lines: list[bytes], numbers: np.ndarray, rows: np.ndarray,
                typed: TypedFields) -> tuple[pa.Table, np.ndarray, np.ndarray, list[BadRecord]]:
    records, keep_rows, keep_lines, bad = [], [], [], []
    for raw, line_no, row in zip(lines, numbers.tolist(), rows.tolist(), strict=True):
        record, reason, text = _parse(raw)
        if record is not None and (wrong := wrong_type(record, typed)):
            reason = f"wrong_type:{wrong}"
        if reason is not None:
            bad.append(BadRecord(reason, row, line_no, text))
            continue
        records.append(record)
        keep_rows.append(row)
        keep_lines.append(line_no)
    return (records_to_table(records), np.array(keep_rows, np.int64),
            np.array(keep_lines, np.int64), bad)


def _integers_lost(table: pa.Table) -> bool:
    """Arrow reads integers beyond 64 bits as doubles: such a block is read again line by line."""
    return any(pa.types.is_floating(t) for t in table.schema.types) and table.num_rows > 0


def jsonl_block(block: bytes, first_line: int, first_row: int, typed: TypedFields) -> Chunk:
    starts, solid, opens = _line_layout(block)
    numbers = first_line + np.flatnonzero(solid)
    rows = first_row + np.arange(int(solid.sum()), dtype=np.int64)
    try:
        if (opens > MAX_DEPTH).any() and _too_deep(block, starts, opens):
            raise pa.ArrowInvalid("a line may nest too deep for Arrow's reader")
        block.decode("utf-8")  # Arrow replaces invalid bytes silently; we want to reject them
        longest = int(np.diff(np.append(starts, len(block))).max()) if len(starts) else 0
        options = pjson.ReadOptions(block_size=max(1 << 20, longest + 16))
        table = pjson.read_json(io.BytesIO(block), read_options=options)
        if table.num_rows != len(rows):
            raise pa.ArrowInvalid("row count differs from line count")
        if _integers_lost(table) and _has_big_integer(block):
            raise pa.ArrowInvalid("an integer beyond 64 bits")
        return Chunk(clean_columns(table, first_row)[0], rows, numbers)
    except (UnicodeDecodeError, pa.ArrowInvalid):
        ends = np.append(starts[1:], len(block))
        lines = [block[s:e].rstrip(b"\r\n") for s, e, ok in zip(starts, ends, solid, strict=True) if ok]
        table, kept_rows, kept_lines, bad = _slow_lines(lines, numbers, rows, typed)
        return Chunk(clean_columns(table, first_row)[0], kept_rows, kept_lines, bad)


def _too_deep(block: bytes, starts: np.ndarray, opens: np.ndarray) -> bool:
    """Whether a line with many opening brackets may nest deeper than MAX_DEPTH (brackets in strings count too:
    such a line is then read line by line, where its real depth decides)."""
    ends = np.append(starts[1:], len(block))
    for i in np.flatnonzero(opens > MAX_DEPTH).tolist():
        line = np.frombuffer(block, np.uint8, int(ends[i] - starts[i]), int(starts[i]))
        if np.cumsum(OPEN[line].astype(np.int32) - CLOSE[line]).max() > MAX_DEPTH:
            return True
    return False


def _has_big_integer(block: bytes) -> bool:
    """Whether the block holds a run of 19 or more digits (an integer a double cannot hold exactly)."""
    digits = np.frombuffer(block, np.uint8)
    digits = (digits >= 48) & (digits <= 57)
    edges = np.diff(np.concatenate([[0], digits.astype(np.int8), [0]]))
    return bool(((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)) >= 19).any())


def read_jsonl(unit: InputUnit, typed: TypedFields, stream: Any = None,
               max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Chunk]:
    """JSON Lines in blocks; a line longer than `max_line_bytes` is skipped to its end and rejected."""
    own = stream is None
    stream = open_bytes(unit) if own else stream
    carry, line_no, row_no, offset = b"", 1, 0, 0  # offset: the file's byte where `carry` starts
    skipping: tuple[int, int] | None = None  # (first byte, line) of a line too long, while it is skipped
    while True:
        data = stream.read(BLOCK_BYTES)
        if skipping is not None:
            cut = data.find(b"\n")
            if cut < 0 and data:
                offset += len(data)
                continue
            end = offset + (cut if cut >= 0 else len(data))
            yield _too_long(skipping, end, row_no)
            row_no += 1
            line_no += 1
            offset, data, skipping = end + 1, data[cut + 1:] if cut >= 0 else b"", None
        buf = carry + data
        first = buf.find(b"\n")
        if first > max_line_bytes:  # the line carried over ends here, past the cap: rejected, not parsed
            yield _too_long((offset, line_no), offset + first, row_no)
            row_no, line_no, offset, buf = row_no + 1, line_no + 1, offset + first + 1, buf[first + 1:]
        if data:
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                if len(buf) > max_line_bytes:  # no line end within the cap: skip this line
                    skipping, carry = (offset, line_no), b""
                    offset += len(buf)
                else:
                    carry = buf
                continue
            block, carry = buf[:cut], buf[cut:]
        else:
            block, carry = buf, b""
        if block:
            chunk = jsonl_block(block, line_no, row_no, typed)
            line_no += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            row_no += len(chunk.row) + len(chunk.bad)
            offset += len(block)
            yield chunk
        if not data:
            if own and (bad := damage_record(unit, stream, row_no, line_no)):
                yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=bad)
            return


def _too_long(skipped: tuple[int, int], end: int, row: int) -> Chunk:
    start, line = skipped
    return Chunk(pa.table({}), np.zeros(0, np.int64), bad=[BadRecord(
        "line_too_long", row, line, f"a record of {end - start:,} bytes (bytes {start:,} to {end:,} of the file), "
        f"longer than the {MAX_LINE_BYTES >> 20} MB a record may have")])


# ---------------------------------------------------------------- JSON arrays


class _ArrayScanner:
    """Cuts a JSON array's bytes, block by block, into its elements, one per line: the state that crosses blocks
    is whether the scan is inside a string, the backslashes just before, and the bracket depth."""

    def __init__(self) -> None:
        self.in_string, self.backslashes, self.depth, self.started, self.done = False, 0, 0, False, False

    def scan(self, block: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Positions in `block` that end an element (a top-level comma or the closing bracket), and a copy of
        the block with newlines outside strings made spaces."""
        arr = np.frombuffer(block, np.uint8)
        backslash = arr == 92
        total = np.cumsum(backslash)
        last_other = np.maximum.accumulate(np.where(~backslash, total, 0))
        run = total - last_other  # backslashes ending at each byte
        lead = int(np.argmax(~backslash)) if (~backslash).any() else len(arr)
        run[:lead] += self.backslashes  # a run that began in the block before
        before = np.concatenate([[self.backslashes], run[:-1]])
        quote = (arr == 34) & (before % 2 == 0)
        inside = (np.cumsum(quote) % 2 == 1) ^ self.in_string  # after each byte: inside a string
        outside = ~inside & ~quote
        depth = self.depth + np.cumsum(np.where(outside, OPEN[arr].astype(np.int64) - CLOSE[arr], 0))
        ends = np.flatnonzero(outside & (((arr == 44) & (depth == 1)) | (CLOSE[arr] & (depth == 0))))
        flat = arr.copy()
        flat[outside & ((arr == 10) | (arr == 13))] = 32
        if len(arr):
            self.in_string = bool(inside[-1])
            self.backslashes = int(run[-1]) if backslash[-1] else 0
            self.depth = int(depth[-1])
        return ends, flat


def json_array_lines(stream: Any, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes | int]:
    """The elements of a JSON array (the stream starts with `[`), each as one line's bytes; an element longer than
    `max_line_bytes` gives its length instead (the caller rejects it)."""
    scanner = _ArrayScanner()
    carry, skipped = b"", 0
    first = True
    while True:
        data = stream.read(BLOCK_BYTES)
        if not data:
            if carry.strip():
                yield carry.strip()  # an array cut short: its last element as it is (it will not parse)
            return
        ends, flat = scanner.scan(data)
        text = flat.tobytes()
        if first:  # drop everything up to the opening bracket
            start = text.find(b"[") + 1
            first = False
        else:
            start = 0
        for end in ends.tolist():
            if end < start:
                continue
            if skipped:
                yield skipped + end - start
                skipped = 0
            else:
                element = (carry + text[start:end]).strip()
                if element:
                    yield element
            carry, start = b"", end + 1
        if scanner.depth <= 0 and len(ends):
            return
        rest = text[start:]
        if skipped or len(carry) + len(rest) > max_line_bytes:
            skipped += len(carry) + len(rest)
            carry = b""
        else:
            carry += rest


def read_json(unit: InputUnit, typed: TypedFields) -> Iterator[Chunk]:
    """A `.json` file: a JSON array of objects, streamed element by element, or (when it does not start with `[`)
    JSON Lines."""
    stream = open_bytes(unit)
    head = stream.read(1)
    while head and head in b" \t\r\n\xef\xbb\xbf":
        head = stream.read(1)
    if head != b"[":
        rest = _Prefixed(head, stream)
        yield from read_jsonl(unit, typed, rest)
        if bad := damage_record(unit, stream, 0, None):
            yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=bad)
        return
    row = 0
    lines: list[bytes] = []
    pending_bad: list[BadRecord] = []

    def flush() -> Iterator[Chunk]:
        nonlocal lines, pending_bad, row
        if lines:
            chunk = jsonl_block(b"\n".join(lines) + b"\n", row + 1, row, typed)
            chunk.line = None
            for record in chunk.bad:
                record.line = None
            row += len(lines)
            yield chunk
        if pending_bad:
            yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=pending_bad)
        lines, pending_bad = [], []

    size = 0
    for element in json_array_lines(_Prefixed(head, stream)):
        if isinstance(element, int):
            yield from flush()
            pending_bad.append(BadRecord("line_too_long", row, None, f"an array element of {element:,} bytes, "
                                         f"longer than the {MAX_LINE_BYTES >> 20} MB a record may have"))
            row += 1
            continue
        lines.append(element)
        size += len(element)
        if size >= BLOCK_BYTES:
            yield from flush()
            size = 0
    yield from flush()
    if bad := damage_record(unit, stream, row, None):
        yield Chunk(pa.table({}), np.zeros(0, np.int64), bad=bad)


class _Prefixed:
    """A stream with some bytes already read put back in front."""

    def __init__(self, head: bytes, stream: Any):
        self.head, self.stream = head, stream

    def read(self, size: int = -1) -> bytes:
        head, self.head = self.head, b""
        return head + self.stream.read(size if size < 0 else max(size - len(head), 0))
