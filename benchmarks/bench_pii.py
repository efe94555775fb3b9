"""Benchmark: the `pii` stage against DataTrove's `PIIFormatter` (emails and IPv4, the types both cover) on the same
texts, one thread.

    python benchmarks/bench_pii.py --data <shared data folder> [--rows 100000] [--planted 0.02]

Texts: real documents and prompts of the shared data sets, repeated to `--rows`; a `--planted` share of them gets
one generated email or public IPv4 address (tests/stages/pii_cases.py's values) in the middle. Reported: rows/s of
each, the speed-up, and recall of the planted values (a planted value is found when it is gone from the output),
plus rows/s of curate with all its default types.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

os.environ.setdefault("CURATE_PII_KEY", "benchmark")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load(data: Path, rows: int, planted: float) -> tuple[list[str], list[str | None]]:
    from tests.stages.pii_cases import positives

    texts = []
    for path in sorted(data.glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                row = json.loads(line)
                if row.get("text") or row.get("prompt"):
                    texts.append(row.get("text") or row.get("prompt"))
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.integers(0, len(texts), rows)]
    values = [v for v, kind in positives(7) if kind == "email" or (kind == "ip" and ":" not in v)]
    plant: list[str | None] = [None] * rows
    for i in np.flatnonzero(rng.random(rows) < planted):
        value = values[int(rng.integers(len(values)))]
        half = len(texts[i]) // 2
        cut = texts[i].rfind(" ", 0, half) + 1
        texts[i] = f"{texts[i][:cut]}{value} {texts[i][cut:]}"
        plant[i] = value
    return texts, plant


def recall(outputs: list[str], plant: list[str | None]) -> float:
    hits = [p not in o for o, p in zip(outputs, plant, strict=True) if p is not None]
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--planted", type=float, default=0.02)
    args = parser.parse_args()
    from datatrove.pipeline.formatters import PIIFormatter

    from curate.stages.pii import Pii

    texts, plant = load(args.data, args.rows, args.planted)
    mb = sum(len(t) for t in texts) / 1e6
    formatter = PIIFormatter()
    started = time.perf_counter()
    theirs = [formatter.format(t) for t in texts]
    theirs_s = time.perf_counter() - started

    results = {}
    for name, types in (("email+ip", ["email", "ip"]), ("all default types", None)):
        stage = Pii({"types": types} if types else {})
        stage.ensure_setup()
        started = time.perf_counter()
        out = []
        for i in range(0, len(texts), stage.batch_rows):
            table = pa.table({"id": pa.array([str(k) for k in range(i, min(i + stage.batch_rows, len(texts)))]),
                              "text": pa.array(texts[i:i + stage.batch_rows])})
            out += stage.process(table).adds["text"].to_pylist()
        results[name] = (time.perf_counter() - started, out)

    print(f"{len(texts):,} texts ({mb:.1f} MB), {sum(p is not None for p in plant):,} with a planted email or IPv4")
    print(f"{'':<28}{'seconds':>9}{'rows/s':>10}{'MB/s':>7}{'recall':>8}")
    print(f"{'DataTrove PIIFormatter':<28}{theirs_s:>9.2f}{len(texts) / theirs_s:>10,.0f}{mb / theirs_s:>7.1f}"
          f"{recall(theirs, plant):>8.3f}")
    for name, (seconds, out) in results.items():
        print(f"{'curate pii, ' + name:<28}{seconds:>9.2f}{len(texts) / seconds:>10,.0f}{mb / seconds:>7.1f}"
              f"{recall(out, plant):>8.3f}  ({theirs_s / seconds:.1f}x DataTrove)")


if __name__ == "__main__":
    main()
