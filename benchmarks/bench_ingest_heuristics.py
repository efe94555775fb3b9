"""Benchmark: ingest, and ingest + the `heuristics` stage, through the runner; DataTrove's Gopher filters.

    python benchmarks/bench_ingest_heuristics.py --data <folder of the shared data sets>
        [--rows 100000] [--files 4] [--workers 2] [--reference-rows 3000] [--work DIR]

1. Rows: the instruction, math, code and web/prose data sets, repeated until `--rows` with a perturbation
   per copy (two neighbouring words of the response or text swapped) and 3% junk made from real rows
   (an emptied response, a text cut to two words, a paragraph pasted 5 times, symbol soup); shuffled and
   written as about `--files` JSONL files with `text` (prompt + blank line + response for instruction
   rows), and `prompt` / `response` where the source has them (instruction and plain-text rows in
   separate files).
2. In this process, with `curate.engine.runner.run_pipeline` and engine {prefect: false, workers: N}:
   (a) ingest alone, (b) ingest + heuristics (default parameters). Reported: rows/s and MB/s of input
   JSONL for the whole run and for the heuristics step alone (its Parquet reads and writes included),
   and the peak resident memory of the process after each (ru_maxrss: it only grows).
3. The stage's compute alone: `Heuristics.process` on in-memory tables of 8,192 rows, one thread.
4. Reference: DataTrove 0.10.1 GopherQualityFilter then GopherRepetitionFilter (`filter(doc)` on
   Document objects, one thread, repetition only on what quality kept, as in its pipeline) on
   `--reference-rows` rows spread over the input: with a white-space word tokenizer, and with its
   English default (spaCy) when spaCy is installed. Ratios ours / DataTrove in rows/s, measured in this run.
5. Cross-check: our stage with the Gopher values (`GOPHER`) against DataTrove (white-space words) on the
   same rows: agreement of keep/drop. The statistics are defined differently in places (ours: lines are
   trimmed and blank lines left out, runs of "#" count once, n-gram fractions are over word characters
   and need a repeat), so agreement is high but not total.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
from memory import MIB, peak_rss
from peers import datatrove_whitespace_tokenizer

from curate.data.dataset import Dataset
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.stages.heuristics import GOPHER, Heuristics

SOURCES = ["gsm8k", "math", "svamp", "mmlu_redux", "truthfulqa", "mbpp", "humaneval", "gpteacher_codegen",
           "gpteacher_roleplay", "self_instruct_seed", "hh_rlhf_harmless_test", "p3_t0_mix", "pubmedqa_labeled",
           "wikitext2_test", "c4_web_sample", "tinyshakespeare"]
SYMBOLS = [*"#$%&*+=<>|~^{}[]@", "->", "::", "||", "!!", "0x", "%%"]


def load_rows(data: Path) -> list[dict[str, Any]]:
    """The rows of the data sets: id, source, text, and prompt / response where there are ones."""
    rows = []
    for name in SOURCES:
        for path in sorted((data / name).glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").split("\n"):
                if not line.strip():
                    continue
                record = json.loads(line)
                row = {"id": record["id"], "source": name}
                if record.get("response") is not None:
                    row["prompt"], row["response"] = record.get("prompt") or "", record["response"]
                row["text"] = record.get("text") or f"{row.get('prompt', '')}\n\n{row.get('response', '')}"
                rows.append(row)
    return rows


def _swap_words(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    if len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def _with_response(row: dict[str, Any], response: str) -> dict[str, Any]:
    return {**row, "response": response, "text": f"{row['prompt']}\n\n{response}"}


def _junk(row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    kind = rng.randrange(4)
    if kind == 0 and "response" in row:
        return _with_response(row, "")
    if kind <= 1:
        return {**row, "text": " ".join(row["text"].split()[:2])}
    if kind == 2:
        part = row.get("response") or row["text"]
        pasted = "\n\n".join([part.split("\n\n")[0]] * 5)
        return _with_response(row, pasted) if "response" in row else {**row, "text": pasted}
    soup = " ".join(rng.choice(SYMBOLS) * rng.randint(1, 3) for _ in range(rng.randint(20, 80)))
    return {**row, "text": soup}


def make_rows(base: list[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` rows: copies of `base` with one perturbation per copy, 3% of them junk, shuffled."""
    rng = random.Random(seed)
    base = rng.sample(base, len(base))
    rows = []
    for i in range(n):
        row = dict(base[i % len(base)])
        copy = i // len(base)
        if copy:
            row["id"] = f"{row['id']}~{copy}"
            if "response" in row:
                row = _with_response(row, _swap_words(row["response"], rng))
            else:
                row["text"] = _swap_words(row["text"], rng)
        if rng.random() < 0.03:
            row = _junk(row, rng)
        rows.append(row)
    rng.shuffle(rows)
    return rows


def write_files(rows: list[dict[str, Any]], folder: Path, files: int) -> tuple[list[str], int]:
    """JSONL files, instruction rows and plain-text rows apart (ingest wants one field layout per file)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, size = [], 0
    kinds = {"pairs": [r for r in rows if "response" in r], "texts": [r for r in rows if "response" not in r]}
    for kind, part in kinds.items():
        count = max(1, round(files * len(part) / len(rows)))
        per_file = -(-len(part) // count)
        for k in range(count):
            path = folder / f"{kind}-{k:02d}.jsonl"
            chunk = part[k * per_file:(k + 1) * per_file]
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk), encoding="utf-8")
            paths.append(str(path))
            size += path.stat().st_size
    return paths, size


def run(paths: list[str], out: Path, stages: list[Any], workers: int) -> tuple[float, list[Any]]:
    config = parse_config({"name": out.name, "inputs": [{"path": paths}], "output": str(out),
                           "engine": {"prefect": False, "workers": workers}, "stages": stages})
    start = time.perf_counter()
    results = run_pipeline(config)
    return time.perf_counter() - start, results


def stage_compute(table: pa.Table, stage: Heuristics, batch: int = 8192) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    reasons = []
    for offset in range(0, table.num_rows, batch):
        reasons += stage.process(table.slice(offset, batch)).reason.to_pylist()
    return time.perf_counter() - start, reasons


def datatrove_reference(texts: list[str], tokenizer: Any) -> tuple[float, list[bool]] | None:
    """DataTrove's Gopher quality then repetition filter on each text: (seconds, kept per text)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    language = tokenizer if tokenizer is not None else "eng"
    quality, repetition = GopherQualityFilter(language=language), GopherRepetitionFilter(language=language)
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    keep = lambda result: result is True  # noqa: E731  (False or (False, reason) drop)
    start = time.perf_counter()
    kept = []
    for doc in docs:
        try:
            ok = keep(quality.filter(doc)) and keep(repetition.filter(doc))
        except ZeroDivisionError:  # texts without words: DataTrove divides by the word count
            ok = False
        kept.append(ok)
    return time.perf_counter() - start, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the shared data sets")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reference-rows", type=int, default=3000, help="rows DataTrove filters (slow)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-heuristics-"))
    try:
        base = load_rows(args.data)
        rows = make_rows(base, args.rows)
        paths, size = write_files(rows, work / "input", args.files)
        mb = size / 1e6
        print(f"input: {len(rows):,} rows ({len(base):,} distinct real rows), {mb:.1f} MB JSONL in "
              f"{len(paths)} files; workers={args.workers}")

        seconds, _ = run(paths, work / "ingest-only", [], args.workers)
        print(f"(a) ingest alone:         {seconds:6.2f} s  {len(rows) / seconds:9,.0f} rows/s  "
              f"{mb / seconds:6.1f} MB/s  peak RSS {peak_rss() / MIB:,.0f} MB")

        seconds, results = run(paths, work / "with-heuristics", [{"heuristics": {}}], args.workers)
        step = results[-1]
        print(f"(b) ingest + heuristics:  {seconds:6.2f} s  {len(rows) / seconds:9,.0f} rows/s  "
              f"{mb / seconds:6.1f} MB/s  peak RSS {peak_rss() / MIB:,.0f} MB")
        print(f"    heuristics step:      {step.seconds:6.2f} s  {step.rows_in / step.seconds:9,.0f} rows/s  "
              f"{mb / step.seconds:6.1f} MB/s  (Parquet in and out included)")
        print(f"    kept {step.rows_out:,}, rejected {step.rows_rejected:,} ({step.rows_rejected / step.rows_in:.1%}): "
              f"{dict(Counter(step.reasons).most_common(8))}")
        rejected = Dataset.open(work / "with-heuristics" / "rejected" / "01-heuristics").to_table(["source"])
        by_source = Counter(rejected.column("source").to_pylist())
        totals = Counter(r["source"] for r in rows)
        shares = ", ".join(f"{s} {by_source[s] / totals[s]:.1%}" for s in SOURCES if totals[s])
        print(f"    dropped per source (3% injected junk included): {shares}")

        ingested = Dataset.open(work / "ingest-only" / "stages" / "00-ingest").to_table(["text", "response"])
        stage = Heuristics()
        seconds, _ = stage_compute(ingested, stage)
        ours_rate = ingested.num_rows / seconds
        text_mb = sum(len(t.encode()) for t in ingested.column("text").to_pylist()) / 1e6
        print(f"stage compute alone (1 thread): {ours_rate:9,.0f} rows/s  {text_mb / seconds:6.1f} MB/s of text")

        step_rows = max(1, ingested.num_rows // args.reference_rows)  # spread over files and sources
        sample = ingested.take(list(range(0, ingested.num_rows, step_rows))[: args.reference_rows])
        texts = sample.column("text").to_pylist()
        gopher_seconds, gopher_reasons = stage_compute(sample.select(["text"]), Heuristics(GOPHER))
        ours_kept = [r is None for r in gopher_reasons]
        print(f"reference on {len(texts):,} of those rows, evenly spread (one thread each):")
        print(f"    curate, Gopher values:                {len(texts) / gopher_seconds:9,.0f} rows/s")
        references = [("white-space words", datatrove_whitespace_tokenizer())]
        if importlib.util.find_spec("spacy") is not None:
            references.append(("English default, spaCy", None))
        else:
            print("    (spaCy is not installed: DataTrove's English default tokenizer is skipped)")
        for label, tokenizer in references:
            dt_seconds, dt_kept = datatrove_reference(texts, tokenizer)
            rate = len(texts) / dt_seconds
            print(f"    DataTrove Gopher filters, {label + ':':24s} {rate:9,.0f} rows/s  "
                  f"ratio ours/DataTrove: stage compute {ours_rate / rate:5.1f}x, "
                  f"same settings {len(texts) / gopher_seconds / rate:5.1f}x")
            if tokenizer is not None:
                agree = sum(a == b for a, b in zip(ours_kept, dt_kept, strict=True)) / len(texts)
                both = Counter(zip(ours_kept, dt_kept, strict=True))
                print(f"    cross-check with Gopher values: keep/drop agree on {agree:.1%} of rows "
                      f"(kept by both {both[True, True]}, dropped by both {both[False, False]}, "
                      f"only ours drops {both[False, True]}, only DataTrove drops {both[True, False]})")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
