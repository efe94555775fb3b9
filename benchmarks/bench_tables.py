"""Benchmark: table work that curate did per row in Python, against the vectorised replacement it now uses.

    python benchmarks/bench_tables.py --data <folder of the shared data sets> [--rows 100000]

1. JSONL export (`curate export --format jsonl`): `json.dumps` per record (before) against polars'
   `write_ndjson` (now, `curate.inspect.export.write_jsonl`), for text and prompt-completion records of real rows; the
   files must parse to the same records.
2. Chat ingest (`curate.io.mapping._messages`): the loop per conversation (before, still the fallback for untyped
   columns) against Arrow compute (`curate.io.chat_turns`), on chats cut from the Anthropic HH harmless test set
   (`Human:` / `Assistant:` turns), typed and as JSON text (a CSV's chats: `orjson` per row before the loop,
   Arrow's JSON reader before Arrow compute, `curate.io.json_text`); the outputs must be equal.
Both run in this process on the same rows; the ratio is before / now.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import time
from pathlib import Path

import pyarrow as pa

import curate.io.json_text as json_text
import curate.io.mapping as mapping
from curate.inspect.export import _records, write_jsonl


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def pool_rows(data: Path, n: int) -> pa.Table:
    rows = []
    for name in ("gsm8k/gsm8k_train.jsonl", "c4_web_sample/c4_web_sample.jsonl"):
        for line in (data / name).read_text(encoding="utf-8").split("\n"):
            if line.strip():
                record = json.loads(line)
                text = record.get("text") or f"{record.get('prompt', '')}\n\n{record.get('response', '')}"
                rows.append({"text": text, "prompt": record.get("prompt"), "response": record.get("response")
                             or record.get("text")})
    return pa.Table.from_pylist((rows * (n // len(rows) + 1))[:n])


def hh_chats(data: Path, n: int) -> pa.Table:
    chats = []
    for line in (data / "hh_rlhf_harmless_test" / "hh_rlhf_harmless_test.jsonl").read_text().split("\n"):
        if not line.strip():
            continue
        row = json.loads(line)
        parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + row["prompt"].strip())
        turns = [{"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1]}
                 for i in range(1, len(parts) - 1, 2)]
        chats.append([*turns, {"role": "assistant", "content": row["response"]}])
    return pa.table({"messages": pa.array((chats * (n // len(chats) + 1))[:n])})


def bench_export(table: pa.Table) -> None:
    for shape in ("text", "prompt-completion"):
        records = _records(table, shape)
        before, now = io.StringIO(), io.BytesIO()

        def loop(out=before, records=records) -> None:
            out.seek(0)
            out.truncate()
            for record in records.to_pylist():
                out.write(json.dumps(record, ensure_ascii=False) + "\n")

        def polars(out=now, records=records) -> None:
            out.seek(0)
            out.truncate()
            write_jsonl(records, out)

        slow, fast = best_of(loop), best_of(polars)
        # split at "\n" only: texts hold U+2028, which str.splitlines() also splits at
        same = [json.loads(x) for x in before.getvalue().split("\n") if x] == [
            json.loads(x) for x in now.getvalue().decode().split("\n") if x]
        print(f"export jsonl ({shape:>17}): json.dumps loop {table.num_rows / slow:>10,.0f} rows/s, polars "
              f"{table.num_rows / fast:>10,.0f} rows/s: {slow / fast:.1f}x, same records: {same}")


def bench_chats(table: pa.Table, label: str) -> None:
    def run(vectorised: bool) -> dict:
        saved = mapping.vectorised_turns, mapping.parse_json_texts
        if not vectorised:  # the loop per conversation, after orjson per row for JSON text
            mapping.vectorised_turns = lambda *_: None
            mapping.parse_json_texts = lambda texts: json_text._parse_rows(
                texts.combine_chunks().cast(pa.large_string()))
        try:
            return mapping._messages(table, "messages", mapping._Reasons(table.num_rows))
        finally:
            mapping.vectorised_turns, mapping.parse_json_texts = saved

    slow, fast = best_of(lambda: run(False)), best_of(lambda: run(True))
    before, now = run(False), run(True)
    same = all(before[k].equals(now[k]) for k in before)
    print(f"chat ingest ({table.num_rows:,} chats, {label}): loop {table.num_rows / slow:>10,.0f} rows/s, Arrow "
          f"{table.num_rows / fast:>10,.0f} rows/s: {slow / fast:.1f}x, same output: {same}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    bench_export(pool_rows(args.data, args.rows))
    chats = hh_chats(args.data, args.rows)
    bench_chats(chats, "typed")
    # as a CSV holds them: JSON text, parsed per row before either mapping
    texts = pa.array([json.dumps(c, ensure_ascii=False) for c in chats.column("messages").to_pylist()])
    bench_chats(pa.table({"messages": texts}), "JSON text")


if __name__ == "__main__":
    main()
