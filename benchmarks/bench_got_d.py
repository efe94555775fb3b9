"""Benchmark: GOT-D's OT solve (curate.methods.ot.sinkhorn, tiled cost) vs POT's
`ot.sinkhorn(..., method="sinkhorn_log")`.

    python benchmarks/bench_got_d.py [--sizes 10000 100000] [--targets 1000] [--epsilon 0.1]
        [--solvers pot,curate,curate_tight]   (`curate@cuda`: curate's solver on a GPU; the first is the reference)

Data (seeded): L2-normalised float32 vectors in R^384 around 200 latent directions (cosine to the direction ~0.8);
the targets come from 20 of those directions, 5 of which the pool holds 10x fewer of (the rows GOT-D should pick).
Both solvers get the same vectors, uniform marginals and the same absolute epsilon (eps 0.1 on costs in [0, 4]).
POT runs with its defaults (stopThr 1e-9 on the L2 marginal error, checked every 10 iterations, at most 1000);
curate with its defaults (tolerance 0.1 on the L1 marginal error, momentum 1.3). Each solver runs in its own
subprocess, so its peak RSS (ru_maxrss, minus the data) is its own. Reported per size: wall time, peak memory,
iterations, the overlap of the selected sets (the 10% most negative calibrated gradients) with POT's, and the share
of the pool's rows from the 5 under-represented directions that are picked ("rare": 0.26% of the pool, 25% of the
target); plus
curate at POT's tolerance, to separate the solver's speed from the looser stop.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from memory import MIB, peak_rss, reset_peak_rss

D, LATENT, SEED = 384, 200, 0


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_data(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    centres = unit_rows(rng.standard_normal((LATENT, D), dtype=np.float32))
    weights = np.ones(LATENT)
    weights[:5] = 0.1  # under-represented in the pool, present in the target
    labels = rng.choice(LATENT, n, p=weights / weights.sum())
    noise = lambda k: rng.standard_normal((k, D), dtype=np.float32) * np.float32(0.75 / np.sqrt(D))  # noqa: E731
    pool = unit_rows(centres[labels] + noise(n)).astype(np.float32)
    target = unit_rows(centres[rng.integers(0, 20, m)] + noise(m)).astype(np.float32)
    return target, pool, labels


def run_phase(solver: str, n: int, m: int, eps: float) -> dict:
    target, pool, labels = make_data(n, m)
    if solver == "pot":
        import ot  # imports before the clock: torch's alone takes seconds

    from curate.methods.ot import sinkhorn

    base = reset_peak_rss()
    started = time.perf_counter()
    if solver == "pot":
        a, b = np.full(m, 1 / m), np.full(n, 1 / n)
        cost = ot.dist(target.astype(np.float64), pool.astype(np.float64))
        _, log = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", log=True)
        g, iterations = eps * log["log_v"], int(log["niter"])
    else:
        name, _, device = solver.partition("@")
        tight = name == "curate_tight"
        result = sinkhorn(target, pool, epsilon=eps, tolerance=1e-6 if tight else 0.1, max_iter=1000,
                          device=device or "cpu")
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        g, iterations = result.g, result.iterations
    seconds = time.perf_counter() - started
    k = n // 10
    selected = np.argsort(g, kind="stable")[:k]
    rare_recall = float(np.mean(np.isin(np.flatnonzero(labels < 5), selected)))
    return {"solver": solver, "n": n, "seconds": seconds, "peak_mib": (peak_rss() - base) / MIB,
            "iterations": iterations, "selected": selected.tolist(), "rare_recall": rare_recall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--solvers", default="pot,curate,curate_tight",
                        help="comma-separated; the first is the reference; `curate@cuda` runs curate's on a GPU")
    parser.add_argument("--phase", nargs=2, metavar=("SOLVER", "N"))
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase[0], int(args.phase[1]), args.targets, args.epsilon)))
        return
    here = Path(__file__).parent
    print(f"{'N':>8} {'solver':>18} {'seconds':>8} {'peak MiB':>9} {'iters':>6} {'overlap':>8} {'rare':>6} "
          f"{'speed-up':>8}")
    for n in args.sizes:
        results = {}
        solvers = args.solvers.split(",")
        for solver in solvers:
            out = subprocess.run([sys.executable, str(here / "bench_got_d.py"), "--phase", solver, str(n),
                                  "--targets", str(args.targets), "--epsilon", str(args.epsilon)],
                                 capture_output=True, text=True, check=True, cwd=here.parent)
            results[solver] = json.loads(out.stdout.strip().splitlines()[-1])
        reference = set(results[solvers[0]]["selected"])
        for solver, r in results.items():
            overlap = len(reference & set(r["selected"])) / len(reference)
            ratio = results[solvers[0]]["seconds"] / r["seconds"]
            print(f"{n:>8} {solver:>18} {r['seconds']:>8.2f} {r['peak_mib']:>9.0f} {r['iterations']:>6} "
                  f"{overlap:>8.3f} {r['rare_recall']:>6.2f} {ratio:>7.1f}x")


if __name__ == "__main__":
    main()
