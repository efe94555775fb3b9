"""The stage contract (DESIGN.md §3).

A stage declares what it reads (`needs`), what it writes (`adds`), what it uses (`resources`) and its
parameters (a pydantic model). It never knows which engine runs it.

- A `MapStage` looks at one table of rows at a time and returns a `Decision` about those rows.
- A `GlobalStage` first `summarize`s each shard (a map step: ids, signatures, scores), then `decide`s
  once over all summaries; the decision is applied shard by shard.

A `Decision` keeps scoring and deciding apart from the bookkeeping: every stage drops rows the same way,
with a reason, the deciding score and the original row, so `apply_decision` is the only place that
splits rows into kept and rejected.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from curate.errors import CurateError

REJECT_META = ("stage", "reason", "score")


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; engines use it to place work (Ray) or size pools."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None


class Params(BaseModel):
    """Base of every stage's parameters: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Decision:
    """A stage's verdict on rows, as arrays aligned to those rows.

    `reason`: null keeps a row, a short code (`too_short`, `near_duplicate`) drops it.
    `score`: the value that decided (float64), stored with dropped rows.
    `adds`: columns set on every row (new, or replacing a column of the same name).
    `details`: columns stored only with dropped rows (`duplicate_of`).
    """

    reason: pa.Array | None = None
    score: pa.Array | None = None
    adds: dict[str, pa.Array] = field(default_factory=dict)
    details: dict[str, pa.Array] = field(default_factory=dict)

    def slice(self, offset: int, length: int) -> Decision:
        cut = lambda a: None if a is None else a.slice(offset, length)  # noqa: E731
        return Decision(cut(self.reason), cut(self.score),
                        {k: cut(v) for k, v in self.adds.items()},
                        {k: cut(v) for k, v in self.details.items()})

    def to_table(self, num_rows: int) -> pa.Table:
        """Flatten for storage between the decide and apply steps."""
        columns = {
            "_reason": self.reason if self.reason is not None else pa.nulls(num_rows, pa.string()),
            "_score": self.score if self.score is not None else pa.nulls(num_rows, pa.float64()),
        }
        columns.update({f"add.{k}": v for k, v in self.adds.items()})
        columns.update({f"detail.{k}": v for k, v in self.details.items()})
        return pa.table(columns)

    @classmethod
    def from_table(cls, table: pa.Table) -> Decision:
        get = lambda name: table.column(name).combine_chunks()  # noqa: E731
        return cls(
            reason=get("_reason"),
            score=get("_score"),
            adds={n[4:]: get(n) for n in table.column_names if n.startswith("add.")},
            details={n[7:]: get(n) for n in table.column_names if n.startswith("detail.")},
        )


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def rejected_rows(rows: pa.Table, stage: str, reason: pa.Array, score: pa.Array | None = None,
                  details: dict[str, pa.Array] | None = None) -> pa.Table:
    """Dropped rows as stored: stage, reason, score and details first, then the row's own columns.

    A row column that shares a name with one of those keeps its value under `<name>_original`.
    """
    n = rows.num_rows
    meta: dict[str, Any] = {
        "stage": pa.array([stage] * n, pa.string()),
        "reason": reason,
        "score": pa.nulls(n, pa.float64()) if score is None else pc.cast(score, pa.float64()),
    }
    meta.update(details or {})
    table = pa.table(meta)
    for name, column in zip(rows.column_names, rows.columns, strict=True):
        table = table.append_column(f"{name}_original" if name in meta else name, column)
    return table


def apply_decision(table: pa.Table, decision: Decision, stage: str) -> tuple[pa.Table, pa.Table]:
    """Split rows into (kept, rejected) by a decision, after setting its added columns."""
    for name, values in decision.adds.items():
        table = _set_column(table, name, values)
    if decision.reason is None or decision.reason.null_count == len(decision.reason):
        return table, pa.table({})
    keep = pc.is_null(decision.reason)
    drop = pc.invert(keep)
    pick = lambda a: None if a is None else a.filter(drop)  # noqa: E731
    rejected = rejected_rows(table.filter(drop), stage, pick(decision.reason), pick(decision.score),
                             {k: pick(v) for k, v in decision.details.items()})
    return table.filter(keep), rejected


class Rows(Protocol):
    """Random access to a stage's input rows by global position (for decisions that need text)."""

    def take(self, indices: np.ndarray, columns: Sequence[str]) -> pa.Table: ...


class TableRows:
    """`Rows` over an in-memory table (notebooks, tests)."""

    def __init__(self, table: pa.Table):
        self.table = table

    def take(self, indices: np.ndarray, columns: Sequence[str]) -> pa.Table:
        return self.table.select(list(columns)).take(pa.array(indices, pa.int64()))


class Stage:
    """One step of a pipeline. Subclasses set the class attributes and implement MapStage/GlobalStage."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    needs: ClassVar[tuple[str, ...]] = ("id", "text")
    adds: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources()
    requires: ClassVar[tuple[str, ...]] = ()  # import names of optional packages the stage uses
    batch_rows: ClassVar[int] = 8192  # rows per table handed to `process` / `summarize`

    def __init__(self, params: Params | dict[str, Any] | None = None, /, **kwargs: Any):
        if isinstance(params, BaseModel):
            self.params = params
        else:
            self.params = self.Params.model_validate({**(params or {}), **kwargs})
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise CurateError(f"stage '{self.name}' needs the package(s) {missing}; install them with pip")

    def setup(self) -> None:
        """Load models or tables; called once per worker before any rows (not per batch)."""

    def config(self) -> dict[str, Any]:
        """The resolved parameters: part of the stage's fingerprint."""
        return self.params.model_dump(mode="json")

    def requires_target(self) -> bool:
        """True when the stage needs the config's `target:` sample (checked before any work)."""
        return False

    def models(self) -> dict[str, str]:
        """The models the stage loads, by parameter key (`prior.model`): a name that can only be a path must be an
        existing folder, which is checked before any work."""
        return {}

    def fingerprint_extra(self) -> dict[str, Any]:
        """What else decides the output besides the parameters (e.g. the files of a model named by path),
        so that a re-run redoes the stage when it changes. Cheap: called when a run is planned."""
        return {}

    def check_input(self, schema: pa.Schema) -> None:
        missing = [c for c in self.needs if c not in schema.names]
        if missing:
            raise CurateError(f"stage '{self.name}' needs column(s) {missing}; its input has {schema.names}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


class MapStage(Stage):
    """Shard-local: decides about each table of rows alone. Safe to run on many workers at once."""

    kind = "map"

    def process(self, table: pa.Table) -> Decision:
        raise NotImplementedError

    def __call__(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Run on an in-memory table: returns (kept, rejected)."""
        return apply_decision(table, self.process(table), self.name)


@dataclass(frozen=True)
class StageContext:
    """What a global stage's `prepare` may use: its input, the run's target sample, a folder for models."""

    input: Any  # curate.dataset.Dataset (not imported here: the dataset module imports this one's users)
    target: Any | None
    models_dir: Path
    label: str


class GlobalStage(Stage):
    """Needs all rows at once, but only a few columns: summarize per shard, decide once, apply per shard.

    Optional: `prepare(context)` runs once before the summaries (e.g. to train auxiliary models on the input
    and the target); the JSON-able artifacts it returns (model paths) reach every worker's instance as
    `self.prepared`. With `keep_summaries`, summaries (scores) are stored under the run's `scores/`, keyed
    by `summary_params()`: a new decision (another budget or threshold) re-uses them without re-scoring.
    """

    kind = "global"
    keep_summaries: ClassVar[bool] = False

    def __init__(self, params: Params | dict[str, Any] | None = None, /, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.prepared: dict[str, Any] = {}  # set from `prepare`'s artifacts by the runner's tasks

    def prepare(self, context: StageContext) -> dict[str, Any]:
        """Once per run of the stage, before any summary; returns artifacts for `self.prepared`."""
        return {}

    def summary_params(self) -> dict[str, Any]:
        """The parameters that decide the summaries (the rest only decide): by default all of them."""
        return self.config()

    def summarize(self, table: pa.Table) -> pa.Table:
        """The per-shard (map) part: by default just the columns the stage needs."""
        return table.select(list(self.needs))

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        """Decide over all rows' summaries, concatenated in dataset order. The runner calls it on an instance
        without `setup()` (no models loaded): everything it needs is in the summaries, `rows` and `prepared`."""
        raise NotImplementedError

    def __call__(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        summaries = [self.summarize(table.slice(i, self.batch_rows))
                     for i in range(0, max(table.num_rows, 1), self.batch_rows)]
        decision = self.decide(pa.concat_tables(summaries), TableRows(table))
        return apply_decision(table, decision, self.name)


# ---------------------------------------------------------------- registry and per-worker instances

REGISTRY: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"stage name {cls.name!r} is empty or already registered")
    REGISTRY[cls.name] = cls
    return cls


_ready: dict[str, Stage] = {}
_ready_lock = threading.Lock()


def ready_stage(name: str, params: dict[str, Any], prepared: dict[str, Any] | None = None) -> Stage:
    """The worker's instance of a stage, built and set up once per process (models load once).

    `prepared`: a global stage's artifacts from `prepare`, set before `setup` so it can load them.
    """
    from curate.hashing import canonical_json

    key = name + canonical_json(params) + canonical_json(prepared or {})
    with _ready_lock:
        stage = _ready.get(key)
        if stage is None:
            stage = REGISTRY[name](params)
            if isinstance(stage, GlobalStage):
                stage.prepared = dict(prepared or {})
            stage.setup()
            _ready[key] = stage
        return stage
