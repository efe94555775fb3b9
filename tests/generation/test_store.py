"""Stored generations: whole lines only, nothing generated twice, and a kill -9 during generation loses at most the
prompt in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from curate.models.generation import ResponseStore, Sampling, generate_stored
from curate.models.generation.local import LocalGenerator
from curate.models.generation.sampling import Completion
from tests.kernels.script_runner import REPO
from tests.lm_fixtures import read_records

PROMPTS = [r["prompt"] for r in read_records("finetune_gsm8k.jsonl")[:16]]
SAMPLING = Sampling(n=2, temperature=1.0, max_new_tokens=16, seed=1)


def test_a_line_cut_by_a_kill_is_dropped_and_overwritten(tmp_path):
    store = ResponseStore(tmp_path / "s.jsonl")
    store.put("a", [Completion("x", 1)])
    with store.path.open("a") as f:
        f.write('{"key": "b", "completions": [{"te')  # a kill in the middle of a write
    again = ResponseStore(tmp_path / "s.jsonl")
    assert len(again) == 1 and again.get("a")[0].text == "x" and "b" not in again
    again.put("b", [Completion("y", 1)])
    assert [json.loads(line)["key"] for line in again.path.read_text().splitlines()] == ["a", "b"]


class Counting:
    """The real local generator, recording which keys it was asked to generate."""

    def __init__(self, generator):
        self.generator, self.asked = generator, []

    def __getattr__(self, name):
        return getattr(self.generator, name)

    def generate(self, prompts, sampling, keys=None, on_result=None):
        self.asked += list(keys)
        return self.generator.generate(prompts, sampling, keys, on_result)


def test_only_missing_prompts_are_generated(math_lm, tmp_path):
    generator = Counting(LocalGenerator(math_lm, device="cpu"))
    keys = [f"q{i}" for i in range(6)]
    store = ResponseStore.for_generation(tmp_path, "probe", generator, SAMPLING)
    first = generate_stored(generator, store, keys[:4], PROMPTS[:4], SAMPLING)
    again = ResponseStore.for_generation(tmp_path, "probe", generator, SAMPLING)  # a re-run opens the same file
    both = generate_stored(generator, again, keys, PROMPTS[:6], SAMPLING)
    assert generator.asked == [*keys[:4], *keys[4:]]
    assert both[:4] == first
    other = ResponseStore.for_generation(tmp_path, "probe", generator, SAMPLING.model_copy(update={"seed": 2}))
    assert other.path != store.path and len(other) == 0  # other sampling settings: another file


CHILD = """
import json, sys, torch
torch.set_num_threads(1)
import pytest

from curate.models.generation import ResponseStore, Sampling, generate_stored
from curate.models.generation.local import LocalGenerator
model, folder, log = sys.argv[1:4]
prompts = json.loads(open(sys.argv[4]).read())
generator = LocalGenerator(model, device="cpu", batch_tokens=64)  # one prompt per batch
sampling = Sampling(**json.loads(sys.argv[5]))
store = ResponseStore.for_generation(folder, "probe", generator, sampling)
keys = [f"q{i}" for i in range(len(prompts))]
with open(log, "a") as f:
    f.write(json.dumps([k for k in keys if k not in store]) + "\\n")
generate_stored(generator, store, keys, prompts, sampling)
"""


@pytest.mark.slow  # about 20 s; tests/stages/test_dart.py kills and resumes a whole run's generation in the default run
def test_kill_during_generation_then_resume_generates_no_stored_prompt_again(math_lm, tmp_path):
    (tmp_path / "prompts.json").write_text(json.dumps(PROMPTS))
    args = [sys.executable, "-c", CHILD, math_lm, str(tmp_path / "store"), str(tmp_path / "log"),
            str(tmp_path / "prompts.json"), SAMPLING.model_dump_json()]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(args, env=env, cwd=REPO)
    files = lambda: list((tmp_path / "store").glob("*.jsonl"))  # noqa: E731
    deadline = time.time() + 120
    while time.time() < deadline and not (files() and len(files()[0].read_text().splitlines()) >= 4):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    stored_before = [json.loads(line)["key"] for line in files()[0].read_text().splitlines()]
    assert 4 <= len(stored_before) < len(PROMPTS)  # killed in the middle
    subprocess.run(args, env=env, cwd=REPO, check=True, timeout=300)
    asked_first, asked_again = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert not set(asked_again) & set(stored_before)  # nothing stored was generated again
    assert sorted(asked_again) == sorted(set(asked_first) - set(stored_before))
    lines = [json.loads(line) for line in files()[0].read_text().splitlines()]
    assert sorted(r["key"] for r in lines) == sorted(f"q{i}" for i in range(len(PROMPTS)))  # each once
    # the resumed run stored what an uninterrupted one generates
    fresh = LocalGenerator(math_lm, device="cpu", batch_tokens=64).generate(
        PROMPTS[-3:], SAMPLING, keys=[f"q{i}" for i in range(len(PROMPTS) - 3, len(PROMPTS))])
    by_key = {r["key"]: [c["text"] for c in r["completions"]] for r in lines}
    assert [by_key[f"q{i}"] for i in range(len(PROMPTS) - 3, len(PROMPTS))] == [[c.text for c in f] for f in fresh]
