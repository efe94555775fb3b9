"""Pipelines built in Python: the same run as their YAML (`to_yaml` then `curate run`), and the YAML's errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from curate import Pipeline, open_run, step
from curate.data.errors import ConfigError
from curate.engine.config import load_config, resolved_config
from curate.stages import Dedup, Heuristics, Mixture, Normalize
from tests.cli_runner import curate
from tests.recipe_digest import digest

DATA = Path(__file__).parent / "data" / "ingest"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder: data files beside the notebook, which runs in that folder."""
    (tmp_path / "data").mkdir()
    for name in ("pool_sample.jsonl", "gsm8k_sample.jsonl"):
        shutil.copy(DATA / name, tmp_path / "data" / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pipeline() -> Pipeline:
    return Pipeline(
        name="in-code",
        inputs=["data/pool_sample.jsonl",
                {"path": "data/gsm8k_sample.jsonl", "fields": {"prompt": "prompt", "response": "response"},
                 "source": "gsm8k"},
                {"path": "data/gsm8k_sample.jsonl", "fields": {"prompt": "prompt", "response": "response"},
                 "source": "gsm8k-again"}],  # its rows twice: dedup has duplicates to drop
        output="runs/in-code",
        engine={"workers": 2, "shard_rows": 32},
        stages=[Normalize(),
                Heuristics(min_words=3),
                step(Dedup(minhash={"verify": "exact", "threshold": 0.7}), label="near_dups"),
                {"mixture": {"by": "source", "rows": 40, "seed": 1}}])


def test_a_pipeline_in_code_and_its_yaml_are_the_same_run(project):
    built = pipeline()
    run = built.run(prefect=False)
    assert run.labels == ["ingest", "normalize", "heuristics", "near_dups", "mixture"] and run.finished
    assert run["near_dups"].rejected.num_rows >= 60  # the second copy of the GSM8K rows

    text = built.to_yaml(project / "configs" / "in-code.yaml")
    assert str(project) not in text  # paths relative to the YAML's folder: the pair moves together
    assert yaml.safe_load(text)["inputs"][0] == {"path": "../data/pool_sample.jsonl"}
    curate("run", "configs/in-code.yaml", "--no-prefect", "--no-report", "--output", "runs/from-yaml", cwd=project)
    again = open_run(project / "runs" / "from-yaml")
    assert [(s.label, s.fingerprint) for s in again.steps] == [(s.label, s.fingerprint) for s in run.steps]
    assert digest(again.path) == digest(run.path)  # every step's kept and dropped ids, reasons and columns
    mixture = lambda r: sorted((p.name, p.read_bytes()) for p in Path(r.step("mixture").rows).glob("part-*"))  # noqa: E731
    assert mixture(again) == mixture(run)


def test_stage_objects_give_the_yaml_config(project):
    built = pipeline()
    config = built.validate()
    (project / "same.yaml").write_text(built.to_yaml())
    from_yaml = load_config(project / "same.yaml")
    assert resolved_config(config) == resolved_config(from_yaml)
    assert [s.params for s in config.stage_specs()][:3] == [
        Normalize().params.model_dump(mode="json"), Heuristics(min_words=3).params.model_dump(mode="json"),
        Dedup(minhash={"verify": "exact", "threshold": 0.7}).params.model_dump(mode="json")]
    # a YAML recipe read into a Pipeline validates to the same plan
    demo = CONFIGS / "demo.yaml"
    assert resolved_config(Pipeline.from_yaml(demo).validate()) == resolved_config(load_config(demo))


def problems(error: pytest.ExceptionInfo) -> list[str]:
    return error.value.problems


def test_errors_are_the_yaml_errors(project):
    # a bad parameter fails where the stage is made, with the YAML's line (less its `stages[i].`)
    with pytest.raises(ConfigError) as in_code:
        Dedup(minhash={"threshold": 5})
    (project / "bad.yaml").write_text(yaml.safe_dump({"name": "bad", "inputs": [{"path": "data/pool_sample.jsonl"}],
                                                      "output": "runs/bad",
                                                      "stages": [{"dedup": {"minhash": {"threshold": 5}}}]}))
    with pytest.raises(ConfigError) as in_yaml:
        load_config(project / "bad.yaml")
    assert problems(in_code) == ["dedup.minhash.threshold: Input should be less than or equal to 1 (got 5)"]
    assert problems(in_yaml) == ["stages[0]." + problems(in_code)[0]]

    with pytest.raises(ConfigError) as unknown:
        Heuristics(min_word=3)
    assert problems(unknown)[0].startswith("heuristics.min_word: unknown key; allowed: ")
    assert "min_words" in problems(unknown)[0]

    # graph and path errors come from the same validation as YAML's
    broken = Pipeline(inputs=["data/none.jsonl"], output="runs/x",
                      stages=[Normalize(), step(Mixture(by="source", rows=5), from_="nope")])
    with pytest.raises(ConfigError) as graph:
        broken.validate()
    assert "stages[1].mixture.from: unknown label 'nope'; allowed: ingest, normalize" in problems(graph)
    assert any(p.startswith("inputs[0].path: no file or folder matches 'data/none.jsonl'") for p in problems(graph))
    with pytest.raises(ConfigError, match=r"stages\[0\]: expected a stage object"):
        Pipeline(inputs=["data/pool_sample.jsonl"], output="runs/x", stages=[42])


@pytest.mark.slow
def test_a_pipeline_in_code_runs_as_a_prefect_flow(project):
    run = pipeline().run(prefect=True)
    assert run.finished and run.labels[-1] == "mixture"
