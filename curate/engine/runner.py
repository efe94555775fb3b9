"""Executes a planned run step by step, with resume by fingerprint (the plan: `curate.engine.plan`).

- A step whose manifests carry its fingerprint is skipped (rows: the kept and the rejected datasets; artifacts:
  the artifact manifest).
- An interrupted step keeps the receipts of its finished tasks; a re-run does only the missing ones.
- The rejected manifest is written before the kept one: a kept manifest means the step is complete.
- Every step's counts are checked: rows in = kept + rejected, and rows out = kept + added.
- Steps whose inputs are ready run at the same time when the engine's workers hold them (curate.engine.schedule).
"""

from __future__ import annotations

import logging
import platform
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate._version import __version__
from curate.data.artifacts import Artifacts, write_artifacts
from curate.data.dataset import (
    Dataset,
)
from curate.data.hashing import canonical_json, fingerprint
from curate.data.inputs import StepInput
from curate.data.progress import progress
from curate.data.rundir import RunDir
from curate.engine.config import PipelineConfig, resolved_config
from curate.engine.drops import drop_warning
from curate.engine.executors import Executor, ThreadExecutor
from curate.engine.heldout import exclude_heldout, split_heldout
from curate.engine.placement import gather_task
from curate.engine.plan import Plan, Step, plan_run
from curate.engine.reuse import previous_dir
from curate.engine.runlock import claim, run_lock
from curate.engine.schedule import Claim, StepScheduler, claim_for
from curate.engine.step_folders import bookkeeping_dir, finalize, prepare_folders, remove_stale_outputs, reusable
from curate.engine.step_task import RECEIPTS, WORK, StepTask
from curate.engine.tasks import (
    apply_task,
    build_task,
    combine_task,
    decide_task,
    ingest_task,
    map_task,
    prepare_task,
    summarize_task,
    unit_task,
    units_task,
)
from curate.stages import REGISTRY
from curate.stages.base import Stage, release_stages

log = logging.getLogger("curate")


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


class Runner:
    """Runs a validated config. `executor` decides where tasks run (threads by default)."""

    def __init__(self, config: PipelineConfig, executor: Executor | None = None):
        self.config = config
        self.run_dir = RunDir(config.output_dir())
        self.executor = executor or ThreadExecutor(config.engine.workers, config.engine.retries)
        self.plan: Plan = plan_run(config, self.run_dir)
        self.steps = self.plan.steps
        self.warnings: list[dict[str, Any]] = []  # steps that dropped much besides their budget (curate.engine.drops)

    # ------------------------------------------------------------ running

    def run(self) -> list[StepResult]:
        claim(self.run_dir.root)  # a new, empty or curate's own folder (curate.engine.runlock)
        with run_lock(self.run_dir.root, f"curate run {self.config.name}"):
            return self._run()

    def _run(self) -> list[StepResult]:
        run = self.run_dir
        run.write_config(resolved_config(self.config))
        remove_stale_outputs(self.plan, self.run_dir)
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        results: list[StepResult] = []
        run.write_run_json(self._run_json(results, started, finished=False))  # the plan, before any step: a run
        # stopped early still says which steps it meant to write (`open_run(...).missing`)
        running_stages: Counter[str] = Counter()

        def run_one(step: Step) -> StepResult:
            running_stages[step.stage] += 1
            return self.run_step(step)

        def done(step: Step, result: StepResult) -> None:
            running_stages[step.stage] -= 1
            if step.stage in REGISTRY and not running_stages[step.stage]:  # the step's models go with it (in
                release_stages(step.stage)  # this process; Ray workers keep theirs), once no step still uses them
            results.append(result)
            self._warn_drops(step, result)
            run.write_run_json(self._run_json(results, started, finished=False))

        for sample in self.plan.samples:
            done(sample, run_one(sample))
        self._scheduler().run(run_one, done)
        order = {s.label: i for i, s in enumerate(self.plan.samples + self.plan.steps)}
        results.sort(key=lambda r: order[r.label])  # run.json lists steps in plan order, however they finished
        run.write_run_json(self._run_json(results, started, finished=True))
        return results

    def _scheduler(self) -> StepScheduler[Step]:
        """Steps start when the steps they read are done, as many at once as the engine's workers hold at their
        declared resources (`engine.parallel_steps`; curate.engine.schedule)."""
        engine = self.config.engine
        capacity = engine.workers if engine.parallel_steps else 1

        def claim(step: Step) -> Claim:
            exclusive = step.stage in REGISTRY and step.instance().exclusive
            return claim_for(step.resources.cpus, step.resources.gpus, exclusive, capacity)

        return StepScheduler(self.plan.steps, key=lambda s: s.label,
                             depends=lambda s: [*s.parents, *s.model_steps], claim=claim, capacity=capacity,
                             gpus=_gpu_count())

    def _warn_drops(self, step: Step, result: StepResult) -> None:
        """A step that dropped more than `warn_drop_share` of its rows besides its budget: named
        (curate.engine.drops)."""
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
        prepare_folders(step, self.run_dir)
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
        stats = finalize(step, self.plan, self.run_dir, time.perf_counter() - start)
        return self._result(step, "ran", stats)

    def _task(self, step: Step) -> StepTask:
        dirs = () if step.kind in ("ingest", "split", "exclude") else tuple(str(d) for d in self.plan.input_dirs(step))
        work = bookkeeping_dir(step) / WORK
        models = {m: str(self.plan.step(m).out_dir) for m in step.model_steps}
        task = StepTask(step.label, step.stage, step.params, dirs, step.parents, str(step.out_dir),
                        str(step.rejected_dir or ""), str(work), str(work), {}, models, step.label,
                        plugins=tuple(self.config.plugins), plugin_dir=str(self.config.base_dir or ""))
        if not reusable(step, self.run_dir):
            return task
        root = self.run_dir.root
        # what decides a task's output besides the one input it reads (curate.engine.reuse)
        key = fingerprint(step.stage, step.params, {m: self.plan.step(m).fingerprint for m in step.model_steps},
                          {s: self.plan.sample_fingerprints()[s] for s in step.samples}, __version__)
        return task.with_(reuse_key=key, previous_out=str(previous_dir(root, step.out_dir)),
                          previous_rejected=str(previous_dir(root, step.rejected_dir)))

    def _map(self, fn: Any, step: Step, calls: list[tuple], names: list[str]) -> list[Any]:
        return self.executor.map(fn, calls, names, resources=step.resources)

    def _run_map(self, step: Step, task: StepTask, step_input: StepInput) -> None:
        if type(step.instance()).prepare is not Stage.prepare:  # a map stage with a one-off preparation
            Path(task.work_dir).mkdir(exist_ok=True)
            target, heldout = self._sample_dirs(step)
            prepared = self.executor.call(prepare_task, (task, target, heldout, str(self.run_dir.models / step.label)),
                                          f"{step.label}:prepare")
            task = task.with_(prepared=prepared)
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
        task = task.with_(summary_dir=str(summaries), key=f"{step.label}:summarize",
                           other_summaries=others)
        target, heldout = self._sample_dirs(step)
        prepared = self.executor.call(prepare_task, (task, target, heldout, str(models)), f"{step.label}:prepare")
        task = task.with_(prepared=prepared)
        refs = step_input.shard_names
        progress().start(task.key, f"{step.label} (summarize)", step_input.count())
        self._map(summarize_task, step, [(task, r) for r in refs], [f"{step.label}[{_short(r)}]:summarize"
                                                                    for r in refs])
        progress().finish(task.key)
        decided = self.executor.call(decide_task, (task,), f"{step.label}:decide") if step_input.count() else {}
        task = task.with_(key=step.label)
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
            # A stage may ask for more units once the first ones are done (a search's next round): asked again
            # until no new unit comes back; finished units are never run again (and a resumed step reads their
            # receipts).
            done: dict[str, Any] = {}
            while new := [u for u in units if u not in done]:
                results = self.executor.map(unit_task, [(task, target, heldout, u) for u in new],
                                            [f"{step.label}[{u}]" for u in new], resources=step.resources)
                done.update(zip(new, results, strict=True))
                units = self.executor.call(units_task, (task, target, heldout), f"{step.label}:units")
            metrics = self.executor.call(combine_task, (task, target, heldout, {u: done[u] for u in units}),
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


def _gpu_count() -> int:
    torch = sys.modules.get("torch")  # a run that never imported torch has no GPU work to place
    return torch.cuda.device_count() if torch is not None and torch.cuda.is_available() else 0


def _short(ref: str) -> str:
    return ref.removesuffix(".parquet")


def run_pipeline(config: PipelineConfig, executor: Executor | None = None) -> list[StepResult]:
    """Run a config without Prefect: on threads, or on Ray with `engine.kind: ray`. One result per step."""
    if executor is None and config.engine.kind == "ray":
        from curate.engine.ray_engine import RayExecutor, ray_cluster

        with ray_cluster(config.engine.address, config.engine.ray_cpus):
            return Runner(config, RayExecutor(config.engine.retries)).run()
    return Runner(config, executor).run()
