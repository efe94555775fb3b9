"""A step's rows as a `datasets.Dataset` without loading them into memory.

`datasets` memory-maps Arrow IPC stream files; Parquet must be decoded first. The rows are streamed, file by file
and one record batch at a time, from the Parquet shards into one Arrow file under `$CURATE_CACHE_DIR/hf/<key>.arrow`,
written under a temporary name and renamed (a killed conversion leaves no half file), then memory-mapped. The key
names the step version (its shards' checksums), so a second call opens the file that is there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.data.schemas import conform
from curate.models.embedding_cache import cache_root

if TYPE_CHECKING:
    import datasets

BATCH_ROWS = 16_384  # rows per record batch of the Arrow file (datasets reads it batch by batch)


def hf_cache_dir() -> Path:
    return cache_root() / "hf"


def write_arrow_stream(batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path) -> Path:
    """Write `batches` into an Arrow IPC stream file at `path` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def file_batches(files: Iterable[str], schema: pa.Schema, constants: dict[str, Any] | None = None,
                 batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The rows of Parquet files, file by file and batch by batch (a dataset scanner reads several files and
    batches ahead: twice the memory here), each batch conformed to `schema` with `constants` as columns."""
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows):
            table = pa.Table.from_batches([batch])
            for name, value in (constants or {}).items():
                table = table.append_column(name, pa.array([value] * table.num_rows, schema.field(name).type))
            yield from conform(table, schema).to_batches()


def hf_dataset(batches: Iterable[pa.RecordBatch], schema: pa.Schema, key: str) -> datasets.Dataset:
    """The rows as a memory-mapped `datasets.Dataset`, converted once per `key`."""
    import datasets as hf

    path = hf_cache_dir() / f"{key}.arrow"
    if not path.is_file():
        write_arrow_stream(batches, schema, path)
    return hf.Dataset.from_file(str(path), in_memory=False)
