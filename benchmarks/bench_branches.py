"""Benchmark: a branchy recipe's wall time with independent steps run at the same time, against one step after
another (`engine.parallel_steps: false`), on the same rows.

    python benchmarks/bench_branches.py --data <shared data folder> [--rows 100000] [--workers 2]

Rows: real rows of the shared data sets, repeated with a perturbation per copy and 3% junk
(`bench_ingest_heuristics.make_rows`); the target: GSM8K problems. The recipe: normalize, then four branches that
each read normalize's output (heuristics, language, MinHash dedup, DSIR towards the target), then a mixture of
three of them. Each run in its own process, without Prefect. Prints both wall times, their ratio, and whether every
output file is byte-identical.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_ingest_heuristics import load_rows, make_rows, write_files

STAGES = [{"normalize": {}},
          {"heuristics": {"from": "normalize"}},
          {"language": {"from": "normalize", "languages": ["en"]}},
          {"dedup": {"from": "normalize"}},
          {"dsir": {"from": "normalize", "budget": 0.5}},
          {"mixture": {"from": ["heuristics", "language", "dsir"], "rows": 20_000}}]


def child(spec: dict) -> None:
    from curate.engine.config import parse_config
    from curate.engine.runner import run_pipeline

    config = parse_config({"name": "branches", "inputs": [{"path": spec["paths"]}], "output": spec["output"],
                           "target": {"path": spec["target"], "fields": {"prompt": "prompt", "response": "response"}},
                           "engine": {"prefect": False, "workers": spec["workers"], "shard_rows": 25_000,
                                      "parallel_steps": spec["parallel"]},
                           "stages": STAGES})
    start = time.perf_counter()
    results = run_pipeline(config)
    print(json.dumps({"seconds": time.perf_counter() - start, "steps": {r.label: r.seconds for r in results}}))


def data_files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*.parquet"))
            if not any(part.endswith(".meta") for part in p.relative_to(run).parts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-branches-"))
    paths, size = write_files(make_rows(load_rows(args.data), args.rows), work / "in", max(4, args.rows // 25_000))
    print(f"{args.rows:,} rows ({size / 1e6:,.0f} MB JSONL), {args.workers} workers")
    runs = {}
    for parallel in (False, True):
        spec = {"paths": paths, "output": str(work / f"run-{parallel}"), "workers": args.workers,
                "target": str(args.data / "gsm8k" / "gsm8k_train.jsonl"), "parallel": parallel}
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                              check=False)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        runs[parallel] = json.loads(proc.stdout.strip().splitlines()[-1])
        steps = ", ".join(f"{label} {s:.1f}" for label, s in runs[parallel]["steps"].items())
        print(f"  {'parallel' if parallel else 'serial':8s} {runs[parallel]['seconds']:7.1f} s   ({steps})")
    print(f"  parallel / serial wall time: {runs[True]['seconds'] / runs[False]['seconds']:.2f}; "
          f"speed-up {runs[False]['seconds'] / runs[True]['seconds']:.2f}x")
    same = data_files(work / "run-False") == data_files(work / "run-True")
    print(f"  every output file byte-identical: {same}")


if __name__ == "__main__":
    main()
