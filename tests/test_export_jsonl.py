"""`curate.inspect.export.write_jsonl` (polars) writes the records `json.dumps` wrote before it: unicode unescaped, line
separators inside texts, nulls, and chats as lists of turns."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pyarrow as pa

from curate.inspect.export import write_jsonl
from curate.io.mapping import MESSAGE_TYPE


def test_records_round_trip_as_json_dumps_wrote_them():
    records = pa.table({
        "prompt": ["Zähle bis 3\u2028bitte", None, "", "emoji 🙂 \"quoted\" \\ back"],
        "completion": ["1, 2, 3", "no prompt", "tab\there", "line\nbreak"],
        "messages": pa.array([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo\u2029"}],
                              None, [], [{"role": "system", "content": None}]], MESSAGE_TYPE),
    })
    sink = io.BytesIO()
    write_jsonl(records, sink)
    lines = sink.getvalue().decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == records.num_rows + 1  # one line per record, newline-terminated
    assert [json.loads(line) for line in lines[:-1]] == records.to_pylist()
    assert "Zähle" in lines[0] and "🙂" in lines[3]  # UTF-8 as it is, as json.dumps(ensure_ascii=False) wrote


def test_decimals_are_numbers_when_a_double_holds_them():
    """DuckDB types `1.5` DECIMAL(2, 1) and `sum` of it DECIMAL(38, 1): both are JSON numbers, as DuckDB's own
    JSON writer gives them; a value with more digits than a double holds stays a string, every digit kept."""
    exact = [Decimal("1.5"), Decimal("-306.25"), None]
    records = pa.table({"small": pa.array(exact, pa.decimal128(5, 2)),
                        "summed": pa.array(exact, pa.decimal128(38, 2)),
                        "wide": pa.array([Decimal("12345678901234567890.12"), Decimal("1"), None],
                                         pa.decimal128(38, 2))})
    sink = io.BytesIO()
    write_jsonl(records, sink)
    rows = [json.loads(line, parse_float=Decimal) for line in sink.getvalue().decode().split("\n")[:-1]]
    assert [r["small"] for r in rows] == [r["summed"] for r in rows] == exact
    assert [r["wide"] for r in rows] == ["12345678901234567890.12", "1.00", None]
