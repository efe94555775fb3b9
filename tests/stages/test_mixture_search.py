"""`mixture_search` through `curate run`: three parts (GSM8K problems like the target's, P3 tasks, random noise),
tiny scratch proxies; the search recommends mostly the target-like part, validates against natural, uniform and
best-part mixtures on held-out rows, and `mixture: {weights_from: ...}` builds the rows it recommends."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curate.data.dataset import Dataset
from curate.data.errors import ConfigError
from curate.data.faults import ENV
from curate.engine.config import parse_config
from tests.cli_runner import curate

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _noise(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    letters = "qxzjkvwy"
    return [{"id": f"noise-{i}", "text": " ".join("".join(rng.choice(letters) for _ in range(rng.randint(3, 9)))
                                                  for _ in range(60))} for i in range(n)]


def search_config(tmp_path: Path, seed: int = 0, **search: object) -> dict:
    gsm8k = [json.loads(line) for line in (DATA / "finetune_gsm8k.jsonl").read_text().splitlines()]
    p3 = [json.loads(line) for line in (DATA / "p3_sample.jsonl").read_text().splitlines()]
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    fields = {"prompt": "prompt", "response": "response"}
    return {
        "name": "search", "output": str(tmp_path / "run"),
        "inputs": [{"path": _write(data / "gsm8k.jsonl", gsm8k[:240]), "fields": fields, "source": "gsm8k"},
                   {"path": _write(data / "p3.jsonl", p3[:240]), "fields": fields, "source": "p3"},
                   {"path": _write(data / "noise.jsonl", _noise(240, 1)), "source": "noise"}],
        "target": {"path": _write(data / "target.jsonl", gsm8k[240:400]), "fields": fields},
        "engine": {"prefect": False, "workers": 2},
        "stages": [
            {"mixture_search": {"by": "source", "tokens": 12_000, "candidates": 10, "seeds": 2, "seed": seed,
                                "regressor": "linear", "search": {"candidates": 5000, "top_k": 32},
                                "proxy": {"init": "scratch", "epochs": 1, "max_length": 128, "batch_size": 8,
                                          "lr": 0.003, "eval_every": None, "save_every": None,
                                          "lm": {"vocab_size": 1024, "n_layer": 1, "n_embd": 32, "n_head": 2,
                                                 "seq_len": 128}},
                                **search}},
            {"mixture": {"from": "ingest", "by": "source", "weights_from": "mixture_search", "tokens": 12_000}},
        ],
    }


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("search")
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(search_config(tmp_path)))
    curate("run", "search.yaml", cwd=tmp_path)
    return tmp_path / "run"


def test_the_search_recommends_the_target_like_part_and_validates_it(searched):
    report = json.loads(next(searched.glob("models/mixture_search/search.json")).read_text())
    assert set(report["parts"]) == {"gsm8k", "p3", "noise"}
    assert len(report["candidates"]) == 10 and all(c["loss"] > 0 for c in report["candidates"])
    searched_weights = report["searched"]
    assert max(searched_weights, key=searched_weights.get) == "gsm8k" and searched_weights["noise"] < 0.2
    assert report["best_part"] == "gsm8k"
    validation = report["validation"]
    assert set(validation) == {"recommended", "natural", "uniform", "best_part"}
    assert all(len(v["heldout_loss"]) == 2 for v in validation.values())
    assert validation["recommended"]["mean"] < validation["natural"]["mean"]
    assert all(d < 0 for d in validation["recommended"]["vs_natural"]["diff"])  # in every seed
    assert report["kept"] == "recommended" and report["recommended"] == searched_weights
    assert "vs_natural" in validation["recommended"] and "vs_natural" not in validation["natural"]
    assert report["regressor"]["kind"] == "linear" and report["regressor"]["cv_spearman"] > 0.3


def test_the_mixture_step_takes_the_recommended_weights(searched):
    report = json.loads(next(searched.glob("models/mixture_search/search.json")).read_text())
    mixture = Dataset.open(searched / "stages" / "02-mixture")
    parts = mixture.to_table(["part"]).column("part").to_pylist()
    share = parts.count("gsm8k") / len(parts)
    assert share > 0.5 and report["recommended"]["gsm8k"] > 0.5


def test_weights_and_weights_from_together_are_refused_before_any_work(tmp_path):
    config = search_config(tmp_path)
    config["stages"][1]["mixture"]["weights"] = {"gsm8k": 1.0}
    with pytest.raises(ConfigError, match="weights_from"):
        parse_config(config, base_dir=tmp_path)


def test_weights_from_must_name_a_search_step(tmp_path):
    config = search_config(tmp_path)
    config["stages"][1]["mixture"]["weights_from"] = "ingest"
    with pytest.raises(ConfigError, match="weights_from"):
        parse_config(config, base_dir=tmp_path)


SCRIPT = ("import json, sys\nfrom curate.engine.config import parse_config\n"
          "from curate.engine.runner import run_pipeline\n"
          "run_pipeline(parse_config(json.loads(sys.argv[1])))\n")


def _run(config: dict, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash_at:
        env[ENV] = crash_at
    return subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(config)], env=env, capture_output=True,
                          text=True, cwd=ROOT, timeout=900)


def _small(tmp_path: Path, name: str) -> dict:
    config = search_config(tmp_path, candidates=6, seeds=1, tokens=6000)
    config["output"] = str(tmp_path / name)
    config["stages"] = config["stages"][:1]
    return config


def _outcome(run: Path) -> dict:
    report = json.loads((run / "models" / "mixture_search" / "search.json").read_text())
    return {"candidates": report["candidates"], "recommended": report["recommended"],
            "validation": {arm: v["heldout_loss"] for arm, v in report["validation"].items()}}


@pytest.mark.slow  # about 60-110 s: two searches and a killed one
def test_a_search_killed_among_its_proxies_resumes_without_retraining_and_ends_the_same(tmp_path):
    whole = _run(_small(tmp_path, "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    config = _small(tmp_path, "killed")
    killed = _run(config, crash_at="train_step@mixture_search proxy/r0-003:1")
    assert killed.returncode == -signal.SIGKILL
    folder = tmp_path / "killed" / "models" / "mixture_search"
    finished = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob("proxy/*/result.json")}
    assert sorted(finished) == ["r0-000", "r0-001", "r0-002"]  # one at a time on a CPU box, killed in the 4th
    resumed = _run(config)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert {p.parent.name: p.stat().st_mtime_ns for p in folder.glob("proxy/*/result.json")
            if p.parent.name in finished} == finished  # no finished proxy trained again
    assert _outcome(tmp_path / "killed") == _outcome(tmp_path / "whole")


def test_the_candidates_are_a_sql_view_and_curate_search_prints_the_result(searched):
    from curate.inspect.sql import query

    rows = query(searched, "SELECT kind, count(*) AS n, min(loss) > 0 AS positive FROM mixture_search_candidates "
                           "GROUP BY kind ORDER BY kind").to_pylist()
    assert rows == [{"kind": "proxy", "n": 10, "positive": True}, {"kind": "validation", "n": 8, "positive": True}]
    best = query(searched, "SELECT w_gsm8k FROM mixture_search_candidates WHERE kind = 'proxy' "
                           "ORDER BY loss LIMIT 3").column("w_gsm8k").to_pylist()
    assert min(best) > 0.3  # the proxies that learned the target best trained mostly on GSM8K
    report = (searched / "report.html").read_text()
    assert "<h2>Mixture search</h2>" in report and "kept: recommended" in report and "<svg" in report
    shown = curate("search", str(searched), cwd=searched.parent)
    assert "recommended" in shown.stdout and "gsm8k" in shown.stdout and "kept: recommended" in shown.stdout


@pytest.mark.slow  # about 45 s a seed
@pytest.mark.parametrize("seed", [1, 2])
def test_the_target_like_part_gets_the_largest_weight_in_other_seeds_too(tmp_path, seed):
    config = search_config(tmp_path, seed=seed)
    config["stages"] = config["stages"][:1]
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(config))
    curate("run", "search.yaml", "--no-report", cwd=tmp_path)
    report = json.loads((tmp_path / "run" / "models" / "mixture_search" / "search.json").read_text())
    assert max(report["searched"], key=report["searched"].get) == "gsm8k"
    assert all(d < 0 for d in report["validation"]["recommended"]["vs_natural"]["diff"])


def test_parts_split_from_one_step_count_its_tokens_once(tmp_path, monkeypatch):
    from curate.engine.runner import run_pipeline
    from curate.stages import mixture_search

    calls = []
    real = mixture_search.example_tokens
    monkeypatch.setattr(mixture_search, "example_tokens", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    config = search_config(tmp_path, candidates=4, seeds=1, tokens=3000, search={"candidates": 1000, "top_k": 8})
    config["stages"] = config["stages"][:1]
    run_pipeline(parse_config(config, base_dir=tmp_path))
    assert len(calls) == 1  # three parts, one step: counted once
    report = json.loads((tmp_path / "run" / "models" / "mixture_search" / "search.json").read_text())
    assert set(report["tokens"]) == {"gsm8k", "p3", "noise"} and min(report["tokens"].values()) > 0


def test_selection_methods_outputs_are_parts(tmp_path):
    """`from: [a, b]` over two selection methods' outputs: a targeted one (DSIR towards the GSM8K target) and an
    untargeted one (kMQ's diverse third of the pool); the search weighs the targeted selection most."""
    config = search_config(tmp_path, candidates=8, seeds=1, tokens=8000)
    search = config["stages"][0]["mixture_search"]
    del search["by"]
    config["stages"] = [
        {"dsir": {"label": "targeted", "from": "ingest", "budget": 0.3, "min_words": 0, "seed": 0}},
        {"embed": {"from": "ingest", "max_seq_length": 64}},
        {"kmeans_diversity": {"label": "diverse", "clusters": 6, "fraction": 0.34, "niter": 20, "nredo": 1}},
        {"mixture_search": {**search, "from": ["targeted", "diverse"]}},
    ]
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(config))
    curate("run", "search.yaml", "--no-report", cwd=tmp_path)
    run = tmp_path / "run"
    targeted = Dataset.open(next(run.glob("stages/*-targeted"))).to_table(["source"]).column("source").to_pylist()
    assert targeted.count("gsm8k") / len(targeted) > 0.5  # a third of the pool: the parts are what was selected
    report = json.loads((run / "models" / "mixture_search" / "search.json").read_text())
    assert report["parts"] == ["targeted", "diverse"]
    assert report["tokens"]["targeted"] > 0 and report["tokens"]["diverse"] > 0
    assert report["searched"]["targeted"] > report["natural"]["targeted"] + 0.1  # moved towards the targeted part
    assert report["best_part"] == "targeted"


def test_parts_can_be_k_means_clusters_of_the_embeddings(tmp_path):
    """CLIMB's parts: `kmeans_diversity` keeping every row adds a `cluster` column, the search splits `by: cluster`
    and the mixture draws the recommended clusters; the cluster that holds the GSM8K rows weighs most."""
    config = search_config(tmp_path, candidates=8, seeds=1, tokens=8000)
    search = {**config["stages"][0]["mixture_search"], "by": "cluster"}
    config["stages"] = [
        {"embed": {"from": "ingest", "max_seq_length": 64}},
        {"kmeans_diversity": {"label": "clustered", "clusters": 3, "fraction": 1.0, "quota": "proportional",
                              "niter": 20, "nredo": 2}},
        {"mixture_search": search},
        {"mixture": {"from": "clustered", "by": "cluster", "weights_from": "mixture_search", "tokens": 8000}},
    ]
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(config))
    curate("run", "search.yaml", "--no-report", cwd=tmp_path)
    run = tmp_path / "run"
    clustered = Dataset.open(next(run.glob("stages/*-clustered"))).to_table(["source", "cluster"]).to_pylist()
    assert len(clustered) == 720  # every row kept, each with its cluster
    gsm8k_clusters = [r["cluster"] for r in clustered if r["source"] == "gsm8k"]
    gsm8k_cluster = str(max(set(gsm8k_clusters), key=gsm8k_clusters.count))
    report = json.loads((run / "models" / "mixture_search" / "search.json").read_text())
    assert sorted(report["parts"]) == ["0", "1", "2"]
    assert max(report["searched"], key=report["searched"].get) == gsm8k_cluster
    mixture = Dataset.open(next(run.glob("stages/*-mixture"))).to_table(["part"]).column("part").to_pylist()
    assert mixture.count(gsm8k_cluster) / len(mixture) > 0.5
