"""Pipelines built in Python: the same config as a YAML file, from stage objects or the YAML's own dicts.

    from curate import Pipeline, step
    from curate.stages import Dedup, Heuristics, Normalize

    pipeline = Pipeline(inputs=["data/pool.jsonl"], output="runs/mine",
                        stages=[Normalize(), Heuristics(min_words=5), step(Dedup(), label="near_dups")])
    run = pipeline.run(prefect=False)          # a curate.Run
    pipeline.to_yaml("configs/mine.yaml")      # `curate run configs/mine.yaml` is the same run

`run_config(config, engine=..., prefect=..., workers=...)` is the one way a config runs, used by the CLI and by
`Pipeline.run`: with `prefect` it goes through the Prefect flow (`curate.flows.pipeline`, which runs the same engine),
else in this process (threads, or Ray tasks with `engine: ray`).

Relative paths are relative to `base_dir` (the working directory when the pipeline was made). `to_yaml(path)`
rewrites them relative to the file's folder, as a YAML config's paths are, so both name the same files and every
step has the same fingerprint. Errors are the YAML's: a bad parameter names the stage and the key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from curate.data.errors import ConfigError
from curate.engine.config import PipelineConfig, parse_config, resolved_config
from curate.engine.runner import StepResult, run_pipeline
from curate.inspect.run_data import Run, open_run
from curate.stages.base import Stage

StageEntry = Any  # a Stage, a `step(...)`, a YAML-style {name: params} dict, or a stage name


@dataclass(frozen=True)
class StepEntry:
    """A stage with the keys a YAML entry has beside its parameters: `label` and `from`."""

    stage: Stage | dict[str, Any] | str
    label: str | None = None
    from_: str | Sequence[str] | None = None


def step(stage: Stage | dict[str, Any] | str, *, label: str | None = None,
         from_: str | Sequence[str] | None = None) -> StepEntry:
    """A stage with a `label` (its name in SQL and folders) and the steps it reads (`from_`, a label or a list)."""
    return StepEntry(stage, label, from_)


def _stage_entry(entry: StageEntry, where: str) -> dict[str, Any]:
    """One `stages:` entry as YAML has it: {name: {params..., label, from}}."""
    label = from_ = None
    if isinstance(entry, StepEntry):
        entry, label, from_ = entry.stage, entry.label, entry.from_
    if isinstance(entry, Stage):
        name, params = entry.name, entry.params.model_dump(mode="json", exclude_unset=True)
    elif isinstance(entry, str):
        name, params = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        (name, params), = entry.items()
        params = dict(params or {})
    else:
        raise ConfigError(f"{where}: expected a stage object (curate.stages.Dedup(...)), step(...), a stage name or "
                          f"one {{<stage name>: {{params}}}} mapping; got {entry!r}")
    if label is not None:
        params["label"] = label
    if from_ is not None:
        params["from"] = from_ if isinstance(from_, str) else list(from_)
    return {name: params}


def _as_input(value: Any) -> Any:
    """A path (str or Path) as an input mapping; mappings and lists of mappings as they are."""
    if isinstance(value, (str, os.PathLike)):
        return {"path": os.fspath(value)}
    if isinstance(value, dict) and isinstance(value.get("path"), os.PathLike):
        return {**value, "path": os.fspath(value["path"])}
    return value


class Pipeline:
    """A pipeline config built in code. The keyword arguments are the YAML's top-level keys."""

    def __init__(self, *, inputs: Any, output: str | os.PathLike[str], stages: Sequence[StageEntry] = (),
                 target: Any = None, heldout: Any = None, name: str = "pipeline",
                 engine: dict[str, Any] | None = None, plugins: Sequence[str] = (),
                 base_dir: str | os.PathLike[str] | None = None):
        self.name = name
        listed = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        self.inputs = [_as_input(i) for i in listed]
        self.target = [_as_input(t) for t in target] if isinstance(target, (list, tuple)) else _as_input(target)
        self.heldout = _as_input(heldout)
        self.output = os.fspath(output)
        self.engine = dict(engine or {})
        self.plugins = list(plugins)
        self.stages = [_stage_entry(s, f"stages[{i}]") for i, s in enumerate(stages)]
        self.base_dir = Path(base_dir or os.getcwd()).resolve()

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Pipeline:
        """A YAML config as a Pipeline (its paths stay relative to the file's folder)."""
        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config is a YAML mapping with keys name, inputs, output, stages")
        known = {k: data[k] for k in ("inputs", "output", "stages", "target", "heldout", "name", "engine", "plugins")
                 if k in data}
        return cls(**known, base_dir=path.resolve().parent)

    # ------------------------------------------------------------ the config

    def _path(self, value: str, base: Path | None) -> str:
        """A path of the pipeline's as the config at `base` names it (None: absolute)."""
        absolute = os.path.normpath(value if os.path.isabs(value) else self.base_dir / value)
        return absolute if base is None else os.path.relpath(absolute, base)

    def _spec(self, spec: Any, base: Path | None) -> Any:
        if not isinstance(spec, dict) or "path" not in spec:
            return spec  # a heldout split, or a value validation will name
        paths = spec["path"]
        moved = [self._path(p, base) for p in paths] if isinstance(paths, list) else self._path(paths, base)
        return {**spec, "path": moved}

    def to_dict(self, base: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The config mapping, paths relative to the folder `base` (None: absolute)."""
        folder = Path(base).resolve() if base is not None else None
        data: dict[str, Any] = {"name": self.name, "inputs": [self._spec(i, folder) for i in self.inputs]}
        if self.target is not None:
            data["target"] = ([self._spec(t, folder) for t in self.target] if isinstance(self.target, list)
                              else self._spec(self.target, folder))
        if self.heldout is not None:
            data["heldout"] = self._spec(self.heldout, folder)
        data["output"] = self._path(self.output, folder)
        if self.engine:
            data["engine"] = dict(self.engine)
        if self.plugins:
            data["plugins"] = list(self.plugins)
        data["stages"] = [dict(s) for s in self.stages]
        return data

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as YAML; with `path`, also written there, its paths relative to the file's folder."""
        target = Path(path) if path is not None else None
        text = yaml.safe_dump(self.to_dict(target.parent if target else None), sort_keys=False, allow_unicode=True)
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return text

    def validate(self, output: str | None = None) -> PipelineConfig:
        """The validated config; raises ConfigError naming every bad key, as `curate validate` does."""
        return parse_config(self.to_dict(self.base_dir), base_dir=self.base_dir, output=output)

    # ------------------------------------------------------------ running

    def run(self, engine: str | dict[str, Any] | None = None, prefect: bool | None = None,
            workers: int | None = None) -> Run:
        """Run it (finished steps are skipped, interrupted ones resume) and open the run. `engine`: `local`, `ray`
        or an engine mapping; `prefect`: run as a Prefect flow (default: the config's `engine.prefect`)."""
        config = parse_config(self.to_dict(self.base_dir), base_dir=self.base_dir)  # paths as given: errors name them
        run_config(config, engine=engine, prefect=prefect, workers=workers)
        return open_run(config.output_dir())

    def __repr__(self) -> str:
        names = [next(iter(s)) for s in self.stages]
        return f"Pipeline({self.name!r}, {len(self.inputs)} input(s), stages={names}, output={self.output!r})"


def with_engine(config: PipelineConfig, engine: str | dict[str, Any] | None = None,
                workers: int | None = None) -> PipelineConfig:
    """The config with its `engine:` overridden: `local`/`ray`, or a mapping of engine keys; `workers`."""
    if engine is None and workers is None:
        return config
    data = resolved_config(config)
    if engine is not None:
        data["engine"] = {**data["engine"], **({"kind": engine} if isinstance(engine, str) else engine)}
    if workers is not None:
        data["engine"] = {**data["engine"], "workers": workers}
    return parse_config(data, base_dir=config.base_dir)


def run_config(config: PipelineConfig, engine: str | dict[str, Any] | None = None, prefect: bool | None = None,
               workers: int | None = None) -> list[StepResult]:
    """Run a validated config: finished steps are skipped, interrupted ones resume. `engine` and `workers` override
    the config's; `prefect` (default: `engine.prefect`) runs it as a Prefect flow, else in this process (threads,
    or Ray tasks with `engine: ray`). One result per step."""
    config = with_engine(config, engine, workers)
    if config.engine.prefect if prefect is None else prefect:
        from curate.flows.pipeline import run_flow  # Prefect loads only when a run uses it

        return run_flow(config)
    return run_pipeline(config)
