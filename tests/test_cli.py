"""The CLI end to end: `curate demo` (Prefect, ephemeral server), then `curate sql` and `curate inspect`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from curate.dataset import Dataset

BIN = Path(sys.executable).parent


def curate(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # ephemeral mode
    result = subprocess.run([shutil.which("curate", path=str(BIN)) or "curate", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    result = curate("demo", "--output", str(folder / "run"), cwd=folder)
    assert "Why were rows dropped?" in result.stdout and "curate sql" in result.stdout
    return folder / "run"


def stored_reasons(run: Path) -> Counter:
    counts: Counter = Counter()
    for folder in (run / "rejected").iterdir():
        counts.update((r["stage"], r["reason"]) for r in
                      Dataset.open(folder).to_table(columns=["stage", "reason"]).to_pylist())
    return counts


def test_sql_answers_drop_reason_query(demo_run):
    out = curate("sql", str(demo_run), "SELECT stage, reason, count(*) AS n FROM rejected GROUP BY ALL",
                 "--format", "json", cwd=demo_run).stdout
    answered = Counter({(r["stage"], r["reason"]): r["n"] for r in map(json.loads, out.splitlines())})
    assert answered == stored_reasons(demo_run)
    # the demo's planted faults are found where they should be
    assert answered[("ingest", "malformed_json")] == 2
    assert answered[("ingest", "wrong_type:text")] == 1 and answered[("ingest", "missing_field:text")] == 1
    assert answered[("language", "wrong_language")] >= 6


def test_sql_explains_planted_duplicates(demo_run):
    # each demo-exact-* row is a copy of a pool-* row: whichever comes first is kept, the other points to it
    out = curate("sql", str(demo_run), "SELECT id, duplicate_of FROM rejected WHERE reason = 'exact_duplicate' "
                 "AND (id LIKE 'demo-exact-%' OR duplicate_of LIKE 'demo-exact-%') ORDER BY id",
                 "--format", "csv", cwd=demo_run).stdout.splitlines()
    assert out[0] == "id,duplicate_of" and len(out) - 1 >= 30
    for line in out[1:]:
        pair = sorted(line.split(","))
        assert pair[0].startswith("demo-exact-") and pair[1].startswith("pool-"), line
    near = curate("sql", str(demo_run), "SELECT count(*) AS n FROM rejected WHERE reason = 'near_duplicate' "
                  "AND (id LIKE 'demo-near-%' OR duplicate_of LIKE 'demo-near-%')", "--format", "json",
                  cwd=demo_run).stdout
    assert json.loads(near)["n"] >= 50  # of 60 planted near copies (1-3% of words changed)


def test_sql_cluster_questions(demo_run):
    sizes = curate("sql", str(demo_run), "SELECT cluster, count(*) AS size, count(*) FILTER (WHERE kept) AS kept "
                   "FROM kmeans_diversity_all GROUP BY cluster", "--format", "json", cwd=demo_run).stdout
    clusters = [json.loads(line) for line in sizes.splitlines()]
    selected = Dataset.open(demo_run / "stages" / "07-kmeans_diversity").count()
    assert len(clusters) == 32 and sum(c["kept"] for c in clusters) == selected
    assert selected == int(0.5 * sum(c["size"] for c in clusters))  # fraction 0.5 with redistribute
    members = curate("sql", str(demo_run), "SELECT id, kept FROM kmeans_diversity_all WHERE cluster = 17",
                     "--format", "csv", cwd=demo_run).stdout.splitlines()
    assert len(members) - 1 == next(c["size"] for c in clusters if c["cluster"] == 17)


def test_inspect_and_validate(demo_run, tmp_path):
    out = curate("inspect", str(demo_run), cwd=demo_run).stdout
    for word in ("ingest", "normalize", "heuristics", "language", "dedup", "near_duplicate", "malformed_json",
                 "embed", "semdedup", "kmeans_diversity: 32 clusters", "kept per cluster"):
        assert word in out
    (tmp_path / "bad.yaml").write_text("name: x\ninputs: [{path: nope.jsonl}]\noutput: o\nstages: [{dedupe: {}}]\n")
    bad = curate("validate", str(tmp_path / "bad.yaml"), cwd=tmp_path, check=False)
    assert bad.returncode == 2
    assert "unknown stage 'dedupe'" in bad.stdout and "inputs[0].path: no file" in bad.stdout
    query = curate("sql", str(demo_run), "SELECT nope FROM final", cwd=tmp_path, check=False)
    assert query.returncode == 2 and "SQL:" in query.stdout


def test_frozen_config_repeats_the_run_without_work(demo_run, tmp_path):
    out = curate("run", str(demo_run / "config.yaml"), "--no-prefect", cwd=tmp_path).stdout
    assert out.count("skipped") == 9  # target, ingest, normalize, heuristics, language, dedup, embed, semdedup, kMQ
