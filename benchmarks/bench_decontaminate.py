"""Benchmark: curate's `decontaminate` against DataTrove's `NGramsDecontFilter` on the same pool and benchmark sets.

    python benchmarks/bench_decontaminate.py --data <folder of the shared data sets> [--scale]

1. Benchmark sets: 500 GSM8K problems (question, solution), MMLU-Redux (question with choices, answer) and
   TruthfulQA (question, best answer).
2. Pool: the text of the other GSM8K problems, the mixed pool corpora, GPTeacher and P3 rows, plus 600 pages with a
   benchmark question (and, for half, its answer) planted at a sentence end, some upper-cased or re-spaced.
3. Parity settings, as DataTrove runs by default: 12-grams, text lower-cased, digits to 0, punctuation and
   symbols to spaces, diacritics stripped, answer and question→answer n-grams (no question-only n-grams), no
   short items, no frequency cut, drop the row. DataTrove gets a white-space word tokenizer (its English default
   is spaCy's blank English pipeline, also run; white space favours DataTrove) and an index built with its own
   `simplify_text`, `ngrams` and hash function (its indexer needs lighteval's task registry to run).
4. Both run in this process, one thread each: index, then every pool row. Reported: rows/s, peak memory over
   the process's baseline, agreement of the flagged rows, and recall of the planted pages.
5. `--scale`: curate alone on 1,000,000 pool rows (the pool repeated, words shuffled per copy) against 100,000
   benchmark items (the sets repeated with a number appended to every question), streamed in batches of 8,192:
   rows/s and peak memory.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from memory import MIB, peak_rss, reset_peak_rss
from peers import datatrove_whitespace_tokenizer

from curate.methods.decontamination import EvalIndex
from curate.stages.base import TableRows
from curate.stages.decontaminate import Decontaminate

PARITY = {"ngram": 12, "min_item_words": 12, "fields": ["answer", "overlap"], "max_doc_freq": None, "mode": "drop",
          "columns": ["text"], "numbers": True, "diacritics": True, "symbols": True}


def read(data: Path, name: str) -> list[dict]:
    path = next((data / name).glob("*.jsonl"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def benchmark_sets(data: Path) -> dict[str, list[dict]]:
    gsm = read(data, "gsm8k")[:500]
    mmlu, truthful = read(data, "mmlu_redux"), read(data, "truthfulqa")
    return {name: [{"item": r["id"], "question": r["prompt"], "answer": r["response"]} for r in rows]
            for name, rows in (("gsm8k", gsm), ("mmlu", mmlu), ("truthfulqa", truthful))}


def plant(doc: str, text: str, k: int) -> str:
    text = text.upper() if k % 3 == 1 else text.replace(" ", "  ") if k % 3 == 2 else text
    cut = doc.find(". ", len(doc) // 2)
    cut = len(doc) if cut < 0 else cut + 1
    return f"{doc[:cut]} {text} {doc[cut:]}"


def pool_rows(data: Path, sets: dict[str, list[dict]], rng: random.Random) -> tuple[list[dict], set[str]]:
    texts = [f"{r['prompt']}\n\n{r['response']}" for r in read(data, "gsm8k")[500:]]
    texts += [r["text"] for r in read(data, "pool_mixed")]
    for name in ("gpteacher_codegen", "gpteacher_roleplay", "p3_t0_mix"):
        texts += [f"{r['prompt']}\n\n{r['response']}" for r in read(data, name)]
    rows = [{"id": f"pool-{i}", "text": t} for i, t in enumerate(texts)]
    web = [r["text"] for r in read(data, "pool_mixed") if r.get("domain") == "web"] or texts
    items = [i for rows_ in sets.values() for i in rows_]
    planted = set()
    for k, item in enumerate(rng.sample(items, 600)):
        copied = item["question"] + (f"\n{item['answer']}" if k % 2 else "")
        rows.append({"id": f"planted-{k}", "text": plant(rng.choice(web), copied, k)})
        planted.add(f"planted-{k}")
    rng.shuffle(rows)
    return rows, planted


def run_curate(rows: list[dict], sets: dict[str, list[dict]], folder: Path) -> tuple[set[str], float, float, int]:
    base = reset_peak_rss()
    started = time.perf_counter()
    stage = Decontaminate(against=["heldout"], **PARITY)
    p = stage.params
    index = EvalIndex.build({n: pa.Table.from_pylist(items) for n, items in sets.items()}, p.ngram,
                            p.min_item_words, p.fields, p.norm())
    index.save(folder / "index.parquet")
    stage.prepared = {"index": str(folder / "index.parquet")}
    stage.ensure_setup()
    indexed = time.perf_counter()
    table = pa.Table.from_pylist(rows)
    summaries = [stage.summarize(table.slice(i, 8192)) for i in range(0, table.num_rows, 8192)]
    summary = pa.concat_tables(summaries)
    decision = stage.decide(summary, TableRows(table))
    done = time.perf_counter()
    flagged = {rows[i]["id"] for i in np.flatnonzero(decision.reason.is_valid().to_numpy(zero_copy_only=False))}
    return flagged, indexed - started, done - indexed, peak_rss() - base


def run_datatrove(rows: list[dict], sets: dict[str, list[dict]], folder: Path,
                  whitespace: bool) -> tuple[set[str], float, float, int]:
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.text import ngrams, simplify_text

    base = reset_peak_rss()
    started = time.perf_counter()
    config = NGramsDecontConfig(n_grams=12)  # its defaults: answers + straddles, no query n-grams
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    tokenizer = datatrove_whitespace_tokenizer() if whitespace else load_word_tokenizer("en")  # spaCy's blank en
    hash_func = create_hash_func(config.hash_config)
    (folder / "dt").mkdir()
    for name, items in sets.items():  # NGramsDecontIndexer.compute_hashes, without lighteval's task registry
        hashes = set()
        for item in items:
            label = tokenizer.word_tokenize(simplify_text(item["answer"], config.norm_config))
            query = tokenizer.word_tokenize(simplify_text(item["question"], config.norm_config))
            grams = list(ngrams(label, config.n_grams))
            n = config.n_grams
            grams += [query[-n + 1 + i:] + label[:i + 1] for i in range(n - 1)
                      if len(query) >= n - 1 - i and len(label) >= i + 1]
            hashes.update(hash_func(" ".join(g)) for g in grams)
        np.array(sorted(hashes), dtype=config.hash_config.np_descr).tofile(folder / "dt" / f"{name}.index.hashes")
    decont = NGramsDecontFilter(str(folder / "dt"), config=config, language=tokenizer)
    decont.load_index_hashes()
    indexed = time.perf_counter()
    flagged = set()
    for row in rows:
        if decont.filter(Document(text=row["text"], id=row["id"])) is not True:
            flagged.add(row["id"])
    return flagged, indexed - started, time.perf_counter() - indexed, peak_rss() - base


def scale(data: Path, sets: dict[str, list[dict]], rows: list[dict], rng: random.Random) -> None:
    """curate alone at 1M pool rows and 100k benchmark items: throughput and peak memory, streamed."""
    items = [i for rows_ in sets.values() for i in rows_]
    big = [{**items[k % len(items)], "item": f"x{k}", "question": f"{items[k % len(items)]['question']} {k}"}
           for k in range(100_000)]
    base = reset_peak_rss()
    started = time.perf_counter()
    stage = Decontaminate(against=["heldout"])
    p = stage.params
    index = EvalIndex.build({"big": pa.Table.from_pylist(big)}, p.ngram, p.min_item_words, p.fields, p.norm())
    indexed = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        index.save(Path(folder) / "index.parquet")
        stage.prepared = {"index": str(Path(folder) / "index.parquet")}
        stage.ensure_setup()
        texts = [r["text"].split() for r in rows]
        done, hits = 0, 0
        scan_start = time.perf_counter()
        while done < 1_000_000:
            batch = []
            for _ in range(8192):
                words = texts[rng.randrange(len(texts))][:]
                rng.shuffle(words)
                batch.append({"id": f"r{done}", "text": " ".join(words)})
                done += 1
            summary = stage.summarize(pa.Table.from_pylist(batch))
            hits += int(pa.compute.sum(pa.compute.list_value_length(summary.column("hits"))).as_py() or 0)
        scanned = time.perf_counter() - scan_start
    print(f"scale: index of {len(big):,} items ({len(index):,} keys) in {indexed:.1f} s; 1,000,000 rows scanned in "
          f"{scanned:.0f} s ({1_000_000 / scanned:,.0f} rows/s, the shuffled-row generation included); "
          f"peak memory {(peak_rss() - base) / MIB:,.0f} MiB over the baseline; {hits} hits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--scale", action="store_true", help="also curate alone at 1M rows / 100k items")
    args = parser.parse_args()
    rng = random.Random(0)
    sets = benchmark_sets(args.data)
    rows, planted = pool_rows(args.data, sets, rng)
    print(f"pool: {len(rows):,} rows ({len(planted)} planted); benchmark items: "
          f"{sum(len(v) for v in sets.values()):,}")
    with tempfile.TemporaryDirectory() as folder:
        ours, ours_index, ours_s, ours_mem = run_curate(rows, sets, Path(folder))
    with tempfile.TemporaryDirectory() as folder:
        theirs, theirs_index, theirs_s, theirs_mem = run_datatrove(rows, sets, Path(folder), whitespace=True)
    with tempfile.TemporaryDirectory() as folder:
        spacy, _, spacy_s, _ = run_datatrove(rows, sets, Path(folder), whitespace=False)
    n = len(rows)
    agree = sum((r["id"] in ours) == (r["id"] in theirs) for r in rows) / n
    print(f"DataTrove with its default English word tokenizer (spaCy): scan {n / spacy_s:,.0f} rows/s "
          f"({spacy_s:.1f} s; curate {spacy_s / ours_s:.1f}x), flagged {len(spacy):,}, agreement with curate "
          f"{sum((r['id'] in ours) == (r['id'] in spacy) for r in rows) / n:.4f}")
    for name, flagged, index_s, scan_s, mem in (("curate", ours, ours_index, ours_s, ours_mem),
                                                ("DataTrove", theirs, theirs_index, theirs_s, theirs_mem)):
        recall = len(flagged & planted) / len(planted)
        print(f"{name:10} index {index_s:5.1f} s; scan {n / scan_s:9,.0f} rows/s ({scan_s:.1f} s); peak "
              f"+{mem / MIB:,.0f} MiB; flagged {len(flagged):,}; planted recall {recall:.3f}")
    print(f"ratio (DataTrove with white-space words): curate scans {theirs_s / ours_s:.1f}x DataTrove's rows/s "
          "(end to end with the index: "
          f"{(theirs_index + theirs_s) / (ours_index + ours_s):.1f}x); agreement of flagged rows {agree:.4f} "
          f"(only curate: {len(ours - theirs)}, only DataTrove: {len(theirs - ours)})")
    for label, ids in (("only curate", sorted(ours - theirs)[:3]), ("only DataTrove", sorted(theirs - ours)[:3])):
        for i in ids:
            print(f"  {label}: {i}")
    if args.scale:
        scale(args.data, sets, rows, rng)


if __name__ == "__main__":
    main()
