"""Benchmark: a step's rows as a `datasets.Dataset`, `StepData.to_hf()` against `datasets.load_dataset("parquet")`.

    python benchmarks/bench_to_hf.py --data <folder of the shared data sets> [--rows 1000000]

1. Rows: real rows of the shared data sets, repeated with a perturbation per copy (`bench_ingest_heuristics`),
   ingested by curate into a run (an ingest-only config), so both readers see the same Parquet shards.
2. Each reader runs in its own process with an empty cache: `open_run(run)["ingest"].to_hf()`, and
   `datasets.load_dataset("parquet", data_files=<the shards>, split="train", cache_dir=...)`. Reported: seconds,
   the process's peak RSS above its RSS after imports, and whether the rows are memory-mapped; then a second call
   (the cache is there) and one pass over a column to check that both hold the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_ingest_heuristics import load_rows, make_rows, write_files
from memory import reset_peak_rss


def _status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes (VmRSS now, VmHWM its peak since the last
    reset: `reset_peak_rss` clears it, which getrusage's lifetime maximum is not)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kind: str, run: str, cache: str) -> dict:
    import datasets  # noqa: F401  (imports are not part of the measure)
    from datasets.table import ConcatenationTable, MemoryMappedTable

    from curate import open_run

    os.environ["CURATE_CACHE_DIR"] = cache
    step = open_run(run)["ingest"]
    files = step.files
    reset_peak_rss()
    base = _status("VmRSS")
    start = time.perf_counter()
    if kind == "curate":
        hf = step.to_hf()
    else:
        import datasets as hf_datasets

        hf = hf_datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache)
    first = time.perf_counter() - start
    peak = _status("VmHWM") - base
    start = time.perf_counter()
    again = step.to_hf() if kind == "curate" else hf_datasets.load_dataset("parquet", data_files=files,
                                                                             split="train", cache_dir=cache)
    second = time.perf_counter() - start
    words = sum(len(t) for t in again.data.table.column("text").slice(0, 200_000).to_pylist())
    blocks = hf.data.blocks if isinstance(hf.data, ConcatenationTable) else [[hf.data]]
    return {"rows": len(hf), "seconds": first, "again_seconds": second, "peak_mb": peak / 2**20,
            "rss_after_mb": (_status("VmRSS") - base) / 2**20,
            "memory_mapped": all(isinstance(t, MemoryMappedTable) for row in blocks for t in row),
            "chars_first_200k": words}


def measure(kind: str, run: Path, cache: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(run), str(cache)], capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    from curate.engine.config import parse_config
    from curate.engine.runner import run_pipeline

    with tempfile.TemporaryDirectory(prefix="bench-to-hf-") as tmp:
        folder = Path(tmp)
        paths, size = write_files(make_rows(load_rows(args.data), args.rows), folder / "data", 4)
        start = time.perf_counter()
        run_pipeline(parse_config({"name": "to-hf", "inputs": [{"path": p} for p in paths],
                                   "output": str(folder / "run"), "engine": {"prefect": False, "workers": 2},
                                   "stages": []}))
        print(f"{args.rows:,} rows ({size / 2**20:,.0f} MB of JSONL) ingested in {time.perf_counter() - start:.1f} s")
        results = {kind: measure(kind, folder / "run", folder / f"cache-{kind}") for kind in ("curate", "datasets")}
    ours, peer = results["curate"], results["datasets"]
    assert ours["rows"] == peer["rows"] and ours["chars_first_200k"] == peer["chars_first_200k"], results
    print(f"{'reader':<34}{'rows':>11}{'seconds':>10}{'again s':>10}{'peak MB':>10}{'mmap':>6}  (peak: above the RSS "
          "before the call)")
    for name, r in (("StepData.to_hf()", ours), ('datasets.load_dataset("parquet")', peer)):
        print(f"{name:<34}{r['rows']:>11,}{r['seconds']:>10.2f}{r['again_seconds']:>10.2f}{r['peak_mb']:>10.0f}"
              f"{'yes' if r['memory_mapped'] else 'no':>6}")
    print(f"time ratio (datasets / ours): {peer['seconds'] / ours['seconds']:.2f}x; "
          f"peak memory ratio: {peer['peak_mb'] / max(ours['peak_mb'], 1):.2f}x")


if __name__ == "__main__":
    main()
