"""Benchmark: the `dsir` stage vs the `data-selection` package (p-lambda/dsir's HashedNgramDSIR) on the same documents.

    python benchmarks/bench_dsir.py --data <folder of the shared data sets> [--target math] [--k 2000]

Raw: every text of the shared data sets (28.5k documents: text, or prompt + response); target: one data set's texts
(`--target`, default MATH). Both fit on all raw tokens (`num_tokens_to_fit: all`), 10,000 buckets, unigrams and
bigrams, no length filter, deterministic top-k. Timed: fitting both bag-of-n-gram models and one log-weight per
document (the package: `fit_importance_estimator` + `compute_importance_weights`, one process; curate: `prepare`
+ `summarize` per 8192-row batch + `decide`, one thread), in this process. Reported: seconds, the speed-up, the
rank correlation of the log-weights and the overlap of the top-k documents, for our fast hash and for
`hash: sha256` (the package's buckets).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from bench_dedup import load_documents  # the same 28.5k documents as the dedup benchmark
from scipy.stats import spearmanr


def run_package(raw: Path, target: Path, work: Path) -> tuple[np.ndarray, float]:
    from data_selection import HashedNgramDSIR

    started = time.perf_counter()
    dsir = HashedNgramDSIR([str(raw)], [str(target)], cache_dir=str(work / "cache"), num_proc=1,
                           min_example_length=0)
    dsir.fit_importance_estimator(num_tokens_to_fit="all")
    dsir.compute_importance_weights()
    seconds = time.perf_counter() - started
    return np.load(work / "cache" / "log_importance_weights" / "0.npy"), seconds


def run_curate(texts: list[str], target: list[str], work: Path, k: int, hash_name: str) -> tuple[np.ndarray, float,
                                                                                                  np.ndarray]:
    from curate.data.dataset import Dataset
    from curate.data.inputs import StepInput
    from curate.stages.base import StageContext, TableRows
    from curate.stages.dsir import Dsir

    table = pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts})
    Dataset.write(work / "raw", table)
    Dataset.write(work / "target", pa.table({"id": [f"t{i}" for i in range(len(target))], "text": target}))
    started = time.perf_counter()
    stage = Dsir(budget=k, hash=hash_name, num_tokens_to_fit="all", min_words=0, top_k=True)
    context = StageContext(input=StepInput.open([work / "raw"], ["raw"]), target=Dataset.open(work / "target"),
                           models_dir=work / "models", label="dsir")
    stage.prepared = stage.prepare(context)
    stage.ensure_setup()
    summary = pa.concat_tables([stage.summarize(table.slice(i, 8192)) for i in range(0, table.num_rows, 8192)])
    decision = stage.decide(summary, TableRows(table))
    seconds = time.perf_counter() - started
    kept = np.flatnonzero(np.array(decision.reason.to_pylist(), dtype=object) == None)  # noqa: E711
    return summary.column("logw_0").to_numpy(), seconds, kept


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--target", default="math")
    parser.add_argument("--k", type=int, default=2000)
    args = parser.parse_args()
    texts = load_documents(args.data, None)
    target = [json.loads(line).get("text") or json.loads(line)["prompt"]
              for line in (args.data / args.target / f"{args.target}.jsonl").read_text(encoding="utf-8").split("\n")
              if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "raw.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        (work / "target.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in target))
        theirs, package_seconds = run_package(work / "raw.jsonl", work / "target.jsonl", work)
        top_theirs = set(np.argsort(-theirs, kind="stable")[: args.k].tolist())
        print(f"{len(texts):,} documents, target {args.target} ({len(target):,} texts), top-k {args.k}")
        print(f"{'implementation':>16} {'seconds':>8} {'speed-up':>8} {'spearman':>9} {'top-k overlap':>14}")
        print(f"{'data-selection':>16} {package_seconds:>8.2f} {1.0:>7.1f}x {1.0:>9.4f} {1.0:>14.3f}")
        for hash_name in ("fast", "sha256"):
            ours, seconds, kept = run_curate(texts, target, work / hash_name, args.k, hash_name)
            overlap = len(top_theirs & set(kept.tolist())) / args.k
            print(f"{'curate ' + hash_name:>16} {seconds:>8.2f} {package_seconds / seconds:>7.1f}x "
                  f"{spearmanr(ours, theirs).statistic:>9.4f} {overlap:>14.3f}")


if __name__ == "__main__":
    main()
