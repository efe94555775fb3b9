"""The stage contract (docs/methods.md describes each stage's method; README "Writing a stage" its use).

A stage declares what it reads (`needs`: required columns; `uses`: columns read when present), what it
writes (`adds`: new columns, or columns it replaces), what one worker uses (`resources`), its parameters (a
pydantic model), how many inputs it takes (`inputs`) and what kind of output it has (`output`). It never knows
which engine runs it. Declarations that depend on the parameters are set in `configure()`.

Three kinds of stage:
- a `MapStage` looks at one table of rows at a time and returns a `Decision` about those rows;
- a `GlobalStage` first `summarize`s each shard (a map step: ids, signatures, scores), then `decide`s once
  over all summaries; the decision is applied shard by shard;
- an `ArtifactStage` reads its input and `build`s files (a model, metrics) instead of rows.

Three kinds of output (`output`): `rows` (each input row is kept or dropped: rows in = kept + rejected),
`rows_added` (also new rows, each with a new unique `id` and the `parent_id` it comes from, counted apart), and
`artifacts` (files under the run's `models/<label>/` or `eval/<label>/`, with their own manifest).

A `Decision` keeps scoring and deciding apart from the bookkeeping: every stage drops rows the same way, with
a reason, the deciding score and the original row, so `apply_decision` (`curate.stages.decision`) is the only
place that splits rows.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from curate.data.errors import CurateError, ParamsError, pydantic_problems
from curate.stages.decision import Decision, apply_decision, output_rows

# names -> classes and per-worker instances live apart; stage modules import `register` from here, as before
from curate.stages.registry import REGISTRY, ready_stage, register, release_stages

__all__ = ["REGISTRY", "ArtifactStage", "GlobalStage", "MapStage", "Params", "Resources", "Stage", "StageContext",
           "apply_decision", "ready_stage", "register", "release_stages"]

Output = Literal["rows", "rows_added", "artifacts"]


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; engines use it to place work (Ray) or size pools."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None


class Params(BaseModel):
    """Base of every stage's parameters: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelOrStep(Params):
    """A model a stage loads: a local folder or hub id (`model`), or the model a `finetune` step of the run trained
    (`model_from`, its label); exactly one. `role` names it in the error."""

    role: ClassVar[str] = "model"
    model: str | None = None
    model_from: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ModelOrStep:
        if (self.model is None) == (self.model_from is None):
            raise ValueError(f"name {self.role} with `model` (a folder or hub id) or `model_from` (a finetune step), "
                             "one of them")
        return self


class Rows(Protocol):
    """Random access to a stage's input rows by global position (for decisions that need text)."""

    schema: pa.Schema

    def take(self, indices: np.ndarray, columns: Sequence[str]) -> pa.Table: ...


class TableRows:
    """`Rows` over an in-memory table (notebooks, tests)."""

    def __init__(self, table: pa.Table):
        self.table = table
        self.schema = table.schema

    def take(self, indices: np.ndarray, columns: Sequence[str]) -> pa.Table:
        return self.table.select(list(columns)).take(pa.array(indices, pa.int64()))


@dataclass(frozen=True)
class StageContext:
    """What `prepare` (global stages) and `build` (artifact stages) may use: the step's input, the run's
    `target:` sample (its selection part) and `heldout:` rows, a folder of the step's own, its label."""

    input: Any  # curate.data.inputs.StepInput (not imported here: it imports this module's users)
    target: Any | None
    models_dir: Path
    label: str
    heldout: Any | None = None
    input_labels: tuple[str, ...] = ()
    step_models: dict[str, Path] = field(default_factory=dict)  # label -> model folder of `model_steps()`


class Stage:
    """One step of a pipeline. Subclasses set the class attributes and implement MapStage/GlobalStage/ArtifactStage.

    Declarations (class attributes; `configure()` may set them per instance from the parameters):
    `needs` columns that must exist, `uses` columns read when present, `adds` columns written, `resources`,
    `requires` (import names of optional packages), `inputs` ("one" or "many"), `output`.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    needs: tuple[str, ...] = ("id", "text")
    uses: tuple[str, ...] = ()
    adds: tuple[str, ...] = ()
    report_score: ClassVar[str | None] = None  # the column the report shows as a histogram with the cut
    higher_is_better: ClassVar[bool] = True  # the direction of `report_score` (`curate budget` ranks by it)
    resources: Resources = Resources()
    requires: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[Literal["one", "many"]] = "one"
    output: ClassVar[Output] = "rows"
    batch_rows: ClassVar[int] = 8192  # rows per table handed to `process` / `summarize`
    # Runs with no other step beside it (curate.engine.schedule): a stage that trains with torch's process-wide
    # random state, whose results would otherwise depend on what ran at the same time
    exclusive: bool = False
    # Drop reasons (prefixes) that are the stage's selection budget at work, not a filter: a run warns when a step
    # drops more than `warn_drop_share` of its rows for other reasons (curate.engine.drops)
    selection_reasons: ClassVar[tuple[str, ...]] = ("not_selected",)
    # Columns a rejected row keeps when its stage records drops by reference (None: the whole row, the default)
    rejected_reference: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, params: Params | dict[str, Any] | None = None, /, **kwargs: Any):
        if isinstance(params, BaseModel):
            self.params = params
        else:
            try:
                self.params = self.Params.model_validate({**(params or {}), **kwargs})
            except ValidationError as error:  # the lines a YAML config gets, after `stages[i].`
                raise ParamsError(pydantic_problems(error, f"{self.name}.", lambda _loc: ", ".join(
                    self.Params.model_fields) or "(none)")) from None
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise CurateError(f"stage '{self.name}' needs the package(s) {missing}; install them with pip")
        self._setup_done = False
        self._setup_lock = threading.Lock()
        self.prepared: dict[str, Any] = {}  # set from `prepare`'s artifacts by the runner's tasks
        self.configure()
        self._constructed = set(vars(self)) | {"_constructed"}

    def configure(self) -> None:
        """Set the declarations that depend on the parameters (`needs`, `uses`, `adds`, `resources`)."""

    def setup(self) -> None:
        """Load models or tables: called once per worker before any rows (see `ensure_setup`)."""

    def teardown(self) -> None:
        """Release what `setup` loaded (models, tables): called when the step ends. By default every attribute set
        since construction is dropped, so the models it held can be freed."""
        for name in set(vars(self)) - self._constructed:
            delattr(self, name)
        self._setup_done = False

    def prepare(self, context: StageContext) -> dict[str, Any]:
        """Once per run of the step, before any shard is read (a global stage: before the summaries): train an
        auxiliary model, compute statistics over all rows. The JSON-able artifacts it returns (paths) reach every
        worker's instance as `self.prepared`, before `setup`. A map stage that overrides it gets it run too."""
        return {}

    def model_steps(self) -> dict[str, str]:
        """The `finetune` steps of the run whose models the stage loads, by parameter key (`correct.model_from`):
        they run first, their fingerprints are part of the stage's, and `prepare` finds their folders in
        `context.step_models`."""
        return {}

    def ensure_setup(self) -> None:
        """Run `setup()` once for this instance, whoever asks first (the runner's workers, `__call__`)."""
        if self._setup_done:
            return
        with self._setup_lock:
            if not self._setup_done:
                self.setup()
                self._setup_done = True

    def config(self) -> dict[str, Any]:
        """The resolved parameters: part of the stage's fingerprint."""
        return self.params.model_dump(mode="json")

    def samples(self) -> tuple[str, ...]:
        """The run-level samples the stage reads (`target`, `heldout`): the config must have them (checked before
        any work), and their fingerprints are part of the stage's."""
        return ()

    def models(self) -> dict[str, str]:
        """The models the stage loads, by parameter key (`prior.model`): a name that can only be a path must be an
        existing folder, which is checked before any work."""
        return {}

    def files(self) -> dict[str, str]:
        """Files or folders the stage reads, by parameter key (`against[0].path`): each must exist, which is checked
        before any work (relative paths: to the working directory, as model folders)."""
        return {}

    def fingerprint_extra(self) -> dict[str, Any]:
        """What else decides the output besides the parameters (e.g. the files of a model named by path),
        so that a re-run redoes the stage when it changes. Cheap: called when a run is planned."""
        return {}

    def graph_defaults(self, readers: Sequence[Any], ancestors: Sequence[Any] = ()) -> dict[str, Any]:
        """Parameter values taken from the steps that read this one, or from those upstream of it (nearest
        first; both as `StageSpec`s), for parameters the config left unset; e.g. a mixture counts tokens with
        the tokenizer of the model trained on it."""
        return {}

    def reads_steps(self) -> tuple[str, ...]:
        """Labels of further steps the stage reads, named in its parameters (an evaluation's `pool`): they join
        its `from:` inputs, after them."""
        return ()

    def check_inputs(self, labels: Sequence[str]) -> str | None:
        """A problem with the input steps (`from:`) as `<key>: <what is wrong>`, or None."""
        if self.inputs == "one" and len(labels) != 1:
            return f"from: stage {self.name!r} takes one input step, got {len(labels)} ({', '.join(labels)})"
        if self.inputs == "many" and len(labels) < 2:
            return (f"from: stage {self.name!r} takes several input steps (a list of labels), got one "
                    f"({', '.join(labels)})")
        return None

    def check_input(self, schema: pa.Schema) -> None:
        missing = [c for c in self.needs if c not in schema.names]
        if missing:
            raise CurateError(f"stage '{self.name}' needs column(s) {missing}; its input has {schema.names}")

    def reads(self, schema: pa.Schema) -> list[str]:
        """The columns handed to `process` / `summarize`: `needs`, and `uses` where present."""
        wanted = dict.fromkeys([*self.needs, *(c for c in self.uses if c in schema.names)])
        return list(wanted)

    def output_columns(self, columns: Sequence[str]) -> list[str] | None:
        """The columns (of `columns`, the input's plus the written ones) that the output keeps, in order; None
        keeps them all. Used where a decision places rows (`Decision.positions`)."""
        return None

    def check_decision(self, decision: Decision) -> None:
        """The declaration is the truth: a stage writes only the columns it declares in `adds`, and only a
        `rows_added` stage adds rows."""
        undeclared = sorted(set(decision.adds) - set(self.adds))
        if undeclared:
            raise CurateError(f"stage '{self.name}' wrote column(s) {undeclared} that it does not declare in `adds` "
                              f"{list(self.adds)} (a bug in the stage)")
        if self.output != "rows_added" and (decision.added is not None or decision.positions is not None):
            raise CurateError(f"stage '{self.name}' added rows but declares output {self.output!r}, not 'rows_added'")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


class MapStage(Stage):
    """Shard-local: decides about each table of rows alone. Safe to run on many workers at once."""

    kind = "map"

    def process(self, table: pa.Table) -> Decision:
        raise NotImplementedError

    def __call__(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Run on an in-memory table: returns (output rows, rejected rows)."""
        self.ensure_setup()
        decision = self.process(table.select(self.reads(table.schema)))
        self.check_decision(decision)
        return output_rows(apply_decision(table, decision, self.name))


class GlobalStage(Stage):
    """Needs all rows at once, but only a few columns: summarize per shard, decide once, apply per shard.

    Optional: `prepare(context)` runs once before the summaries (e.g. to train auxiliary models on the input
    and the target); the JSON-able artifacts it returns (model paths) reach every worker's instance as
    `self.prepared`. With `keep_summaries`, summaries (scores) are stored under the run's `scores/`, keyed
    by `summary_params()`: a new decision (another budget or threshold) re-uses them without re-scoring.
    A stage whose decision places rows (`Decision.positions`) writes shards of `ordered_shard_rows()` rows.
    """

    kind = "global"
    keep_summaries: ClassVar[bool] = False
    report_file: ClassVar[str | None] = None  # where a decision's `report` goes in the step's folder
    # the summary columns `decide` gets (None: all); it may read others by row from `self.summaries`
    decide_columns: ClassVar[tuple[str, ...] | None] = None
    summaries: Any = None  # a `curate.data.summaries.SummaryShards`, set before `decide` in a run

    def decision_bytes_per_row(self) -> int | None:
        """About how many bytes the decision holds per input row (None: not known); `curate validate` and
        `curate inspect` warn when a run's rows would need more than the machine has
        (`curate.engine.memory_estimate`)."""
        return None

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

    def ordered_shard_rows(self) -> int:
        """Rows per output shard when the decision places rows (`Decision.positions`)."""
        return 100_000

    def __call__(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        self.ensure_setup()
        reads = self.reads(table.schema)
        summaries = [self.summarize(table.select(reads).slice(i, self.batch_rows))
                     for i in range(0, max(table.num_rows, 1), self.batch_rows)]
        decision = self.decide(pa.concat_tables(summaries), TableRows(table))
        self.check_decision(decision)
        return output_rows(apply_decision(table, decision, self.name))


class ArtifactStage(Stage):
    """Reads its input and builds files (a model, metrics) under the run's `<artifact_root>/<label>/`.

    `build(context, out_dir)` writes the files and returns the metrics (JSON-able) that the step's manifest
    records beside the files' sha256. An interrupted build may resume from what it left in `out_dir`. The step
    has no rows of its own: its SQL view is its input.
    """

    kind = "artifact"
    output = "artifacts"
    artifact_root: ClassVar[Literal["models", "eval"]] = "models"

    def build(self, context: StageContext, out_dir: Path) -> dict[str, Any]:
        raise NotImplementedError

    # A build made of independent pieces (an evaluation's arm x seed trainings) names them in `units`; each then
    # runs as its own task (`build_unit`), and a finished one is not redone when an interrupted step resumes.
    # `combine` turns their results into the metrics. A stage without units implements `build` only.

    def units(self, context: StageContext, out_dir: Path) -> list[str]:
        """Names of the build's independent pieces (before them; may write shared files). Asked again once they
        are done: a build in rounds returns the pieces so far plus the next round's, and the same list when it
        has no more (`combine` then gets every piece's result)."""
        return []

    def build_unit(self, context: StageContext, out_dir: Path, unit: str) -> dict[str, Any]:
        raise NotImplementedError

    def combine(self, context: StageContext, out_dir: Path, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError
