"""How much memory a global stage's decision will need, against what this machine has.

`curate validate` estimates a run's rows from its input files (Parquet footers; line counts of the first MiB of
text files, decompressed, scaled to the file's size) and `curate inspect` takes them from a finished run. Each
global stage that can tell says what its decision holds per row (`decision_bytes_per_row`); every global step
is assumed to see all ingested rows, an upper bound. A warning names the step, the estimate and the machine's
memory when the estimate passes 80% of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pyarrow.parquet as pq

from curate.io.readers import open_bytes
from curate.io.sources import InputUnit

SAMPLE_BYTES = 1 << 20
WARN_SHARE = 0.8


def machine_memory() -> int:
    """Physical memory of this machine in bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def estimated_rows(unit: InputUnit) -> int:
    """Rows of one input file: exact for Parquet, estimated from the first MiB for text formats."""
    if unit.format == "parquet":
        return pq.ParquetFile(unit.path).metadata.num_rows
    size = os.path.getsize(unit.path)
    if unit.format not in ("jsonl", "json", "csv") or size == 0:
        return size // 1000  # Arrow files: about a kilobyte per row
    stream = open_bytes(unit)
    try:
        sample = stream.read(SAMPLE_BYTES)
        read = getattr(stream, "compressed_read", None) or len(sample)  # file bytes behind the sample
    finally:
        stream.close()
    lines = sample.count(b"\n") + (0 if sample.endswith(b"\n") else 1)
    return max(1, round(lines * size / max(read, 1))) if sample else 0


def memory_warnings(steps: Iterable[tuple[str, object, int]], memory: int | None = None) -> list[str]:
    """Warnings for (label, stage instance, rows) whose decision would need more than 80% of `memory`."""
    memory = memory or machine_memory()
    found = []
    for label, stage, rows in steps:
        per_row = getattr(stage, "decision_bytes_per_row", lambda: None)()
        if per_row is None:
            continue
        need = per_row * rows
        if need > WARN_SHARE * memory:
            found.append(f"{label}: its decision needs about {need / 2**30:,.1f} GiB for {rows:,} rows "
                         f"({per_row:,} bytes a row); this machine has {memory / 2**30:,.1f} GiB. Split the "
                         "pool into several runs, or run it where there is more memory")
    return found
