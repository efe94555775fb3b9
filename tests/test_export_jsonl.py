"""`curate.export.write_jsonl` (polars) writes the records `json.dumps` wrote before it: unicode unescaped, line
separators inside texts, nulls, and chats as lists of turns."""

from __future__ import annotations

import io
import json

import pyarrow as pa

from curate.export import write_jsonl
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
