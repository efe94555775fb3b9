"""A re-run over a pool that grew by a file (what a scheduled run sees): the old files' shards are taken over, not
computed again, in ingest and in every map stage; dedup's stored signatures of the old shards are reused and it
decides again over all rows; and the run ends exactly as a fresh run over the grown pool."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from curate.data.faults import ENV
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from tests.recipe_digest import digest

DATA = Path(__file__).parent / "data" / "ingest"
STAGES = [{"normalize": {}}, {"heuristics": {}}, {"dedup": {}}, {"mixture": {"by": "source", "rows": 50}}]


def config(pool: Path, output: Path) -> dict:
    return {"name": "grow", "inputs": [{"path": str(pool / "*.jsonl")}], "output": str(output),
            "engine": {"prefect": False, "workers": 2, "shard_rows": 20}, "stages": STAGES}


def inodes(folder: Path, pattern: str = "part-*.parquet") -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in folder.glob(pattern)}


def grown_file(pool: Path) -> None:
    """30 new rows: copies of pool texts with a new sentence (some are near-duplicates of old rows)."""
    rows = [json.loads(line) for line in (DATA / "pool_sample.jsonl").read_text().splitlines()][:30]
    (pool / "c.jsonl").write_text("".join(json.dumps({"id": f"{r['id']}-grown", "source": "grown",
                                                      "text": r["text"] + " A sentence that was added later."})
                                          + "\n" for r in rows))


def test_a_grown_pool_reuses_the_old_shards_and_ends_as_a_fresh_run(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    shutil.copy(DATA / "pool_sample.jsonl", pool / "a.jsonl")
    shutil.copy(DATA / "pool_sample.jsonl", pool / "b.jsonl")  # exact copies: dedup drops them
    run = tmp_path / "run"
    run_pipeline(parse_config(config(pool, run)))
    # b.jsonl's ingest shards were rewritten after their task (its repeated ids renamed), so ingest makes them
    # again; a.jsonl's are taken over, and so are all old shards of the map stages (their inputs are unchanged)
    before = {name: inodes(run / "stages" / name) for name in ("00-ingest", "01-normalize", "02-heuristics")}
    before["00-ingest"] = {k: v for k, v in before["00-ingest"].items() if k.startswith("part-00000-")}
    (old_scores,) = (run / "scores").glob("dedup-*")
    old_summaries = inodes(old_scores, "summary-*.parquet")

    grown_file(pool)
    results = run_pipeline(parse_config(config(pool, run)))
    assert [r.status for r in results] == ["ran"] * 5  # every fingerprint changed ...
    for name, old in before.items():  # ... but no old shard was made again: the same files (hard links)
        now = inodes(run / "stages" / name)
        assert {k: now[k] for k in old} == old, name
        assert len(now) > len(old)  # and the new file's shards were made
    (new_scores,) = set((run / "scores").glob("dedup-*")) - {old_scores}
    now = inodes(new_scores, "summary-*.parquet")
    assert {k: now[k] for k in old_summaries} == old_summaries and len(now) > len(old_summaries)
    assert not (run / "_previous").exists()

    fresh = tmp_path / "fresh"
    run_pipeline(parse_config(config(pool, fresh)))
    assert digest(run) == digest(fresh)
    mixture = next((fresh / "stages").glob("*-mixture"))
    for part in mixture.glob("part-*.parquet"):
        assert (run / "stages" / mixture.name / part.name).read_bytes() == part.read_bytes()


def test_a_run_killed_while_reusing_finishes_the_same(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    pool = tmp_path / "pool"
    pool.mkdir()
    shutil.copy(DATA / "pool_sample.jsonl", pool / "a.jsonl")
    run = tmp_path / "run"
    run_pipeline(parse_config(config(pool, run)))
    grown_file(pool)
    script = ("import json, sys\nfrom curate.engine.config import parse_config\n"
              "from curate.engine.runner import run_pipeline\n"
              "run_pipeline(parse_config(json.loads(sys.argv[1])))\n")
    root = Path(__file__).resolve().parents[1]
    killed = subprocess.run([sys.executable, "-c", script, json.dumps(config(pool, run))], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root), ENV: "task_done@02-heuristics/:2"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (run / "_previous").is_dir()  # the finished old versions wait for the next try
    run_pipeline(parse_config(config(pool, run)))
    fresh = tmp_path / "fresh"
    run_pipeline(parse_config(config(pool, fresh)))
    assert digest(run) == digest(fresh)
    assert not (run / "_previous").exists()
