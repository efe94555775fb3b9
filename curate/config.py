"""Pipeline configs: YAML validated with pydantic before any work starts.

Relative paths in a config are relative to the folder of the config file.
Every problem is reported at once, naming the key, the value and what is allowed.
"""

from __future__ import annotations

import glob
import importlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from curate.errors import ConfigError, CurateError
from curate.stages import REGISTRY
from curate.stages.base import Params

FIELD_KEYS = ("id", "text", "prompt", "response", "answer", "messages")
FORMATS = ("auto", "jsonl", "json", "parquet", "csv", "arrow", "hf")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    """One input: files (a path, a glob or a list), how to read them and how to map their fields."""

    path: str | list[str]
    fields: dict[str, str] = Field(default_factory=dict)
    source: str | None = None
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "arrow", "hf"] = "auto"
    split: str | None = None  # a split of a Hugging Face DatasetDict folder; default: all splits

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in value if k not in FIELD_KEYS]
        if unknown:
            raise ValueError(f"unknown field name(s) {unknown}; allowed: {list(FIELD_KEYS)}")
        return value

    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


class EngineSpec(_Strict):
    kind: Literal["local"] = "local"
    workers: int = Field(2, ge=1)
    prefect: bool = True  # run as a Prefect flow (False: the same runner, in-process, no Prefect)
    retries: int = Field(2, ge=0)  # retries of a failed task (transient errors)
    shard_rows: int = Field(50_000, ge=1)  # rows per shard written by ingest


class StageSpec(BaseModel):
    """One entry of `stages`: a registered stage name and its validated parameters."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: dict[str, Any]
    label: str  # unique name within the run: the stage name, `_2`, `_3`... when repeated


class PipelineConfig(_Strict):
    name: str
    inputs: list[InputSpec] = Field(min_length=1)
    target: InputSpec | None = None
    output: str
    engine: EngineSpec = Field(default_factory=EngineSpec)
    stages: list[Any] = Field(default_factory=list)
    plugins: list[str] = Field(default_factory=list)  # modules to import first: they register custom stages
    base_dir: str = "."  # folder that relative paths are resolved against (set by `load_config`)
    _specs: list[StageSpec] = PrivateAttr(default_factory=list)

    def stage_specs(self) -> list[StageSpec]:
        """The validated `stages` entries, in order."""
        return list(self._specs)

    def resolve(self, path: str) -> str:
        return path if Path(path).is_absolute() else str(Path(self.base_dir) / path)

    def output_dir(self) -> Path:
        return Path(self.resolve(self.output))


def _allowed_keys(model: type[BaseModel]) -> str:
    return ", ".join(k for k in model.model_fields if k != "base_dir") or "(none)"


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The pydantic model that owns the key at `loc` (for listing the allowed keys)."""
    if root is PipelineConfig and loc and loc[0] in ("inputs", "target"):
        return InputSpec
    if root is PipelineConfig and loc and loc[0] == "engine":
        return EngineSpec
    return root


def _format_pydantic(error: ValidationError, root: type[BaseModel], prefix: str = "") -> list[str]:
    problems = []
    for e in error.errors():
        loc = prefix + ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key; allowed: {_allowed_keys(_model_at(root, e['loc']))}")
        elif e["type"] == "missing":
            problems.append(f"{loc}: required key is missing")
        else:
            problems.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
    return problems


def _validate_stages(raw: list[Any]) -> tuple[list[StageSpec], list[str]]:
    specs, problems, seen = [], [], {}
    for i, entry in enumerate(raw):
        where = f"stages[{i}]"
        if isinstance(entry, str):
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            problems.append(f"{where}: expected one '{{<stage name>: {{params}}}}' mapping, got {entry!r}")
            continue
        (name, params), = entry.items()
        if name not in REGISTRY:
            problems.append(f"{where}: unknown stage {name!r}; allowed: {', '.join(sorted(REGISTRY))}")
            continue
        params = params or {}
        if not isinstance(params, dict):
            problems.append(f"{where}.{name}: parameters must be a mapping, got {params!r}")
            continue
        model: type[Params] = REGISTRY[name].Params
        try:
            validated = model.model_validate(params)
        except ValidationError as err:
            problems += _format_pydantic(err, model, f"{where}.{name}.")
            continue
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else f"{name}_{seen[name]}"
        specs.append(StageSpec(name=name, params=validated.model_dump(mode="json"), label=label))
    return specs, problems


def _stage_needs(where: str, stage: Any, config: PipelineConfig) -> list[str]:
    """A stage's target sample and model folders (model paths are relative to the working directory)."""
    from curate.models.locate import model_source

    problems = []
    if config.target is None and stage.requires_target():
        problems.append(f"{where}: needs a `target:` sample in the config")
    for key, name in stage.models().items():
        try:
            model_source(name, f"{where}.{key}")
        except CurateError as error:
            problems.append(f"{error}; give a folder or a hub id")
    return problems


def _check_paths(config: PipelineConfig) -> list[str]:
    problems = []
    named = [(f"inputs[{i}]", s) for i, s in enumerate(config.inputs)]
    if config.target is not None:
        named.append(("target", config.target))
    for where, spec in named:
        for pattern in spec.paths():
            resolved = config.resolve(pattern)
            if not glob.glob(resolved) and not Path(resolved).exists():
                problems.append(f"{where}.path: no file or folder matches {pattern!r} (looked in {resolved})")
    return problems


def parse_config(data: Any, base_dir: str | Path = ".", output: str | None = None) -> PipelineConfig:
    """Validate a config mapping. Raises ConfigError listing every problem found."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config is a YAML mapping with keys name, inputs, output, stages; got {data!r}")
    data = dict(data)
    if output is not None:
        data["output"] = output
    data["base_dir"] = str(base_dir)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_pydantic(err, PipelineConfig)) from None
    for i, module in enumerate(config.plugins):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"plugins[{i}]: cannot import {module!r}: {err}") from None
    specs, problems = _validate_stages(config.stages)
    for i, spec in enumerate(specs):
        problems += _stage_needs(f"stages[{i}].{spec.name}", REGISTRY[spec.name](spec.params), config)
    problems += _check_paths(config)
    if problems:
        raise ConfigError(problems)
    config._specs = specs
    return config


def load_config(path: str | Path, output: str | None = None) -> PipelineConfig:
    """Read and validate a YAML config file; relative paths resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(data, base_dir=path.resolve().parent, output=output)


def resolved_config(config: PipelineConfig) -> dict[str, Any]:
    """The config as it will run (defaults filled in, paths absolute): frozen into the run directory,
    where `curate run <run>/config.yaml` repeats the run."""
    data = config.model_dump(mode="json", exclude={"stages", "base_dir"})
    for spec in data["inputs"] + ([data["target"]] if data.get("target") else []):
        paths = [str(Path(config.resolve(p)).resolve()) for p in InputSpec.model_validate(spec).paths()]
        spec["path"] = paths[0] if isinstance(spec["path"], str) else paths
    data["output"] = str(config.output_dir().resolve())
    data["stages"] = [{s.name: s.params} for s in config.stage_specs()]
    return data
