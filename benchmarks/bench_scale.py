"""Benchmark: the cheap stages at scale, and the local engine against Ray on the same rows.

    python benchmarks/bench_scale.py --data <folder of the shared data sets> [--rows 100000,1000000]
        [--engine-rows 100000] [--workers 2] [--prefect-ray]

1. Rows: real rows of the shared data sets, repeated with a perturbation per copy and 3% junk, as JSONL files
   (`bench_ingest_heuristics.make_rows`).
2. Scale: for each `--rows`, one run of ingest -> normalize -> heuristics -> language -> dedup in its own process
   (engine local, no Prefect), reporting rows/s per step and over the run, and the process's peak RSS.
3. Engines, on `--engine-rows` rows through the map stages (ingest, normalize, heuristics, language), each in its
   own process: local threads; Ray tasks submitted by curate (`prefect: false`); with `--prefect-ray` also the
   Prefect flow on `prefect_ray.RayTaskRunner`. Ray's cluster start is reported apart from the work.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_ingest_heuristics import load_rows, make_rows, write_files

CHEAP = [{"normalize": {}}, {"heuristics": {}}, {"language": {"languages": ["en"]}}, {"dedup": {}}]
MAP = CHEAP[:3]


def child(spec: dict) -> dict:
    """Run one config in this process; its timings and peak RSS."""
    from curate.engine.config import parse_config
    from curate.engine.runner import run_pipeline

    config = parse_config({"name": "scale", "inputs": [{"path": spec["paths"]}], "output": spec["output"],
                           "engine": spec["engine"], "stages": spec["stages"]})
    start = time.perf_counter()
    if spec["engine"].get("prefect"):
        import yaml
        from curate.flows.pipeline import run_flow

        path = Path(spec["output"] + ".yaml")
        path.write_text(yaml.safe_dump({"name": "scale", "inputs": [{"path": spec["paths"]}],
                                        "output": spec["output"], "engine": spec["engine"],
                                        "stages": spec["stages"]}))
        results = run_flow(str(path))
    else:
        results = run_pipeline(config)
    total = time.perf_counter() - start
    return {"seconds": total, "steps": {r.label: {"seconds": r.seconds, "rows_in": r.rows_in} for r in results},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument("--engine-rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prefect-ray", action="store_true")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    base = load_rows(args.data)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    local = {"kind": "local", "prefect": False, "workers": args.workers}
    for n in [int(x) for x in args.rows.split(",") if x]:
        paths, size = write_files(make_rows(base, n), work / f"in-{n}", max(4, n // 50_000))
        out = measure({"paths": paths, "output": str(work / f"run-{n}"), "engine": local, "stages": CHEAP})
        print(f"\n{n:,} rows ({size / 1e6:,.0f} MB JSONL): {out['seconds']:.1f} s, {n / out['seconds']:,.0f} rows/s "
              f"over the run, peak RSS {out['peak_rss_mb']:,.0f} MB")
        for label, step in out["steps"].items():
            rate = step["rows_in"] / max(step["seconds"], 1e-9)
            print(f"  {label:12s} {step['seconds']:7.1f} s  {rate:9,.0f} rows/s")

    n = args.engine_rows
    paths, _ = write_files(make_rows(base, n), work / f"engine-{n}", 8)
    engines = {"local threads": local,
               "ray (curate's tasks)": {"kind": "ray", "address": "local", "prefect": False,
                                        "ray_cpus": args.workers}}
    if args.prefect_ray:
        engines["ray (Prefect RayTaskRunner)"] = {"kind": "ray", "address": "local", "prefect": True,
                                                  "ray_cpus": args.workers}
    print(f"\nengines, {n:,} rows through ingest, normalize, heuristics, language ({args.workers} CPUs):")
    base_rate = None
    for name, engine in engines.items():
        out = measure({"paths": paths, "output": str(work / f"engine-{name.split()[0]}-{len(name)}"),
                       "engine": {**engine, "shard_rows": 10_000}, "stages": MAP})
        work_seconds = sum(s["seconds"] for s in out["steps"].values())
        rate = 4 * n / work_seconds  # rows through the four steps, per second of step time
        base_rate = base_rate or rate
        print(f"  {name:30s} steps {work_seconds:6.1f} s, {rate:9,.0f} rows/s ({rate / base_rate:.2f}x local); "
              f"run {out['seconds']:.1f} s with start-up")


if __name__ == "__main__":
    main()
