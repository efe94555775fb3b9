"""Benchmark: the cheap pipeline end to end, curate against DataTrove, on the same rows.

    python benchmarks/bench_cheap_pipeline.py --data <shared data folder> [--rows 1000000] [--workers 2]
        [--files 8] [--skip-datatrove]

Rows: real rows of the shared data sets, repeated with a perturbation per copy and 3% junk
(`bench_ingest_heuristics.make_rows`), written once as JSONL files that both read.

- curate (`curate.engine.runner`, no Prefect): ingest -> normalize -> heuristics (`gopher_compat`: DataTrove's
  Gopher rules; `--gopher gopher`: curate's own rules with Gopher's values) -> language
  (en, score 0.65 as DataTrove) -> MinHash dedup (5-word shingles, 14 bands x 8 rows; no exact pass, as DataTrove
  has none here).
- DataTrove 0.10.1 as it runs by default (spaCy English words), the same steps: JsonlReader ->
  GopherRepetitionFilter -> GopherQualityFilter -> LanguageFilter(en, 0.65; on the packaged lid.176.ftz both use, as
  DataTrove would download its model) -> JsonlWriter -> MinhashDedupSignature, then
  MinhashDedupBuckets, MinhashDedupCluster and MinhashDedupFilter (its four MinHash steps, the same MinHash
  settings), on `LocalPipelineExecutor` with the same number of workers.

Each side runs in its own process; peak memory is the largest sum of the resident memory of that process and all
its children (DataTrove's workers are processes), sampled every 0.2 s. Prints rows/s end to end, peak memory, rows
kept, and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_ingest_heuristics import load_rows, make_rows, write_files

SHINGLE, BANDS, ROWS = 5, 14, 8
MIN_SCORE = 0.65  # DataTrove's LanguageFilter default


def run_curate(spec: dict) -> dict:
    from curate.engine.config import parse_config
    from curate.engine.runner import run_pipeline
    from curate.stages.heuristics import GOPHER

    heuristics = {"gopher_compat": True} if spec["gopher"] == "compat" else dict(GOPHER)
    stages = [{"normalize": {}}, {"heuristics": heuristics},
              {"language": {"languages": ["en"], "min_confidence": MIN_SCORE}},
              {"dedup": {"exact": False, "minhash": {"ngram": SHINGLE, "bands": BANDS, "rows": ROWS}}}]
    config = parse_config({"name": "cheap", "inputs": [{"path": spec["paths"]}], "output": spec["output"],
                           "engine": {"prefect": False, "workers": spec["workers"], "shard_rows": 50_000},
                           "stages": stages})
    start = time.perf_counter()
    results = run_pipeline(config)
    return {"seconds": time.perf_counter() - start, "kept": results[-1].rows_out,
            "steps": {r.label: round(r.seconds, 1) for r in results}}


def run_datatrove(spec: dict) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.lid import FT176LID
    from peers import quiet_datatrove

    from curate.stages.language import packaged_model_path

    class PackagedLID(FT176LID):
        """DataTrove's fastText identifier on the model curate uses (DataTrove would download lid.176.bin)."""

        @property
        def model(self):
            if self._model is None:
                from fasttext.FastText import _FastText

                self._model = _FastText(str(packaged_model_path()))
            return self._model

    language = LanguageFilter(languages=["en"], language_threshold=MIN_SCORE)
    language.model = PackagedLID(["en"])
    work, files, workers = Path(spec["output"]), len(spec["paths"]), spec["workers"]
    inputs = str(Path(spec["paths"][0]).parent)
    config = MinhashConfig(n_grams=SHINGLE, num_buckets=BANDS, hashes_per_bucket=ROWS,
                           hash_config=HashConfig(precision=64))
    steps = [
        ("filters+signature", [JsonlReader(inputs), GopherRepetitionFilter(), GopherQualityFilter(),
                               language, JsonlWriter(str(work / "filtered"), compression=None),
                               MinhashDedupSignature(str(work / "sigs"), config=config)], files),
        ("buckets", [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=config)], BANDS),
        ("cluster", [MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=config)], 1),
        ("filter", [JsonlReader(str(work / "filtered")), MinhashDedupFilter(str(work / "remove")),
                    JsonlWriter(str(work / "kept"), compression=None)], files),
    ]
    start, seconds = time.perf_counter(), {}
    for name, pipeline, tasks in steps:
        t = time.perf_counter()
        with quiet_datatrove(work / f"{name}.stderr.log"):
            LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks),
                                  logging_dir=str(work / f"logs-{name}")).run()
        seconds[name] = round(time.perf_counter() - t, 1)
    total = time.perf_counter() - start
    kept = sum(1 for path in (work / "kept").glob("*.jsonl")
               for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {"seconds": total, "kept": kept, "steps": seconds}


def tree_rss(pid: int) -> int:
    import psutil

    try:
        process = psutil.Process(pid)
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def measure(side: str, spec: dict) -> dict:
    """Run one side in its own process, sampling the memory of its process tree."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", side, "--spec", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{side} failed:\n{err[-3000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_mb": peak[0] / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--gopher", choices=["compat", "gopher"], default="compat",
                        help="curate's heuristics: DataTrove's Gopher rules (gopher_compat) or its own GOPHER values")
    parser.add_argument("--child", default=None)
    parser.add_argument("--spec", default=None)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.spec)
        print(json.dumps(run_curate(spec) if args.child == "curate" else run_datatrove(spec)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-cheap-"))
    rows = make_rows(load_rows(args.data), args.rows)
    (work / "in").mkdir()
    paths, size = write_files([{"id": r["id"], "text": r["text"]} for r in rows], work / "in", args.files)
    del rows
    print(f"{args.rows:,} rows ({size / 1e6:,.0f} MB JSONL in {len(paths)} files), {args.workers} workers")
    sides = ["curate"] + ([] if args.skip_datatrove else ["datatrove"])
    found = {}
    for side in sides:
        found[side] = measure(side, {"paths": paths, "output": str(work / side), "workers": args.workers,
                                     "gopher": args.gopher})
        result = found[side]
        print(f"  {side:9s} {result['seconds']:8.1f} s  {args.rows / result['seconds']:9,.0f} rows/s  "
              f"peak {result['peak_mb']:8,.0f} MB  kept {result['kept']:,}  steps {result['steps']}")
    if "datatrove" in found:
        ours, theirs = found["curate"], found["datatrove"]
        print(f"  curate / DataTrove: {theirs['seconds'] / ours['seconds']:.2f}x the rows/s, "
              f"{ours['peak_mb'] / theirs['peak_mb']:.2f}x the peak memory")


if __name__ == "__main__":
    main()
