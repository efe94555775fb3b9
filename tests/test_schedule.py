"""Steps whose inputs are ready run at the same time (curate.engine.schedule): dependencies, capacity, exclusive
stages, errors, and a branchy run whose every output file equals a serial run's, byte for byte."""

from __future__ import annotations

import contextvars
import threading
import time
from pathlib import Path

import pytest

import tests.stage_fixtures  # noqa: F401  (registers test_slow_tag)
from curate.data.dataset import META
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.engine.schedule import Claim, StepScheduler, claim_for
from tests.test_runner import make_input


class Recorder:
    """Runs named items for `seconds` each and records when each started and ended."""

    def __init__(self, seconds: float = 0.15) -> None:
        self.seconds = seconds
        self.spans: dict[str, tuple[float, float]] = {}
        self.done: list[str] = []
        self.lock = threading.Lock()

    def run(self, name: str) -> str:
        start = time.perf_counter()
        time.sleep(self.seconds)
        with self.lock:
            self.spans[name] = (start, time.perf_counter())
        return name.upper()

    def finished(self, name: str, result: str) -> None:
        assert result == name.upper()
        self.done.append(name)

    def overlap(self, a: str, b: str) -> bool:
        return self.spans[a][0] < self.spans[b][1] and self.spans[b][0] < self.spans[a][1]

    def max_running(self) -> int:
        events = sorted([(s, 1) for s, _ in self.spans.values()] + [(e, -1) for _, e in self.spans.values()])
        running = peak = 0
        for _, change in events:
            running += change
            peak = max(peak, running)
        return peak


def schedule(items: list[str], deps: dict[str, list[str]], capacity: int,
             claims: dict[str, Claim] | None = None, gpus: float = 0.0) -> StepScheduler[str]:
    return StepScheduler(items, key=lambda i: i, depends=lambda i: deps.get(i, []),
                         claim=lambda i: (claims or {}).get(i, Claim()), capacity=capacity, gpus=gpus)


def test_independent_branches_run_together_and_children_wait_for_their_parents():
    # embed -> (got_d, dsir) -> (eval_got_d, eval_dsir): the two branches overlap, children start after parents
    deps = {"got_d": ["embed"], "dsir": ["embed"], "eval_got_d": ["got_d"], "eval_dsir": ["dsir"]}
    items = ["embed", "got_d", "dsir", "eval_got_d", "eval_dsir"]
    recorder = Recorder()
    schedule(items, deps, capacity=2).run(recorder.run, recorder.finished)
    assert sorted(recorder.done) == sorted(items) and recorder.done[0] == "embed"
    assert recorder.overlap("got_d", "dsir") and recorder.overlap("eval_got_d", "eval_dsir")
    for child, parents in deps.items():
        assert all(recorder.spans[p][1] <= recorder.spans[child][0] for p in parents)


def test_capacity_one_runs_one_step_at_a_time_in_plan_order():
    recorder = Recorder(0.03)
    schedule(["a", "b", "c", "d"], {}, capacity=1).run(recorder.run, recorder.finished)
    assert recorder.done == ["a", "b", "c", "d"] and recorder.max_running() == 1


def test_never_more_slots_than_the_engine_has():
    recorder = Recorder(0.05)
    items = [f"s{i}" for i in range(8)]
    claims = {"s0": Claim(slots=2), "s3": Claim(slots=3)}
    schedule(items, {}, capacity=3, claims=claims).run(recorder.run, recorder.finished)
    assert sorted(recorder.done) == sorted(items)
    for a in items:  # at every start, the slots of the steps running then fit in 3
        start = recorder.spans[a][0]
        held = sum((claims.get(b) or Claim()).slots for b in items
                   if recorder.spans[b][0] <= start < recorder.spans[b][1])
        assert held <= 3, (a, held)
    assert recorder.max_running() == 3


def test_an_exclusive_step_runs_alone_and_gpus_are_not_shared_beyond_what_there_is():
    recorder = Recorder(0.05)
    claims = {"train": Claim(alone=True), "g1": Claim(gpus=1), "g2": Claim(gpus=1)}
    schedule(["a", "train", "b", "g1", "g2"], {}, capacity=4, claims=claims, gpus=1).run(recorder.run,
                                                                                         recorder.finished)
    assert not any(recorder.overlap("train", other) for other in ("a", "b", "g1", "g2"))
    assert not recorder.overlap("g1", "g2")
    assert recorder.overlap("a", "a") and recorder.max_running() >= 2  # others did run together


def test_a_ready_step_that_does_not_fit_is_not_overtaken():
    recorder = Recorder(0.05)
    claims = {"big": Claim(slots=2)}
    schedule(["small", "big", "tiny"], {}, capacity=2, claims=claims).run(recorder.run, recorder.finished)
    assert recorder.spans["tiny"][0] >= recorder.spans["big"][0]  # tiny waited behind big


def test_claims_come_from_declared_resources():
    assert claim_for(1.0, 0.0, False, 4) == Claim(1, 0.0, False)
    assert claim_for(0.5, 0.0, False, 4).slots == 1
    assert claim_for(2.5, 1.0, False, 4) == Claim(3, 1.0, False)
    assert claim_for(16.0, 0.0, True, 4) == Claim(4, 0.0, True)


def test_the_first_error_stops_new_starts_lets_running_steps_finish_and_is_raised():
    recorder = Recorder(0.1)

    def run(name: str) -> str:
        if name == "bad":
            raise ValueError("bad step")
        return recorder.run(name)

    with pytest.raises(ValueError, match="bad step"):
        schedule(["slow", "bad", "after"], {"after": ["bad"]}, capacity=2).run(run, recorder.finished)
    assert recorder.done == ["slow"] and "after" not in recorder.spans


def test_steps_run_in_the_callers_context():
    flow = contextvars.ContextVar("flow", default=None)
    flow.set("flow-run-1")
    seen = []
    schedule(["a", "b"], {}, capacity=2).run(lambda i: seen.append(flow.get()) or i.upper(), lambda i, r: None)
    assert seen == ["flow-run-1", "flow-run-1"]


BRANCHY = [{"normalize": {}},
           {"test_slow_tag": {"delay": 0.05, "drop_every": 3, "label": "left"}},
           {"test_slow_tag": {"from": "normalize", "delay": 0.05, "drop_every": 4, "label": "right"}},
           {"dedup": {"from": "normalize", "label": "exact"}},
           {"mixture": {"from": ["left", "right", "exact"], "weights": {"left": 0.4, "right": 0.4, "exact": 0.2},
                        "rows": 300}}]


def _run(tmp_path: Path, parallel: bool) -> tuple[dict[str, bytes], float]:
    data = tmp_path / "data" / "in.jsonl"
    if not data.exists():
        make_input(tmp_path / "data")
    out = tmp_path / ("parallel" if parallel else "serial")
    config = {"name": "branches", "inputs": [{"path": str(data)}], "output": str(out),
              "engine": {"prefect": False, "workers": 2, "shard_rows": 100, "parallel_steps": parallel},
              "stages": BRANCHY}
    start = time.perf_counter()
    results = run_pipeline(parse_config(config, base_dir=tmp_path))
    seconds = time.perf_counter() - start
    assert [r.label for r in results] == ["ingest", "normalize", "left", "right", "exact", "mixture"]
    files = {}
    for path in sorted(out.rglob("*.parquet")):
        if not any(part.endswith(META) for part in path.relative_to(out).parts):  # data, not bookkeeping
            files[str(path.relative_to(out))] = path.read_bytes()
    return files, seconds


def test_a_branchy_run_writes_the_same_bytes_in_parallel_as_in_serial(tmp_path):
    serial, serial_s = _run(tmp_path, parallel=False)
    parallel, parallel_s = _run(tmp_path, parallel=True)
    assert len(serial) >= 10 and serial.keys() == parallel.keys()
    assert [name for name in serial if serial[name] != parallel[name]] == []
    # left and right each sleep 0.05 s per 16-row batch (about 1.2 s each): together they take about one of them
    assert parallel_s < serial_s - 0.5, (parallel_s, serial_s)
