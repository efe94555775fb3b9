"""Plans a run from a config and executes it step by step, with resume by fingerprint.

- A step's fingerprint = hash(parent's fingerprint, stage name, resolved params, curate version); the
  ingest step hashes its inputs' paths, sizes and modification times instead of a parent.
- A step whose kept and rejected manifests carry its fingerprint is skipped.
- An interrupted step keeps the receipts of its finished tasks; a re-run does only the missing ones.
- The rejected manifest is written before the kept one: a kept manifest means the step is complete.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate import __version__
from curate.config import PipelineConfig, resolved_config
from curate.dataset import MANIFEST, Dataset, ShardInfo, atomic_write_text, write_manifest
from curate.errors import CurateError
from curate.executors import Executor, ThreadExecutor
from curate.hashing import canonical_json, fingerprint
from curate.io.ingest import make_ids_unique
from curate.io.sources import InputUnit, plan_units, units_for
from curate.progress import progress
from curate.rundir import RunDir
from curate.stages import REGISTRY
from curate.tasks import (
    WORK,
    apply_task,
    decide_task,
    ingest_task,
    map_task,
    prepare_task,
    read_receipts,
    summarize_task,
)

log = logging.getLogger("curate")
INGEST_COLUMNS = pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string())])
REJECTED_COLUMNS = pa.schema([("stage", pa.string()), ("reason", pa.string()), ("score", pa.float64())])


@dataclass
class Step:
    index: int
    label: str  # view name in SQL, `stage` value of rejected rows
    stage: str  # registered stage name, or "ingest"
    params: dict[str, Any]
    fingerprint: str
    out_dir: Path
    rejected_dir: Path
    parent: Step | None = None
    units: list[InputUnit] = field(default_factory=list)  # ingest steps only

    @property
    def kind(self) -> str:
        return "ingest" if self.stage == "ingest" else REGISTRY[self.stage].kind


@dataclass
class StepResult:
    label: str
    stage: str
    status: str  # "ran" or "skipped"
    fingerprint: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    seconds: float
    reasons: dict[str, int]


def _input_signature(units: list[InputUnit]) -> list[Any]:
    signature = []
    for unit in units:
        stat = os.stat(unit.path)
        signature.append([asdict(unit), stat.st_size, stat.st_mtime_ns])
    return signature


def _label_of(name: str) -> str:
    """The stage label of a `scores/` or `models/` folder name: `<label>-<16 hex digits of key>`, or `<label>`."""
    return name[:-17] if re.fullmatch(r".+-[0-9a-f]{16}", name) else name


class Runner:
    """Runs a validated config. `executor` decides where tasks run (threads by default)."""

    def __init__(self, config: PipelineConfig, executor: Executor | None = None):
        self.config = config
        self.run_dir = RunDir(config.output_dir())
        self.executor = executor or ThreadExecutor(config.engine.workers, config.engine.retries)
        self.steps = self._plan()

    # ------------------------------------------------------------ planning

    def _ingest_step(self, label: str, units: list[InputUnit], out_dir: Path, rejected_dir: Path) -> Step:
        params = {"shard_rows": self.config.engine.shard_rows}
        fp = fingerprint(label, _input_signature(units), params, __version__)
        return Step(0, label, "ingest", params, fp, out_dir, rejected_dir, units=units)

    def _plan(self) -> list[Step]:
        run = self.run_dir
        steps = [self._ingest_step("ingest", plan_units(self.config), run.stage_dir(0, "ingest"),
                                   run.rejected_dir(0, "ingest"))]
        for i, spec in enumerate(self.config.stage_specs(), start=1):
            parent = steps[-1]
            extra = REGISTRY[spec.name](spec.params).fingerprint_extra()
            fp = fingerprint(parent.fingerprint, spec.name, spec.params, extra, __version__)
            steps.append(Step(i, spec.label, spec.name, spec.params, fp, run.stage_dir(i, spec.label),
                              run.rejected_dir(i, spec.label), parent=parent))
        return steps

    def target_step(self) -> Step | None:
        if self.config.target is None:
            return None
        units = units_for(self.config.target, "target", self.config)
        return self._ingest_step("target", units, self.run_dir.target, self.run_dir.target_rejected)

    # ------------------------------------------------------------ running

    def run(self) -> list[StepResult]:
        run = self.run_dir
        run.write_config(resolved_config(self.config))
        self._remove_stale_outputs()
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        results: list[StepResult] = []
        target = self.target_step()
        for step in ([target] if target else []) + self.steps:
            results.append(self.run_step(step))
            run.write_run_json(self._run_json(results, started, finished=False))
        run.write_run_json(self._run_json(results, started, finished=True))
        return results

    def _remove_stale_outputs(self) -> None:
        """Stage folders of an earlier config that this plan no longer has (derived data only). Stored
        scores and models are kept for every stage still planned, so a changed decision can reuse them."""
        planned = {s.out_dir.name for s in self.steps} | {"target"}  # NN-<label>
        labels = {s.label for s in self.steps}  # scores/ and models/ hold <label>-<key> or <label>
        for folder, owner, kept in [(self.run_dir.stages, str, planned), (self.run_dir.rejected, str, planned),
                                    (self.run_dir.scores, _label_of, labels), (self.run_dir.models, _label_of, labels)]:
            for path in folder.glob("*") if folder.is_dir() else []:
                if path.is_dir() and owner(path.name) not in kept:
                    log.info("removing %s: not a stage of this config", path)
                    shutil.rmtree(path)

    def is_done(self, step: Step) -> bool:
        for path in (step.rejected_dir, step.out_dir):
            if not Dataset.exists(path) or Dataset.open(path).fingerprint != step.fingerprint:
                return False
        return True

    def run_step(self, step: Step) -> StepResult:
        if self.is_done(step):
            stats = Dataset.open(step.out_dir).stats
            log.info("%s: done before (fingerprint %s), skipped", step.label, step.fingerprint[:12])
            return self._result(step, "skipped", stats)
        self._prepare(step)
        start = time.perf_counter()
        key = step.label
        if step.kind == "ingest":
            progress().start(key, f"{step.label} ({len(step.units)} files)", None)
            calls = [(u, str(step.out_dir), str(step.rejected_dir), step.params["shard_rows"], step.label, key)
                     for u in step.units]
            self.executor.map(ingest_task, calls, [f"{step.label}[{Path(u.path).name}]" for u in step.units])
        else:
            parent = Dataset.open(step.parent.out_dir)
            REGISTRY[step.stage](step.params).check_input(parent.schema)
            if step.kind == "map":
                self._run_map(step, parent)
            else:
                self._run_global(step, parent)
        progress().finish(key)
        stats = self._finalize(step, time.perf_counter() - start)
        return self._result(step, "ran", stats)

    def _prepare(self, step: Step) -> None:
        """Keep a half-done step's finished tasks only if it was started with the same fingerprint."""
        pending = step.out_dir / "_pending.json"
        same = pending.is_file() and pending.read_text().strip() == step.fingerprint
        if not same:
            for path in (step.out_dir, step.rejected_dir):
                shutil.rmtree(path, ignore_errors=True)
        for path in (step.out_dir, step.rejected_dir):
            path.mkdir(parents=True, exist_ok=True)
        for path in (step.out_dir / MANIFEST, step.rejected_dir / MANIFEST):
            path.unlink(missing_ok=True)
        atomic_write_text(pending, step.fingerprint)

    def _shard_calls(self, step: Step, parent: Dataset, fn_args) -> tuple[list[tuple], list[str]]:
        shards = parent.shard_names
        return [fn_args(s) for s in shards], [f"{step.label}[{s.removesuffix('.parquet')}]" for s in shards]

    def _run_map(self, step: Step, parent: Dataset) -> None:
        key = step.label
        progress().start(key, step.label, parent.count())
        calls, names = self._shard_calls(step, parent, lambda s: (
            step.stage, step.params, step.label, str(parent.path), s, str(step.out_dir),
            str(step.rejected_dir), key))
        self.executor.map(map_task, calls, names)

    def summary_dir(self, step: Step) -> Path:
        """Where a global stage's summaries go: kept under scores/ (by what decides them) for scorers."""
        stage = REGISTRY[step.stage](step.params)
        if not getattr(stage, "keep_summaries", False):
            return step.out_dir / WORK
        key = fingerprint(step.parent.fingerprint, step.stage, stage.summary_params(), stage.fingerprint_extra(),
                          __version__)
        return self.run_dir.scores / f"{step.label}-{key[:16]}"

    def _run_global(self, step: Step, parent: Dataset) -> None:
        work = step.out_dir / WORK
        work.mkdir(exist_ok=True)
        summaries = self.summary_dir(step)
        summaries.mkdir(parents=True, exist_ok=True)
        target = str(self.run_dir.target) if Dataset.exists(self.run_dir.target) else None
        models = self.run_dir.models / summaries.name if summaries != work else self.run_dir.models / step.label
        prepared = self.executor.call(prepare_task, (
            step.stage, step.params, step.label, str(parent.path), target, str(models), str(summaries)),
            f"{step.label}:prepare")
        key = f"{step.label}:summarize"
        progress().start(key, f"{step.label} (summarize)", parent.count())
        calls, names = self._shard_calls(step, parent, lambda s: (
            step.stage, step.params, str(parent.path), s, str(summaries), key, prepared))
        self.executor.map(summarize_task, calls, [f"{n}:summarize" for n in names])
        progress().finish(key)
        if parent.count():
            self.executor.call(decide_task, (step.stage, step.params, str(parent.path), str(summaries), str(work),
                                             prepared), f"{step.label}:decide")
        key = step.label
        progress().start(key, f"{step.label} (apply)", parent.count())
        calls, names = self._shard_calls(step, parent, lambda s: (
            step.label, str(parent.path), s, str(work), str(step.out_dir), str(step.rejected_dir), key))
        self.executor.map(apply_task, calls, names)

    def _finalize(self, step: Step, seconds: float) -> dict[str, Any]:
        receipts = read_receipts(step.out_dir)
        kept = [ShardInfo(**s) for r in receipts for s in r["kept"]]
        rejected = [ShardInfo(**s) for r in receipts for s in r["rejected"]]
        rows_in = sum(r["rows_in"] for r in receipts)
        renamed = 0
        if step.kind == "ingest":
            kept, renamed = make_ids_unique(str(step.out_dir), kept)
            schema = None if kept else INGEST_COLUMNS
        else:
            schema = None if kept else Dataset.open(step.parent.out_dir).schema
        rows_out, rows_rejected = sum(s.rows for s in kept), sum(s.rows for s in rejected)
        if rows_in != rows_out + rows_rejected:
            raise CurateError(f"{step.label}: {rows_in} rows read but {rows_out} kept + {rows_rejected} "
                              "rejected; the stage lost rows (a bug, please report it)")
        if step.parent is not None and rows_in != Dataset.open(step.parent.out_dir).count():
            raise CurateError(f"{step.label}: read {rows_in} rows, its input has a different count")
        reasons = Counter()
        for shard in rejected:
            column = pq.read_table(step.rejected_dir / shard.file, columns=["reason"]).column("reason")
            reasons.update(column.to_pylist())
        stats = {"rows_in": rows_in, "rows_out": rows_out, "rows_rejected": rows_rejected,
                 "seconds": round(seconds, 3), "reasons": dict(reasons.most_common()),
                 "ids_renamed": renamed}
        parents = [step.parent.fingerprint] if step.parent else []
        common = {"fingerprint": step.fingerprint, "parents": parents, "stage": step.label,
                  "config": {"stage": step.stage, **step.params}, "stats": stats}
        write_manifest(step.rejected_dir, rejected, schema=None if rejected else REJECTED_COLUMNS, **common)
        write_manifest(step.out_dir, kept, schema=schema, **common)
        for leftover in (step.out_dir / WORK, step.out_dir / "_tasks"):
            shutil.rmtree(leftover, ignore_errors=True)
        (step.out_dir / "_pending.json").unlink(missing_ok=True)
        log.info("%s: %d in, %d kept, %d rejected in %.1fs", step.label, rows_in, rows_out, rows_rejected,
                 seconds)
        return stats

    @staticmethod
    def _result(step: Step, status: str, stats: dict[str, Any]) -> StepResult:
        return StepResult(step.label, step.stage, status, step.fingerprint, stats.get("rows_in", 0),
                          stats.get("rows_out", 0), stats.get("rows_rejected", 0), stats.get("seconds", 0.0),
                          stats.get("reasons", {}))

    def _run_json(self, results: list[StepResult], started: str, finished: bool) -> dict[str, Any]:
        import duckdb
        import pydantic

        return {
            "name": self.config.name,
            "curate_version": __version__,
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z") if finished else None,
            "config_fingerprint": fingerprint(canonical_json(resolved_config(self.config))),
            "versions": {"python": platform.python_version(), "pyarrow": pa.__version__,
                         "duckdb": duckdb.__version__, "pydantic": pydantic.__version__},
            "steps": [asdict(r) for r in results],
        }


def run_pipeline(config: PipelineConfig, executor: Executor | None = None) -> list[StepResult]:
    """Run a config in-process (no Prefect needed). Returns one result per step."""
    return Runner(config, executor).run()
