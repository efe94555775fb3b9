"""The plan as a graph: labels and `from:`, validation before any work, branch-and-merge runs, re-running only an
edited branch, the declared stage contract (adds, needs, setup, resources, rows added), the `steps` view and the
graph in `curate inspect`, and held-out rows that no selection stage reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tests.stage_fixtures as fixtures
from curate.data.dataset import Dataset
from curate.data.errors import ConfigError, CurateError
from curate.engine.config import parse_config
from curate.engine.executors import ThreadExecutor
from curate.engine.runner import run_pipeline
from curate.inspect.sql import query
from curate.inspect.summary import graph_lines, run_steps
from tests.test_runner import make_input

BRANCHES = [{"normalize": {}},
            {"test_slow_tag": {"delay": 0, "drop_every": 3, "label": "left"}},
            {"test_slow_tag": {"from": "normalize", "delay": 0, "drop_every": 4, "label": "right"}},
            {"mixture": {"from": ["left", "right"], "weights": {"left": 0.5, "right": 0.5}, "rows": 300}}]


def config(tmp_path: Path, stages: list, **extra) -> dict:
    data = tmp_path / "data" / "in.jsonl"
    if not data.exists():  # written once: a rewrite would change the input's fingerprint
        make_input(tmp_path / "data")
    return {"name": "graph", "inputs": [{"path": str(data)}],
            "output": str(tmp_path / "run"), "engine": {"prefect": False, "workers": 2, "shard_rows": 40},
            "stages": stages, **extra}


def problems(tmp_path: Path, stages: list) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(config(tmp_path, stages), base_dir=tmp_path)
    return "\n".join(info.value.problems)


def test_branches_meet_in_a_mixture(tmp_path):
    results = {r.label: r for r in run_pipeline(parse_config(config(tmp_path, BRANCHES), base_dir=tmp_path))}
    assert results["left"].parents == results["right"].parents == ["normalize"]
    assert results["mixture"].parents == ["left", "right"]
    assert results["mixture"].rows_in == results["left"].rows_out + results["right"].rows_out
    assert results["mixture"].rows_out == 300
    steps = query(tmp_path / "run", "SELECT label, kind, output, parents, rows_in, rows_kept, rows_rejected, "
                                    "rows_added, rows_out FROM steps").to_pylist()
    by = {s["label"]: s for s in steps}
    assert by["mixture"]["parents"] == ["left", "right"] and by["mixture"]["output"] == "rows_added"
    assert all(s["rows_in"] == s["rows_kept"] + s["rows_rejected"] for s in steps)
    parts = query(tmp_path / "run", "SELECT part, count(*) AS n FROM mixture GROUP BY part ORDER BY part").to_pylist()
    assert [p["part"] for p in parts] == ["left", "right"] and sum(p["n"] for p in parts) == 300
    tree = graph_lines(run_steps(tmp_path / "run"))
    assert tree[0].startswith("ingest") and any("mixture" in line and "<- left, right" in line for line in tree)
    assert sum(line.lstrip().startswith(("└─ left", "├─ left")) for line in tree) == 1


def test_editing_one_branch_reruns_it_and_what_follows_only(tmp_path):
    run_pipeline(parse_config(config(tmp_path, BRANCHES), base_dir=tmp_path))
    edited = [dict(s) for s in BRANCHES]
    edited[2] = {"test_slow_tag": {"from": "normalize", "delay": 0, "drop_every": 5, "label": "right"}}
    status = {r.label: r.status for r in run_pipeline(parse_config(config(tmp_path, edited), base_dir=tmp_path))}
    assert status == {"ingest": "skipped", "normalize": "skipped", "left": "skipped", "right": "ran",
                      "mixture": "ran"}


def test_graph_errors_name_the_key_and_the_allowed_labels(tmp_path):
    got = problems(tmp_path, [{"normalize": {"from": "nowhere"}}])
    assert "stages[0].normalize.from: unknown label 'nowhere'; allowed: ingest" in got
    got = problems(tmp_path, [{"normalize": {"label": "a", "from": "b"}}, {"normalize": {"label": "b", "from": "a"}}])
    assert "the `from:` keys form a cycle" in got and "a -> b" in got
    got = problems(tmp_path, [{"normalize": {"label": "a"}}, {"heuristics": {"label": "a", "from": "ingest"}}])
    assert "stages[1].heuristics.label: 'a' is already the label of stages[0]; labels must be unique" in got
    got = problems(tmp_path, [{"normalize": {"label": "a"}}, {"heuristics": {"from": ["ingest", "a"]}}])
    assert "stages[1].heuristics.from: stage 'heuristics' takes one input step, got 2 (ingest, a)" in got
    got = problems(tmp_path, [{"normalize": {}}, {"mixture": {"weights": {"normalize": 1}}}])
    assert "stages[1].mixture.from: a mixture takes several input steps" in got
    got = problems(tmp_path, [{"normalize": {"label": "final"}}])
    assert "stages[0].normalize.label: 'final' is reserved" in got
    got = problems(tmp_path, [{"finetune": {"init": "scratch", "label": "ft"}}, {"normalize": {"from": "ft"}}])
    assert "stages[1].normalize.from: 'ft' builds models (artifacts), not rows; allowed: ingest" in got


def test_the_declaration_is_the_truth(tmp_path):
    with pytest.raises(CurateError, match=r"wrote column\(s\) \['other'\] that it does not declare"):
        run_pipeline(parse_config(config(tmp_path, [{"test_undeclared": {}}]), base_dir=tmp_path))
    with pytest.raises(CurateError, match=r"declares `adds` \['length'\] but its output lacks \['length'\]"):
        run_pipeline(parse_config(config(tmp_path, [{"test_undeclared": {"declare": True}}]), base_dir=tmp_path))


def test_map_stages_see_only_what_they_declare():
    import pyarrow as pa

    from curate.stages.language import Language

    seen = {}

    class Spy(Language):
        def process(self, table):
            seen["columns"] = table.column_names
            return super().process(table)

    Spy(column="prompt", languages=[])(pa.table({"id": ["a"], "text": ["x"], "prompt": ["Hello there, friend."]}))
    assert seen["columns"] == ["prompt"]


def test_setup_runs_once_per_worker_and_executors_get_resources(tmp_path):
    class Recording(ThreadExecutor):
        def map(self, fn, calls, names, resources=None):
            seen.append((fn.__name__, resources))
            return super().map(fn, calls, names, resources)

    seen = []
    fixtures.SETUP_CALLS.clear()
    run_pipeline(parse_config(config(tmp_path, [{"test_count_setup": {}}]), base_dir=tmp_path), Recording(2, 0))
    assert len(Dataset.open(tmp_path / "run" / "stages" / "00-ingest").shard_names) > 2
    assert fixtures.SETUP_CALLS == [1]  # many shards and batches on two threads of one process: one setup
    assert ("map_task", fixtures.CountSetup.resources) in seen and fixtures.CountSetup.resources.memory_gb == 0.25


def test_rows_added_are_counted_apart_and_must_have_new_ids(tmp_path):
    results = {r.label: r for r in run_pipeline(parse_config(config(tmp_path, [{"test_copy_rows": {}}]),
                                                             base_dir=tmp_path))}
    copy = results["test_copy_rows"]
    assert copy.rows_in == copy.rows_kept == 600 and copy.rows_added == 600 and copy.rows_out == 1200
    rows = Dataset.open(tmp_path / "run" / "stages" / "01-test_copy_rows").to_table(columns=["id", "parent_id"])
    parents = rows.column("parent_id").to_pylist()
    assert sum(p is not None for p in parents) == 600 and len(set(rows.column("id").to_pylist())) == 1200
    with pytest.raises(CurateError, match="the output repeats ids"):
        run_pipeline(parse_config(config(tmp_path / "again", [{"test_copy_rows": {"reuse_ids": True}}]),
                                  base_dir=tmp_path))
    with pytest.raises(CurateError, match="600 rows added but only 0 name a `parent_id`"):
        run_pipeline(parse_config(config(tmp_path / "orphans", [{"test_copy_rows": {"no_parent": True}}]),
                                  base_dir=tmp_path))


def test_heldout_rows_are_split_once_and_never_reach_selection(tmp_path):
    gsm = Path(__file__).parent / "data" / "heuristics_gsm8k.jsonl"
    seen = tmp_path / "seen.json"
    cfg = config(tmp_path, [{"test_record_target": {"out": str(seen)}}],
                 target={"path": str(gsm)}, heldout={"split_from_target": 0.3, "seed": 1})
    run_pipeline(parse_config(cfg, base_dir=tmp_path))
    split = json.loads((tmp_path / "run" / "heldout_split.json").read_text())
    target, held = set(split["target_ids"]), set(split["heldout_ids"])
    assert len(held) == 60 and len(target) == 140 and not target & held
    recorded = json.loads(seen.read_text())
    assert set(recorded["target"]) == target and not set(recorded["target"]) & held and not recorded["heldout"]
    views = query(tmp_path / "run", "SELECT (SELECT count(*) FROM target) AS t, (SELECT count(*) FROM heldout) AS h")
    assert views.to_pylist() == [{"t": 140, "h": 60}]
    # a separate held-out file is ingested as is, and the target is whole again but for the 4 rows that both
    # samples of GSM8K hold (see the next test)
    other = Path(__file__).parent / "data" / "dedup_gsm8k.jsonl"
    cfg = {**cfg, "heldout": {"path": str(other)}}
    run_pipeline(parse_config(cfg, base_dir=tmp_path))
    assert Dataset.open(tmp_path / "run" / "target").count() == 196
    assert not (tmp_path / "run" / "heldout_split.json").exists()
    with pytest.raises(ConfigError, match=r"heldout\.split_from_target: splits the `target:` sample"):
        parse_config({**config(tmp_path, []), "heldout": {"split_from_target": 0.2}}, base_dir=tmp_path)


def test_runs_written_before_the_graph_still_read_as_a_chain(tmp_path):
    run_pipeline(parse_config(config(tmp_path, [{"normalize": {}}, {"test_slow_tag": {"delay": 0}}]),
                              base_dir=tmp_path))
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    del record["graph"]  # what earlier versions wrote
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    steps = query(tmp_path / "run", "SELECT label, parents, rows_out FROM steps").to_pylist()
    assert [(s["label"], s["parents"]) for s in steps] == [("ingest", []), ("normalize", ["ingest"]),
                                                           ("test_slow_tag", ["normalize"])]
    assert query(tmp_path / "run", "SELECT count(*) AS n FROM final").to_pylist() == [{"n": steps[-1]["rows_out"]}]


def test_heldout_rows_of_their_own_are_left_out_of_the_target(tmp_path):
    """A held-out file that repeats target rows (the same text, or the same prompt with another response): those
    rows leave the target before any stage reads it, are named in heldout_overlap.json and counted in the steps
    view; a held-out file that repeats none leaves the target whole."""
    gsm = Path(__file__).parent / "data" / "heuristics_gsm8k.jsonl"
    rows = [json.loads(line) for line in gsm.read_text(encoding="utf-8").splitlines()]
    held = [rows[3], rows[10], rows[42], {**rows[7], "response": "a different solution"},
            {**rows[99], "id": "renamed", "response": "x"}, {"id": "new", "prompt": "A new question?", "response": "4"}]
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(r) + "\n" for r in held))
    seen = tmp_path / "seen.json"
    cfg = config(tmp_path, [{"test_record_target": {"out": str(seen)}}], target={"path": str(gsm)},
                 heldout={"path": str(heldout)})
    run_pipeline(parse_config(cfg, base_dir=tmp_path))
    overlap = set(json.loads((tmp_path / "run" / "heldout_overlap.json").read_text())["target_ids_in_heldout"])
    assert overlap == {rows[i]["id"] for i in (3, 10, 42, 7, 99)}
    recorded = set(json.loads(seen.read_text())["target"])
    assert len(recorded) == 195 and not recorded & overlap
    step = query(tmp_path / "run", "SELECT rows_in, rows_rejected FROM steps WHERE label = 'heldout_overlap'")
    assert step.to_pylist() == [{"rows_in": 200, "rows_rejected": 5}]
    heldout.write_text(json.dumps(held[-1]) + "\n")
    run_pipeline(parse_config(cfg, base_dir=tmp_path))
    assert Dataset.open(tmp_path / "run" / "target").count() == 200
    assert json.loads((tmp_path / "run" / "heldout_overlap.json").read_text())["target_ids_in_heldout"] == []
