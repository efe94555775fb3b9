"""`curate.io.json_text`: JSON texts parsed at once by Arrow's reader, or row by row where the framing breaks; both
give the values `orjson` gives, and flag the texts that are not JSON."""

from __future__ import annotations

import json

import orjson
import pyarrow as pa
import pytest

import curate.io.json_text as json_text
from curate.io.json_text import parse_json_texts

CHAT = [{"role": "user", "content": "Zähle bis 3\u2028bitte 🙂"}, {"role": "assistant", "content": "1, 2, 3"}]


def by_rows(texts: list[str | None]) -> tuple[list, list[bool]]:
    values = []
    for text in texts:
        try:
            values.append(None if text is None else orjson.loads(text))
        except orjson.JSONDecodeError:
            values.append(None)
    return values, [t is not None and values[i] is None and t.strip() != "null" for i, t in enumerate(texts)]


def parsed(texts: list[str | None]) -> tuple[list, list[bool]]:
    values, not_json = parse_json_texts(pa.chunked_array([pa.array(texts[:2], pa.string()),
                                                          pa.array(texts[2:], pa.string())]))
    return (values if isinstance(values, list) else values.to_pylist()), not_json.tolist()


def test_one_read_parses_chats_typed(monkeypatch):
    texts = [json.dumps(CHAT, ensure_ascii=False), None, "", json.dumps(CHAT[:1]), "[]"]
    monkeypatch.setattr(json_text, "_parse_rows", lambda *_: pytest.fail("parsed row by row"))
    values, not_json = parse_json_texts(pa.array(texts))
    assert values.type == pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    assert values.to_pylist() == [CHAT, None, None, CHAT[:1], []]
    assert not_json.tolist() == [False, False, True, False, False]  # the empty text is no JSON


@pytest.mark.parametrize("odd", [
    json.dumps(CHAT, indent=1),  # a raw line break: the framing would split it
    "User: hi",  # not JSON
    '[], "x": 1',  # parses inside the frame as a second key
    '{"role": "user"}',  # an object where the other rows have lists: no one Arrow type
    "1}\r{",
])
def test_a_text_that_breaks_the_frame_sends_the_batch_row_by_row(odd):
    texts = [json.dumps(CHAT), odd, None, json.dumps(CHAT[1:])]
    values, not_json = parsed(texts)
    assert (values, not_json) == by_rows(texts)
    assert values[0] == CHAT and values[3] == CHAT[1:]
