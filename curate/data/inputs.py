"""A step's input: the rows of one parent dataset, or of several read as one.

A stage that takes several inputs (`inputs = "many"`, e.g. `mixture`) sees its parents' rows one after another,
in `from:` order, with a `part` column holding the label of the step each row came from. Shards are named
`<k>:<shard>` (k = the parent's position) so that tasks and receipts of different parents never collide; a
one-input step's shards keep their own names, so its output shards are named as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from curate.data.columns import PART
from curate.data.dataset import Dataset, ShardReads, projected
from curate.data.errors import DatasetError
from curate.data.schemas import conform, unify_schemas


class StepInput(ShardReads):
    """Rows of `datasets` (labelled `labels`) as one input, read shard by shard."""

    def __init__(self, datasets: Sequence[Dataset], labels: Sequence[str]):
        if not datasets or len(datasets) != len(labels):
            raise DatasetError(f"a step input needs one label per dataset, got {len(datasets)} and {len(labels)}")
        self.datasets = list(datasets)
        self.labels = list(labels)
        self.multi = len(self.datasets) > 1
        schema = unify_schemas([d.schema for d in self.datasets]) if self.multi else self.datasets[0].schema
        if self.multi:
            schema = pa.schema([f for f in schema if f.name != PART]).append(pa.field(PART, pa.string()))
        self.schema: pa.Schema = schema
        self._refs: list[tuple[int, str, int]] = [(k, s.file, s.rows) for k, d in enumerate(self.datasets)
                                                  for s in d.shards]

    @classmethod
    def open(cls, paths: Sequence[str | Path], labels: Sequence[str]) -> StepInput:
        return cls([Dataset.open(p) for p in paths], labels)

    @property
    def paths(self) -> list[str]:
        return [str(d.path) for d in self.datasets]

    @property
    def fingerprints(self) -> list[str]:
        return [d.fingerprint for d in self.datasets]

    # -- shards

    def ref(self, k: int, name: str) -> str:
        return f"{k}:{name}" if self.multi else name

    @property
    def shard_names(self) -> list[str]:
        """Shard references in reading order."""
        return [self.ref(k, name) for k, name, _ in self._refs]

    def shard_sha256(self, ref: str) -> str:
        """The SHA-256 of the file behind shard `ref` (from its dataset's manifest)."""
        k, name = self._resolve(ref)
        return next(s.sha256 for s in self.datasets[k].shards if s.file == name)

    def shard_rows(self) -> dict[str, int]:
        return {self.ref(k, name): rows for k, name, rows in self._refs}

    def shard_offsets(self) -> dict[str, int]:
        """Global row offset of each shard's first row, in reading order."""
        offsets, total = {}, 0
        for k, name, rows in self._refs:
            offsets[self.ref(k, name)] = total
            total += rows
        return offsets

    def output_name(self, ref: str) -> str:
        """The file name of the output shard written for input shard `ref`."""
        k, _, name = ref.rpartition(":")
        return f"in{int(k):02d}-{name}" if self.multi else name

    def _resolve(self, ref: str) -> tuple[int, str]:
        if not self.multi:
            return 0, ref
        k, _, name = ref.partition(":")
        return int(k), name

    def count(self) -> int:
        return sum(d.count() for d in self.datasets)

    def __len__(self) -> int:
        return self.count()

    # -- reading

    def _projected(self, columns: Sequence[str] | None) -> pa.Schema:
        return projected(self.schema, columns, f"the input of {', '.join(self.labels)}")

    def _finish(self, table: pa.Table, k: int, schema: pa.Schema) -> pa.Table:
        if self.multi and PART in schema.names:
            table = table.drop_columns([c for c in (PART,) if c in table.column_names])
            table = table.append_column(PART, pa.array([self.labels[k]] * table.num_rows, pa.string()))
        return conform(table, schema)

    def _dataset_columns(self, k: int, schema: pa.Schema) -> list[str]:
        have = self.datasets[k].schema.names
        return [c for c in schema.names if c in have and not (self.multi and c == PART)]

    def iter_shard_batches(self, ref: str, columns: Sequence[str] | None = None,
                           batch_rows: int = 65_536) -> Iterator[pa.Table]:
        schema = self._projected(columns)
        k, name = self._resolve(ref)
        for table in self.datasets[k].iter_shard_batches(name, self._dataset_columns(k, schema), batch_rows):
            yield self._finish(table, k, schema)

    def read_shard(self, ref: str, columns: Sequence[str] | None = None) -> pa.Table:
        schema = self._projected(columns)
        k, name = self._resolve(ref)
        return self._finish(self.datasets[k].read_shard(name, self._dataset_columns(k, schema)), k, schema)

