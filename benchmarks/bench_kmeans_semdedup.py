"""Benchmark: cost of k-means + kMQ selection and of SemDeDup as N grows, with baselines.

    python benchmarks/bench_kmeans_semdedup.py [--sizes 100000 1000000] [--niter 10] [--naive-n 20000]

Data (seeded, the same in every phase): N L2-normalised float32 vectors in R^384 around 2000 latent
directions (cosine to their direction ~0.8, between two members ~0.64), of which 5% are injected
near-duplicates of other rows (cosine ~0.999), plus a random quality score per row.

Each (size, phase) runs in its own subprocess so that its peak RSS (ru_maxrss) is its own; the "data"
phase only builds the data, and "extra" is a phase's peak minus that. Phases:
- data: generate the vectors and the Arrow table the stage would get as its summary;
- kmq: `kmeans_diversity` decide (K=1024, nredo 1, `--niter` Lloyd iterations, k-means++ init, FAISS's
  256-per-centroid training subsample), fraction 0.1, quality-weighted; "selection" = quotas +
  per-cluster Gumbel-top-k alone, timed again on the labels;
- uniform: the baseline, uniform random sampling of the same budget (no clustering);
- semdedup: `semdedup` decide (K=1000, spherical, `--niter` iterations, block 1024, reference mode);
  "recall" = injected pairs of which one row was removed, "false" = removed rows outside any pair.
- naive (one size, `--naive-n`): all rows in ONE cluster (the imbalanced worst case): the blocked
  per-cluster scan vs a naive full n_c x n_c similarity matrix; same result, tracemalloc peaks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
from memory import MIB, peak_rss

D, LATENT, DUP_FRACTION, SEED = 384, 2000, 0.05, 0


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_data(n: int, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, injected copy sources, quality); rows n_base.. are copies of rows `sources`."""
    rng = np.random.default_rng(SEED)
    centres = unit_rows(rng.standard_normal((LATENT, D), dtype=np.float32))
    n_dup = int(n * DUP_FRACTION)
    n_base = n - n_dup
    x = np.empty((n, D), np.float32)
    for s in range(0, n_base, chunk):
        m = min(chunk, n_base - s)
        noise = rng.standard_normal((m, D), dtype=np.float32) * np.float32(0.75 / np.sqrt(D))
        x[s:s + m] = unit_rows(centres[rng.integers(0, LATENT, m)] + noise)
    sources = rng.integers(0, n_base, n_dup)
    for s in range(0, n_dup, chunk):
        m = min(chunk, n_dup - s)
        noise = rng.standard_normal((m, D), dtype=np.float32) * np.float32(0.05 / np.sqrt(D))
        x[n_base + s:n_base + s + m] = unit_rows(x[sources[s:s + m]] + noise)
    return x, sources, rng.normal(size=n)


def summary_table(x: np.ndarray, quality: np.ndarray) -> pa.Table:
    from curate.data.arrays import matrix_to_column

    ids = pa.array([f"r{i:08d}" for i in range(len(x))], pa.string())
    return pa.table({"id": ids, "embedding": matrix_to_column(x), "q": quality})


def timed_kmeans() -> dict[str, float]:
    """Wrap the `kmeans` the clustering stages call (through `curate.stages.clustering`), to split their decide
    time into k-means and the rest."""
    import curate.stages.clustering as module

    spent = {"kmeans": 0.0}
    inner = module.kmeans

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent["kmeans"] += time.perf_counter() - start

    module.kmeans = wrapper
    return spent


def child(phase: str, n: int, niter: int) -> dict:
    import faiss

    from curate.methods.selection import allocate_quotas, fraction_to_k, segmented_gumbel_top_k

    start = time.perf_counter()
    x, sources, quality = make_data(n)
    table = summary_table(x, quality)
    out = {"phase": phase, "n": n, "data_s": time.perf_counter() - start, "data_peak_mb": peak_rss() / MIB,
           "threads": faiss.omp_get_max_threads()}
    budget = fraction_to_k(0.1, n)
    start = time.perf_counter()
    if phase == "kmq":
        import curate.stages.diversity as diversity

        spent = timed_kmeans()
        stage = diversity.KMeansDiversity(clusters=1024, niter=niter, nredo=1, fraction=0.1, quality="q")
        decision = stage.decide(table, None)
        out["wall_s"] = time.perf_counter() - start
        out["kmeans_s"] = spent["kmeans"]
        labels = decision.adds["cluster"].to_numpy(zero_copy_only=False).astype(np.int64)
        t = time.perf_counter()
        quotas = allocate_quotas(np.bincount(labels, minlength=1024), budget, "equal")
        chosen = segmented_gumbel_top_k(quality, labels, quotas, np.random.default_rng(1))
        out["selection_s"] = time.perf_counter() - t
        out["selected"] = int(decision.reason.null_count)
        out["note"] = f"B={budget}, quotas sum {int(quotas.sum())} (selection rerun picked {len(chosen)})"
    elif phase == "uniform":
        chosen = np.random.default_rng(1).choice(n, budget, replace=False)
        out["wall_s"] = time.perf_counter() - start
        out["selected"] = len(chosen)
        out["note"] = f"B={budget}"
    elif phase == "semdedup":
        import curate.stages.semdedup as semdedup

        spent = timed_kmeans()
        decision = semdedup.SemDedup(clusters=1000, niter=niter, block=1024).decide(table, None)
        out["wall_s"] = time.perf_counter() - start
        out["kmeans_s"] = spent["kmeans"]
        removed = decision.reason.is_valid().to_numpy(zero_copy_only=False)
        n_dup = len(sources)
        copies = np.arange(n - n_dup, n)
        found = removed[copies] | removed[sources]
        in_pair = np.zeros(n, bool)
        in_pair[copies] = in_pair[sources] = True
        out["removed"] = int(removed.sum())
        out["note"] = (f"removed {int(removed.sum())}, recall {found.mean():.3f} of {n_dup} injected pairs, "
                       f"false {int((removed & ~in_pair).sum())}")
    elif phase != "data":
        raise ValueError(phase)
    out["peak_mb"] = peak_rss() / MIB
    return out


def naive_child(n: int) -> dict:
    """One cluster of n rows: blocked scan vs the full n x n matrix (tracemalloc sees numpy's buffers)."""
    from curate.stages.semdedup import earlier_duplicates

    x = make_data(n)[0]
    out = {"phase": "naive", "n": n}
    tracemalloc.start()
    start = time.perf_counter()
    removed, arg, best = earlier_duplicates(x, 0.01, "reference", 1024)
    out["blocked_s"] = time.perf_counter() - start
    out["blocked_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.reset_peak()
    start = time.perf_counter()
    sims = x @ x.T
    sims[np.tri(n, dtype=bool)] = -np.inf  # keep i < j only
    naive_best, naive_arg = sims.max(axis=0), sims.argmax(axis=0)
    naive_removed = naive_best > np.float64(0.99)
    del sims
    out["naive_s"] = time.perf_counter() - start
    out["naive_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    out["same"] = bool((removed == naive_removed).all() and (arg[removed] == naive_arg[removed]).all()
                       and np.allclose(best[removed], naive_best[removed], atol=1e-6))
    out["removed"] = int(removed.sum())
    return out


def run_child(args: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--niter", type=int, default=10, help="Lloyd iterations (defaults: kMQ 300, SemDeDup 100)")
    parser.add_argument("--naive-n", type=int, default=20_000, help="rows in the one-cluster naive comparison")
    parser.add_argument("--child", nargs=3, metavar=("PHASE", "N", "NITER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        phase, n, niter = args.child[0], int(args.child[1]), int(args.child[2])
        print(json.dumps(naive_child(n) if phase == "naive" else child(phase, n, niter)))
        return
    print(f"d={D}, {LATENT} latent directions, {DUP_FRACTION:.0%} injected near-duplicates; "
          f"k-means: {args.niter} Lloyd iterations, nredo 1, k-means++ init, FAISS training subsample "
          "256 rows per centroid")
    header = (f"{'N':>9} {'phase':<9} {'wall s':>8} {'k-means s':>9} {'other s':>8} {'peak MB':>8} "
              f"{'extra MB':>8}  notes")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        base = run_child(["--child", "data", str(n), str(args.niter)])
        print(f"{n:>9} {'data':<9} {base['data_s']:>8.1f} {'':>9} {'':>8} {base['peak_mb']:>8.0f} {'':>8}  "
              f"generate + Arrow table; FAISS threads {base['threads']}")
        for phase in ("uniform", "kmq", "semdedup"):
            r = run_child(["--child", phase, str(n), str(args.niter)])
            km = r.get("kmeans_s")
            other = r["wall_s"] - km if km is not None else None
            note = r["note"] + (f"; selection alone {r['selection_s']:.2f}s" if "selection_s" in r else "")
            print(f"{n:>9} {phase:<9} {r['wall_s']:>8.2f} {km if km is not None else float('nan'):>9.1f} "
                  f"{other if other is not None else float('nan'):>8.1f} {r['peak_mb']:>8.0f} "
                  f"{r['peak_mb'] - base['peak_mb']:>8.0f}  {note}")
    r = run_child(["--child", "naive", str(args.naive_n), "0"])
    print(f"\nSemDeDup on ONE cluster of {r['n']} rows (the imbalanced worst case), reference mode, eps 0.01:")
    print(f"  blocked (block 1024): {r['blocked_s']:.2f}s, tracemalloc peak {r['blocked_peak_mb']:.0f} MB")
    print(f"  naive full matrix:    {r['naive_s']:.2f}s, tracemalloc peak {r['naive_peak_mb']:.0f} MB")
    print(f"  identical removals and matches: {r['same']} ({r['removed']} removed)")


if __name__ == "__main__":
    main()
