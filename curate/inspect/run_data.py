"""A finished (or interrupted) run from Python: `open_run(path)` gives its steps and each step's rows as polars,
Arrow or `datasets` objects, SQL over the same views as `curate sql`, and what the later stages produced.

Only finished steps are read: a step folder without its manifest (a run still writing, or killed) is never opened;
`Run.missing` names the planned steps that have none. Nothing here writes into the run directory (`to_hf` keeps
its Arrow file in curate's cache, `$CURATE_CACHE_DIR/hf/`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from curate.data.dataset import Dataset, side_path
from curate.data.errors import CurateError
from curate.data.hashing import fingerprint
from curate.data.rundir import RunDir
from curate.data.schemas import unify_schemas
from curate.inspect.summary import StepSummary, run_steps

if TYPE_CHECKING:
    import datasets
    import duckdb
    import polars

KEPT = "kept"  # the flag column of `StepData.all()`, as in the `<label>_all` SQL view


@dataclass(frozen=True)
class _Part:
    """One dataset folder of a StepData, with the `kept` value its rows get in `all()` (None: no flag column)."""

    dataset: Dataset
    kept: bool | None = None

    @property
    def files(self) -> list[str]:
        return [str(self.dataset.path / name) for name in self.dataset.shard_names]


class StepData:
    """The rows of one step (or its dropped rows, or both): read lazily from the step's Parquet shards."""

    def __init__(self, label: str, parts: Sequence[_Part], what: str = "rows", step: StepSummary | None = None,
                 report: dict[str, Any] | None = None):
        self.label = label
        self.what = what  # rows, rejected, all
        self.step = step
        self.report = report  # a mixture's `mixture.json`, for `Run.mixture`
        self._parts = list(parts)

    @property
    def schema(self) -> pa.Schema:
        schema = unify_schemas([p.dataset.schema for p in self._parts])
        if any(p.kept is not None for p in self._parts):
            schema = schema.append(pa.field(KEPT, pa.bool_()))
        return schema

    @property
    def files(self) -> list[str]:
        """The Parquet shards the rows are read from."""
        return [f for p in self._parts for f in p.files]

    @property
    def num_rows(self) -> int:
        return sum(p.dataset.count() for p in self._parts)

    def __len__(self) -> int:
        return self.num_rows

    @property
    def rejected(self) -> StepData | None:
        """The step's dropped rows (stage, reason, score, details, then the row), or None for a step that drops
        none by design (an artifact step, a sample)."""
        if self.step is None or self.step.rejected is None or self.what != "rows":
            return None
        return StepData(self.label, [_Part(Dataset.open(self.step.rejected))], "rejected", self.step)

    def all(self) -> StepData:
        """Kept and dropped rows together, with a boolean `kept` column (the `<label>_all` SQL view)."""
        if self.what != "rows":
            raise CurateError(f"all() is the kept and dropped rows of a step; this is {self.label!r}'s {self.what}")
        parts = [_Part(self._parts[0].dataset, True)]
        if (rejected := self.rejected) is not None:
            parts.append(_Part(rejected._parts[0].dataset, False))
        return StepData(self.label, parts, "all", self.step)

    # ------------------------------------------------------------ readers

    def to_arrow(self) -> ds.Dataset:
        """A `pyarrow.dataset.Dataset` over the shards (nothing read until it is scanned). With `all()`, `kept` is
        each file's partition value, so a filter on it skips the other folder's files."""
        schema = self.schema
        parquet, local = ds.ParquetFileFormat(), pafs.LocalFileSystem()
        datasets_ = []
        for part in self._parts:
            partitions = [pc.field(KEPT) == part.kept if part.kept is not None else pc.scalar(True)] * len(
                part.files)
            datasets_.append(ds.FileSystemDataset.from_paths(part.files, schema=schema, format=parquet,
                                                             filesystem=local, partitions=partitions))
        return datasets_[0] if len(datasets_) == 1 else ds.dataset(datasets_)

    def to_polars(self) -> polars.LazyFrame:
        """A `polars.LazyFrame` scanning the shards (no copy; `.collect()` reads them)."""
        import polars as pl

        frames = []
        for part in self._parts:
            # the dataset's schema: shards of different input files need not share columns (ingest), so a
            # column a shard lacks reads as nulls and numbers widen to the dataset's type
            empty = pl.from_arrow(part.dataset.schema.empty_table())
            if part.files:
                frame = pl.scan_parquet(part.files, schema=empty.schema, missing_columns="insert",
                                        cast_options=pl.ScanCastOptions(integer_cast="upcast", float_cast="upcast",
                                                                        missing_struct_fields="insert"))
            else:  # no shards: an empty frame with the step's columns
                frame = empty.lazy()
            if part.kept is not None:
                frame = frame.with_columns(pl.lit(part.kept).alias(KEPT))
            frames.append(frame)
        if len(frames) == 1:
            return frames[0]
        return pl.concat(frames, how="diagonal_relaxed").select(self.schema.names)  # to_arrow()'s column order

    def to_hf(self) -> datasets.Dataset:
        """A `datasets.Dataset` memory-mapped from an Arrow file (written once per step version into curate's
        cache, batch by batch: the rows are never all in memory)."""
        from curate.inspect.hf_arrow import file_batches, hf_dataset

        key = fingerprint(self.what, [(p.kept, p.dataset.fingerprint, [(s.file, s.sha256) for s in p.dataset.shards])
                                      for p in self._parts])
        schema = self.schema
        batches = (batch for p in self._parts
                   for batch in file_batches(p.files, schema, {KEPT: p.kept} if p.kept is not None else None))
        return hf_dataset(batches, schema, key)

    def to_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All rows in memory, as one Arrow table."""
        return self.to_arrow().to_table(columns=list(columns) if columns is not None else None)

    def __repr__(self) -> str:
        return f"StepData({self.label!r}, {self.what}, {self.num_rows:,} rows, {len(self.files)} shard(s))"

    def _repr_html_(self) -> str:
        from curate.inspect.notebook import step_html

        return step_html(self)


class Run:
    """A run directory opened read-only. `run[label]` is a step's rows; `run.steps` the finished steps in graph
    order; `run.missing` the planned steps that are not finished."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._dir = RunDir.open(self.path)
        self.record = self._dir.read_run_json()
        summaries = run_steps(self.path)
        self.steps: list[StepSummary] = [s for s in summaries if not s.sample]
        self.samples: list[StepSummary] = [s for s in summaries if s.sample]
        found = {s.label for s in summaries}
        self.missing: list[str] = [e["label"] for e in self.record.get("graph", []) if e["label"] not in found]
        self._connection: duckdb.DuckDBPyConnection | None = None

    @property
    def name(self) -> str:
        return self.record.get("name") or self.path.name

    @property
    def finished(self) -> bool:
        """True when the last run got to its end and every planned step has its output."""
        return bool(self.record.get("finished")) and not self.missing

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.steps]

    def step(self, label: str) -> StepSummary:
        for s in self.steps + self.samples:
            if s.label == label:
                return s
        if label in self.missing:
            raise CurateError(f"step {label!r} of run {str(self.path)!r} is not finished (no manifest): the run was "
                              f"interrupted or is still running; finished steps: {', '.join(self.labels) or 'none'}")
        raise CurateError(f"run {str(self.path)!r} has no step {label!r}; its steps: "
                          f"{', '.join(self.labels + [s.label for s in self.samples]) or 'none'}")

    def __getitem__(self, label: str) -> StepData:
        """A step's kept rows; an artifact step (finetune, evaluate) gives the rows it was built from."""
        step = self.step(label)
        return StepData(label, [_Part(Dataset.open(step.rows))], "rows", step)

    def __contains__(self, label: str) -> bool:
        return any(s.label == label for s in self.steps + self.samples)

    def __iter__(self):
        return iter(self.labels)

    # ------------------------------------------------------------ SQL

    def relation(self, sql: str) -> duckdb.DuckDBPyRelation:
        """A read-only query as a DuckDB relation (`.arrow()`, `.pl()`, `.df()`, `.show()`); the views are those of
        `curate sql`."""
        from curate.inspect.sql import read_only_connection, read_only_sql

        if self._connection is None:
            self._connection = read_only_connection(self.path)
        return read_only_sql(self._connection, sql)

    def sql(self, sql: str) -> pa.Table:
        """A read-only query over the run's views (as `curate sql`), as an Arrow table."""
        return self.relation(sql).to_arrow_table()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # ------------------------------------------------------------ what later stages produce

    def _labels_of(self, stage: str) -> list[str]:
        return [s.label for s in self.steps if s.stage == stage]

    def _one(self, stage: str, label: str | None) -> StepSummary:
        if label is not None:
            step = self.step(label)
            if step.stage != stage:
                raise CurateError(f"step {label!r} is a {step.stage} step, not {stage}; {stage} steps: "
                                  f"{', '.join(self._labels_of(stage)) or 'none'}")
            return step
        found = self._labels_of(stage)
        if len(found) != 1:
            raise CurateError(f"run {str(self.path)!r} has {len(found)} finished {stage} steps "
                              f"({', '.join(found) or 'none'}); name one")
        return self.step(found[0])

    def mixture(self, label: str | None = None) -> StepData:
        """A mixture step's rows, with its account (`mixture.json`: tokens and rows per group) as `.report`."""
        step = self._one("mixture", label)
        account = side_path(step.rows, "mixture.json")
        report = json.loads(account.read_text()) if account.is_file() else None
        return StepData(step.label, [_Part(Dataset.open(step.rows))], "rows", step, report)

    def model(self, label: str | None = None) -> Path:
        """The folder of a fine-tuned model (a Hugging Face folder: `from_pretrained(run.model())`)."""
        step = self._one("finetune", label)
        assert step.artifacts is not None
        return step.artifacts

    def eval(self, label: str | None = None) -> dict[str, Any]:
        """An evaluate step's parsed `results.json` (arms, losses per seed, whether the selection won)."""
        step = self._one("evaluate", label)
        assert step.artifacts is not None
        return json.loads((step.artifacts / "results.json").read_text())

    @property
    def report(self) -> Path | None:
        """The run's `report.html`, when one was written."""
        from curate.inspect.report import REPORT_FILE

        path = self.path / REPORT_FILE
        return path if path.is_file() else None

    def __repr__(self) -> str:
        state = "finished" if self.finished else f"unfinished, missing {', '.join(self.missing) or 'nothing'}"
        return f"Run({str(self.path)!r}, {len(self.steps)} steps, {state})"

    def _repr_html_(self) -> str:
        from curate.inspect.notebook import run_html

        return run_html(self)


def open_run(path: str | Path) -> Run:
    """Open a run directory (read-only); see `Run`."""
    return Run(path)
