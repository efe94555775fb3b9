"""CLEAR (docs/methods.md §2): the §2.8 synthetic test with test doubles for the LM and the NLI model, the
confidence arithmetic, and the stage through the runner with a real tiny model."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.data.dataset import Dataset, side_path
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.methods.clear import drop_mask, observed_consistency, rank_normalised, reflection_certainty, rouge_l
from curate.models.generation.sampling import Completion
from curate.stages.clear import Clear
from tests.lm_fixtures import arithmetic_problems


def _truth(prompt: str) -> int:
    a, b = map(int, re.search(r"(\d+)\+(\d+)", prompt).groups())
    return a + b


def _said(text: str) -> int | None:
    found = re.findall(r"#### (-?\d+)", text)
    return int(found[-1]) if found else None


class StubLM:
    """§2.8's LLM double: a sample is right with probability 0.9; it calls a proposed answer Correct iff it is
    right, with probability 0.9; as a judge it prefers the right response; greedy it is always right."""

    name = "stub"

    def identity(self):
        return {"kind": "stub"}

    def generate(self, prompts, sampling, keys=None, on_result=None):
        out = []
        for i, prompt in enumerate(prompts):
            rng = np.random.default_rng([sampling.seed, i, len(prompt)])
            right = _truth(prompt)
            if sampling.temperature == 0:
                out.append([Completion(f"#### {right}")])
            else:
                out.append([Completion(f"#### {right if u < 0.9 else right + 1}") for u in rng.random(sampling.n)])
        return out

    def option_logprobs(self, prompts, options):
        out = []
        for prompt in prompts:
            question = prompt.split("\n")[0]
            if "Response A:" in prompt:  # the judge
                a = _said(prompt.split("Response A:")[1].split("Response B:")[0])
                better = 0 if a == _truth(question) else 1
                out.append([0.0 if k == better else -5.0 for k in range(len(options))])
                continue
            right = _said(prompt.split("Proposed answer:")[1]) == _truth(question)
            rng = np.random.default_rng(abs(hash(prompt)) % (2**32))
            says_correct = right if rng.random() < 0.9 else not right
            out.append([0.0, -20.0, -20.0] if says_correct else [-20.0, 0.0, -20.0])
        return out


class StubNLI:
    def contradiction(self, premises, hypotheses):
        return np.array([float(_said(p) != _said(h)) for p, h in zip(premises, hypotheses, strict=True)])


class StubClear(Clear):
    def setup(self):
        self.generator, self.corrector, self.scorer, self.nli = StubLM(), StubLM(), None, StubNLI()


def test_synthetic_arithmetic_filter_and_correct():  # §2.8
    rng = np.random.default_rng(0)
    problems = arithmetic_problems(1000, seed=1)
    corrupted = rng.random(1000) < 0.3
    responses = [f"#### {a + b + (int(rng.integers(1, 5)) if bad else 0)}"
                 for (a, b), bad in zip(problems, corrupted, strict=True)]
    table = pa.table({"id": [f"q{i}" for i in range(1000)], "prompt": [f"{a}+{b}=?" for a, b in problems],
                      "response": responses})
    stage = StubClear(generator={"model": "unused"}, confidence={"k": 5, "nli_model": "stub"},
                      filter={"threshold": 0.5}, correct={"model": "unused", "eta": 0.8})
    kept, rejected = stage(table)
    conf = {**dict(zip(kept.column("id").to_pylist(), kept.column("clear_confidence").to_pylist(), strict=True)),
            **dict(zip(rejected.column("id").to_pylist(), rejected.column("score").to_pylist(), strict=True))}
    values = np.array([conf[f"q{i}"] for i in range(1000)])
    # about 0.9 for clean pairs; at most about 0.1 for corrupted ones (lower here: a wrong sample rarely repeats the
    # corrupted answer, so consistency is near 0)
    assert abs(values[~corrupted].mean() - 0.9) < 0.05 and values[corrupted].mean() < 0.15
    dropped = np.isin([f"q{i}" for i in range(1000)], rejected.column("id").to_pylist())
    assert dropped[corrupted].mean() >= 0.9  # measured: see the closing note
    assert dropped[~corrupted].mean() <= 0.1
    assert set(rejected.column("reason").to_pylist()) == {"low_confidence"}
    truth = {f"q{i}": a + b for i, (a, b) in enumerate(problems)}
    wrong = [_said(r) != truth[i] for i, r in zip(kept.column("id").to_pylist(), kept.column("response").to_pylist(),
                                                   strict=True)]
    assert np.mean(wrong) < 0.02  # measured: 0 (every corrupted pair was filtered out)
    # auto-correct on every pair (no filter): the error rate of the corrected set
    corrector = StubClear(generator={"model": "unused"}, confidence={"k": 5, "nli_model": "stub"}, filter=None,
                          correct={"model": "unused", "eta": 0.8})
    kept, rejected = corrector(table)
    assert rejected.num_rows == 0
    wrong = [_said(r) != truth[i] for i, r in zip(kept.column("id").to_pylist(), kept.column("response").to_pylist(),
                                                   strict=True)]
    assert np.mean(wrong) < 0.02
    changed = kept.filter(pc.equal(kept.column("change_reason"), "corrected"))
    assert changed.num_rows == corrupted.sum() and changed.column("response_original").null_count == 0
    assert all(_said(o) != truth[i] for i, o in zip(changed.column("id").to_pylist(),
                                                     changed.column("response_original").to_pylist(), strict=True))
    assert kept.column("text").to_pylist()[0] == f"{kept['prompt'][0]}\n\n{kept['response'][0]}"


def test_confidence_arithmetic():
    # weights: 0.56 NLI, 0.14 answer match, 0.30 reflection (uqlm's documented effective weights)
    o = observed_consistency(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]]), alpha=0.8)
    assert np.isclose(o[0], (0.8 + 0.2 + 0.2) / 2)
    s = reflection_certainty(np.log(np.array([[0.2, 0.2, 0.6]])))
    assert np.isclose(s[0], 0.2 + 0.3)
    assert rank_normalised(np.array([3.0, 1.0, np.nan, 2.0])).tolist()[:2] == [1.0, 0.0]
    assert np.isclose(rouge_l("the cat sat on the mat", "the cat on the mat"), 2 * (5 / 6) * 1 / (5 / 6 + 1))
    assert drop_mask(np.array([0.3, 0.1, 0.1, 0.9]), None, 0.5).tolist() == [False, True, True, False]


def test_clear_through_the_runner_with_a_real_model(arithmetic_lm, tmp_path):
    problems = arithmetic_problems(24, seed=9)
    rng = np.random.default_rng(3)
    bad = rng.random(24) < 0.3
    rows = [{"id": f"s{i}", "prompt": f"{a}+{b}=?", "response": f"#### {a + b + (3 if wrong else 0)}"}
            for i, ((a, b), wrong) in enumerate(zip(problems, bad, strict=True))]
    (tmp_path / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    generator = {"model": arithmetic_lm, "device": "cpu"}
    config = {"name": "clear", "inputs": [{"path": str(tmp_path / "sums.jsonl")}], "output": str(tmp_path / "run"),
              "engine": {"prefect": False},
              "stages": [{"clear": {"generator": generator, "confidence": {"k": 3, "max_new_tokens": 6},
                                    "filter": {"drop_fraction": 0.25, "threshold": None},
                                    "correct": {"model": arithmetic_lm, "eta": 0.5, "max_new_tokens": 6}}}]}
    results = run_pipeline(parse_config(config))
    assert results[-1].reasons == {"low_confidence": 6}
    out = Dataset.open(next((tmp_path / "run" / "stages").glob("01-clear"))).to_table()
    conf = np.array(out.column("clear_confidence").to_pylist())
    assert np.isfinite(conf).all() and (conf >= 0).all() and (conf <= 1).all()
    rejected = Dataset.open(next((tmp_path / "run" / "rejected").glob("01-clear"))).to_table()
    assert max(rejected.column("score").to_pylist()) <= conf.min()  # the lowest quarter was dropped
    changed = out.filter(pc.equal(out.column("change_reason"), "corrected")).to_pylist()
    for row in changed:
        assert row["response"] != row["response_original"] and row["correction_confidence"] >= 0.5
        assert row["text"] == f"{row['prompt']}\n\n{row['response']}"
    report = json.loads(side_path(tmp_path / "run" / "stages" / "01-clear", "clear.json").read_text())
    assert report["dropped"] == 6 and report["corrected"] == len(changed)
    stores = {p.name.split("-")[0] for p in (tmp_path / "run" / "models").rglob("generations/*.jsonl")}
    assert stores == {"consistency", "correction"}
