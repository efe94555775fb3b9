"""Plans a run: a validated config's steps as a graph, each with its fingerprint and its folders.

- A step's fingerprint = hash(its parents' fingerprints, stage name, resolved params, what else decides its output
  (`fingerprint_extra`), the fingerprints of the run-level samples it reads, curate version). The ingest step
  hashes its inputs' paths, sizes and modification times instead of parents.
- The samples (`target:`, `heldout:`) are planned apart from the stage graph: they are ingested first, and a
  `heldout: {split_from_target: ...}` split is a step of its own, fingerprinted by the target and the split;
  with held-out rows of their own, an `exclude` step drops the target rows that repeat a held-out row.
- Steps run in topological order; where the graph allows, in the order they are written.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate._version import __version__
from curate.data.hashing import fingerprint
from curate.data.rundir import RunDir
from curate.engine.config import HeldoutSplit, InputSpec, PipelineConfig
from curate.engine.graph import INGEST, topological_order
from curate.io.sources import InputUnit, plan_units, target_units, units_for
from curate.stages import REGISTRY
from curate.stages.base import Resources, Stage


@dataclass
class Step:
    index: int  # position in the config (0: ingest); names the step's folders
    label: str  # view name in SQL, `stage` value of rejected rows
    stage: str  # registered stage name, or "ingest" / "split" / "exclude" for the run's own steps
    params: dict[str, Any]
    fingerprint: str
    out_dir: Path  # rows: stages/NN-<label>/; artifacts: models/<label>/ or eval/<label>/
    rejected_dir: Path | None
    parents: tuple[str, ...] = ()
    kind: str = "ingest"  # ingest, split, exclude, map, global, artifact
    output: str = "rows"  # rows, rows_added, artifacts
    samples: tuple[str, ...] = ()  # run-level samples the stage reads (target, heldout)
    resources: Resources = field(default_factory=Resources)
    units: list[InputUnit] = field(default_factory=list)  # ingest steps only
    model_steps: tuple[str, ...] = ()  # steps whose trained models the stage loads

    def instance(self) -> Stage:
        return REGISTRY[self.stage](self.params)

    def describe(self, root: Path) -> dict[str, Any]:
        """What run.json records of the step (for SQL's `steps` view and `curate inspect`); folders relative to
        the run directory `root`, so that a moved run still reads."""
        where = lambda p: None if p is None else os.path.relpath(p, root)  # noqa: E731
        return {"index": self.index, "label": self.label, "stage": self.stage, "kind": self.kind,
                "output": self.output, "parents": list(self.parents), "fingerprint": self.fingerprint,
                "folder": where(self.out_dir), "rejected": where(self.rejected_dir), "samples": list(self.samples),
                "resources": asdict(self.resources), **({"model_steps": list(self.model_steps)}
                                                        if self.model_steps else {})}


@dataclass
class Plan:
    steps: list[Step]  # ingest and the stages, in running order
    samples: list[Step]  # target / heldout ingest and split steps, run before the stages
    target: Path | None  # the target rows selection stages see
    heldout: Path | None  # the held-out rows
    split: HeldoutSplit | None = None

    def step(self, label: str) -> Step:
        for step in self.steps:
            if step.label == label:
                return step
        raise KeyError(label)

    def rows_dir(self, label: str) -> Path:
        """The dataset folder holding a step's rows (an artifact step's rows are its input's)."""
        step = self.step(label)
        return step.out_dir if step.output != "artifacts" else self.rows_dir(step.parents[0])

    def input_dirs(self, step: Step) -> list[Path]:
        return [self.rows_dir(p) for p in step.parents]

    def sample_fingerprints(self) -> dict[str, str]:
        return _sample_fingerprints(self.samples)


def _sample_fingerprints(samples: list[Step]) -> dict[str, str]:
    """The fingerprint of each run-level sample: its ingest step's, or the split's for both parts of a split."""
    found = {}
    for step in samples:
        if step.stage == "split":
            found["target"] = found["heldout"] = step.fingerprint
        elif step.stage == "exclude":  # the target without the held-out rows
            found["target"] = step.fingerprint
        else:
            found[step.label] = step.fingerprint
    return found


def _input_signature(units: list[InputUnit]) -> list[Any]:
    signature = []
    for unit in units:
        stat = os.stat(unit.path)
        signature.append([asdict(unit), stat.st_size, stat.st_mtime_ns])
    return signature


def _ingest_step(label: str, units: list[InputUnit], config: PipelineConfig, out_dir: Path,
                 rejected_dir: Path) -> Step:
    params = {"shard_rows": config.engine.shard_rows}
    fp = fingerprint(label, _input_signature(units), params, __version__)
    return Step(0, label, "ingest", params, fp, out_dir, rejected_dir, units=units)


def _sample_steps(config: PipelineConfig, run: RunDir) -> tuple[list[Step], Path | None, Path | None]:
    steps: list[Step] = []
    target = heldout = None
    split = config.heldout if isinstance(config.heldout, HeldoutSplit) else None
    exclude = isinstance(config.heldout, InputSpec) and config.target is not None
    if config.target is not None:
        units = target_units(config)
        ingested = _ingest_step("target", units, config, run.target_all if split or exclude else run.target,
                                run.target_rejected)
        steps.append(ingested)
        target = run.target
        if split is not None:
            params = split.model_dump(mode="json")
            fp = fingerprint(ingested.fingerprint, "split", params, __version__)
            steps.append(Step(0, "heldout", "split", params, fp, run.heldout, None, parents=("target",),
                              kind="split"))
            heldout = run.heldout
    if isinstance(config.heldout, InputSpec):
        units = units_for(config.heldout, "heldout", config.resolve)
        steps.append(_ingest_step("heldout", units, config, run.heldout, run.heldout_rejected))
        heldout = run.heldout
    if exclude:  # held-out rows are never part of the target: drop the target rows they repeat
        fp = fingerprint(steps[0].fingerprint, steps[-1].fingerprint, "exclude", __version__)
        steps.append(Step(0, "heldout_overlap", "exclude", {}, fp, run.target, None, parents=("target", "heldout"),
                          kind="exclude"))
    return steps, target, heldout


def plan_run(config: PipelineConfig, run: RunDir) -> Plan:
    """The steps of `config` in running order, with fingerprints and folders."""
    samples, target, heldout = _sample_steps(config, run)
    sample_fps = _sample_fingerprints(samples)
    ingest = _ingest_step(INGEST, plan_units(config), config, run.stage_dir(0, INGEST), run.rejected_dir(0, INGEST))
    specs = {spec.label: spec for spec in config.stage_specs()}
    order = topological_order(list(specs), {label: spec.parents + spec.model_steps for label, spec in specs.items()})
    steps = {INGEST: ingest}
    for label in order:
        spec = specs[label]
        stage = REGISTRY[spec.name](spec.params)
        reads = tuple(s for s in stage.samples() if s in sample_fps)
        models = {m: steps[m].fingerprint for m in spec.model_steps}
        fp = fingerprint([steps[p].fingerprint for p in spec.parents], spec.name, spec.params,
                         stage.fingerprint_extra(), {s: sample_fps[s] for s in reads}, __version__,
                         *([models] if models else []))
        if stage.output == "artifacts":
            root = run.models if stage.artifact_root == "models" else run.eval
            out_dir, rejected_dir = root / label, None
        else:
            out_dir, rejected_dir = run.stage_dir(spec.index, label), run.rejected_dir(spec.index, label)
        steps[label] = Step(spec.index, label, spec.name, spec.params, fp, out_dir, rejected_dir,
                            parents=spec.parents, kind=stage.kind, output=stage.output, samples=reads,
                            resources=stage.resources, model_steps=spec.model_steps)
    split = config.heldout if isinstance(config.heldout, HeldoutSplit) else None
    return Plan([ingest] + [steps[label] for label in order], samples, target, heldout, split)
