"""A column of JSON texts parsed into Arrow values (a CSV holds a chat only as JSON text; some Parquet sets store
chats so too).

Arrow's JSON reader parses all texts at once, framed as one `{"m": <text>}` line each: 7x `orjson` per row plus
Arrow's type inference, on 100k real chats. The framing needs every text to be one JSON value on one line, and
every row to parse to the same type. A batch that breaks either (a text with a raw line break, a text that is not
JSON, a list in one row and an object in the next) is parsed row by row instead.
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pjson

FRAME_KEY = "m"


def parse_json_texts(texts: pa.Array | pa.ChunkedArray) -> tuple[pa.Array | list, np.ndarray]:
    """The parsed values, as an Arrow array when Arrow can type them all (else as Python values), and a mask of the
    rows that are not JSON (they parse to null, as null texts do)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = texts.cast(pa.large_string())  # the joined document can pass 2 GiB
    empty = np.asarray(pc.fill_null(pc.equal(texts, ""), False).to_numpy(zero_copy_only=False), bool)
    values = _read_framed(texts, empty)
    if values is not None:
        return values, empty
    return _parse_rows(texts)


def _read_framed(texts: pa.LargeStringArray, empty: np.ndarray) -> pa.Array | None:
    if len(texts) == 0 or pc.any(pc.match_substring_regex(texts, "[\r\n]")).as_py():
        return None
    body = pc.if_else(pc.or_(pc.is_null(texts), pa.array(empty)), pa.scalar("null", pa.large_string()), texts)
    large = pa.large_string()
    lines = pc.binary_join_element_wise(pa.scalar(f'{{"{FRAME_KEY}":', large), body, pa.scalar("}", large),
                                        pa.scalar("", large))
    document = pc.binary_join(pa.LargeListArray.from_arrays([0, len(lines)], lines),
                              pa.scalar("\n", large))[0].as_buffer()
    try:
        table = pjson.read_json(pa.BufferReader(document))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    # a text like `1, "x": 2` parses inside the frame: any other key, or a row count off, means the frame broke
    if table.column_names != [FRAME_KEY] or table.num_rows != len(texts):
        return None
    return table.column(FRAME_KEY).combine_chunks()


def _parse_rows(texts: pa.LargeStringArray) -> tuple[pa.Array | list, np.ndarray]:
    values, not_json = [], np.zeros(len(texts), bool)
    for i, text in enumerate(texts.to_pylist()):
        try:
            values.append(None if text is None else orjson.loads(text))
        except orjson.JSONDecodeError:
            values.append(None)
            not_json[i] = True
    try:
        return pa.array(values), not_json
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # rows of different shapes: the loop takes them
        return values, not_json
