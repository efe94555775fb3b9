"""Writing Parquet shards: each is written under a temporary name and appears under its final one only when
complete (`ShardWriter`), so a reader or a resumed run never sees half a shard; its row count and SHA-256 go
into the dataset's manifest (`curate.data.dataset.write_manifest`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.data.faults import crash_point
from curate.data.hashing import file_sha256
from curate.data.schemas import conform, unify_schemas


@dataclass(frozen=True)
class ShardInfo:
    file: str
    rows: int
    sha256: str


# ---------------------------------------------------------------- writing


class ShardWriter:
    """Streams tables into one Parquet shard; the shard appears under its final name on `close()`."""

    def __init__(self, directory: str | Path, name: str, schema: pa.Schema | None = None):
        self.directory = Path(directory)
        self.name = name
        self.rows = 0
        self._tmp = self.directory / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        self._writer: pq.ParquetWriter | None = None
        self._schema = schema

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        """Append rows; later tables are conformed to the first one's schema. Empty tables are ignored."""
        if table.num_rows == 0:
            return
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if self._writer is None:
            self._schema = self._schema or table.schema
            self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        self._writer.write_table(conform(table, self._schema))
        self.rows += table.num_rows

    def close(self) -> ShardInfo | None:
        """Finish the shard. Returns None (and leaves no file) when nothing was written."""
        if self._writer is None:
            return None
        self._writer.close()
        crash_point("shard_write", self.name)
        final = self.directory / self.name
        os.replace(self._tmp, final)
        return ShardInfo(file=self.name, rows=self.rows, sha256=file_sha256(str(final)))

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is not None:
            self.abort()


def write_shard(directory: str | Path, name: str, table: pa.Table) -> ShardInfo | None:
    with ShardWriter(directory, name) as writer:
        writer.write(table)
        return writer.close()


def readable_shard(path: str | Path) -> bool:
    """Whether a Parquet file's footer reads (a file cut short or overwritten by something else does not)."""
    try:
        pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError):
        return False
    return True


def conform_shards(directory: str | Path, shards: Sequence[ShardInfo]) -> list[ShardInfo]:
    """Rewrite, conformed to the dataset's schema, the shards whose schema is not exactly it.

    Shards written apart infer their types apart (one input file has `"score": 1`, another `"score": 1.5`, or
    an object where another has a string) and may lack columns (two inputs with different fields). The manifest's
    schema unifies them; rewriting the shards that differ (missing columns as nulls, one column order) lets every
    Parquet reader given the folder (polars, `datasets`, pyarrow, DuckDB) read the files with the values every
    stage sees.
    """
    directory = Path(directory)
    schemas = [pq.read_schema(directory / s.file) for s in shards]
    schema = unify_schemas(schemas)
    result = []
    for shard, have in zip(shards, schemas, strict=True):
        if have.remove_metadata().equals(schema.remove_metadata()):
            result.append(shard)
            continue
        result.append(write_shard(directory, shard.file, conform(pq.read_table(directory / shard.file), schema)))
    return result


class RollingWriter:
    """Buffers tables whose inferred schemas may differ and writes shards of at most `shard_rows` rows,
    named `{prefix}-0000.parquet`, `{prefix}-0001.parquet`, ... Each shard gets the unified schema."""

    def __init__(self, directory: str | Path, prefix: str, shard_rows: int):
        self.directory = Path(directory)
        self.prefix = prefix
        self.shard_rows = shard_rows
        self.shards: list[ShardInfo] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            room = self.shard_rows - self._pending_rows
            self._pending.append(table.slice(0, room))
            self._pending_rows += min(room, table.num_rows)
            table = table.slice(room)
            if self._pending_rows >= self.shard_rows:
                self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        schema = unify_schemas([t.schema for t in self._pending])
        info = write_shard(self.directory, f"{self.prefix}-{len(self.shards):04d}.parquet",
                           pa.concat_tables([conform(t, schema) for t in self._pending]))
        self.shards.append(info)
        self._pending, self._pending_rows = [], 0

    def close(self) -> list[ShardInfo]:
        self._flush()
        return self.shards


def write_empty_shard(directory: Path, schema: pa.Schema) -> None:
    """One empty shard with the schema, for Parquet readers given an empty dataset's folder."""
    name = "part-00000.parquet"
    tmp = directory / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    pq.write_table(schema.empty_table(), tmp, compression="zstd")
    os.replace(tmp, directory / name)
