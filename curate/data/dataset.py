"""The data contract: a directory of Parquet shards, and beside it `<directory>.meta/manifest.json`.

A directory without a manifest is incomplete and never read as a finished result. Shards are written
under a temporary name and renamed; the manifest is written last (README: "The run directory and the data contract").
The dataset's directory holds its shards and nothing else, so every Parquet reader (pyarrow, polars, pandas,
`datasets`, DuckDB) reads exactly its rows; the manifest and a step's side files (its decision's report, tables,
work files) live in the `.meta` folder beside it. Runs written before kept `_manifest.json` among the shards:
they are read as they are (`manifest_path`, `side_path`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate._version import __version__
from curate.data.errors import DatasetError
from curate.data.schemas import conform, unify_schemas
from curate.data.shards import ShardInfo, ShardWriter, write_empty_shard

META = ".meta"  # `<dataset folder>.meta/`: the manifest and side files, where Parquet readers do not look
MANIFEST = "manifest.json"
LEGACY_MANIFEST = "_manifest.json"  # inside the dataset folder, in runs written before the `.meta` folder
SHARD_GLOB = "part-*.parquet"


def meta_dir(folder: str | Path) -> Path:
    """The folder beside a dataset folder that holds its manifest and side files."""
    folder = Path(folder)
    if not folder.name:  # "." or "/": name it by its absolute path
        folder = folder.absolute()
    return folder.with_name(folder.name + META)


def side_path(folder: str | Path, name: str) -> Path:
    """A dataset folder's side file `name` (its decision's report, `tables/`): in its `.meta` folder, or among the
    shards where an older run left it."""
    path = meta_dir(folder) / name
    legacy = Path(folder) / name
    return legacy if not path.exists() and legacy.exists() else path


def manifest_path(folder: str | Path) -> Path:
    """Where the dataset's manifest is (`.meta/manifest.json`, or an older run's `_manifest.json`)."""
    path = meta_dir(folder) / MANIFEST
    legacy = Path(folder) / LEGACY_MANIFEST
    return legacy if not path.is_file() and legacy.is_file() else path


def remove_dataset(folder: str | Path) -> None:
    """Remove a dataset folder that curate wrote, with its `.meta` folder."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(meta_dir(folder), ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small file so that readers see either the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- schemas in manifests


def _schema_to_json(schema: pa.Schema) -> dict[str, Any]:
    return {
        "fields": [{"name": f.name, "type": str(f.type)} for f in schema],
        "arrow": base64.b64encode(schema.serialize().to_pybytes()).decode(),
    }


def _schema_from_json(data: dict[str, Any]) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(data["arrow"])))


# ---------------------------------------------------------------- rejected rows

REJECT_META = ("stage", "reason", "score")  # the columns every rejected row starts with


def rejected_rows(rows: pa.Table, stage: str, reason: pa.Array, score: pa.Array | None = None,
                  details: dict[str, pa.Array] | None = None) -> pa.Table:
    """Dropped rows as stored under `rejected/`: stage, reason, score and details first, then the row's own
    columns. A row column that shares a name with one of those keeps its value under `<name>_original`."""
    n = rows.num_rows
    meta: dict[str, Any] = {
        "stage": pa.array([stage] * n, pa.string()),
        "reason": reason,
        "score": pa.nulls(n, pa.float64()) if score is None else pc.cast(score, pa.float64()),
    }
    meta.update(details or {})
    table = pa.table(meta)
    taken = set(meta) | set(rows.column_names)
    for name, column in zip(rows.column_names, rows.columns, strict=True):
        if name in meta:  # its value kept under `<name>_original` (`_original_1`, ... if the row has that too)
            renamed, k = f"{name}_original", 0
            while renamed in taken:
                k += 1
                renamed = f"{name}_original_{k}"
            taken.add(renamed)
            name = renamed
        table = table.append_column(name, column)
    return table


def projected(schema: pa.Schema, columns: Sequence[str] | None, what: str) -> pa.Schema:
    """`schema` cut to `columns` (all when None); a DatasetError names `what` and the columns it has."""
    if columns is None:
        return schema
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DatasetError(f"{what} has no column(s) {missing}; it has {schema.names}")
    return pa.schema([schema.field(c) for c in columns])


def write_manifest(
    path: str | Path,
    shards: Sequence[ShardInfo],
    *,
    schema: pa.Schema | None = None,
    fingerprint: str = "",
    parents: Sequence[str] = (),
    stage: str = "",
    config: dict[str, Any] | None = None,
    stats: dict[str, Any] | None = None,
) -> Dataset:
    """Write the manifest last: from this moment the directory is a finished dataset."""
    path = Path(path)
    shards = sorted(shards, key=lambda s: s.file)
    if schema is None:
        schemas = [pq.read_schema(path / s.file) for s in shards]
        schema = unify_schemas(schemas) if schemas else pa.schema([])
    if not shards:  # an empty file with the schema, for Parquet readers given the folder (not listed: no rows)
        write_empty_shard(path, schema)
    manifest = {
        "version": __version__,
        "stage": stage,
        "fingerprint": fingerprint,
        "parents": list(parents),
        "config": config or {},
        "rows": sum(s.rows for s in shards),
        "shards": [asdict(s) for s in shards],
        "schema": _schema_to_json(schema),
        "stats": stats or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    target = meta_dir(path) / MANIFEST
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(manifest, indent=1))
    return Dataset(path, manifest)


# ---------------------------------------------------------------- reading


def positions_by_shard(starts: np.ndarray, indices: Sequence[int] | np.ndarray
                       ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """For each shard holding some of the global positions `indices` (shards' first rows at `starts`, then the
    total): (shard, where in `indices` its positions are, those positions within the shard)."""
    indices = np.asarray(indices, dtype=np.int64)
    shard_of = np.searchsorted(starts, indices, side="right") - 1
    for s in np.unique(shard_of).tolist():
        picked = np.flatnonzero(shard_of == s)
        yield s, picked, indices[picked] - starts[s]


def take_positions(starts: np.ndarray, read_shard: Callable[[int], pa.Table], indices: Sequence[int] | np.ndarray,
                   empty: Callable[[], pa.Table]) -> pa.Table:
    """Rows at global positions `indices` (in that order) of shards whose first rows are at `starts` (one more
    entry: the total), reading only the shards that hold them (`read_shard(k)`)."""
    pieces, order = [], []
    for s, picked, local in positions_by_shard(starts, indices):
        pieces.append(read_shard(s).take(pa.array(local)))
        order.append(picked)
    if not pieces:
        return empty()
    result = pa.concat_tables(pieces)
    return result.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))


class ShardReads:
    """Reads shared by a `Dataset` and a step input (`curate.data.inputs.StepInput`), built on the shard reads each
    defines."""

    shard_names: list[str]

    def read_shard(self, name: str, columns: Sequence[str] | None = None) -> pa.Table:
        raise NotImplementedError

    def iter_shard_batches(self, name: str, columns: Sequence[str] | None = None,
                           batch_rows: int = 65_536) -> Iterator[pa.Table]:
        raise NotImplementedError

    def shard_offsets(self) -> dict[str, int]:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def _projected(self, columns: Sequence[str] | None) -> pa.Schema:
        raise NotImplementedError

    def iter_batches(self, columns: Sequence[str] | None = None, batch_rows: int = 65_536) -> Iterator[pa.Table]:
        for name in self.shard_names:
            yield from self.iter_shard_batches(name, columns, batch_rows)

    def to_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        tables = [self.read_shard(name, columns) for name in self.shard_names]
        return pa.concat_tables(tables) if tables else self._projected(columns).empty_table()

    def take(self, indices: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """Rows at global positions `indices` (in that order), reading only the shards that hold them."""
        names = self.shard_names
        starts = np.array([*self.shard_offsets().values(), self.count()], dtype=np.int64)
        return take_positions(starts, lambda s: self.read_shard(names[s], columns), indices,
                              lambda: self._projected(columns).empty_table())


class Dataset(ShardReads):
    """A finished dataset directory. Reads stream Arrow record batches; nothing loads whole rows as Python."""

    def __init__(self, path: str | Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest
        self.schema: pa.Schema = _schema_from_json(manifest["schema"])

    @classmethod
    def open(cls, path: str | Path) -> Dataset:
        path = Path(path)
        found = manifest_path(path)
        if not found.is_file():
            state = "does not exist" if not path.exists() else f"is incomplete (no {found})"
            raise DatasetError(f"dataset {path} {state}")
        manifest = json.loads(found.read_text(encoding="utf-8"))
        if manifest.get("kind") == "artifacts":
            raise DatasetError(f"{path} holds a step's artifacts (a model, metrics), not rows")
        return cls(path, manifest)

    @staticmethod
    def exists(path: str | Path) -> bool:
        return manifest_path(path).is_file()

    @classmethod
    def write(cls, path: str | Path, data: pa.Table | Iterable[pa.Table], *, shard_rows: int = 100_000,
              **manifest_fields: Any) -> Dataset:
        """Write tables as a new dataset (for notebooks and tests; stages use the runner)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tables = [data] if isinstance(data, pa.Table) else data
        shards: list[ShardInfo] = []
        writer: ShardWriter | None = None
        schema = None
        for table in tables:
            schema = schema or table.schema
            for start in range(0, table.num_rows, shard_rows):
                if writer is None:
                    writer = ShardWriter(path, f"part-{len(shards):05d}.parquet")
                piece = table.slice(start, shard_rows)
                writer.write(piece)
                if writer.rows >= shard_rows:
                    shards.append(writer.close())
                    writer = None
        if writer is not None and (info := writer.close()) is not None:
            shards.append(info)
        return write_manifest(path, shards, schema=schema, **manifest_fields)

    # -- properties

    @property
    def fingerprint(self) -> str:
        return self.manifest.get("fingerprint", "")

    @property
    def shards(self) -> list[ShardInfo]:
        return [ShardInfo(**s) for s in self.manifest["shards"]]

    @property
    def shard_names(self) -> list[str]:
        return [s["file"] for s in self.manifest["shards"]]

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest.get("stats", {})

    def count(self) -> int:
        return int(self.manifest["rows"])

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, rows={self.count()}, shards={len(self.shard_names)})"

    # -- reading

    def _projected(self, columns: Sequence[str] | None) -> pa.Schema:
        return projected(self.schema, columns, f"dataset {self.path}")

    def read_shard(self, name: str, columns: Sequence[str] | None = None) -> pa.Table:
        schema = self._projected(columns)
        file = pq.ParquetFile(self.path / name)
        present = [c for c in schema.names if c in file.schema_arrow.names]
        return conform(file.read(columns=present), schema)

    def iter_shard_batches(self, name: str, columns: Sequence[str] | None = None,
                           batch_rows: int = 65_536) -> Iterator[pa.Table]:
        schema = self._projected(columns)
        file = pq.ParquetFile(self.path / name)
        present = [c for c in schema.names if c in file.schema_arrow.names]
        for batch in file.iter_batches(batch_size=batch_rows, columns=present):
            yield conform(pa.Table.from_batches([batch]), schema)

    def shard_offsets(self) -> dict[str, int]:
        """Global row offset of each shard's first row, in shard order."""
        offsets, total = {}, 0
        for shard in self.manifest["shards"]:
            offsets[shard["file"]] = total
            total += shard["rows"]
        return offsets

