"""`decontaminate` through `curate run`: held-out rows and a benchmark file as evaluation sets, rows dropped and cut,
every row accounted for, the matches as SQL, a re-decision without scanning, and config errors before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from curate.data.dataset import Dataset, side_path
from tests.cli_runner import curate

FOX = "The quick brown fox jumps over the lazy dog while the cat sleeps soundly today."
BENCH_Q = "what is the name of the longest river that flows through the middle of the african continent"


def fillers(first: int, last: int) -> str:
    return " ".join(f"Filler sentence number {k:02d} is here to pad it." for k in range(first, last + 1))


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path.name


@pytest.fixture
def project(tmp_path: Path) -> Path:
    held = [{"prompt": FOX.rstrip("."), "response": "The cat."},
            {"prompt": "Describe a sunny morning in the quiet little village by the sea in two sentences",
             "response": "It was bright."}]
    pool = [{"text": f"{fillers(0, 11)} {FOX} {fillers(12, 23)}"},  # cut: two pieces
            {"prompt": f"Q: {FOX}", "response": "A copy of a held-out prompt."},  # an example: dropped whole
            {"text": f"Trivia. {BENCH_Q.upper()}? The Nile."},  # the benchmark file's question
            *({"text": f"An ordinary document number {i} about gardening and the weather this spring."}
              for i in range(20))]
    write_jsonl(tmp_path / "held.jsonl", held)
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "bench.jsonl", [{"q": BENCH_Q, "a": "The Nile", "qid": "geo-1"}])
    config = {"name": "decont", "inputs": [{"path": "pool.jsonl"}], "heldout": {"path": "held.jsonl"},
              "output": "run", "engine": {"workers": 2},
              "stages": [{"decontaminate": {"against": ["heldout", {
                  "name": "geo", "path": str(tmp_path / "bench.jsonl"),
                  "fields": {"question": "q", "answer": "a", "id": "qid"}}]}}]}
    (tmp_path / "decont.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_rows_are_dropped_cut_and_explained(project: Path):
    curate("run", "decont.yaml", "--no-prefect", "--no-report", cwd=project)
    run = project / "run"
    step = run / "stages" / "01-decontaminate"
    manifest = Dataset.open(step).stats
    assert (manifest["rows_in"], manifest["rows_kept"], manifest["rows_rejected"], manifest["rows_added"]) == (
        23, 20, 3, 2)
    assert manifest["reasons"] == {"contaminated:heldout:" + _held_id(run, 0): 2, "contaminated:geo:geo-1": 1}
    out = {r["id"]: r for r in Dataset.open(step).to_table().to_pylist()}
    cut = [r for r in out.values() if r.get("parent_id")]
    assert len(cut) == 2 and all(r["id"].endswith(("#cut0", "#cut1")) and "quick brown" not in r["text"]
                                 for r in cut)
    report = json.loads(side_path(step, "decontaminate.json").read_text())
    assert report["summary"] == {"matched": 3, "dropped": 2, "cut": 1, "pieces": 2, "ignored_frequent": 0}
    assert report["index"]["sets"]["geo"]["items"] == 1
    shown = curate("sql", "run", "SELECT set, item, field, action, count(*) AS n FROM decontaminate_matches "
                   "GROUP BY ALL ORDER BY ALL", "--format", "json", cwd=project)
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {(r["set"], r["action"]) for r in rows} == {("heldout", "cut"), ("heldout", "drop"), ("geo", "drop")}
    why = curate("sql", "run", "SELECT reason, contaminated_ngram FROM rejected WHERE stage = 'decontaminate' "
                 "ORDER BY reason", "--format", "json", cwd=project)
    first = json.loads(why.stdout.splitlines()[0])
    assert first["reason"] == "contaminated:geo:geo-1" and first["contaminated_ngram"].startswith("what is the name")

    # a new max_doc_freq decides again from the stored hits: nothing is scanned again
    config = yaml.safe_load((project / "decont.yaml").read_text())
    config["stages"][0]["decontaminate"]["max_doc_freq"] = 1
    (project / "decont.yaml").write_text(yaml.safe_dump(config))
    scores = next((run / "scores").iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in scores.iterdir()}
    curate("run", "decont.yaml", "--no-prefect", "--no-report", cwd=project)
    assert {p.name: p.stat().st_mtime_ns for p in scores.iterdir()} == stamps
    assert Dataset.open(step).stats["rows_rejected"] == 1  # the held-out 13-grams are in 2 rows: now ignored


def _held_id(run: Path, position: int) -> str:
    return Dataset.open(run / "heldout").to_table(columns=["id"]).column("id")[position].as_py()


def test_a_missing_benchmark_file_fails_before_any_work(project: Path):
    config = yaml.safe_load((project / "decont.yaml").read_text())
    config["stages"][0]["decontaminate"]["against"][1]["path"] = "nowhere.jsonl"
    (project / "decont.yaml").write_text(yaml.safe_dump(config))
    result = curate("validate", "decont.yaml", cwd=project, check=False)
    assert result.returncode != 0 and "against[1].path" in result.stdout + result.stderr
    assert "nowhere.jsonl" in result.stdout + result.stderr
    result = curate("run", "decont.yaml", "--no-prefect", cwd=project, check=False)
    assert result.returncode != 0 and not (project / "run" / "stages").exists()
