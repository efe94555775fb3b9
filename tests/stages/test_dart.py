"""DART (docs/methods.md §3): the §3.10 known answers, `resample` on MATH's levels through the mixture, and
`synthesize` with a real tiny model, locally and through an OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from curate.data.dataset import Dataset
from curate.data.errors import ConfigError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.methods.dart import TARGET_REACHED, TRIAL_CAP, UNSOLVED, QueryState, prop2diff_targets, rejection_sample
from tests.lm_fixtures import DATA, arithmetic_problems


def stub_draw(pass_rates: list[float], seed: int = 0):
    """A generator double: query i's sample is correct with probability pass_rates[i] (seeded per round)."""
    def draw(positions, round_, counts):
        out = []
        for i, count in zip(positions, counts, strict=True):
            rng = np.random.default_rng([seed, i, round_])
            draws = rng.random(count)
            out.append([f"#### {1 if u < pass_rates[i] else 0} ({round_}.{k})" for k, u in enumerate(draws)])
        return out

    return draw


def stub_check(_position, responses):
    return [r.startswith("#### 1") for r in responses]


def test_uniform_stops_at_the_target_and_drops_the_never_solved():  # §3.10
    rates = [0.9, 0.5, 0.1, 0.01, 0.0]
    states = rejection_sample([QueryState(4) for _ in rates], stub_draw(rates), stub_check, n_max=200, batch=64)
    assert [len(s.kept()) for s in states[:3]] == [4, 4, 4]
    assert [s.stop for s in states[:3]] == [TARGET_REACHED] * 3
    assert states[0].trials == 64  # one round was enough (and overshot: the kept ones are cut to 4)
    assert states[0].corrects > 4
    assert states[3].trials <= 200 and states[3].stop in (TRIAL_CAP, TARGET_REACHED, UNSOLVED)
    assert states[4].trials == 200 and states[4].stop == UNSOLVED and states[4].kept() == []


def test_prop2diff_targets():  # §3.10
    assert prop2diff_targets(np.array([0.1, 0.5, 0.9]), 10).tolist() == [2, 6, 10]
    # the max runs over solvable queries; an unsolved one gets k_p, a query without difficulty 0
    got = prop2diff_targets(np.array([0.2, 0.4, 1.0, np.nan]), 10, np.array([True, True, False, True]))
    assert got.tolist() == [5, 10, 10, 0]


def _math_config(tmp_path: Path, stages: list) -> dict:
    return {"name": "dart", "inputs": [{"path": str(DATA / "dart_math.jsonl")}], "output": str(tmp_path / "run"),
            "engine": {"prefect": False}, "stages": stages}


def test_resample_on_math_levels_sets_repeats_that_the_mixture_honours(tmp_path):
    config = _math_config(tmp_path, [
        {"dart": {"mode": "resample", "difficulty": {"column": "level"}, "strategy": "prop2diff", "k_p": 10}},
        {"mixture": {"by": "source", "seed": 1, "max_repeats": 10}},
    ])
    results = run_pipeline(parse_config(config))
    dart = Dataset.open(next((tmp_path / "run" / "stages").glob("01-dart"))).to_table()
    levels = np.array(dart.column("level").to_pylist())
    repeats = np.array(dart.column("repeats").to_pylist())
    assert (repeats == np.ceil(10 * levels / 5)).all()  # level 5 (the hardest) gets k_p
    assert set(dart.column("dart_stop").to_pylist()) == {"resampled"}
    mixture = results[-1]
    assert mixture.rows_out == repeats.sum()  # every row as many times as its repeats
    out = Dataset.open(next((tmp_path / "run" / "stages").glob("02-mixture"))).to_table()
    counts = {}
    for parent, row_id in zip(out.column("parent_id").to_pylist(), out.column("id").to_pylist(), strict=True):
        counts[parent or row_id] = counts.get(parent or row_id, 0) + 1
    assert counts == dict(zip(dart.column("id").to_pylist(), repeats.tolist(), strict=True))


def test_config_errors_name_the_key():
    config = {"name": "x", "inputs": [{"path": str(DATA / "dart_math.jsonl")}], "output": "run",
              "stages": [{"dart": {"mode": "resample"}}]}
    with pytest.raises(ConfigError, match="difficulty"):
        parse_config(config)
    config["stages"] = [{"dart": {"mode": "synthesize", "strategy": "uniform"}}]
    with pytest.raises(ConfigError, match="generator"):
        parse_config(config)
    config["stages"] = [{"dart": {"mode": "synthesize", "strategy": "uniform", "generator": {"model_from": "sft"}}}]
    with pytest.raises(ConfigError, match=r"generator.model_from: 'sft' is not a step that trains a model"):
        parse_config(config)


def write_sums(path: Path, count: int) -> list[tuple[int, int]]:
    problems = arithmetic_problems(count, seed=5)
    path.write_text("".join(json.dumps({"id": f"s{i}", "prompt": f"{a}+{b}=?", "response": f"#### {a + b}",
                                        "answer": str(a + b)}) + "\n" for i, (a, b) in enumerate(problems)))
    return problems


SYNTH = {"mode": "synthesize", "strategy": "prop2diff", "k_p": 3, "n_max": 24, "batch": 8,
         "difficulty": {"probe": {"n": 8}}, "sampling": {"temperature": 1.0, "max_new_tokens": 6}}


def _check_synthesized(run: Path, problems: list[tuple[int, int]]) -> tuple:
    out = Dataset.open(next((run / "stages").glob("01-dart"))).to_table()
    rejected = Dataset.open(next((run / "rejected").glob("01-dart"))).to_table()
    new = out.filter(pc.invert(pc.is_null(out.column("parent_id"))))
    sums = {f"s{i}": a + b for i, (a, b) in enumerate(problems)}
    for row in new.to_pylist():  # every new response is verified correct and belongs to its query
        assert row["id"].startswith(row["parent_id"] + "#dart")
        assert row["response"].strip() == f"#### {sums[row['parent_id']]}"
        assert row["text"] == f"{row['prompt']}\n\n{row['response']}"
    originals = out.filter(pc.is_null(out.column("parent_id"))).to_pylist()
    for row in originals:
        assert row["dart_stop"] in (TARGET_REACHED, TRIAL_CAP) and row["dart_trials"] <= 24
        kept = sum(1 for r in new.to_pylist() if r["parent_id"] == row["id"])
        assert 1 <= kept <= 3
    for row in rejected.to_pylist():  # the never-solved queries, dropped with the trial cap spent
        assert row["reason"] == UNSOLVED and row["dart_trials"] == 24 and row["dart_correct"] == 0
    return out, rejected, new


def test_synthesize_with_a_local_model(arithmetic_lm, tmp_path):
    problems = write_sums(tmp_path / "sums.jsonl", 30)
    config = {"name": "dart", "inputs": [{"path": str(tmp_path / "sums.jsonl")}], "output": str(tmp_path / "run"),
              "engine": {"prefect": False},
              "stages": [{"dart": {**SYNTH, "generator": {"model": arithmetic_lm, "device": "cpu"}}}]}
    results = run_pipeline(parse_config(config))
    _, rejected, new = _check_synthesized(tmp_path / "run", problems)
    assert results[-1].rows_added == new.num_rows > 0 and rejected.num_rows > 0  # some solved, some never
    difficulty = json.loads((tmp_path / "run" / "models" / "dart" / "targets.json").read_text())
    assert difficulty["queries"] == 30
    stores = list((tmp_path / "run" / "models" / "dart" / "generations").glob("*.jsonl"))
    assert {p.name.split("-")[0] for p in stores} == {"probe", "dart"}
    # a re-run with a new decision parameter reuses every stored generation: nothing is generated again
    import curate.models.generation.local as local

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again")

    sizes = {p: p.stat().st_size for p in stores}
    original = local.LocalGenerator.generate
    local.LocalGenerator.generate = no_generation
    try:
        config["stages"][0]["dart"]["keep_original"] = False
        run_pipeline(parse_config(config))
    finally:
        local.LocalGenerator.generate = original
    assert {p: p.stat().st_size for p in stores} == sizes


def _endpoint_config(tmp_path: Path, base_url: str, output: str) -> Path:
    import yaml

    generator = {"endpoint": {"base_url": base_url, "model": "tiny", "concurrency": 2, "backoff": 0.05,
                              "api_key_env": "DART_TEST_KEY"}}
    config = {"name": "dart", "inputs": [{"path": str(tmp_path / "sums.jsonl")}], "output": output,
              "engine": {"prefect": False}, "stages": [{"dart": {**SYNTH, "generator": generator}}]}
    path = tmp_path / f"{output}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_synthesize_through_an_endpoint_resumes_after_a_kill_without_generating_again(arithmetic_lm, tmp_path):
    """`curate run` against a real OpenAI-compatible server on 127.0.0.1, killed (-9) in the middle of the
    generation, then run again: no stored generation is requested again, and the output equals an uninterrupted
    run's. The server's API key never reaches a run folder, the report or the logs."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from curate.models.generation import prompt_seed
    from tests.generation.openai_server import OpenAIServer

    problems = write_sums(tmp_path / "sums.jsonl", 14)
    curate = shutil.which("curate", path=str(Path(sys.executable).parent)) or "curate"
    secret = "planted-dart-key-0c9f"
    env = {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, "DART_TEST_KEY": secret}
    with OpenAIServer(arithmetic_lm, delay=0.01, api_key=secret) as server:
        config = _endpoint_config(tmp_path, server.base_url, "run")
        child = subprocess.Popen([curate, "run", str(config)], cwd=tmp_path, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and len(server.requests) < 16 and child.poll() is None:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        before = len(server.requests)
        stores = tmp_path / "run" / "models" / "dart" / "generations"
        stored = [json.loads(line)["key"] for p in stores.glob("*.jsonl") for line in p.read_text().splitlines()]
        assert len(stored) >= 8 and before < 40  # killed in the middle of the probes or the first rounds
        done = subprocess.run([curate, "run", str(config)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        stored_seeds = {prompt_seed(0, key) for key in stored}
        again = [r["seed"] for r in server.requests[before:]]
        assert not stored_seeds & set(again)  # nothing stored was asked for again
        assert len(again) == len(set(again))
        fresh = subprocess.run([curate, "run", str(_endpoint_config(tmp_path, server.base_url, "fresh"))],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert all(secret not in out for out in (done.stdout, done.stderr, fresh.stdout, fresh.stderr))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert (tmp_path / "run" / "report.html") in written
    assert not [p for p in written if secret.encode() in p.read_bytes()]
    resumed, _, new = _check_synthesized(tmp_path / "run", problems)
    uninterrupted = Dataset.open(next((tmp_path / "fresh" / "stages").glob("01-dart"))).to_table()
    assert new.num_rows > 0
    assert resumed.sort_by("id").to_pylist() == uninterrupted.sort_by("id").to_pylist()
