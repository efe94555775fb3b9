"""Benchmark: the mixture search's proxy trainings per hour, in one process and on Ray, and the share of its time
outside training; the recommended mixture against the natural, uniform and best-single-part mixtures.

    python benchmarks/bench_mixture_search.py [--candidates 32] [--seeds 3] [--workers 2] [--skip-ray]

The search of configs/mixture-search.yaml (the packaged demo corpus: web text, GSM8K, P3 and MMLU as parts,
towards other GSM8K problems; 40,000 training tokens per proxy, a 2 x 64 scratch GPT), each engine in its own
process without Prefect: local threads (proxies one at a time, each on every core), and a Ray cluster of
`--workers` CPUs with `proxy_cpus: 1` (a proxy per worker process). Reported: the step's wall time, proxy and
validation trainings per hour, and the time outside the trainings (the step's wall time minus the time inside
`finetune`, which includes measuring each proxy): drawing the parts, training the tokenizer and counting tokens,
fitting and searching, and importing transformers (about 2 s, once per process: the tokenizer loads first). The
second local run imports the training libraries before its clock starts, as a process that has trained before
(an earlier `evaluate` step, a worker's second search) would have them, so it shows the search's own time outside
training.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def child(spec: dict) -> None:
    from curate.engine.config import parse_config
    from curate.engine.runner import run_pipeline

    if spec.get("warm"):  # a process that has trained before: the libraries a training needs are imported
        import transformers  # noqa: F401
        from transformers import AutoTokenizer  # noqa: F401

        import curate.models.finetune  # noqa: F401
    config = parse_config(spec["config"], base_dir=ROOT / "configs")
    started = time.perf_counter()
    results = {r.label: r for r in run_pipeline(config)}
    print(json.dumps({"seconds": time.perf_counter() - started, "step": results["mixture_search"].seconds}))


def config_for(out: Path, engine: dict, candidates: int, seeds: int, proxy_cpus: float | None) -> dict:
    config = yaml.safe_load((ROOT / "configs" / "mixture-search.yaml").read_text())
    config["output"] = str(out)
    config["engine"] = {**engine, "prefect": False}
    config["stages"] = [s for s in config["stages"] if "mixture" not in s]  # the search, not the final mixture
    search = next(s["mixture_search"] for s in config["stages"] if "mixture_search" in s)
    search.update({"candidates": candidates, "seeds": seeds, **({"proxy_cpus": proxy_cpus} if proxy_cpus else {})})
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    local = {"kind": "local", "workers": args.workers}
    engines = {"local threads": (local, None, False), "local, libraries imported": (local, None, True)}
    if not args.skip_ray:
        engines["ray, a proxy per worker"] = ({"kind": "ray", "address": "local", "ray_cpus": args.workers}, 1.0,
                                              False)
    reports = {}
    for k, (name, (engine, proxy_cpus, warm)) in enumerate(engines.items()):
        out = work / f"run-{k}"
        spec = {"config": config_for(out, engine, args.candidates, args.seeds, proxy_cpus), "warm": warm}
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                              text=True, check=False, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        timing = json.loads(proc.stdout.strip().splitlines()[-1])
        report = json.loads((out / "models" / "mixture_search" / "search.json").read_text())
        reports[name] = report
        trainings = len(report["candidates"]) + sum(len(v["heldout_loss"]) for v in report["validation"].values())
        inside = report["seconds"]["finetune"]
        step = timing["step"]
        outside = step - inside / (args.workers if proxy_cpus else 1)  # trainings overlap on Ray
        drawing = report["seconds"]["units"] - inside  # each unit's own time outside `finetune`
        print(f"{name:26s} step {step:7.1f} s, {trainings} trainings: {3600 * trainings / step:7,.0f} per hour; "
              f"inside finetune {inside:6.1f} s (summed); outside trainings {max(outside, 0.0):5.1f} s = "
              f"{max(outside, 0.0) / step:.1%} of the step (drawing the units' rows {drawing:.1f} s, search and "
              f"fit {report['seconds']['search']:.2f} s, the rest: tokenizer, token counts, tasks)")
    report = next(iter(reports.values()))
    print(f"\nrecommended {report['recommended']} ({report['kept']}: {report['why']}); regressor "
          f"{report['regressor']['kind']}, cross-validated Spearman {report['regressor']['cv_spearman']:.3f}")
    for arm, v in report["validation"].items():
        against = v.get("vs_natural")
        interval = f", - natural {against['mean']:+.3f} {[round(x, 3) for x in against['ci95'] or []]}" \
            if against else ""
        print(f"  {arm:12s} held-out loss {v['mean']:.3f} (seeds {[round(x, 3) for x in v['heldout_loss']]})"
              f"{interval}")
    if not args.skip_ray:
        a, b = reports["local threads"], reports["ray, a proxy per worker"]
        gap = max(abs(x["loss"] - y["loss"]) for x, y in zip(a["candidates"], b["candidates"], strict=True))
        print(f"\nlargest difference of a proxy's loss between the engines: {gap:.1e} (torch's thread count "
              "changes the order of float sums)")


if __name__ == "__main__":
    main()
