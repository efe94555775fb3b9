"""`curate.open_run` on real runs: the demo (the session's `demo_run`), and a small run killed in the middle.

Every reader is checked against the Parquet files read directly, counts against the manifests on disk, and SQL
against `curate sql --format json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import open_run
from curate.data.dataset import Dataset, manifest_path, side_path
from curate.data.errors import CurateError
from curate.data.faults import ENV
from tests.cli_runner import curate

DATA = Path(__file__).parent / "data"


def parquet_rows(folder: Path) -> pa.Table:
    """A dataset folder's rows, read straight from its shard files (not through curate)."""
    files = sorted(folder.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")


def step_folder(run_dir: Path, label: str, which: str = "folder") -> Path:
    """A step's folder (or its `rejected` folder) as run.json's graph names it."""
    graph = json.loads((run_dir / "run.json").read_text())["graph"]
    return run_dir / next(e[which] for e in graph if e["label"] == label)


def by_id(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["id"], r.get("kept", True)))


def test_steps_and_counts_equal_the_manifests(demo_run):
    run = open_run(demo_run)
    graph = json.loads((demo_run / "run.json").read_text())["graph"]
    stages = [e for e in graph if e["kind"] not in ("split", "exclude") and e["label"] not in ("target", "heldout")]
    assert run.labels == [e["label"] for e in stages]  # graph order
    assert run.finished and run.missing == []
    for step, entry in zip(run.steps, stages, strict=True):
        manifest = json.loads(manifest_path(demo_run / entry["folder"]).read_text())
        stats = manifest["stats"]
        assert (step.stage, step.kind, step.parents) == (entry["stage"], entry["kind"], entry["parents"])
        assert step.fingerprint == manifest["fingerprint"] == entry["fingerprint"]
        assert (step.rows_in, step.rows_rejected, step.seconds) == (
            stats.get("rows_in", 0), stats.get("rows_rejected", 0), stats.get("seconds", 0.0))
        assert step.rows_kept == stats.get("rows_kept", stats.get("rows_out", 0))
        assert step.rows_added == stats.get("rows_added", 0)
        if entry["output"] != "artifacts":
            assert run[step.label].num_rows == manifest["rows"]
            rejected = run[step.label].rejected
            assert (rejected.num_rows if rejected else 0) == step.rows_rejected
    assert run["evaluate"].num_rows == run["mixture"].num_rows  # an artifact step shows the rows it was built from


@pytest.mark.parametrize("label", ["ingest", "dedup", "embed", "mixture"])  # ingest: shards of unlike columns
def test_polars_arrow_and_datasets_give_the_rows_of_the_parquet_files(demo_run, label):
    run = open_run(demo_run)
    direct = parquet_rows(step_folder(demo_run, label))
    data = run[label]
    from_polars = data.to_polars().collect().to_arrow()
    from_arrow = data.to_arrow().to_table()
    from_hf = data.to_hf()
    assert from_polars.column_names == from_arrow.column_names == from_hf.column_names
    assert set(from_arrow.column_names) == set(direct.column_names)
    if "embedding" in direct.column_names:  # 384 floats per row: compared as matrices
        want = np.array(direct.column("embedding").to_pylist(), np.float32)
        for table in (from_polars, from_arrow, from_hf.data.table):
            assert np.array_equal(np.array(table.column("embedding").to_pylist(), np.float32), want)
        direct, from_polars, from_arrow = (t.drop_columns(["embedding"]) for t in (direct, from_polars, from_arrow))
        from_hf = from_hf.remove_columns(["embedding"])
    want = by_id(direct.to_pylist())
    assert by_id(from_polars.to_pylist()) == want
    assert by_id(from_arrow.to_pylist()) == want
    assert by_id(from_hf.to_list()) == want
    # memory-mapped from one Arrow file in curate's cache, not copied into RAM; the run folder is not written
    from datasets.table import MemoryMappedTable

    assert isinstance(from_hf.data, MemoryMappedTable)
    cache = Path(os.environ["CURATE_CACHE_DIR"]).resolve()
    assert all(Path(f["filename"]).resolve().is_relative_to(cache) for f in from_hf.cache_files)


def test_rejected_and_all_rows(demo_run):
    run = open_run(demo_run)
    dedup = run["dedup"]
    rejected_direct = parquet_rows(step_folder(demo_run, "dedup", "rejected"))
    assert by_id(dedup.rejected.to_polars().collect().to_arrow().to_pylist()) == by_id(rejected_direct.to_pylist())
    assert set(rejected_direct.column("reason").to_pylist()) >= {"near_duplicate"}
    both = dedup.all()
    frame = both.to_polars().collect()
    assert frame.height == dedup.num_rows + dedup.rejected.num_rows
    assert frame["kept"].sum() == dedup.num_rows
    arrow = both.to_arrow()
    assert arrow.count_rows(filter=pa.compute.field("kept")) == dedup.num_rows
    assert arrow.count_rows() == frame.height
    hf = both.to_hf()
    assert sum(hf["kept"]) == dedup.num_rows and len(hf) == frame.height
    # the same rows as the `dedup_all` SQL view
    view = run.sql("SELECT id, kept, reason FROM dedup_all").to_pylist()
    assert by_id(view) == by_id(frame.select(["id", "kept", "reason"]).to_dicts())
    with pytest.raises(CurateError, match="kept and dropped"):
        dedup.rejected.all()


def test_run_sql_equals_curate_sql_and_refuses_writes(demo_run, tmp_path):
    run = open_run(demo_run)
    query = "SELECT stage, reason, count(*) AS n FROM rejected GROUP BY ALL ORDER BY n DESC, stage, reason"
    cli = curate("sql", str(demo_run), query, "--format", "json", cwd=tmp_path).stdout
    assert run.sql(query).to_pylist() == [json.loads(line) for line in cli.splitlines()]
    final = run.relation("SELECT count(*) AS n FROM final").pl()  # a DuckDB relation: .pl(), .df(), .arrow()
    assert final["n"][0] == run.step("mixture").rows_out
    for statement in ("CREATE TABLE t AS SELECT 1", f"COPY (SELECT * FROM final) TO '{tmp_path / 'x.csv'}'",
                      "SET lock_configuration = false"):
        with pytest.raises(CurateError, match="read-only"):
            run.sql(statement)
    assert not (tmp_path / "x.csv").exists()
    run.close()


def test_what_the_later_stages_produce(demo_run):
    from transformers import AutoConfig

    run = open_run(demo_run)
    mixture = run.mixture()
    assert mixture.report == json.loads(side_path(mixture.step.rows, "mixture.json").read_text())
    assert mixture.num_rows == run["mixture"].num_rows > 0
    assert AutoConfig.from_pretrained(run.model()).model_type == "gpt2"
    assert run.eval() == json.loads((demo_run / "eval" / "evaluate" / "results.json").read_text())
    assert set(run.eval()["arms"]) >= {"selection", "random"}
    with pytest.raises(CurateError, match="is a dedup step, not mixture"):
        run.mixture("dedup")
    with pytest.raises(CurateError, match="has no step 'nope'"):
        run["nope"]


def test_notebook_display(demo_run):
    run = open_run(demo_run)
    html = run._repr_html_()
    for step in run.steps:
        assert f"<td>{step.label}</td>" in html
    top = max(((s.label, r, n) for s in run.steps for r, n in s.reasons.items()), key=lambda x: x[2])
    assert f"<td>{top[1]}</td><td>{top[2]:,}</td>" in html  # the top drop reason and its count
    assert "report.html" in html and (demo_run / "report.html").is_file()
    step_html = run["dedup"]._repr_html_()
    assert "2 shard" in step_html or "shard(s)" in step_html
    assert "<td>near_duplicate</td>" in step_html


def test_a_killed_run_opens_with_its_finished_steps(tmp_path):
    """Killed (SIGKILL) after heuristics wrote a shard but before its manifest: the step is missing, and its
    shard on disk is never read."""
    config = {"name": "killed", "output": str(tmp_path / "run"), "inputs": [{"path": str(DATA / "ingest" /
                                                                                  "pool_sample.jsonl")}],
              "engine": {"prefect": False, "workers": 1, "shard_rows": 16},
              "stages": [{"normalize": {}}, {"heuristics": {"min_words": 3}}, {"dedup": {}}]}
    script = ("import json, sys\nfrom curate.engine.config import parse_config\n"
              "from curate.engine.runner import run_pipeline\n"
              "run_pipeline(parse_config(json.loads(sys.argv[1])))\n")
    killed = subprocess.run([sys.executable, "-c", script, json.dumps(config)], capture_output=True, text=True,
                            env={**os.environ, ENV: "task_done@02-heuristics/:2"}, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    heuristics = tmp_path / "run" / "stages" / "02-heuristics"
    assert list(heuristics.rglob("*.parquet")) and not Dataset.exists(heuristics)

    run = open_run(tmp_path / "run")
    assert run.labels == ["ingest", "normalize"]
    assert run.missing == ["heuristics", "dedup"] and not run.finished
    with pytest.raises(CurateError, match=r"'heuristics' .* is not finished"):
        run["heuristics"]
    assert run["normalize"].to_polars().collect().height == run.steps[1].rows_kept > 0
    views = {name for (name,) in run.relation("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "normalize" in views and "heuristics" not in views
    assert "unfinished" in run._repr_html_() and "heuristics, dedup" in run._repr_html_()


def test_input_files_whose_types_disagree_read_alike_in_every_reader(tmp_path):
    """Two JSONL files infer a column apart: `score` an integer in one and a float in the other, `meta` an object
    in one and a string in the other. polars' scan, Arrow, `datasets` and SQL read the same values, the ones a
    stage sees (the dataset's schema: a float, and the object as JSON text)."""
    with open(tmp_path / "a.jsonl", "w") as f:
        for i in range(20):
            f.write(json.dumps({"text": f"first file row {i} says hello", "score": i, "meta": {"k": i}}) + "\n")
    with open(tmp_path / "b.jsonl", "w") as f:
        for i in range(20):
            f.write(json.dumps({"text": f"second file row {i} says bye", "score": i + 0.5, "meta": "plain"}) + "\n")
    (tmp_path / "c.yaml").write_text("name: kinds\noutput: run\ninputs: [{path: '*.jsonl'}]\n"
                                     "engine: {prefect: false}\nstages: [{normalize: {}}]\n")
    curate("run", "c.yaml", cwd=tmp_path)
    run = open_run(tmp_path / "run")
    for label in ("ingest", "normalize"):
        data = run[label]
        assert data.schema.field("score").type == pa.float64() and data.schema.field("meta").type == pa.string()
        expected = by_id(data.to_table().to_pylist())  # curate's own reader, conformed to the schema
        assert len(expected) == 40 and {"score": 3.0, "meta": '{"k": 3}'}.items() <= next(
            r for r in expected if r["text"].startswith("first file row 3 ")).items()
        assert by_id(data.to_polars().collect().to_dicts()) == expected
        assert by_id(data.to_arrow().to_table().to_pylist()) == expected
        assert by_id(data.to_hf().to_list()) == expected
        assert by_id(run.sql(f"SELECT * FROM {label}").to_pylist()) == expected
        listed = curate("sql", "run", f"SELECT id, score, meta FROM {label}", "--format", "json", cwd=tmp_path)
        assert by_id([json.loads(line) for line in listed.stdout.splitlines()]) == [
            {k: r[k] for k in ("id", "score", "meta")} for r in expected]
