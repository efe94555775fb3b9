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

    python benchmarks/bench_embed.py --data <folder> --static [--rows 3000] [--repeats 2]

`--static` compares `model: static` (distilled from the packaged MiniLM into a fresh temporary cache: the
distillation is timed, and the cached model's size reported) with MiniLM itself on the same texts:
  speed: `encode` of all texts by each (alternating rounds, best of each), and the static stage's `process()`
         with an empty embedding cache; texts/s and the ratio (goal >= 50x);
  SemDeDup: the texts plus a near-duplicate of 10% of them (one word dropped, repeated, swapped with the next or
         replaced); reference = the pairs MiniLM puts above cosine 1 - eps (exact, all pairs); static's recall and
         precision of those pairs at the same eps and at the threshold giving as many pairs; and the SemDeDup
         stage's algorithm (50 clusters) with each: the share of one model's (removed row, match) pairs that the
         other also resolves (removes either row: which copy of a pair goes depends on the cluster order);
  kMQ:   k-means as kMQ runs it (L2, K=50, 300 iterations, 5 restarts) on each; adjusted Rand index between the
         two clusterings, beside the ARI of each model with itself under another seed (k-means' own noise) and
         with the texts' source data sets;
  GOT-D: target = 200 other GSM8K problems; got_d's solver (momentum 1.3) with its default epsilon 0.1 and with
         0.02; overlap of the top-10% candidates by calibrated OT gradient (random: 10%), and the share of GSM8K
         among each model's picks.
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


def source_labels(data: Path) -> dict[str, str]:
    """Each text of `load_texts`' sources -> its data set (prompts) or domain (pool documents)."""
    labels: dict[str, str] = {}
    for name in PROMPT_SETS:
        for path in sorted((data / name).glob("*.jsonl")):
            labels.update((r["prompt"], name) for r in read_jsonl(path) if r.get("prompt"))
    for r in read_jsonl(data / "pool_mixed" / "pool_mixed.jsonl"):
        labels.setdefault(r.get("text") or "", r.get("domain", "pool"))
    return labels


def near_duplicate(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    """`text` with one small edit: a word dropped, repeated, swapped with the next, or replaced by another."""
    words = text.split(" ")
    i = rng.randrange(len(words) - 1)
    edit = rng.randrange(4)
    if edit == 0:
        del words[i]
    elif edit == 1:
        words.insert(i, words[i])
    elif edit == 2:
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        words[i] = rng.choice(vocabulary)
    return " ".join(words)


def pairs_above(x: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """Every pair i < j of unit rows with cosine > threshold (exact)."""
    found: set[tuple[int, int]] = set()
    for start in range(0, len(x), 2048):
        sims = x[start:start + 2048] @ x.T
        rows, cols = np.nonzero(sims > threshold)
        found.update((start + int(r), int(c)) for r, c in zip(rows, cols, strict=True) if start + r < c)
    return found


def top_pairs_threshold(x: np.ndarray, count: int) -> float:
    """The cosine above which a set of unit rows has `count` pairs (i < j)."""
    upper = np.concatenate([(x[i + 1:] @ x[i]) for i in range(len(x) - 1)])
    return float(np.partition(upper, len(upper) - count)[len(upper) - count]) - 1e-7 if count else 1.0


def compare_static(args: argparse.Namespace, texts: list[str], cache_dir: str) -> None:
    """The `--static` comparison (module doc)."""
    import torch
    from sklearn.metrics import adjusted_rand_score

    from curate.methods.kmeans import kmeans
    from curate.methods.ot import calibrated_gradient, sinkhorn
    from curate.models.embedder import load_embedder
    from curate.models.static_distill import cached_folder
    from curate.stages.embed import Embed
    from curate.stages.semdedup import SemDedupParams, semdedup

    n = len(texts)
    print(f"device: cpu ({platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads)")
    start = time.perf_counter()
    static = load_embedder("static", device="cpu")  # the temporary cache is empty: distils
    distill_s = time.perf_counter() - start
    folder = cached_folder(static.identity)
    size = sum(p.stat().st_size for p in folder.iterdir())
    start = time.perf_counter()
    load_embedder("static", device="cpu")
    print(f"distillation (load MiniLM, {len(static.model.vectors):,} tokens, PCA to {static.dim}): {distill_s:.1f} s;"
          f" cached model {size / 1e6:.1f} MB; loading it again {time.perf_counter() - start:.2f} s")
    minilm = load_embedder("default", device="cpu")
    minilm.encode(texts[:args.batch_size], args.batch_size)
    static.encode(texts[:args.batch_size])
    ids = [f"t{i}" for i in range(n)]
    tables = [pa.table({"id": ids[i:i + Embed.batch_rows], "text": texts[i:i + Embed.batch_rows]})
              for i in range(0, n, Embed.batch_rows)]
    times: dict[str, list[float]] = {"minilm": [], "static": [], "stage": []}
    for repeat in range(args.repeats):
        order = ["minilm", "static", "stage"] if repeat % 2 == 0 else ["stage", "static", "minilm"]
        for name in order:
            start = time.perf_counter()
            if name == "minilm":
                m_vectors = minilm.encode(texts, args.batch_size)
            elif name == "static":
                s_vectors = static.encode(texts)
            else:
                stage = Embed(model="static", device="cpu")
                stage.ensure_setup()
                from curate.models.embedding_cache import EmbeddingCache

                stage.cache = EmbeddingCache(static.namespace(), static.dim, root=tempfile.mkdtemp(dir=cache_dir))
                start = time.perf_counter()
                for table in tables:
                    stage.process(table)
            times[name].append(time.perf_counter() - start)
    rate = {k: n / min(v) for k, v in times.items()}
    print(f"MiniLM encode                {rate['minilm']:10,.0f} texts/s  (batch {args.batch_size})")
    print(f"static encode                {rate['static']:10,.0f} texts/s  = {rate['static'] / rate['minilm']:.0f}x")
    print(f"static embed stage (cache)   {rate['stage']:10,.0f} texts/s  = {rate['stage'] / rate['minilm']:.0f}x "
          "(hashing, lookups and inserts of an empty cache included)")

    # ------------------------------------------------------------ SemDeDup
    rng = random.Random(1)
    vocabulary = sorted({w for t in texts[:500] for w in t.split(" ") if w.isalpha()})
    picked = rng.sample([i for i, t in enumerate(texts) if len(t.split(" ")) >= 8], n // 10)
    copies = [near_duplicate(texts[i], rng, vocabulary) for i in picked]
    m_all = np.concatenate([m_vectors, minilm.encode(copies, args.batch_size)])
    s_all = np.concatenate([s_vectors, static.encode(copies)])
    print(f"SemDeDup: {n} texts + {len(copies)} near-duplicates (one word edited); reference: MiniLM's pairs")
    for eps in (0.01, 0.05, 0.10):
        reference = pairs_above(m_all, 1 - eps)
        same = pairs_above(s_all, 1 - eps)
        calibrated = pairs_above(s_all, top_pairs_threshold(s_all, len(reference)))
        hit, cal = len(reference & same), len(reference & calibrated)
        print(f"  eps {eps:.2f}: MiniLM {len(reference):5d} pairs | static same eps {len(same):5d} pairs, recall "
              f"{hit / max(len(reference), 1):.3f}, precision {hit / max(len(same), 1):.3f} | static, as many "
              f"pairs: recall {cal / max(len(reference), 1):.3f}")
    all_ids = pa.array([f"t{i:06d}" for i in range(len(m_all))])
    for eps in (0.01, 0.05, 0.10):
        params = SemDedupParams(clusters=50, eps=eps)
        gone_m, match_m, *_ = semdedup(m_all, all_ids, params)
        gone_s, match_s, *_ = semdedup(s_all, all_ids, params)
        # a pair (removed row, its match) is resolved by the other model when it removes either of the two
        recall = np.mean(gone_s[np.flatnonzero(gone_m)] | gone_s[match_m[gone_m]]) if gone_m.any() else 1.0
        precision = np.mean(gone_m[np.flatnonzero(gone_s)] | gone_m[match_s[gone_s]]) if gone_s.any() else 1.0
        print(f"  SemDeDup (K=50) eps {eps:.2f}: removes MiniLM {int(gone_m.sum())}, static {int(gone_s.sum())} rows; "
              f"MiniLM's pairs static also resolves {recall:.3f}, static's pairs MiniLM also resolves {precision:.3f}")

    # ------------------------------------------------------------ kMQ
    labels = source_labels(args.data)
    sources = [labels.get(t, "?") for t in texts]
    k_m = kmeans(m_vectors, 50, niter=300, nredo=5, seed=1234).assignment
    k_s = kmeans(s_vectors, 50, niter=300, nredo=5, seed=1234).assignment
    k_m2 = kmeans(m_vectors, 50, niter=300, nredo=5, seed=4321).assignment
    k_s2 = kmeans(s_vectors, 50, niter=300, nredo=5, seed=4321).assignment
    print(f"kMQ k-means (K=50): ARI static vs MiniLM {adjusted_rand_score(k_m, k_s):.3f}; another seed: MiniLM "
          f"{adjusted_rand_score(k_m, k_m2):.3f}, static {adjusted_rand_score(k_s, k_s2):.3f}; with the "
          f"{len(set(sources))} source sets: MiniLM {adjusted_rand_score(sources, k_m):.3f}, static "
          f"{adjusted_rand_score(sources, k_s):.3f}")

    # ------------------------------------------------------------ GOT-D
    chosen = set(texts)
    target = [r["prompt"] for r in read_jsonl(next((args.data / "gsm8k").glob("*.jsonl")))
              if r.get("prompt") and r["prompt"] not in chosen][:200]
    budget = n // 10
    targets = {"MiniLM": minilm.encode(target, args.batch_size), "static": static.encode(target)}
    print(f"GOT-D: {len(target)} GSM8K target rows; GSM8K is {sources.count('gsm8k') / n:.3f} of the pool")
    for epsilon in (0.1, 0.02):  # 0.1: the got_d default
        picks, line = {}, []
        for name, vectors in (("MiniLM", m_vectors), ("static", s_vectors)):
            result = sinkhorn(targets[name], vectors, epsilon=epsilon, momentum=1.3, tolerance=0.1, max_iter=2000)
            picks[name] = set(np.argsort(calibrated_gradient(result.g), kind="stable")[:budget].tolist())
            math = sum(sources[i] == "gsm8k" for i in picks[name]) / budget
            line.append(f"{name} GSM8K share of the picks {math:.3f}{'' if result.converged else ' (not converged)'}")
        overlap = len(picks["MiniLM"] & picks["static"]) / budget
        print(f"  epsilon {epsilon}: top-10% overlap static vs MiniLM {overlap:.3f} (random: 0.100);", "; ".join(line))


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
    parser.add_argument("--static", action="store_true", help="compare model: static with MiniLM (module doc)")
    args = parser.parse_args()

    cache_dir = tempfile.mkdtemp(prefix="curate-bench-embed-")
    os.environ["CURATE_CACHE_DIR"] = cache_dir  # an empty cache, never the user's
    if args.static:
        texts = load_texts(args.data, args.rows)
        words = np.array([len(t.split()) for t in texts])
        print(f"texts: {len(texts)} distinct, words per text: median {int(np.median(words))}, "
              f"p10 {int(np.percentile(words, 10))}, p90 {int(np.percentile(words, 90))}, max {words.max()}")
        try:
            compare_static(args, texts, cache_dir)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
        return
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
