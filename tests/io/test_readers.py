"""Ingest of every supported format, compression, field mapping and malformed input.

The invariant checked throughout: rows read = rows kept + rows rejected.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from curate.data.dataset import Dataset
from curate.data.errors import ConfigError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline

DATA = Path(__file__).parents[1] / "data" / "ingest"
GSM8K = [json.loads(line) for line in (DATA / "gsm8k_sample.jsonl").read_text().splitlines()]
POOL = [json.loads(line) for line in (DATA / "pool_sample.jsonl").read_text().splitlines()]


def ingest(tmp_path: Path, inputs: list[dict], **config) -> tuple[Dataset, Dataset]:
    cfg = parse_config({"name": "t", "inputs": inputs, "output": str(tmp_path / "run"),
                        "engine": {"prefect": False, "workers": 1}, **config}, base_dir=tmp_path)
    (result,) = run_pipeline(cfg)
    kept = Dataset.open(tmp_path / "run" / "stages" / "00-ingest")
    rejected = Dataset.open(tmp_path / "run" / "rejected" / "00-ingest")
    assert result.rows_in == kept.count() + rejected.count(), "rows read != kept + rejected"
    return kept, rejected


def write_jsonl(path: Path, rows: list, opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def test_jsonl_text_rows_keep_ids_source_and_extra_columns(tmp_path):
    kept, rejected = ingest(tmp_path, [{"path": str(write_jsonl(tmp_path / "pool.jsonl", POOL))}])
    table = kept.to_table()
    assert table.num_rows == len(POOL) and rejected.count() == 0
    assert table.column("id").to_pylist() == [r["id"] for r in POOL]
    assert table.column("text").to_pylist() == [r["text"] for r in POOL]
    # the data's own `source` column is used when the config names none; other columns pass through
    assert table.column("source").to_pylist() == [r["source"] for r in POOL]
    assert table.column("domain").to_pylist() == [r["domain"] for r in POOL]
    assert table.column_names[:3] == ["id", "source", "text"]


def test_instruction_mapping_renders_text_and_renames_colliding_columns(tmp_path):
    rows = [{"question": r["prompt"], "solution": r["response"], "answer": r["answer"], "source": "orig"}
            for r in GSM8K[:10]]
    kept, _ = ingest(tmp_path, [{"path": str(write_jsonl(tmp_path / "q.jsonl", rows)),
                                 "fields": {"prompt": "question", "response": "solution"}, "source": "math"}])
    table = kept.to_table()
    assert table.column("prompt").to_pylist() == [r["question"] for r in rows]
    assert table.column("text")[0].as_py() == rows[0]["question"] + "\n\n" + rows[0]["solution"]
    assert set(table.column("source").to_pylist()) == {"math"}
    assert table.column("source_original").to_pylist() == ["orig"] * 10
    assert table.column("answer").to_pylist() == [r["answer"] for r in rows]
    assert "question" not in table.column_names and "solution" not in table.column_names


def test_ids_are_content_hashes_when_missing_and_made_unique(tmp_path):
    rows = [{"text": "same text here"}, {"text": "other text"}, {"text": "same text here"}]
    kept, _ = ingest(tmp_path, [{"path": str(write_jsonl(tmp_path / "a.jsonl", rows))}])
    ids = kept.to_table().column("id").to_pylist()
    assert len(ids[0]) == 32 and ids[2] == ids[0] + "#1" and len(set(ids)) == 3
    assert kept.stats["ids_renamed"] == 1
    # stable: the same content gets the same id in another run
    kept2, _ = ingest(tmp_path / "again", [{"path": str(tmp_path / "a.jsonl")}])
    assert kept2.to_table().column("id").to_pylist() == ids


def test_malformed_jsonl_lines_are_rejected_with_reason_and_line(tmp_path):
    lines = [json.dumps(POOL[0]), "{broken", "", json.dumps({"text": 5}), json.dumps([1, 2]),
             json.dumps({"body": "no text field"}), json.dumps({"text": None}), json.dumps(POOL[1])]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "bad \xff byte"}\n')
    kept, rejected = ingest(tmp_path, [{"path": str(path)}])
    assert kept.to_table().column("id").to_pylist() == [POOL[0]["id"], POOL[1]["id"]]
    got = {(r["reason"], r["input_line"]) for r in rejected.to_table().to_pylist()}
    assert got == {("malformed_json", 2), ("wrong_type:text", 4), ("not_an_object", 5),
                   ("missing_field:text", 6), ("missing_field:text", 7), ("undecodable_bytes", 9)}
    by_line = {r["input_line"]: r for r in rejected.to_table().to_pylist()}
    assert by_line[2]["raw"] == "{broken" and by_line[2]["input_file"] == str(path)
    assert by_line[6]["body"] == "no text field"  # a mapped-field failure keeps the parsed row


@pytest.mark.parametrize("suffix,opener", [(".jsonl.gz", gzip.open), (".jsonl.zst", None)])
def test_compressed_jsonl(tmp_path, suffix, opener):
    path = tmp_path / f"pool{suffix}"
    if opener is None:
        with pa.output_stream(path, compression="zstd") as out:
            out.write("".join(json.dumps(r) + "\n" for r in POOL).encode())
    else:
        write_jsonl(path, POOL, opener)
    kept, _ = ingest(tmp_path, [{"path": str(path)}])
    assert kept.to_table().column("text").to_pylist() == [r["text"] for r in POOL]


def test_json_array_parquet_csv_arrow_agree(tmp_path):
    rows = [{"id": r["id"], "prompt": r["prompt"], "response": r["response"], "answer": r["answer"]}
            for r in GSM8K[:20]]
    table = pa.Table.from_pylist(rows)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(table, tmp_path / "b.parquet")
    pcsv.write_csv(table, tmp_path / "c.csv")
    feather.write_feather(table, tmp_path / "d.arrow")
    for name in ("a.json", "b.parquet", "c.csv", "d.arrow"):
        kept, rejected = ingest(tmp_path / name.split(".")[0], [{"path": str(tmp_path / name)}])
        got = kept.to_table()
        assert rejected.count() == 0, name
        assert got.column("id").to_pylist() == [r["id"] for r in rows], name
        assert got.column("response").to_pylist() == [r["response"] for r in rows], name
        assert got.column("text")[3].as_py() == rows[3]["prompt"] + "\n\n" + rows[3]["response"], name


def test_csv_bad_rows_and_bytes_are_rejected(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'id,text\n1,"a fine row"\n2,"multi\nline row"\n3,too,many,fields\n4,"bad \xff"\n5,last\n')
    kept, rejected = ingest(tmp_path, [{"path": str(path)}])
    assert kept.to_table().column("text").to_pylist() == ["a fine row", "multi\nline row", "last"]
    assert sorted(rejected.to_table().column("reason").to_pylist()) == ["malformed_csv_row", "undecodable_bytes"]


def test_json_array_rejects_non_objects_and_wrong_types(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"text": "ok one"}, 7, {"text": ["list"]}, {"text": "ok two"}]))
    kept, rejected = ingest(tmp_path, [{"path": str(path)}])
    assert kept.to_table().column("text").to_pylist() == ["ok one", "ok two"]
    assert sorted(rejected.to_table().column("reason").to_pylist()) == ["not_an_object", "wrong_type:text"]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"text": "x"}, {"text": ')
    kept, rejected = ingest(tmp_path / "b", [{"path": str(broken)}])
    # streamed element by element: the whole element before the cut is kept, the cut one rejected
    assert kept.to_table().column("text").to_pylist() == ["x"]
    assert rejected.to_table().column("reason").to_pylist() == ["malformed_json"]


def test_huggingface_save_to_disk_dataset_and_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(GSM8K[:30])
    ds.save_to_disk(str(tmp_path / "hf"))
    kept, _ = ingest(tmp_path / "one", [{"path": str(tmp_path / "hf")}])
    assert kept.to_table().column("id").to_pylist() == [r["id"] for r in GSM8K[:30]]
    dd = datasets.DatasetDict({"train": ds.select(range(20)), "test": ds.select(range(20, 30))})
    dd.save_to_disk(str(tmp_path / "hfdict"))
    kept, _ = ingest(tmp_path / "all", [{"path": str(tmp_path / "hfdict")}])
    assert kept.count() == 30
    kept, _ = ingest(tmp_path / "test", [{"path": str(tmp_path / "hfdict"), "split": "test"}])
    assert kept.to_table().column("id").to_pylist() == [r["id"] for r in GSM8K[20:30]]


def test_chat_messages_rendered_with_documented_template(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]},
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"},
                           {"from": "gpt", "value": "4"}]},
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"messages": "not a list"},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows[:1] + rows[2:])
    path2 = write_jsonl(tmp_path / "sharegpt.jsonl", rows[1:2])
    kept, rejected = ingest(tmp_path, [{"path": str(path)},
                                       {"path": str(path2), "fields": {"messages": "conversations"}}])
    table = kept.to_table().to_pylist()
    assert table[0]["text"] == "User: Hi?\n\nAssistant: Hello."
    assert (table[0]["prompt"], table[0]["response"]) == ("Hi?", "Hello.")
    assert table[1]["prompt"] == "System: Be brief.\n\nUser: 2+2?" and table[1]["response"] == "4"
    assert table[1]["messages"][1] == {"role": "user", "content": "2+2?"}
    assert sorted(rejected.to_table().column("reason").to_pylist()) == ["bad_messages", "no_assistant_turn"]


def test_chats_stored_as_json_text_are_parsed(tmp_path):
    """A CSV holds a chat only as JSON text (some Parquet sets store them so too): parsed, they map as typed chats;
    a text that is not JSON is a bad conversation, and the other rows go on."""
    chats = [[{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
             [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]]
    pcsv.write_csv(pa.table({"messages": [json.dumps(chats[0]), "User: not JSON", json.dumps(chats[1])]}),
                   tmp_path / "chats.csv")
    write_jsonl(tmp_path / "texts.jsonl", [{"messages": json.dumps(chats[0])}, {"messages": chats[1]}])
    kept, rejected = ingest(tmp_path, [{"path": str(tmp_path / "chats.csv")}, {"path": str(tmp_path / "texts.jsonl")}])
    rows = kept.to_table().to_pylist()
    assert [(r["prompt"], r["response"]) for r in rows] == [("Hi?", "Hello."), ("2+2?", "4")] * 2
    assert rows[0]["text"] == "User: Hi?\n\nAssistant: Hello."
    assert rows[1]["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert rejected.to_table().column("reason").to_pylist() == ["bad_messages"]


def test_globs_lists_folders_and_many_shards(tmp_path):
    data = tmp_path / "data"
    (data / "_ignored").mkdir(parents=True)
    for i in range(3):
        write_jsonl(data / f"part{i}.jsonl", POOL[i * 20:(i + 1) * 20])
    write_jsonl(data / "_ignored" / "x.jsonl", POOL[:5])
    write_jsonl(data / ".hidden.jsonl", POOL[:5])
    kept, _ = ingest(tmp_path, [{"path": [str(data / "part[01].jsonl"), str(data / "part2.jsonl")]}],
                     engine={"prefect": False, "shard_rows": 7})
    assert kept.to_table().column("id").to_pylist() == [r["id"] for r in POOL[:60]]
    assert len(kept.shard_names) == 9  # 3 files x ceil(20 / 7)
    folder, _ = ingest(tmp_path / "f", [{"path": str(data)}])
    assert folder.count() == 60  # names starting with "." or "_" are skipped


def test_mixed_types_across_files_are_unified(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "one two", "n": 1}, {"text": "three", "n": None}])
    write_jsonl(tmp_path / "b.jsonl", [{"text": "four five", "n": "x"}])
    kept, _ = ingest(tmp_path, [{"path": str(tmp_path / "*.jsonl")}])
    assert kept.to_table().column("n").to_pylist() == ["1", None, "x"]


def test_bad_paths_and_formats_fail_before_work(tmp_path):
    with pytest.raises(ConfigError, match=r"inputs\[0\].path: no file or folder matches 'nope/\*.jsonl'"):
        parse_config({"name": "t", "inputs": [{"path": "nope/*.jsonl"}], "output": "o"}, base_dir=tmp_path)
    (tmp_path / "data.txt").write_text("x")
    cfg = parse_config({"name": "t", "inputs": [{"path": "data.txt"}], "output": "o",
                        "engine": {"prefect": False}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"cannot tell the format of 'data\.txt'.*format"):
        run_pipeline(cfg)


def test_rejected_view_counts_match(tmp_path):
    lines = [json.dumps({"text": f"row {i}"}) if i % 3 else "{" for i in range(30)]
    (tmp_path / "x.jsonl").write_text("\n".join(lines))
    kept, rejected = ingest(tmp_path, [{"path": str(tmp_path / "x.jsonl")}])
    assert (kept.count(), rejected.count()) == (20, 10)
    assert pc.all(pc.equal(rejected.to_table().column("reason"), "malformed_json")).as_py()


def test_one_file_may_mix_text_rows_and_instruction_rows(tmp_path):
    rows = [{"text": "a plain text row"}, {"prompt": "Q?", "response": "A."},
            {"prompt": "only a prompt"}, {"text": "text wins", "prompt": "p", "response": "r"}, {}]
    kept, rejected = ingest(tmp_path, [{"path": str(write_jsonl(tmp_path / "mixed.jsonl", rows))}])
    assert kept.to_table().column("text").to_pylist() == ["a plain text row", "Q?\n\nA.", "text wins"]
    assert rejected.to_table().column("reason").to_pylist() == ["missing_field:response", "missing_field:prompt"]
