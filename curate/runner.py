"""Executes a planned run step by step, with resume by fingerprint (the plan: `curate.plan`).

- A step whose manifests carry its fingerprint is skipped (rows: the kept and the rejected datasets; artifacts:
  the artifact manifest).
- An interrupted step keeps the receipts of its finished tasks; a re-run does only the missing ones.
- The rejected manifest is written before the kept one: a kept manifest means the step is complete.
- Every step's counts are checked: rows in = kept + rejected, and rows out = kept + added.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import __version__
from curate.artifacts import ARTIFACT_MANIFEST, Artifacts, write_artifacts
from curate.config import PipelineConfig, resolved_config
from curate.dataset import (
    MANIFEST,
    META,
    Dataset,
    ShardInfo,
    atomic_write_text,
    conform_shards,
    meta_dir,
    remove_dataset,
    write_manifest,
)
from curate.drops import drop_warning
from curate.errors import CurateError
from curate.executors import Executor, ThreadExecutor
from curate.hashing import canonical_json, file_sha256, fingerprint
from curate.heldout import exclude_heldout, split_heldout
from curate.inputs import StepInput
from curate.io.ingest import make_ids_unique
from curate.plan import Plan, Step, plan_run
from curate.progress import progress
from curate.reuse import drop_previous, previous_dir, set_aside, write_record
from curate.rundir import TABLES, RunDir
from curate.runlock import claim, run_lock
from curate.stages import REGISTRY
from curate.stages.base import Stage
from curate.stages.decision import PARENT_ID
from curate.tasks import (
    RECEIPTS,
    WORK,
    StepTask,
    apply_task,
    build_task,
    combine_task,
    decide_task,
    gather_task,
    ingest_task,
    map_task,
    prepare_task,
    read_receipts,
    summarize_task,
    unit_task,
    units_task,
)

log = logging.getLogger("curate")
INGEST_COLUMNS = pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string())])
REJECTED_COLUMNS = pa.schema([("stage", pa.string()), ("reason", pa.string()), ("score", pa.float64())])


@dataclass
class StepResult:
    label: str
    stage: str
    status: str  # "ran" or "skipped"
    fingerprint: str
    rows_in: int
    rows_out: int  # rows in the step's output: kept + added
    rows_rejected: int
    seconds: float
    reasons: dict[str, int]
    rows_kept: int = 0
    rows_added: int = 0
    output: str = "rows"
    parents: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # artifact steps


def _written_by_curate(path: Path) -> bool:
    """Whether a folder under a run's stages/, rejected/, models/, eval/ or scores/ is curate's: a dataset or its
    `.meta` folder, an artifact folder (its manifest, or the marker of an unfinished build), or a folder named by a
    stored key (`<label>-<16 hex digits>`)."""
    if path.name.endswith(META):
        return any((path / name).exists() for name in (MANIFEST, "_pending.json", RECEIPTS, WORK))
    return (Dataset.exists(path) or (meta_dir(path) / "_pending.json").is_file() or (path / ARTIFACT_MANIFEST).is_file()
            or (path / "_pending.json").is_file() or re.fullmatch(r".+-[0-9a-f]{16}", path.name) is not None)


def _label_of(name: str) -> str:
    """The stage label of a `scores/` or `models/` folder name: `<label>-<16 hex digits of key>`, or `<label>`."""
    return name[:-17] if re.fullmatch(r".+-[0-9a-f]{16}", name) else name


class Runner:
    """Runs a validated config. `executor` decides where tasks run (threads by default)."""

    def __init__(self, config: PipelineConfig, executor: Executor | None = None):
        self.config = config
        self.run_dir = RunDir(config.output_dir())
        self.executor = executor or ThreadExecutor(config.engine.workers, config.engine.retries)
        self.plan: Plan = plan_run(config, self.run_dir)
        self.steps = self.plan.steps
        self.warnings: list[dict[str, Any]] = []  # steps that dropped much besides their budget (curate.drops)

    # ------------------------------------------------------------ running

    def run(self) -> list[StepResult]:
        claim(self.run_dir.root)  # a new, empty or curate's own folder (curate.runlock)
        with run_lock(self.run_dir.root, f"curate run {self.config.name}"):
            return self._run()

    def _run(self) -> list[StepResult]:
        run = self.run_dir
        run.write_config(resolved_config(self.config))
        self._remove_stale_outputs()
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        results: list[StepResult] = []
        run.write_run_json(self._run_json(results, started, finished=False))  # the plan, before any step: a run
        # stopped early still says which steps it meant to write (`open_run(...).missing`)
        for step in self.plan.samples + self.plan.steps:
            result = self.run_step(step)
            results.append(result)
            self._warn_drops(step, result)
            run.write_run_json(self._run_json(results, started, finished=False))
        run.write_run_json(self._run_json(results, started, finished=True))
        return results

    def _remove_stale_outputs(self) -> None:
        """Step folders of an earlier config that this plan no longer has (derived data only). Stored scores and
        models are kept for every stage still planned, so a changed decision can reuse them."""
        planned = {s.out_dir.name for s in self.steps if s.output != "artifacts"}  # NN-<label>
        labels = {s.label for s in self.steps}  # scores/, models/ and eval/ hold <label>-<key> or <label>
        run = self.run_dir
        step_folder = lambda name: name.removesuffix(META)  # noqa: E731  (a step folder, or its .meta folder)
        for folder, owner, kept in [(run.stages, step_folder, planned),
                                    (run.rejected, step_folder, planned | {"target", "heldout"}),
                                    (run.scores, _label_of, labels), (run.models, _label_of, labels),
                                    (run.eval, _label_of, labels)]:
            for path in folder.glob("*") if folder.is_dir() else []:
                if not path.is_dir() or owner(path.name) in kept:
                    continue
                if not _written_by_curate(path):
                    log.warning("left %s: not a step of this config, but not written by curate either", path)
                    continue
                log.info("removing %s: not a step of this config", path)
                shutil.rmtree(path)
        staged = any(s.kind in ("split", "exclude") for s in self.plan.samples)  # the target is read from target_all
        stale = ([run.heldout, run.heldout_rejected] if self.plan.heldout is None else []) + (
            [run.target_all] if not staged else [])
        for path in stale:
            remove_dataset(path)
        if self.plan.split is None:
            run.heldout_split.unlink(missing_ok=True)
        if not any(s.kind == "exclude" for s in self.plan.samples):
            run.heldout_overlap.unlink(missing_ok=True)

    def _warn_drops(self, step: Step, result: StepResult) -> None:
        """A step that dropped more than `warn_drop_share` of its rows besides its budget: named (curate.drops)."""
        if step.output == "artifacts" or step.kind in ("split", "exclude"):
            return
        selection = REGISTRY[step.stage].selection_reasons if step.stage in REGISTRY else ()
        warning = drop_warning(step.label, result.rows_in, result.reasons, selection, self.config.warn_drop_share)
        if warning is not None:
            log.warning("%s", warning["message"])
            self.warnings.append(warning)

    def is_done(self, step: Step) -> bool:
        if step.output == "artifacts":
            return Artifacts.exists(step.out_dir) and Artifacts.open(step.out_dir).fingerprint == step.fingerprint
        folders = ([self.run_dir.target, step.out_dir] if step.kind == "split" else [step.out_dir]
                   if step.kind == "exclude" else [step.rejected_dir, step.out_dir])
        return all(Dataset.exists(p) and Dataset.open(p).fingerprint == step.fingerprint for p in folders)

    def run_step(self, step: Step) -> StepResult:
        if self.is_done(step):
            log.info("%s: done before (fingerprint %s), skipped", step.label, step.fingerprint[:12])
            return self._result(step, "skipped", self._stats(step))
        self._prepare(step)
        start = time.perf_counter()
        task = self._task(step)
        if step.kind == "ingest":
            progress().start(task.key, f"{step.label} ({len(step.units)} files)", None)
            self.executor.map(ingest_task, [(task, u, step.params["shard_rows"]) for u in step.units],
                              [f"{step.label}[{Path(u.path).name}]" for u in step.units])
        elif step.kind == "split":
            split_heldout(self.run_dir, step, time.perf_counter())
            return self._result(step, "ran", self._stats(step))
        elif step.kind == "exclude":
            exclude_heldout(self.run_dir, step, time.perf_counter())
            return self._result(step, "ran", self._stats(step))
        else:
            step_input = task.input()
            step.instance().check_input(step_input.schema)
            if step.kind == "map":
                self._run_map(step, task, step_input)
            elif step.kind == "global":
                self._run_global(step, task, step_input)
            else:
                return self._run_artifact(step, task, start)
        progress().finish(task.key)
        stats = self._finalize(step, time.perf_counter() - start)
        return self._result(step, "ran", stats)

    def _task(self, step: Step) -> StepTask:
        dirs = () if step.kind in ("ingest", "split", "exclude") else tuple(str(d) for d in self.plan.input_dirs(step))
        work = bookkeeping_dir(step) / WORK
        models = {m: str(self.plan.step(m).out_dir) for m in step.model_steps}
        task = StepTask(step.label, step.stage, step.params, dirs, step.parents, str(step.out_dir),
                        str(step.rejected_dir or ""), str(work), str(work), {}, models, step.label)
        if not self._reusable(step):
            return task
        root = self.run_dir.root
        # what decides a task's output besides the one input it reads (curate.reuse)
        key = fingerprint(step.stage, step.params, {m: self.plan.step(m).fingerprint for m in step.model_steps},
                          {s: self.plan.sample_fingerprints()[s] for s in step.samples}, __version__)
        return StepTask(**{**asdict(task), "reuse_key": key,
                           "previous_out": str(previous_dir(root, step.out_dir)),
                           "previous_rejected": str(previous_dir(root, step.rejected_dir))})

    def _reusable(self, step: Step) -> bool:
        """Steps whose tasks may take over finished work of their previous version: the graph's row steps."""
        return step.kind in ("ingest", "map", "global") and step.rejected_dir is not None and (
            step.out_dir.parent == self.run_dir.stages)

    def _prepare(self, step: Step) -> None:
        """Keep a half-done step's finished tasks only if it was started with the same fingerprint. A finished
        version with another fingerprint is set aside, for tasks that would compute what it holds (curate.reuse)."""
        folders = [p for p in (step.out_dir, step.rejected_dir) if p is not None]
        pending = bookkeeping_dir(step) / "_pending.json"
        same = pending.is_file() and pending.read_text().strip() == step.fingerprint
        if not same and self._reusable(step):
            set_aside(self.run_dir.root, folders)  # moves a finished version aside, removes an unfinished one
        elif not same:
            for path in folders:
                remove_dataset(path)
        for path in folders:
            path.mkdir(parents=True, exist_ok=True)
            if step.output == "artifacts":
                (path / ARTIFACT_MANIFEST).unlink(missing_ok=True)
            else:
                meta_dir(path).mkdir(exist_ok=True)
                (meta_dir(path) / MANIFEST).unlink(missing_ok=True)
            for partial in [*path.rglob(".*.tmp-*"), *meta_dir(path).rglob(".*.tmp-*")]:  # what a killed run was
                partial.unlink(missing_ok=True)  # writing: never read, now gone
        atomic_write_text(pending, step.fingerprint)

    def _map(self, fn: Any, step: Step, calls: list[tuple], names: list[str]) -> list[Any]:
        return self.executor.map(fn, calls, names, resources=step.resources)

    def _run_map(self, step: Step, task: StepTask, step_input: StepInput) -> None:
        if type(step.instance()).prepare is not Stage.prepare:  # a map stage with a one-off preparation
            Path(task.work_dir).mkdir(exist_ok=True)
            target, heldout = self._sample_dirs(step)
            prepared = self.executor.call(prepare_task, (task, target, heldout, str(self.run_dir.models / step.label)),
                                          f"{step.label}:prepare")
            task = StepTask(**{**asdict(task), "prepared": prepared})
        progress().start(task.key, step.label, step_input.count())
        refs = step_input.shard_names
        self._map(map_task, step, [(task, r) for r in refs], [f"{step.label}[{_short(r)}]" for r in refs])

    def summary_dir(self, step: Step) -> Path:
        """Where a global stage's summaries go: kept under scores/ (by what decides them) for scorers."""
        stage = step.instance()
        if not getattr(stage, "keep_summaries", False):
            return bookkeeping_dir(step) / WORK
        parents = [self.plan.step(p).fingerprint for p in step.parents]
        samples = {s: self.plan.sample_fingerprints()[s] for s in step.samples}
        key = fingerprint(parents, step.stage, stage.summary_params(), stage.fingerprint_extra(), samples,
                          __version__)
        return self.run_dir.scores / f"{step.label}-{key[:16]}"

    def _sample_dirs(self, step: Step) -> tuple[str | None, str | None]:
        target = str(self.plan.target) if "target" in step.samples and self.plan.target else None
        heldout = str(self.plan.heldout) if "heldout" in step.samples and self.plan.heldout else None
        return target, heldout

    def _run_global(self, step: Step, task: StepTask, step_input: StepInput) -> None:
        work = Path(task.work_dir)
        work.mkdir(exist_ok=True)
        summaries = self.summary_dir(step)
        summaries.mkdir(parents=True, exist_ok=True)
        for partial in summaries.glob(".*.tmp-*"):  # what a killed run was writing: never read, now gone
            partial.unlink(missing_ok=True)
        models = self.run_dir.models / (summaries.name if summaries != work else step.label)
        others = tuple(str(p) for p in sorted(self.run_dir.scores.glob(f"{step.label}-*"))
                       if p.is_dir() and p != summaries) if summaries != work else ()
        task = StepTask(**{**asdict(task), "summary_dir": str(summaries), "key": f"{step.label}:summarize",
                           "other_summaries": others})
        target, heldout = self._sample_dirs(step)
        prepared = self.executor.call(prepare_task, (task, target, heldout, str(models)), f"{step.label}:prepare")
        task = StepTask(**{**asdict(task), "prepared": prepared})
        refs = step_input.shard_names
        progress().start(task.key, f"{step.label} (summarize)", step_input.count())
        self._map(summarize_task, step, [(task, r) for r in refs], [f"{step.label}[{_short(r)}]:summarize"
                                                                    for r in refs])
        progress().finish(task.key)
        decided = self.executor.call(decide_task, (task,), f"{step.label}:decide") if step_input.count() else {}
        task = StepTask(**{**asdict(task), "key": step.label})
        progress().start(task.key, f"{step.label} (apply)", step_input.count())
        self._map(apply_task, step, [(task, r) for r in refs], [f"{step.label}[{_short(r)}]" for r in refs])
        if "output_rows" in decided:
            buckets = -(-decided["output_rows"] // decided["shard_rows"])
            self._map(gather_task, step, [(task, b) for b in range(buckets)],
                      [f"{step.label}[part-{b:05d}]:gather" for b in range(buckets)])

    def _run_artifact(self, step: Step, task: StepTask, start: float) -> StepResult:
        target, heldout = self._sample_dirs(step)
        units = self.executor.call(units_task, (task, target, heldout), f"{step.label}:units")
        if units:
            done = self.executor.map(unit_task, [(task, target, heldout, u) for u in units],
                                     [f"{step.label}[{u}]" for u in units], resources=step.resources)
            metrics = self.executor.call(combine_task, (task, target, heldout, dict(zip(units, done, strict=True))),
                                         f"{step.label}:combine")
            shutil.rmtree(step.out_dir / RECEIPTS, ignore_errors=True)
        else:
            metrics = self.executor.call(build_task, (task, target, heldout), f"{step.label}:build")
        rows = Dataset.open(self.plan.input_dirs(step)[0]).count()
        stats = {"rows_in": rows, "rows_out": 0, "rows_kept": 0, "rows_rejected": 0, "rows_added": 0,
                 "seconds": round(time.perf_counter() - start, 3), "reasons": {}}
        write_artifacts(step.out_dir, fingerprint=step.fingerprint,
                        parents=[self.plan.step(p).fingerprint for p in step.parents], stage=step.label,
                        config={"stage": step.stage, **step.params}, metrics=metrics, stats=stats)
        (step.out_dir / "_pending.json").unlink(missing_ok=True)
        log.info("%s: built %s in %.1fs", step.label, step.out_dir, stats["seconds"])
        return self._result(step, "ran", stats, metrics)

    def _finalize(self, step: Step, seconds: float) -> dict[str, Any]:
        receipts = read_receipts(step.out_dir)
        kept = [ShardInfo(**s) for r in receipts for s in r["kept"]]
        rejected = [ShardInfo(**s) for r in receipts for s in r["rejected"]]
        rows_in = sum(r["rows_in"] for r in receipts)
        rows_kept = sum(r.get("rows_kept", 0) for r in receipts)
        rows_added = sum(r.get("rows_added", 0) for r in receipts)
        renamed = 0
        if step.kind == "ingest":
            kept, renamed = make_ids_unique(str(step.out_dir), kept)
            # a run killed after renaming ids left shards whose receipts hold their old sha256: hash what is there
            kept = [ShardInfo(s.file, s.rows, file_sha256(str(step.out_dir / s.file))) for s in kept]
            rows_kept = sum(s.rows for s in kept)
            schema = None if kept else INGEST_COLUMNS
        else:
            schema = None if kept else StepInput.open(self.plan.input_dirs(step), step.parents).schema
        # shards written apart can disagree in kind on a column's type: the few that do are rewritten (idempotent,
        # so a finalize killed half-way redoes it)
        kept, rejected = conform_shards(step.out_dir, kept), conform_shards(step.rejected_dir, rejected)
        rows_out, rows_rejected = sum(s.rows for s in kept), sum(s.rows for s in rejected)
        if rows_in != rows_kept + rows_rejected or rows_out != rows_kept + rows_added:
            raise CurateError(f"{step.label}: {rows_in} rows read, {rows_kept} kept + {rows_rejected} rejected, "
                              f"{rows_out} written with {rows_added} added; the stage lost rows (a bug, please "
                              "report it)")
        if step.parents and rows_in != sum(Dataset.open(d).count() for d in self.plan.input_dirs(step)):
            raise CurateError(f"{step.label}: read {rows_in} rows, its input has a different count")
        if step.output == "rows_added":
            self._check_added(step, kept, rows_added)
        reasons = Counter()
        for shard in rejected:
            column = pq.read_table(step.rejected_dir / shard.file, columns=["reason"]).column("reason")
            reasons.update(column.to_pylist())
        stats = {"rows_in": rows_in, "rows_out": rows_out, "rows_kept": rows_kept, "rows_rejected": rows_rejected,
                 "rows_added": rows_added, "seconds": round(seconds, 3), "reasons": dict(reasons.most_common()),
                 "ids_renamed": renamed}
        parents = [self.plan.step(p).fingerprint for p in step.parents]
        common = {"fingerprint": step.fingerprint, "parents": parents, "stage": step.label,
                  "config": {"stage": step.stage, **step.params}, "stats": stats}
        meta = meta_dir(step.out_dir)
        report = meta / WORK / "report.json"
        name = (getattr(REGISTRY[step.stage], "report_file", None) or "decision.json") if step.stage in REGISTRY \
            else None
        if report.is_file() and name:  # before the manifests: a finished step always has its report
            shutil.copyfile(report, meta / name)
            content = json.loads(report.read_text())
            write_report_tables(meta, content.get("tables", {}))
            if content.get("summary"):  # a short account for the manifest (iterative kMQ's rounds)
                stats["decision"] = content["summary"]
        if self._reusable(step):  # the task keys, for the step's next version
            write_record(step.out_dir, receipts)
        write_manifest(step.rejected_dir, rejected, schema=None if rejected else REJECTED_COLUMNS, **common)
        done = write_manifest(step.out_dir, kept, schema=schema, **common)
        if step.kind != "ingest" and rows_out:
            self._check_adds(step, done.schema)
        if self._reusable(step):
            drop_previous(self.run_dir.root, [step.out_dir, step.rejected_dir])
        for leftover in (meta / WORK, meta / RECEIPTS):
            shutil.rmtree(leftover, ignore_errors=True)
        (meta / "_pending.json").unlink(missing_ok=True)
        log.info("%s: %d in, %d kept, %d rejected, %d added in %.1fs", step.label, rows_in, rows_kept,
                 rows_rejected, rows_added, seconds)
        return stats

    @staticmethod
    def _check_added(step: Step, shards: list[ShardInfo], rows_added: int) -> None:
        """Added rows name the row they come from, and every output id is unique."""
        tables = [pq.read_table(step.out_dir / s.file, columns=["id", PARENT_ID]) for s in shards]
        if not tables:
            return
        table = pa.concat_tables(tables)
        ids = table.column("id").combine_chunks()
        if pc.count_distinct(ids).as_py() != len(ids):
            raise CurateError(f"{step.label}: the output repeats ids (a stage must give added rows new ids)")
        named = len(ids) - table.column(PARENT_ID).null_count
        if named < rows_added:
            raise CurateError(f"{step.label}: {rows_added} rows added but only {named} name a `{PARENT_ID}` "
                              "(a bug in the stage)")

    @staticmethod
    def _check_adds(step: Step, schema: pa.Schema) -> None:
        """The declaration is the truth: every column a stage declares in `adds` is in its output."""
        stage = step.instance()
        missing = [c for c in stage.adds if c not in schema.names and c not in stage.uses]
        if missing:
            raise CurateError(f"stage '{stage.name}' declares `adds` {list(stage.adds)} but its output lacks "
                              f"{missing} (a bug in the stage)")

    def _stats(self, step: Step) -> dict[str, Any]:
        if step.output == "artifacts":
            return Artifacts.open(step.out_dir).stats
        return Dataset.open(step.out_dir).stats

    @staticmethod
    def _result(step: Step, status: str, stats: dict[str, Any], metrics: dict[str, Any] | None = None) -> StepResult:
        return StepResult(step.label, step.stage, status, step.fingerprint, stats.get("rows_in", 0),
                          stats.get("rows_out", 0), stats.get("rows_rejected", 0), stats.get("seconds", 0.0),
                          stats.get("reasons", {}), stats.get("rows_kept", stats.get("rows_out", 0)),
                          stats.get("rows_added", 0), step.output, list(step.parents), metrics or {})

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
            "graph": [s.describe(self.run_dir.root) for s in self.plan.samples + self.plan.steps],
            "steps": [asdict(r) for r in results],
            "warnings": self.warnings,
        }


def _short(ref: str) -> str:
    return ref.removesuffix(".parquet")


def bookkeeping_dir(step: Step) -> Path:
    """Where a step keeps its work files, task receipts and pending marker: a row step in its `.meta` folder (its
    own folder holds shards only), an artifact step in its own folder."""
    return step.out_dir if step.output == "artifacts" else meta_dir(step.out_dir)


def write_report_tables(folder: Path, tables: dict[str, list[dict[str, Any]]]) -> None:
    """A decision report's tables (lists of records) as `tables/<name>.parquet` in a step's `.meta` folder: SQL
    shows them as `<label>_<name>`."""
    for name, records in tables.items():
        (folder / TABLES).mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(records), folder / TABLES / f"{name}.parquet")


def run_pipeline(config: PipelineConfig, executor: Executor | None = None) -> list[StepResult]:
    """Run a config without Prefect: on threads, or on Ray with `engine.kind: ray`. One result per step."""
    if executor is None and config.engine.kind == "ray":
        from curate.ray_engine import RayExecutor, ray_cluster

        with ray_cluster(config.engine.address, config.engine.ray_cpus):
            return Runner(config, RayExecutor(config.engine.retries)).run()
    return Runner(config, executor).run()
