"""`mixture`: known-answer shares and repeats, the max_repeats shortfall, determinism across workers and shard
sizes, export formats that trainers read, and config errors. Real rows: the P3 sample (instruction data) and the
mixed pool sample (plain text); chats are GSM8K problems written as user/assistant turns."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.data.dataset import Dataset, side_path
from curate.data.errors import ConfigError, CurateError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.inspect.export import export_step
from curate.stages.mixture import Mixture, part_copies
from tests.lm_fixtures import read_records

P3 = read_records("p3_sample.jsonl")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def p3_by_task(tmp_path: Path, tasks: list[str]) -> Path:
    return write_jsonl(tmp_path / "data" / "p3.jsonl", [r for r in P3 if r["task"] in tasks])


def run_config(tmp_path: Path, data: Path, stages: list, **engine) -> dict:
    config = {"name": "mix", "inputs": [{"path": str(data)}], "output": str(tmp_path / "run"),
              "engine": {"prefect": False, "workers": 2, "shard_rows": 50, **engine}, "stages": stages}
    results = run_pipeline(parse_config(config, base_dir=tmp_path))
    return {r.label: r for r in results}


def mixture_dir(run: Path) -> Path:
    return next((run / "stages").glob("*-mixture"))


def report(run: Path) -> dict:
    return json.loads(side_path(mixture_dir(run), "mixture.json").read_text())


def test_three_parts_get_their_token_shares_within_one_row(tmp_path):
    tasks = ["glue_mrpc", "wiqa", "adversarial_qa_dbidaf"]
    data = p3_by_task(tmp_path, tasks)
    weights = {"glue_mrpc": 0.5, "wiqa": 0.3, "adversarial_qa_dbidaf": 0.2}
    words_of = {t: sum(len((r["prompt"] + "\n\n" + r["response"]).split()) for r in P3 if r["task"] == t)
                for t in tasks}
    budget = int(0.9 * min(words_of[t] / w for t, w in weights.items()))  # every part sampled, none repeated
    results = run_config(tmp_path, data, [{"mixture": {"by": "task", "weights": weights, "tokens": budget}}])
    got = report(tmp_path / "run")
    rows = Dataset.open(mixture_dir(tmp_path / "run")).to_table()
    words = np.array([len(t.split()) for t in rows.column("text").to_pylist()])
    part = np.array(rows.column("part").to_pylist())
    for task, weight in weights.items():
        longest = max(len((r["prompt"] + "\n\n" + r["response"]).split()) for r in P3 if r["task"] == task)
        taken = int(words[part == task].sum())
        assert abs(taken - weight * budget) <= longest, task  # within one document of the target
        assert got["parts"][task]["tokens_taken"] == taken and got["parts"][task]["weight"] == pytest.approx(weight)
        assert got["parts"][task]["repeats"] < 1
    mix = results["mixture"]
    assert mix.rows_in == mix.rows_kept + mix.rows_rejected == 60 and mix.rows_added == 0
    assert set(rows.column_names) >= {"id", "text", "prompt", "response", "part", "repeat", "parent_id"}
    assert "task" not in rows.column_names  # trainer-ready columns only


def test_a_short_part_is_repeated_whole_passes_then_a_sample():
    rng = np.random.default_rng(0)
    units = rng.integers(5, 50, size=40).astype(float)
    available = units.sum()
    copies, shortfall = part_copies(units, np.ones(40, np.int64), 2.5 * available, 4, np.random.default_rng(1))
    assert shortfall == 0 and set(np.unique(copies)) <= {2, 3} and (copies == 3).any()
    assert abs(float(units @ copies) - 2.5 * available) <= units.max()
    # `repeats` per row multiply a pass
    per_pass = np.array([1, 2] * 20)
    copies, _ = part_copies(units, per_pass, 1.0 * float(units @ per_pass), 4, np.random.default_rng(1))
    assert np.array_equal(copies, per_pass)


def test_repeats_are_exact_in_a_run_and_copies_are_added_rows(tmp_path):
    data = p3_by_task(tmp_path, ["glue_mrpc", "wiqa"])
    words = {t: sum(len((r["prompt"] + "\n\n" + r["response"]).split()) for r in P3 if r["task"] == t)
             for t in ("glue_mrpc", "wiqa")}
    budget = 4 * words["glue_mrpc"]  # glue_mrpc's half is 2 passes exactly
    results = run_config(tmp_path, data, [{"mixture": {"by": "task", "weights": {"glue_mrpc": 1, "wiqa": 1},
                                                       "tokens": budget}}])
    rows = Dataset.open(mixture_dir(tmp_path / "run")).to_table().to_pylist()
    glue = [r for r in rows if r["part"] == "glue_mrpc"]
    per_row = {}
    for r in glue:
        per_row.setdefault(r["parent_id"] or r["id"], []).append(r["repeat"])
    assert len(per_row) == 20 and all(sorted(v) == [0, 1] for v in per_row.values())
    assert all(r["id"] == f"{r['parent_id']}#1" for r in glue if r["repeat"] == 1)
    mix = results["mixture"]
    assert mix.rows_added == sum(r["repeat"] > 0 for r in rows) >= 20
    assert mix.rows_out == mix.rows_kept + mix.rows_added == len(rows)
    assert len({r["id"] for r in rows}) == len(rows)


def test_max_repeats_shortfall_is_reported_not_filled(tmp_path, caplog):
    data = p3_by_task(tmp_path, ["glue_mrpc", "wiqa"])
    glue = sum(len((r["prompt"] + "\n\n" + r["response"]).split()) for r in P3 if r["task"] == "glue_mrpc")
    with caplog.at_level(logging.WARNING, logger="curate"):
        run_config(tmp_path, data, [{"mixture": {"by": "task", "part_tokens": {"glue_mrpc": 10 * glue, "wiqa": 100},
                                                 "max_repeats": 3}}])
    part = report(tmp_path / "run")["parts"]["glue_mrpc"]
    assert part["repeats"] == pytest.approx(3.0) and part["tokens_taken"] == 3 * glue
    assert part["shortfall"] == pytest.approx(7 * glue)
    assert any("glue_mrpc" in m and "short of its target" in m for m in caplog.messages)


def test_an_empty_part_gives_its_share_to_the_others(tmp_path, caplog):
    data = p3_by_task(tmp_path, ["glue_mrpc", "wiqa"])
    with caplog.at_level(logging.WARNING, logger="curate"):
        run_config(tmp_path, data, [{"normalize": {"label": "a"}},
                                    {"heuristics": {"from": "ingest", "label": "none", "min_words": 10**6}},
                                    {"mixture": {"from": ["a", "none"], "weights": {"a": 0.5, "none": 0.5},
                                                 "tokens": 1000}}])
    got = report(tmp_path / "run")["parts"]
    assert got["none"]["empty"] and got["none"]["rows"] == 0 and got["none"]["copies"] == 0
    assert got["a"]["target"] == pytest.approx(1000) and abs(got["a"]["tokens_taken"] - 1000) < 200
    assert any("'none' is empty" in m for m in caplog.messages)


def test_same_bytes_whatever_the_workers_and_shard_sizes(tmp_path):
    data = p3_by_task(tmp_path, ["glue_mrpc", "wiqa", "wiki_qa"])
    stages = [{"normalize": {}}, {"heuristics": {"label": "clean"}},
              {"normalize": {"from": "ingest", "label": "raw"}},
              {"mixture": {"from": ["clean", "raw"], "weights": {"clean": 2, "raw": 1}, "tokens": 5000,
                           "shard_rows": 40, "seed": 3}}]
    digests = []
    for i, engine in enumerate([{"workers": 1, "shard_rows": 7}, {"workers": 2, "shard_rows": 1000}]):
        root = tmp_path / f"try{i}"
        run_config(root, data, stages, **engine)
        folder = mixture_dir(root / "run")
        files = sorted(folder.glob("part-*.parquet"))
        assert len(files) >= 2  # output shards follow the mixture's shard_rows, not the input's
        digests.append([(f.name, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]
                       + [(n, json.dumps(report(root / "run")[n], sort_keys=True)) for n in ("parts", "totals")])
    assert digests[0] == digests[1]


def test_rows_two_parts_share_are_renamed_not_repeated(tmp_path):
    data = p3_by_task(tmp_path, ["glue_mrpc"])
    run_config(tmp_path, data, [{"normalize": {"label": "a"}}, {"normalize": {"from": "ingest", "label": "b"}},
                                {"mixture": {"from": ["a", "b"]}}])  # no budget: every row of both, once
    rows = Dataset.open(mixture_dir(tmp_path / "run")).to_table().to_pylist()
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
    renamed = [r for r in rows if r["part"] == "b"]
    assert all(r["id"] == f"{r['parent_id']}@b" for r in renamed) and len(renamed) == 20


def test_weights_must_name_parts(tmp_path):
    data = p3_by_task(tmp_path, ["glue_mrpc"])
    with pytest.raises(ConfigError) as info:
        run_config(tmp_path, data, [{"normalize": {"label": "a"}}, {"normalize": {"from": "ingest", "label": "b"}},
                                    {"mixture": {"from": ["a", "b"], "weights": {"a": 1, "c": 1}, "tokens": 10}}])
    assert "stages[2].mixture.weights: names ['c'], not parts of this mixture; its parts: a, b" in str(info.value)
    with pytest.raises(ConfigError, match=r"mixture.from: a mixture takes several input steps"):
        run_config(tmp_path, data, [{"mixture": {"weights": {"a": 1}}}])
    with pytest.raises(CurateError, match=r"not values of column 'task'; the parts there are: glue_mrpc"):
        run_config(tmp_path, data, [{"mixture": {"by": "task", "weights": {"wiqa": 1}, "tokens": 10}}])


def test_weight_and_repeats_columns_multiply_rows():
    table = pa.table({"id": [f"r{i}" for i in range(6)], "text": ["a b c d"] * 6, "part": ["p"] * 6,
                      "repeats": [0, 1, 2, 3, 1, 1]})
    kept, rejected = Mixture(by="part")(table)  # no budget: one pass
    counts = {}
    for r in kept.to_pylist():
        counts[r["parent_id"] or r["id"]] = counts.get(r["parent_id"] or r["id"], 0) + 1
    assert counts == {"r1": 1, "r2": 2, "r3": 3, "r4": 1, "r5": 1}
    assert rejected.column("reason").to_pylist() == ["zero_weight"]


def test_exports_load_in_datasets_and_chats_export_as_messages(tmp_path):
    import datasets

    gsm = read_records("heuristics_gsm8k.jsonl")[:30]
    chats = [{"id": r["id"], "messages": [{"role": "user", "content": r["prompt"]},
                                          {"role": "assistant", "content": r["response"]}]} for r in gsm]
    data = write_jsonl(tmp_path / "data" / "chats.jsonl", chats)
    run_config(tmp_path, data, [{"normalize": {"label": "a"}}, {"normalize": {"from": "ingest", "label": "b"}},
                                {"mixture": {"from": ["a", "b"], "weights": {"a": 1, "b": 1}, "rows": 40}}])
    run = tmp_path / "run"
    folder, shape, rows = export_step(run, "mixture", tmp_path / "jsonl", "jsonl")
    assert shape == "messages" and rows == 40
    records = [json.loads(line) for line in (folder / "mixture.jsonl").read_text().splitlines()]
    assert set(records[0]) == {"messages"} and records[0]["messages"][1]["role"] == "assistant"
    loaded = datasets.load_dataset("json", data_files=str(folder / "mixture.jsonl"), split="train")
    assert len(loaded) == 40 and loaded[0]["messages"][0]["role"] == "user"
    folder, _, _ = export_step(run, "mixture", tmp_path / "hf", "hf")
    assert len(datasets.load_from_disk(str(folder))) == 40
    folder, shape, _ = export_step(run, "mixture", tmp_path / "pc", "parquet", "prompt-completion")
    loaded = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in folder.glob("*.parquet")),
                                   split="train")
    assert shape == "prompt-completion" and set(loaded.column_names) == {"prompt", "completion"}
    # the step's own shards load as they are
    shards = sorted(str(p) for p in mixture_dir(run).glob("part-*.parquet"))
    own = datasets.load_dataset("parquet", data_files=shards, split="train")
    assert len(own) == 40 and {"id", "messages", "part", "repeat"} <= set(own.column_names)
    with pytest.raises(CurateError, match="no finished step 'nope'"):
        export_step(run, "nope", tmp_path / "x")


def test_tokens_are_counted_with_the_finetune_steps_tokenizer(tmp_path):
    from curate.models.lm_train import train_tokenizer
    from curate.models.token_count import TokenCounter

    texts = [r["prompt"] + "\n\n" + r["response"] for r in P3]
    tokenizer = train_tokenizer(texts, 300, tmp_path / "tok")
    data = p3_by_task(tmp_path, ["glue_mrpc", "wiqa"])
    config = {"name": "mix", "inputs": [{"path": str(data)}], "output": str(tmp_path / "run"),
              "heldout": {"path": str(data)},
              "stages": [{"mixture": {"by": "task"}}, {"finetune": {"model": str(tmp_path / "tok")}}]}
    spec = parse_config(config, base_dir=tmp_path).stage_specs()[0]
    assert spec.params["tokenizer"] == str(tmp_path / "tok")
    assert spec.params["tokenizer_from"] == "finetune step 'finetune'"
    table = pa.table({"id": ["a", "b"], "text": texts[:2], "response": [P3[0]["response"], None]})
    total, supervised = TokenCounter(str(tmp_path / "tok")).count_rows(table)
    want = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts[:2]]
    assert total.tolist() == want and supervised[1] == want[1]  # no response: every token is supervised
    assert supervised[0] == len(tokenizer(P3[0]["response"], add_special_tokens=False)["input_ids"])
