"""Benchmark: the `embed` stage against sentence-transformers itself, and the cached re-run.

    python benchmarks/bench_embed.py --data <folder of the shared data sets> [--rows 2000]
        [--batch-size 64] [--device auto] [--model default]

Texts: `--rows` distinct real texts drawn (seed 0) from the shared data sets, mixed lengths: the prompts of
instruction / QA sets (one-line questions to multi-paragraph code tasks) and the documents of `pool_mixed`
(50-400 words, cut at the model's 256 tokens).

In ONE process, on the same texts, batch size and device, after a warm-up encode:
  (a) `SentenceTransformer.encode(texts, batch_size, normalize_embeddings=True)`, one call;
  (b) our stage's `process()` on Arrow tables of `Embed.batch_rows` rows (what the runner hands it),
      with an empty cache (so hashing, lookups and inserts are paid);
  (c) a fresh stage instance on the same tables with the cache now warm (a re-run).
With `--repeats R`, (a) and (b) run R times in alternating order (ab, ba, ...) and the best of each
counts (the machine may be shared). Reported: texts/s of each, (b)/(a) (goal >= 0.95) and (a)/(c), the
cached re-run's speed-up (goal >= 50x), and checks: (b) equals (a) to 1e-5, (c) equals (b) exactly.
The cache lives in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.data.arrays import column_to_matrix

PROMPT_SETS = ["gsm8k", "math", "mmlu_redux", "truthfulqa", "gpteacher_codegen", "gpteacher_roleplay",
               "hh_rlhf_harmless_test", "p3_t0_mix", "pubmedqa_labeled"]


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file (split on newlines only: texts may hold U+2028 and friends)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def load_texts(data: Path, rows: int, seed: int = 0) -> list[str]:
    """`rows` distinct texts: half prompts of the instruction sets, half documents of pool_mixed."""
    prompts: list[str] = []
    for name in PROMPT_SETS:
        for path in sorted((data / name).glob("*.jsonl")):
            prompts += [r["prompt"] for r in read_jsonl(path) if r.get("prompt")]
    documents = [r["text"] for r in read_jsonl(data / "pool_mixed" / "pool_mixed.jsonl") if r.get("text")]
    rng = random.Random(seed)
    prompts, documents = list(dict.fromkeys(prompts)), list(dict.fromkeys(documents))
    rng.shuffle(prompts)
    rng.shuffle(documents)
    half = rows // 2
    texts = list(dict.fromkeys(prompts[: rows - half] + documents[:half]))  # distinct: (b) dedups, (a) not
    rng.shuffle(texts)
    if len(texts) < rows:
        raise SystemExit(f"only {len(texts)} distinct texts found under {data}; ask for fewer --rows")
    return texts


def run_stage(stage, tables: list[pa.Table]) -> tuple[float, np.ndarray]:
    """Seconds for `process` over the tables, and the vectors it produced."""
    start = time.perf_counter()
    columns = [stage.process(t).adds["embedding"] for t in tables]
    seconds = time.perf_counter() - start
    return seconds, np.concatenate([column_to_matrix(c, c.type.list_size, np.float32) for c in columns])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the shared data sets")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of (a) and (b), in alternating order; the best time of each is reported")
    args = parser.parse_args()

    cache_dir = tempfile.mkdtemp(prefix="curate-bench-embed-")
    os.environ["CURATE_CACHE_DIR"] = cache_dir  # an empty cache, never the user's
    import torch
    from sentence_transformers import SentenceTransformer

    from curate.models.embedder import DEFAULT_MODEL, packaged_model_path, resolve_device
    from curate.models.embedding_cache import EmbeddingCache
    from curate.stages.embed import Embed

    texts = load_texts(args.data, args.rows)
    words = np.array([len(t.split()) for t in texts])
    device = resolve_device(args.device)
    print(f"texts: {len(texts)} distinct, words per text: median {int(np.median(words))}, "
          f"p10 {int(np.percentile(words, 10))}, p90 {int(np.percentile(words, 90))}, max {words.max()}")
    hardware = torch.cuda.get_device_name() if device.startswith("cuda") else platform.machine()
    print(f"device: {device} ({hardware}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads), "
          f"batch size {args.batch_size}, model {args.model}")

    source = str(packaged_model_path()) if args.model == DEFAULT_MODEL else args.model
    reference = SentenceTransformer(source, device=device)
    stage = Embed(model=args.model, device=args.device, batch_size=args.batch_size)
    stage.ensure_setup()
    warm = texts[: args.batch_size]  # first-call overheads (allocator, kernels, lazy imports) for both
    reference.encode(warm, batch_size=args.batch_size, normalize_embeddings=True)
    stage.embedder.encode(warm, args.batch_size)
    ids = [f"t{i}" for i in range(len(texts))]
    tables = [pa.table({"id": ids[i:i + Embed.batch_rows], "text": texts[i:i + Embed.batch_rows]})
              for i in range(0, len(texts), Embed.batch_rows)]

    def time_a() -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        out = reference.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
        return time.perf_counter() - start, out

    def time_b(repeat: int) -> tuple[float, np.ndarray]:
        if repeat and stage.cache is not None:  # every round starts from an empty cache
            stage.cache = EmbeddingCache(stage.embedder.namespace(), stage.embedder.dim,
                                         root=tempfile.mkdtemp(dir=cache_dir))
        return run_stage(stage, tables)

    times_a, times_b = [], []
    for repeat in range(args.repeats):
        # Alternate the order (ab, ba, ...), so that a change in machine load does not favour one side.
        if repeat % 2 == 0:
            (sa, direct), (sb, ours) = time_a(), time_b(repeat)
        else:
            (sb, ours), (sa, direct) = time_b(repeat), time_a()
        times_a.append(sa)
        times_b.append(sb)
        if args.repeats > 1:
            print(f"  round {repeat + 1}: (a) {sa:.2f} s, (b) {sb:.2f} s, (b)/(a) throughput {sa / sb:.3f}")
    seconds_a, seconds_b = min(times_a), min(times_b)
    rerun = Embed(model=args.model, device=args.device, batch_size=args.batch_size)
    rerun.ensure_setup()  # a new run: model loaded again (not timed), the cache file found on disk
    seconds_c, cached = run_stage(rerun, tables)

    n = len(texts)
    rate = {k: n / s for k, s in (("a", seconds_a), ("b", seconds_b), ("c", seconds_c))}
    print(f"(a) SentenceTransformer.encode     {seconds_a:9.3f} s  {rate['a']:12,.1f} texts/s")
    print(f"(b) embed stage, empty cache       {seconds_b:9.3f} s  {rate['b']:12,.1f} texts/s")
    print(f"(c) embed stage, warm cache        {seconds_c:9.3f} s  {rate['c']:12,.1f} texts/s")
    print(f"(b)/(a) throughput ratio: {rate['b'] / rate['a']:.3f}  (goal >= 0.95)")
    print(f"(a)/(c) cached re-run speed-up: {seconds_a / seconds_c:,.0f}x  (goal >= 50x)")
    print(f"check: max |(b) - (a)| = {np.abs(ours - direct).max():.2e} (<= 1e-5: "
          f"{bool(np.abs(ours - direct).max() <= 1e-5)}); (c) == (b): {bool(np.array_equal(cached, ours))}; "
          f"re-run encoded {rerun.counts['embedded']} texts")
    if rerun.cache is not None:
        # What (b) adds to (a) besides noise: hashing + lookups (that is all of (c)) and the inserts.
        from curate.models.embedding_cache import text_keys

        scratch = EmbeddingCache(rerun.embedder.namespace(), rerun.embedder.dim, root=tempfile.mkdtemp(dir=cache_dir))
        start = time.perf_counter()
        scratch.put(text_keys(texts), ours)
        seconds_put = time.perf_counter() - start
        scratch.close()
        print(f"cache work in (b): hash + look up {seconds_c:.3f} s, insert {seconds_put:.3f} s -> (b)/(a) "
              f"without machine noise ~ {seconds_a / (seconds_a + seconds_c + seconds_put):.4f}")
        size = sum(p.stat().st_size for p in rerun.cache.path.parent.glob(rerun.cache.path.name + "*"))
        print(f"cache: {len(rerun.cache):,} vectors, {size / 1e6:.1f} MB on disk with its WAL "
              "(temporary folder, removed)")
    for cache in (stage.cache, rerun.cache):
        if cache is not None:
            cache.close()
    shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
