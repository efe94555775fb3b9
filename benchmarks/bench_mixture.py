"""Benchmark: the `mixture` stage over a million input rows, rows/s and peak memory, against a plain baseline.

    python benchmarks/bench_mixture.py --data <folder of the shared data sets> [--rows 1000000] [--workers 2]

Input: `--rows` rows cycled from the real texts of `<data>/pool_mixed/pool_mixed.jsonl` (each with its own id), in
one Parquet file, split into parts by their `domain` (six parts). The mixture asks for weights 0.4 / 0.3 / 0.1 /
0.1 / 0.05 / 0.05 of a white-space-word budget of half the pool, so some parts are sampled and some repeated.
curate: `curate run` in-process (no Prefect) on a config of `mixture: {by: domain, ...}`; ingest runs first and is
not timed; the mixture step's time is its manifest's `seconds` (token counts, the decision, writing the kept rows
and the repeats in their seeded order, and every row not taken by id with its reason). Peak memory: the growth of
this process's peak RSS during the step. Also timed: a budget in rows (no token counting), and new weights that
reuse the kept token counts (what re-deciding costs).
Baseline, in the same process, on the same Parquet file: a plain Arrow + numpy mixture as one would write it by
hand: read the table, count words, per part a seeded permutation cut at its token target (whole passes first
where a part is short), take the rows, one shuffle, one Parquet file; no rejected rows, no report, no resume.
Goal: >= 200k rows/s for curate.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from memory import MIB, peak_rss, reset_peak_rss

from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.models.token_count import word_counts

WEIGHTS = [0.4, 0.3, 0.1, 0.1, 0.05, 0.05]


def make_input(data: Path, rows: int, path: Path) -> pa.Table:
    records = [json.loads(line) for line in (data / "pool_mixed" / "pool_mixed.jsonl").read_text().split("\n")
               if line.strip()]
    base = pa.table({"text": [r["text"] for r in records], "domain": [r["domain"] for r in records]})
    index = np.arange(rows) % base.num_rows
    table = base.take(pa.array(index))
    table = table.append_column("id", pa.array([f"row-{i:07d}" for i in range(rows)]))
    pq.write_table(table, path, row_group_size=50_000)
    return table


def baseline(path: Path, weights: dict[str, float], budget: float, out: Path, seed: int = 0) -> float:
    start = time.perf_counter()
    table = pq.read_table(path)
    words = word_counts(table.column("text")).astype(np.float64)
    domain = table.column("domain").to_numpy(zero_copy_only=False)
    picked = []
    for k, (name, weight) in enumerate(weights.items()):
        rows = np.flatnonzero(domain == name)
        target, available = weight * budget, words[rows].sum()
        full = int(target // available)
        rest = target - full * available
        order = np.random.default_rng([seed, k]).permutation(len(rows))
        cut = int(np.searchsorted(np.cumsum(words[rows][order]), rest))
        picked.append(np.concatenate([np.tile(rows, full), rows[order[:cut]]]))
    chosen = np.concatenate(picked)
    chosen = chosen[np.random.default_rng(seed).permutation(len(chosen))]
    pq.write_table(table.take(pa.array(chosen)), out / "mixture.parquet", compression="zstd")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of the shared data sets")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mixture-") as folder:
        root = Path(folder)
        table = make_input(Path(args.data), args.rows, root / "pool.parquet")
        counts = pc.value_counts(table.column("domain")).to_pylist()
        domains = [c["values"] for c in sorted(counts, key=lambda c: -c["counts"])]  # largest part first
        weights = dict(zip(domains, WEIGHTS, strict=False))
        budget = 0.5 * float(word_counts(table.column("text")).sum())
        del table
        config = {"name": "bench", "inputs": [{"path": str(root / "pool.parquet")}], "output": str(root / "run"),
                  "engine": {"prefect": False, "workers": args.workers, "shard_rows": 100_000}, "stages": []}
        run_pipeline(parse_config(config))  # ingest, not timed
        config["stages"] = [{"mixture": {"by": "domain", "weights": weights, "rows": args.rows // 2}}]
        by_rows = {r.label: r for r in run_pipeline(parse_config(config))}["mixture"]
        config["stages"] = [{"mixture": {"by": "domain", "weights": weights, "tokens": int(budget)}}]
        (root / "run" / "scores").exists() and __import__("shutil").rmtree(root / "run" / "scores")  # count again
        before = reset_peak_rss()
        step = {r.label: r for r in run_pipeline(parse_config(config))}["mixture"]
        ours_peak = peak_rss() - before
        report = json.loads(next((root / "run" / "stages").glob("*-mixture")).joinpath("mixture.json").read_text())
        config["stages"][0]["mixture"]["weights"] = dict(zip(domains, reversed(WEIGHTS), strict=False))
        redecided = {r.label: r for r in run_pipeline(parse_config(config))}["mixture"]
        before = reset_peak_rss()
        base_seconds = baseline(root / "pool.parquet", weights, budget, root)
        base_peak = peak_rss() - before
    rate, base_rate = args.rows / step.seconds, args.rows / base_seconds
    print(f"{args.rows:,} input rows in {len(weights)} parts, word budget {budget:,.0f}, {args.workers} workers")
    for name, part in report["parts"].items():
        print(f"  {name:<14} weight {part['weight']:.2f}  rows {part['rows']:>8,}  taken {part['copies']:>8,}  "
              f"passes {part['repeats']:.2f}  share {part['share']:.3f}")
    print(f"\n{'':>9} {'seconds':>8} {'rows/s':>10} {'peak MiB':>9}")
    print(f"{'curate':>9} {step.seconds:>8.2f} {rate:>10,.0f} {ours_peak / MIB:>9.0f}   "
          f"({step.rows_out:,} rows out, {step.rows_added:,} of them repeats; {step.rows_rejected:,} rows not "
          f"taken, recorded by id)")
    print(f"{'baseline':>9} {base_seconds:>8.2f} {base_rate:>10,.0f} {base_peak / MIB:>9.0f}")
    print(f"curate with a budget in rows (no token counting): {by_rows.seconds:.2f} s, "
          f"{args.rows / by_rows.seconds:,.0f} rows/s; new weights from the kept token counts: "
          f"{redecided.seconds:.2f} s, {args.rows / redecided.seconds:,.0f} rows/s")
    print(f"\ncurate / baseline: {rate / base_rate:.2f}x rows/s, {base_peak / max(ours_peak, 1):.2f}x less peak memory")
    print(f"goal: >= 200,000 rows/s: {'met' if rate >= 200_000 else 'not met'} ({rate:,.0f})")


if __name__ == "__main__":
    main()
