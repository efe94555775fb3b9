"""Benchmark: keep/drop agreement of curate's `heuristics` with DataTrove's Gopher filters, and speed.

    python benchmarks/bench_gopher_agreement.py --data <folder of the shared data sets> [--rows N] [--no-whitespace]

1. Documents: every distinct real row of the shared data sets (`bench_ingest_heuristics.load_rows`: web, prose,
   code, math, instruction data; instruction rows as prompt + blank line + response), at most `--rows`.
2. Reference: DataTrove 0.10.1 as it runs by default: `GopherRepetitionFilter` then `GopherQualityFilter`
   (`filter(doc)` on Document objects, one thread), English words by spaCy (`spacy.blank("en")`). With
   `--whitespace` (default on) also with a white-space word tokenizer, as `bench_ingest_heuristics` runs it.
3. curate: `Heuristics(GOPHER)` (curate's own rules with Gopher's values) and `Heuristics({"gopher_compat":
   True})` (DataTrove's rules), `process` on tables of 8,192 rows, one thread; the compat mode twice: the
   first pass splits every distinct white-space chunk into words, the second finds them in its cache.
4. Printed: agreement of keep/drop (and, for the compat mode, of the reason) with each reference, the
   disagreements by (curate reason, DataTrove reason), and rows/s of each, with ratios to DataTrove,
   all measured in this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
from bench_ingest_heuristics import load_rows
from peers import datatrove_whitespace_tokenizer

from curate.stages.heuristics import GOPHER, Heuristics

KEPT = "(kept)"


def datatrove_gopher(texts: list[str], tokenizer: Any = None) -> tuple[float, list[str]]:
    """DataTrove's Gopher repetition then quality filter on each text: (seconds, reason or KEPT per text)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    language = {} if tokenizer is None else {"language": tokenizer}  # default: English (spaCy)
    filters = [GopherRepetitionFilter(**language), GopherQualityFilter(**language)]
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    start = time.perf_counter()
    out = []
    for doc in docs:
        verdict = KEPT
        for step in filters:
            try:
                result = step.filter(doc)
            except ZeroDivisionError:  # a text without words: DataTrove divides by the word count
                result = (False, "error")
            if result is not True:
                verdict = result[1] if isinstance(result, tuple) else "dropped"
                break
        out.append(verdict)
    return time.perf_counter() - start, out


def curate_heuristics(texts: list[str], stage: Heuristics, batch: int = 8192) -> tuple[float, list[str]]:
    """The stage on tables of `batch` rows: (seconds, reason or KEPT per text)."""
    table = pa.table({"text": pa.array(texts, pa.string())})
    start = time.perf_counter()
    reasons: list[str] = []
    for offset in range(0, table.num_rows, batch):
        reasons += stage.process(table.slice(offset, batch)).reason.to_pylist()
    return time.perf_counter() - start, [KEPT if r is None else r for r in reasons]


def compare(label: str, ours: list[str], reference: list[str], same_names: bool) -> None:
    n = len(ours)
    agree = sum((a == KEPT) == (b == KEPT) for a, b in zip(ours, reference, strict=True))
    both = Counter(((a == KEPT), (b == KEPT)) for a, b in zip(ours, reference, strict=True))
    line = (f"  {label}: keep/drop agree on {agree:,} of {n:,} = {agree / n:.2%} (kept by both "
            f"{both[True, True]:,}, dropped by both {both[False, False]:,}, only curate drops {both[False, True]:,}, "
            f"only DataTrove drops {both[True, False]:,})")
    if same_names:
        same = sum(a == b for a, b in zip(ours, reference, strict=True))
        line += f"; same reason {same / n:.2%}"
    print(line)
    wrong = Counter((a, b) for a, b in zip(ours, reference, strict=True) if (a == KEPT) != (b == KEPT))
    for (a, b), count in wrong.most_common(8):
        print(f"      {count:6,}  curate {a:28s} DataTrove {b}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the shared data sets")
    parser.add_argument("--rows", type=int, default=None, help="at most this many documents (default: all)")
    parser.add_argument("--whitespace", action=argparse.BooleanOptionalAction, default=True,
                        help="also compare with DataTrove splitting words on white space")
    args = parser.parse_args()
    if importlib.util.find_spec("spacy") is None:
        raise SystemExit("DataTrove's default English word splitting needs spaCy: pip install -e '.[bench]'")

    rows = load_rows(args.data)[: args.rows]
    texts = [r["text"] for r in rows]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts):,} real documents ({megabytes:.1f} MB), {len(Counter(r['source'] for r in rows))} data sets")

    default_s, default = curate_heuristics(texts, Heuristics(GOPHER))
    compat_stage = Heuristics({"gopher_compat": True})
    compat_s, compat = curate_heuristics(texts, compat_stage)
    warm_s, warm = curate_heuristics(texts, compat_stage)
    assert warm == compat
    dt_s, reference = datatrove_gopher(texts)
    dropped = Counter(r for r in reference if r != KEPT)
    print(f"DataTrove (repetition then quality, spaCy words) drops {sum(dropped.values()):,}: "
          f"{dict(dropped.most_common(6))}")
    compare("curate GOPHER rules          ", default, reference, same_names=False)
    compare("curate gopher_compat: true   ", compat, reference, same_names=True)
    if args.whitespace:
        ws_s, ws_reference = datatrove_gopher(texts, datatrove_whitespace_tokenizer())
        print("vs DataTrove with white-space words:")
        compare("curate GOPHER rules          ", default, ws_reference, same_names=False)
        compare("curate gopher_compat: true   ", compat, ws_reference, same_names=True)

    n = len(texts)
    print("rows/s (one thread, this process):")
    print(f"  DataTrove Gopher filters, spaCy words:      {n / dt_s:9,.0f}")
    if args.whitespace:
        print(f"  DataTrove Gopher filters, white-space words:{n / ws_s:9,.0f}")
    for label, seconds in [("curate GOPHER rules", default_s), ("curate gopher_compat, first pass", compat_s),
                           ("curate gopher_compat, cached words", warm_s)]:
        print(f"  {label + ':':43s}{n / seconds:9,.0f}  = {dt_s / seconds:5.1f}x DataTrove (spaCy words)")


if __name__ == "__main__":
    main()
