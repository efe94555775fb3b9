"""Several weighted targets: the config's list, the tags ingest puts on target rows, the per-row mass GOT-D uses, and
the weighted union CoLoR-Filter fine-tunes its conditional model on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.data.dataset import Dataset
from curate.data.errors import ConfigError
from curate.data.targets import TARGET_NAME, TARGET_WEIGHT, target_groups, target_row_weights, weighted_union
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.stages.color_filter import union_positions


def tagged(names: list[str], weights: list[float]) -> pa.Table:
    return pa.table({"id": [str(i) for i in range(len(names))], TARGET_NAME: names, TARGET_WEIGHT: weights})


def test_groups_row_weights_and_union() -> None:
    table = tagged(["math"] * 4 + ["code"] * 16, [3.0] * 4 + [1.0] * 16)
    groups = target_groups(table)
    assert [(g.name, g.weight, len(g.positions)) for g in groups] == [("math", 3.0, 4), ("code", 1.0, 16)]
    a = target_row_weights(table)
    assert a.sum() == pytest.approx(1.0) and a[:4].sum() == pytest.approx(0.75) and np.allclose(a[4:], 0.25 / 16)
    union = weighted_union(table, seed=0)
    assert len(union) == 20 and (union < 4).sum() == 15 and (union >= 4).sum() == 5  # 3:1 of the rows
    assert sorted(np.bincount(union[union < 4])) == [3, 4, 4, 4]  # three whole passes, then three rows at random
    assert np.array_equal(weighted_union(table, seed=0), union)  # seeded
    untagged = pa.table({"id": ["a", "b"]})
    assert np.allclose(target_row_weights(untagged), 0.5) and list(weighted_union(untagged)) == [0, 1]


def test_a_list_of_targets_through_ingest(tmp_path: Path) -> None:
    """`target: [...]` with names and weights: every target row carries its target's name and weight, the steps that
    read the target see both, and CoLoR-Filter's training rows are the weighted union."""
    for name, rows in (("math", 6), ("code", 3)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name} row {i}"}) + "\n"
                                                        for i in range(rows)))
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"text": f"pool row {i}"}) + "\n" for i in range(5)))
    config = {"name": "targets", "inputs": [{"path": "pool.jsonl"}], "output": "run", "engine": {"prefect": False},
              "target": [{"path": "math.jsonl", "name": "math", "weight": 1}, {"path": "code.jsonl", "weight": 2}],
              "stages": [{"normalize": {}}]}
    parsed = parse_config(config, base_dir=tmp_path)
    assert [(t.name, t.weight) for t in parsed.targets()] == [("math", 1.0), ("target_1", 2.0)]
    run_pipeline(parsed)
    target = Dataset.open(tmp_path / "run" / "target")
    table = target.to_table()
    assert table.column(TARGET_NAME).to_pylist() == ["math"] * 6 + ["target_1"] * 3
    assert table.column(TARGET_WEIGHT).to_pylist() == [1.0] * 6 + [2.0] * 3
    union = union_positions(target, seed=0)
    assert len(union) == 9 and (union >= 6).sum() == 6  # code holds 2/3 of the rows: each code row twice
    # a single target keeps every row once, in order, as before
    single = {**config, "target": {"path": "math.jsonl"}, "output": "run1"}
    run_pipeline(parse_config(single, base_dir=tmp_path))
    assert union_positions(Dataset.open(tmp_path / "run1" / "target"), seed=0) is None
    assert set(Dataset.open(tmp_path / "run1" / "target").to_table().column(TARGET_NAME).to_pylist()) == {"target"}


def test_target_list_errors_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    base = {"name": "x", "inputs": [{"path": "t.jsonl"}], "output": "run", "stages": []}
    with pytest.raises(ConfigError, match="names must differ"):
        parse_config({**base, "target": [{"path": "t.jsonl", "name": "a"}, {"path": "t.jsonl", "name": "a"}]},
                     base_dir=tmp_path)
    with pytest.raises(ConfigError) as error:
        parse_config({**base, "target": [{"path": "t.jsonl"}, {"path": "t.jsonl", "weight": 0}]}, base_dir=tmp_path)
    assert error.value.problems == ["target.1.weight: Input should be greater than 0 (got 0)"]
    with pytest.raises(ConfigError, match=r"target\.colour: unknown key; allowed: path, fields, .*name, weight"):
        parse_config({**base, "target": {"path": "t.jsonl", "colour": 1}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"target\[1\]\.path: no file or folder matches 'missing.jsonl'"):
        parse_config({**base, "target": [{"path": "t.jsonl"}, {"path": "missing.jsonl"}]}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="an empty list"):
        parse_config({**base, "target": []}, base_dir=tmp_path)
