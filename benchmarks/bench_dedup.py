"""Benchmark: curate's `dedup` (MinHash-LSH) against DataTrove's MinHash pipeline on the same documents.

    python benchmarks/bench_dedup.py --data <folder of the shared data sets> [--workers 2]

1. Documents: the text (or prompt + response) of the instruction, math, MC and pool data sets.
   Natural near-duplicates (exact shingle Jaccard >= 0.5, found exactly) and exact duplicates are removed
   first, so the only near-duplicates left are the injected ones.
2. Injected: copies of 10% of the documents with words replaced at several rates, shuffled in.
3. Both tools run in this process on the same JSONL files with the same settings (word 5-grams,
   14 bands x 8 rows, 64-bit, seed 1) and the same number of workers:
   - ours: read the files with Arrow, `Dedup.summarize` per file in a thread pool, `decide`, apply and
     write the kept rows as Parquet (the work a `curate run` does, without its ingest step);
   - curate_run: the same through `run_pipeline` (ingest to Parquet shards + the dedup stage);
   - DataTrove 0.10.1: MinhashDedupSignature -> Buckets -> Cluster -> Filter (LocalPipelineExecutor),
     with a white-space word tokenizer (its English default needs spaCy, which is slower);
   - rensa 0.5 as its README uses it: per document, lower-cased white-space word 5-grams in Python into
     `RMinHash(112, 1).update`, then `RMinHashLSH` (14 bands) finds for each document an earlier candidate.
4. Signatures alone, on one core (RAYON_NUM_THREADS=1, one thread, the same documents): ours with each engine
   (normalisation and shingling included) against rensa's per-document Python path.
5. Reported: documents/s end to end, the ratios, recall per true-Jaccard bucket and precision.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # rensa's thread pool: per-core figures (set before it loads)

import numpy as np
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq
from peers import datatrove_whitespace_tokenizer, quiet_datatrove

from curate.methods.dedup.evaluate import inject_near_duplicates, pair_jaccard, similar_pairs
from curate.methods.dedup.exact import exact_keys, first_occurrences, key_matrix
from curate.stages.base import TableRows
from curate.stages.decision import apply_decision
from curate.stages.dedup import Dedup

DATASETS = ["gsm8k", "math", "svamp", "mmlu_redux", "truthfulqa", "gpteacher_codegen", "gpteacher_roleplay",
            "self_instruct_seed", "hh_rlhf_harmless_test", "p3_t0_mix", "pool_mixed"]
RATES = [0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2]
BUCKETS = [0.95, 0.9, 0.8, 0.7, 0.5, 0.0]


def load_documents(data: Path, limit: int | None) -> list[str]:
    texts = []
    for name in DATASETS:
        for path in sorted((data / name).glob("*.jsonl")):
            with open(path, encoding="utf-8") as lines:
                rows = [json.loads(line) for line in lines if line.strip()]
            for row in rows:
                text = row.get("text") or "\n\n".join(x for x in (row.get("prompt"), row.get("response")) if x)
                if text and text.strip():
                    texts.append(text)
    return texts[:limit] if limit else texts


def clean_base(texts: list[str]) -> list[str]:
    """Drop exact duplicates and the later member of every pair with shingle Jaccard >= 0.5."""
    first = first_occurrences(key_matrix(exact_keys(texts)))
    texts = [t for i, t in enumerate(texts) if first[i] == i]
    _, right, _ = similar_pairs(texts, 0.5)
    drop = set(right.tolist())
    return [t for i, t in enumerate(texts) if i not in drop]


def write_inputs(folder: Path, ids: list[str], texts: list[str], files: int) -> None:
    folder.mkdir(parents=True)
    for f in range(files):
        with open(folder / f"{f:03d}.jsonl", "w", encoding="utf-8") as out:
            for i in range(f, len(texts), files):
                out.write(json.dumps({"id": ids[i], "text": texts[i]}) + "\n")


def run_ours(inputs: Path, output: Path, workers: int) -> tuple[set[str], dict[str, float]]:
    stage = Dedup({})
    start = time.perf_counter()
    files = sorted(inputs.glob("*.jsonl"))
    with ThreadPoolExecutor(workers) as pool:
        tables = list(pool.map(lambda p: pj.read_json(p).select(["id", "text"]), files))
        read = time.perf_counter()
        summaries = list(pool.map(stage.summarize, tables))
    summarized = time.perf_counter()
    table = pa.concat_tables(tables)
    decision = stage.decide(pa.concat_tables(summaries), TableRows(table))
    decided = time.perf_counter()
    output.mkdir(parents=True)
    removed: set[str] = set()
    offset = 0
    for i, part in enumerate(tables):
        applied = apply_decision(part, decision.slice(offset, part.num_rows), "dedup")
        kept, rejected = applied.kept, applied.rejected
        pq.write_table(kept, output / f"part-{i:05d}.parquet")
        if rejected.num_rows:
            removed.update(rejected.column("id").to_pylist())
        offset += part.num_rows
    end = time.perf_counter()
    times = {"read": read - start, "summarize": summarized - read, "decide": decided - summarized,
             "apply+write": end - decided, "total": end - start}
    return removed, times


def run_curate(inputs: Path, output: Path, workers: int) -> tuple[set[str], dict[str, float]]:
    """The full `curate run`: ingest (JSONL -> Parquet shards) then the dedup stage, no Prefect."""
    from curate.data.dataset import Dataset
    from curate.engine.config import parse_config
    from curate.engine.runner import run_pipeline

    config = parse_config({"name": "bench", "inputs": [{"path": str(inputs / "*.jsonl")}], "output": str(output),
                           "engine": {"workers": workers, "prefect": False, "shard_rows": 8192},
                           "stages": [{"dedup": {}}]})
    start = time.perf_counter()
    results = run_pipeline(config)
    total = time.perf_counter() - start
    removed = set(Dataset.open(output / "rejected" / "01-dedup").to_table(["id"]).column("id").to_pylist())
    return removed, {"ingest": results[0].seconds, "dedup": results[1].seconds, "total": total}


def run_datatrove(inputs: Path, work: Path, workers: int, files: int) -> tuple[set[str], dict[str, float]]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1,
                           hash_config=HashConfig(precision=64))
    times, start, task_seconds = {}, time.perf_counter(), 0.0
    steps = [
        ("signature", [JsonlReader(str(inputs)),
                       MinhashDedupSignature(str(work / "sigs"), config=config,
                                             language=datatrove_whitespace_tokenizer())], files),
        ("buckets", [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=config)],
         config.num_buckets),
        ("cluster", [MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=config)], 1),
        ("filter", [JsonlReader(str(inputs)),
                    MinhashDedupFilter(str(work / "remove"),
                                       exclusion_writer=JsonlWriter(str(work / "removed"), compression=None)),
                    JsonlWriter(str(work / "kept"), compression=None)], files),
    ]
    for name, pipeline, tasks in steps:
        t = time.perf_counter()
        with quiet_datatrove(work / f"{name}.stderr.log"):
            LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks),
                                  logging_dir=str(work / f"logs-{name}")).run()
        times[name] = time.perf_counter() - t
        stats = json.loads((work / f"logs-{name}" / "stats.json").read_text())
        task_seconds += sum(step["time_stats"]["total"] for step in stats)
    times["total"] = time.perf_counter() - start
    times["tasks_total"] = task_seconds  # time inside its tasks, summed: no process start-up or waiting
    removed = set()
    for path in (work / "removed").glob("*.jsonl"):
        with open(path, encoding="utf-8") as lines:
            removed.update(json.loads(line)["id"] for line in lines if line.strip())
    return removed, times


def rensa_shingles(text: str, ngram: int = 5) -> list[str]:
    words = text.lower().split()
    return [" ".join(words[i:i + ngram]) for i in range(max(1, len(words) - ngram + 1))]


def run_rensa(texts: list[str], ids: list[str]) -> tuple[set[str], dict[str, float]]:
    """rensa end to end: signatures per document, then LSH; a document with an earlier candidate is removed."""
    import rensa

    start = time.perf_counter()
    hashes = []
    for text in texts:
        minhash = rensa.RMinHash(num_perm=112, seed=1)
        minhash.update(rensa_shingles(text))
        hashes.append(minhash)
    signed = time.perf_counter()
    lsh = rensa.RMinHashLSH(threshold=0.8, num_perm=112, num_bands=14)
    for i, minhash in enumerate(hashes):
        lsh.insert(i, minhash)
    removed = {ids[i] for i, minhash in enumerate(hashes) if any(j < i for j in lsh.query(minhash))}
    end = time.perf_counter()
    return removed, {"signatures": signed - start, "lsh": end - signed, "total": end - start}


def signature_speed(texts: list[str]) -> dict[str, float]:
    """Documents/s of signatures alone on one core: each of our engines, and rensa's per-document path."""
    import rensa
    from threadpoolctl import threadpool_limits

    from curate.methods.dedup.minhash import MinHashParams, minhash_signatures

    table = pa.array(texts, pa.string())
    speeds = {}
    with threadpool_limits(1):
        for engine in ("rensa", "datatrove"):
            start = time.perf_counter()
            minhash_signatures(table, MinHashParams(engine=engine))
            speeds[f"ours_{engine}"] = len(texts) / (time.perf_counter() - start)
        start = time.perf_counter()
        for text in texts:
            minhash = rensa.RMinHash(num_perm=112, seed=1)
            minhash.update(rensa_shingles(text))
            minhash.digest()
        speeds["rensa"] = len(texts) / (time.perf_counter() - start)
    return {k: round(v, 1) for k, v in speeds.items()}


def quality(removed: set[str], ids: list[str], copy: np.ndarray, original: np.ndarray,
            jaccard: np.ndarray) -> dict[str, object]:
    mask = np.array([i in removed for i in ids])
    resolved = mask[copy] | mask[original]
    useful = int(resolved.sum())
    recall = {}
    for low, high in zip(BUCKETS, [1.01, *BUCKETS[:-1]], strict=True):
        inside = (jaccard >= low) & (jaccard < high)
        recall[f"[{low:.2f},{min(high, 1):.2f})"] = (round(float(resolved[inside].mean()), 4) if inside.any()
                                                    else None, int(inside.sum()))
    return {"removed": int(mask.sum()), "precision": round(useful / max(int(mask.sum()), 1), 4),
            "recall_j>=0.9": round(float(resolved[jaccard >= 0.9].mean()), 4),
            "recall_j>=0.8": round(float(resolved[jaccard >= 0.8].mean()), 4), "recall_by_jaccard": recall}


def theory(s: np.ndarray, bands: int = 14, rows: int = 8) -> np.ndarray:
    return 1 - (1 - s**rows) ** bands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of the shared data sets")
    parser.add_argument("--workers", type=int, default=2, help="threads (ours) and processes (DataTrove)")
    parser.add_argument("--files", type=int, default=8, help="input files = DataTrove tasks")
    parser.add_argument("--copies", type=float, default=0.1, help="fraction of documents copied with edits")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many source documents")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    t = time.perf_counter()
    base = clean_base(load_documents(args.data, args.limit))
    injected = inject_near_duplicates(base, args.copies, RATES, seed=args.seed)
    texts = base + injected.texts
    copy = np.arange(len(base), len(texts))
    jaccard = pair_jaccard(injected.texts, [base[i] for i in injected.original])
    order = np.random.default_rng(args.seed).permutation(len(texts))  # shuffle copies in
    ids = [f"doc-{i:06d}" for i in range(len(texts))]
    shuffled_ids, shuffled_texts = [ids[i] for i in order], [texts[i] for i in order]
    words = sum(len(x.split()) for x in texts)
    print(f"documents: {len(texts)} ({len(base)} distinct after removing natural near-duplicates, "
          f"{len(copy)} injected copies), {words / len(texts):.0f} words/doc; prepared in "
          f"{time.perf_counter() - t:.1f}s")

    work = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    try:
        write_inputs(work / "input", shuffled_ids, shuffled_texts, args.files)
        ours_removed, ours_times = run_ours(work / "input", work / "ours", args.workers)
        run_removed, run_times = run_curate(work / "input", work / "curate-run", args.workers)
        dt_removed, dt_times = run_datatrove(work / "input", work / "datatrove", args.workers, args.files)
        rensa_removed, rensa_times = run_rensa(shuffled_texts, shuffled_ids)
        per_core = signature_speed(shuffled_texts)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    copy_ids, original = copy, injected.original
    results = {"documents": len(texts), "copies": len(copy), "workers": args.workers}
    for name, removed, times in (("ours", ours_removed, ours_times), ("curate_run", run_removed, run_times),
                                 ("datatrove", dt_removed, dt_times), ("rensa", rensa_removed, rensa_times)):
        results[name] = {"docs_per_s": round(len(texts) / times["total"], 1),
                         "seconds": {k: round(v, 3) for k, v in times.items()},
                         **quality(removed, ids, copy_ids, original, jaccard)}
    results["speedup"] = round(results["ours"]["docs_per_s"] / results["datatrove"]["docs_per_s"], 2)
    # DataTrove's best case: its task time spread perfectly over the workers, no start-up costs
    ideal = len(texts) / (dt_times["tasks_total"] / args.workers)
    results["datatrove"]["docs_per_s_tasks_only"] = round(ideal, 1)
    results["speedup_vs_tasks_only"] = round(results["ours"]["docs_per_s"] / ideal, 2)
    results["signatures_per_core_docs_per_s"] = per_core
    results["signatures_ours_vs_rensa_per_core"] = round(per_core["ours_rensa"] / per_core["rensa"], 2)
    results["theory_recall_j>=0.9"] = round(float(theory(jaccard[jaccard >= 0.9]).mean()), 4)

    print(f"\n{'':10s} {'docs/s':>9s} {'seconds':>8s} {'removed':>8s} {'precision':>9s} "
          f"{'recall J>=0.9':>13s} {'recall J>=0.8':>13s}")
    for name in ("ours", "curate_run", "datatrove", "rensa"):
        r = results[name]
        print(f"{name:10s} {r['docs_per_s']:9.0f} {r['seconds']['total']:8.2f} {r['removed']:8d} "
              f"{r['precision']:9.4f} {r['recall_j>=0.9']:13.4f} {r['recall_j>=0.8']:13.4f}")
    print(f"speed-up (ours / DataTrove docs/s): {results['speedup']:.2f}x with {args.workers} workers; "
          f"{results['speedup_vs_tasks_only']:.2f}x against DataTrove's task time alone "
          f"({ideal:.0f} docs/s: its task seconds / workers, without process start-up)")
    print(f"signatures on one core (docs/s): {per_core}; ours (rensa engine) / rensa: "
          f"{results['signatures_ours_vs_rensa_per_core']:.2f}x")
    print("\nrecall by true Jaccard of (copy, original):  bucket  ours  datatrove  rensa  theory  pairs")
    for bucket, (value, count) in results["ours"]["recall_by_jaccard"].items():
        low, high = (float(x) for x in bucket.strip("[)").split(","))
        inside = (jaccard >= low) & (jaccard < (high if high < 1 else 1.01))
        expected = float(theory(jaccard[inside]).mean()) if count else float("nan")
        other = results["datatrove"]["recall_by_jaccard"][bucket][0]
        third = results["rensa"]["recall_by_jaccard"][bucket][0]
        print(f"  {bucket:13s} {value if value is not None else '-':>6} {other if other is not None else '-':>9}"
              f" {third if third is not None else '-':>6} {expected:7.3f} {count:6d}")
    print("\nseconds:", json.dumps({n: results[n]["seconds"] for n in ("ours", "curate_run", "datatrove", "rensa")}))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
