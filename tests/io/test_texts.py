"""Texts of one field from any input format, mapped as ingest maps them (`curate.io.texts`)."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.data.dataset import Dataset
from curate.data.errors import CurateError
from curate.io.texts import read_texts
from tests.lm_fixtures import DATA, read_records


def records(name: str) -> list[dict]:
    return read_records(f"ingest/{name}")


def test_read_texts_from_files_and_datasets(tmp_path):
    rows = records("gsm8k_sample.jsonl")[:5]
    path = DATA / "ingest" / "gsm8k_sample.jsonl"
    pairs = read_texts(path, "prompt+response", limit=5)
    assert pairs == [f"{r['prompt']}\n{r['response']}" for r in rows]
    assert read_texts(path, "prompt", limit=2) == [r["prompt"] for r in rows[:2]]
    table = pa.table({"text": ["a b", None, "", "c d"], "id": ["1", "2", "3", "4"]})
    pq.write_table(table, tmp_path / "t.parquet")
    assert read_texts(tmp_path / "t.parquet") == ["a b", "c d"]
    Dataset.write(tmp_path / "ds", table)
    assert read_texts(tmp_path / "ds", limit=1) == ["a b"]
    # mapped as ingest maps it: instruction rows' text is prompt + blank line + response
    assert read_texts(path, limit=2) == [f"{r['prompt']}\n\n{r['response']}" for r in rows[:2]]
    # any format ingest reads, compressed too; malformed records are skipped
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        f.write('text,id\n"x, y",1\nz w,2\n')
    assert read_texts(tmp_path / "t.csv.gz") == ["x, y", "z w"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok one"}\n{"text": \n{"text": 5}\n{"text": "ok two"}\n')
    assert read_texts(tmp_path / "bad.jsonl") == ["ok one", "ok two"]
    with pytest.raises(CurateError, match="has no field 'body'"):
        read_texts(tmp_path / "ds", "body")
    with pytest.raises(CurateError, match="no file or folder matches"):
        read_texts(tmp_path / "nothing.jsonl")
