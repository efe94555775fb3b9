"""Benchmark: the `language` stage's batched fastText identification against the per-line call it replaced.

    python benchmarks/bench_language.py --data <shared data folder> [--rows 200000] [--batch-rows 10000]

Rows: real rows of the shared data sets, repeated with a perturbation per copy and 3% junk
(`bench_ingest_heuristics.make_rows`), the same rows for both. Both run the packaged `lid.176.ftz` in batches of
`--batch-rows` (the stage's batch), one thread, then the stage on all rows with two worker threads. Prints rows/s
of each, the ratio, and whether every label matches (scores: the largest difference).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
from bench_ingest_heuristics import load_rows, make_rows

from curate.stages.language import Language


def timed(fn, batches: list[pa.Array]) -> tuple[float, list, np.ndarray]:
    start = time.perf_counter()
    results = [fn(batch) for batch in batches]
    seconds = time.perf_counter() - start
    codes = [code for result in results for code in (result[0].to_pylist() if isinstance(result[0], pa.Array)
                                                      else result[0])]
    scores = np.concatenate([np.asarray(result[1]) for result in results])
    return seconds, codes, scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    args = parser.parse_args()
    texts = pa.array([row["text"] for row in make_rows(load_rows(args.data), args.rows)], pa.string())
    batches = [texts[i:i + args.batch_rows] for i in range(0, len(texts), args.batch_rows)]
    print(f"{len(texts):,} rows, {np.mean([len(t) for t in texts.to_pylist()]):.0f} characters on average")

    stage = Language(languages=[])
    stage.setup()
    per_line_s, per_line_codes, per_line_scores = timed(stage.identify_per_row, batches)
    batched_s, codes, scores = timed(stage.identify, batches)
    print(f"per-line fastText (before): {len(texts) / per_line_s:>9,.0f} rows/s")
    print(f"batched (curate):           {len(texts) / batched_s:>9,.0f} rows/s   {per_line_s / batched_s:.1f}x")
    print(f"labels equal: {np.mean(np.equal(codes, per_line_codes)):.6f}; largest score difference: "
          f"{np.abs(scores - np.clip(per_line_scores, 0, 1)).max():.2e}")

    fresh = Language(languages=[])
    fresh.setup()
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(fresh.identify, batches))
    threaded = time.perf_counter() - start
    print(f"batched, 2 threads, cold word cache: {len(texts) / threaded:,.0f} rows/s")


if __name__ == "__main__":
    main()
