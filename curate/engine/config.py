"""Pipeline configs: YAML validated with pydantic before any work starts.

Relative paths in a config are relative to the folder of the config file.
Every problem is reported at once, naming the key, the value and what is allowed.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from curate.data.errors import ConfigError, CurateError, pydantic_problems
from curate.engine.graph import INGEST, find_cycle, label_problem
from curate.io.specs import FIELD_KEYS, FORMATS, HeldoutSpec, HeldoutSplit, InputSpec, Strict, TargetSpec  # noqa: F401
from curate.stages import REGISTRY
from curate.stages.base import Params
from curate.stages.plugins import import_plugins

log = logging.getLogger("curate")
STEP_KEYS = ("label", "from")  # reserved keys of a stage entry, beside its parameters
DEFAULT_HELDOUT_SPLIT = 0.3

class EngineSpec(Strict):
    """Where tasks run: `local` threads, or a Ray cluster (`address`: `local` starts one on 127.0.0.1 for the
    run, `auto` joins the one on this machine, `ray://host:port` a remote one through Ray Client)."""

    kind: Literal["local", "ray"] = "local"
    address: str = "local"
    ray_cpus: int | None = Field(None, ge=1)  # CPUs of a cluster started for the run (default: this machine's)
    workers: int = Field(2, ge=1)
    # steps whose inputs are ready run at the same time, within `workers` at their declared resources
    # (curate.engine.schedule); false: one step after another
    parallel_steps: bool = True
    prefect: bool = True  # run as a Prefect flow (False: the same runner, in-process, no Prefect)
    retries: int = Field(2, ge=0)  # retries of a failed task (transient errors)
    shard_rows: int = Field(50_000, ge=1)  # rows per shard written by ingest

    @field_validator("address")
    @classmethod
    def _known_address(cls, value: str) -> str:
        if value in ("local", "auto") or re.fullmatch(r"(ray://)?[\w.\-]+:\d+", value):
            return value
        raise ValueError(f"engine.address must be local, auto, ray://host:port or host:port; got {value!r}")


class StageSpec(BaseModel):
    """One entry of `stages`: a registered stage name, its validated parameters, its label and input steps."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: dict[str, Any]
    label: str  # unique name within the run: by default the stage name, `_2`, `_3`... when repeated
    parents: tuple[str, ...] = (INGEST,)  # labels of the input steps (`from:`): by default the step before
    index: int = 1  # position in `stages` (1-based; 0 is ingest): names the step's folders
    from_count: int | None = None  # parents named by `from:` (the rest by the stage's parameters: `pool`)
    model_steps: tuple[str, ...] = ()  # `finetune` steps whose models the stage loads (`model_from:`)

    @property
    def inputs_from(self) -> tuple[str, ...]:
        return self.parents[: self.from_count] if self.from_count is not None else self.parents


class PipelineConfig(Strict):
    name: str
    inputs: list[InputSpec] = Field(min_length=1)
    target: TargetSpec | list[TargetSpec] | None = None  # one dataset, or several with names and weights
    heldout: HeldoutSpec | None = None  # rows only measured on, never read by a selection stage
    output: str
    engine: EngineSpec = Field(default_factory=EngineSpec)
    stages: list[Any] = Field(default_factory=list)
    plugins: list[str] = Field(default_factory=list)  # modules to import first: they register custom stages
    # a step that drops more than this share of its rows for reasons besides its selection budget is warned about
    warn_drop_share: float = Field(0.3, ge=0, le=1)
    base_dir: str = "."  # folder that relative paths are resolved against (set by `load_config`)
    _specs: list[StageSpec] = PrivateAttr(default_factory=list)

    def stage_specs(self) -> list[StageSpec]:
        """The validated `stages` entries, in order."""
        return list(self._specs)

    def targets(self) -> list[TargetSpec]:
        """The target datasets as a list, each with its name set."""
        if self.target is None:
            return []
        listed = self.target if isinstance(self.target, list) else [self.target]
        default = (lambda i: "target") if len(listed) == 1 else (lambda i: f"target_{i}")
        return [t.model_copy(update={"name": t.name or default(i)}) for i, t in enumerate(listed)]

    def resolve(self, path: str) -> str:
        """`path` against the config's folder, normalised (`a/../b` is `b`): the same file gives the same input
        fingerprint however a config names it (a YAML file elsewhere, a Pipeline built in code)."""
        return os.path.normpath(path if Path(path).is_absolute() else Path(self.base_dir) / path)

    def output_dir(self) -> Path:
        return Path(self.resolve(self.output))


def _allowed_keys(model: type[BaseModel]) -> str:
    return ", ".join(k for k in model.model_fields if k != "base_dir") or "(none)"


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The pydantic model that owns the key at `loc` (for listing the allowed keys)."""
    if root is PipelineConfig and loc and loc[0] == "heldout":
        return HeldoutSplit if "split" in loc[1:2] else InputSpec
    if root is PipelineConfig and loc and loc[0] == "target":
        return TargetSpec
    if root is PipelineConfig and loc and loc[0] == "inputs":
        return InputSpec
    if root is PipelineConfig and loc and loc[0] == "engine":
        return EngineSpec
    return root


def _format_pydantic(error: ValidationError, root: type[BaseModel], prefix: str = "") -> list[str]:
    errors = error.errors()
    # `target:` is one dataset or a list: the form that was not given only complains that it was not given
    wrong_form = [e for e in errors if root is PipelineConfig and len(e["loc"]) == 2 and e["loc"][0] == "target"
                  and e["type"] in ("list_type", "model_type", "dict_type", "model_attributes_type")]
    targets = sum(1 for x in errors if x["loc"][:1] == ("target",))

    def location(e: dict[str, Any]) -> list[Any] | None:
        loc = e["loc"]
        if e in wrong_form and len(wrong_form) < targets:
            return None
        union_tag = loc[:1] in (("heldout",), ("target",)) and len(loc) > 1 and isinstance(loc[1], str) and (
            loc[0] == "heldout" or loc[1] in ("TargetSpec", "list[TargetSpec]"))
        return [p for i, p in enumerate(loc) if not (i == 1 and union_tag)]

    return pydantic_problems(error, prefix, lambda loc: _allowed_keys(_model_at(root, loc)), location)


def _validate_stages(raw: list[Any]) -> tuple[list[StageSpec], list[str]]:
    """Each entry's stage name, parameters, `label` and `from`; then the graph: labels unique, inputs known and
    holding rows, no cycle, as many inputs as the stage takes."""
    specs, problems, seen = [], [], {}
    previous = INGEST
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
        params = dict(params or {}) if isinstance(params, dict) or params is None else params
        if not isinstance(params, dict):
            problems.append(f"{where}.{name}: parameters must be a mapping, got {params!r}")
            continue
        seen[name] = seen.get(name, 0) + 1
        label = params.pop("label", None) or (name if seen[name] == 1 else f"{name}_{seen[name]}")
        parents = params.pop("from", None) or previous
        parents = tuple(parents) if isinstance(parents, list) else (parents,)
        if (problem := label_problem(label)) is not None:
            problems.append(f"{where}.{name}.label: {problem}")
        model: type[Params] = REGISTRY[name].Params
        try:
            validated = model.model_validate(params)
        except ValidationError as err:
            problems += [p.replace("; allowed: ", f"; allowed: {', '.join(STEP_KEYS)}, ", 1)
                         for p in _format_pydantic(err, model, f"{where}.{name}.")]
            previous = label
            continue
        named = len(parents)
        stage = REGISTRY[name](validated.model_dump(mode="json"))
        parents += tuple(dict.fromkeys(p for p in stage.reads_steps() if p not in parents))
        specs.append(StageSpec(name=name, params=validated.model_dump(mode="json"), label=label,
                               parents=parents, index=i + 1, from_count=named,
                               model_steps=tuple(dict.fromkeys(stage.model_steps().values()))))
        previous = label
    return specs, problems + _graph_problems(specs)


def _graph_problems(specs: list[StageSpec]) -> list[str]:
    problems = []
    labels: dict[str, StageSpec] = {}
    for spec in specs:
        if spec.label in labels:
            problems.append(f"stages[{spec.index - 1}].{spec.name}.label: {spec.label!r} is already the label of "
                            f"stages[{labels[spec.label].index - 1}]; labels must be unique")
        labels.setdefault(spec.label, spec)
    for spec in specs:  # a step's `<label>_all` SQL view must not be another step's name
        if spec.label.endswith("_all") and spec.label.removesuffix("_all") in labels | {INGEST: None}:
            problems.append(f"stages[{spec.index - 1}].{spec.name}.label: {spec.label!r} is the name of step "
                            f"{spec.label.removesuffix('_all')!r}'s SQL view of all its rows; choose another")
    with_rows = [INGEST] + [s.label for s in specs if REGISTRY[s.name].output != "artifacts"]
    for spec in specs:
        allowed = ", ".join(label for label in with_rows if label != spec.label)
        for k, parent in enumerate(spec.parents):
            where = f"stages[{spec.index - 1}].{spec.name}." + (
                "from" if k < len(spec.inputs_from) else "(a step named in its parameters)")
            if not isinstance(parent, str) or (parent != INGEST and parent not in labels):
                problems.append(f"{where}: unknown label {parent!r}; allowed: {allowed}")
            elif parent != INGEST and REGISTRY[labels[parent].name].output == "artifacts":
                problems.append(f"{where}: {parent!r} builds {REGISTRY[labels[parent].name].artifact_root} "
                                f"(artifacts), not rows; allowed: {allowed}")
        for key, model_step in REGISTRY[spec.name](spec.params).model_steps().items():
            trained = [s.label for s in specs if REGISTRY[s.name].output == "artifacts"
                       and REGISTRY[s.name].artifact_root == "models"]
            if model_step not in trained:
                problems.append(f"stages[{spec.index - 1}].{spec.name}.{key}: {model_step!r} is not a step that "
                                f"trains a model; allowed: {', '.join(trained) or '(no finetune step in the config)'}")
        if spec.label in spec.parents and labels[spec.label] is spec:
            problems.append(f"{where}: a step cannot read itself ({spec.label!r})")
        stage = REGISTRY[spec.name](spec.params)
        if (problem := stage.check_inputs(list(spec.inputs_from))) is not None:
            problems.append(f"stages[{spec.index - 1}].{spec.name}.{problem}")
    if not problems and (cycle := find_cycle({s.label: s.parents + s.model_steps for s in specs})) is not None:
        problems.append(f"stages: the `from:` keys form a cycle: {' -> '.join(reversed(cycle))}")
    return problems


def _ancestors(spec: StageSpec, by_label: dict[str, StageSpec]) -> list[StageSpec]:
    """The steps upstream of `spec`, nearest first (breadth-first along `from:`)."""
    found: dict[str, StageSpec] = {}
    frontier = list(spec.parents + spec.model_steps)
    while frontier:
        nxt = []
        for label in frontier:
            if label in by_label and label not in found:
                found[label] = by_label[label]
                nxt += by_label[label].parents + by_label[label].model_steps
        frontier = nxt
    return list(found.values())


def _graph_defaults(specs: list[StageSpec]) -> list[StageSpec]:
    """Parameters a stage fills in from the steps around it: a mixture counts tokens with the tokenizer of the
    fine-tuning step that trains on it; GOT-D embeds its target as the `embed` step upstream did."""
    by_label = {s.label: s for s in specs}
    out = []
    for spec in specs:
        readers = [s for s in specs if spec.label in s.parents]
        updates = REGISTRY[spec.name](spec.params).graph_defaults(readers, _ancestors(spec, by_label))
        if updates:
            params = REGISTRY[spec.name].Params.model_validate({**spec.params, **updates}).model_dump(mode="json")
            spec = spec.model_copy(update={"params": params})
        out.append(spec)
    return out


def _stage_needs(where: str, stage: Any, config: PipelineConfig) -> list[str]:
    """A stage's target sample and model folders (model paths are relative to the working directory)."""
    from curate.models.locate import model_source

    problems = []
    samples = stage.samples()
    if config.target is None and "target" in samples:
        problems.append(f"{where}: needs a `target:` sample in the config")
    if config.heldout is None and config.target is None and "heldout" in samples:
        problems.append(f"{where}: needs held-out rows to measure on: a `heldout:` sample, or a `target:` to split "
                        f"them from (`heldout: {{split_from_target: {DEFAULT_HELDOUT_SPLIT}}}` by default)")
    for key, name in stage.models().items():
        try:
            model_source(name, f"{where}.{key}")
        except CurateError as error:
            problems.append(f"{error}; give a folder or a hub id")
    for key, path in stage.files().items():
        if not glob.glob(path) and not Path(path).exists():
            problems.append(f"{where}.{key}: no file or folder matches {path!r} (looked in {Path(path).absolute()})")
    return problems


def _check_paths(config: PipelineConfig) -> list[str]:
    problems = []
    named = [(f"inputs[{i}]", s) for i, s in enumerate(config.inputs)]
    listed = isinstance(config.target, list)
    named += [(f"target[{i}]" if listed else "target", t) for i, t in enumerate(config.targets())]
    if isinstance(config.heldout, InputSpec):
        named.append(("heldout", config.heldout))
    for where, spec in named:
        for pattern in spec.paths():
            resolved = config.resolve(pattern)
            if not glob.glob(resolved) and not Path(resolved).exists():
                problems.append(f"{where}.path: no file or folder matches {pattern!r} (looked in {resolved})")
    return problems


def _check_output(config: PipelineConfig) -> list[str]:
    """The output is a new or empty folder or a run of curate's, and no input reads the folder it would be in."""
    from curate.engine.runlock import output_problem

    out = config.output_dir().absolute()
    problems = [p] if (p := output_problem(out)) is not None else []
    named = [(f"inputs[{i}]", s) for i, s in enumerate(config.inputs)]
    named += [("target", t) for t in config.targets()]
    if isinstance(config.heldout, InputSpec):
        named.append(("heldout", config.heldout))
    for where, spec in named:
        for pattern in spec.paths():
            resolved = Path(config.resolve(pattern)).absolute()
            if resolved.is_dir():
                read = resolved  # a folder input reads every file below it
            elif "**" in pattern:
                read = Path(str(resolved).split("**")[0].rstrip("/\\") or "/")  # so does a recursive glob
            else:
                continue
            if out == read or read in out.parents:
                problems.append(f"output: {str(out)!r} is inside {str(read)!r}, which {where}.path reads: the next "
                                "run would ingest its own shards; put the output elsewhere")
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
            import_plugins([module], config.base_dir)
        except ImportError as err:
            raise ConfigError(f"plugins[{i}]: cannot import {module!r}: {err}") from None
    if isinstance(config.heldout, HeldoutSplit) and config.target is None:
        raise ConfigError("heldout.split_from_target: splits the `target:` sample, but the config has none; give "
                          "`target:` or held-out rows of their own (`heldout: {path: ...}`)")
    if isinstance(config.target, list):
        if not config.target:
            raise ConfigError("target: an empty list; give one dataset, or a list of datasets with weights")
        names = [t.name for t in config.targets()]
        if len(set(names)) != len(names):
            raise ConfigError(f"target: names must differ, got {names}")
    specs, problems = _validate_stages(config.stages)
    if not problems:
        specs = _graph_defaults(specs)
    for spec in specs:
        stage = REGISTRY[spec.name](spec.params)
        problems += _stage_needs(f"stages[{spec.index - 1}].{spec.name}", stage, config)
    problems += _check_paths(config)
    problems += _check_output(config)
    if problems:
        raise ConfigError(problems)
    if config.heldout is None and config.target is not None and any(
            "heldout" in REGISTRY[s.name](s.params).samples() for s in specs):
        # Measuring needs rows no selection saw: hold out part of the target, recorded in the run.
        config.heldout = HeldoutSplit(split_from_target=DEFAULT_HELDOUT_SPLIT, seed=0)
        log.info("heldout: none given; holding out %.0f%% of the target (seed 0)", 100 * DEFAULT_HELDOUT_SPLIT)
    config._specs = specs
    return config


def load_config(path: str | Path, output: str | None = None) -> PipelineConfig:
    """Read and validate a YAML config file; relative paths resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if (nodes := yaml_nodes(text)) > MAX_YAML_NODES:  # aliases of aliases (a "billion laughs"): refused
            raise ConfigError(f"{path}: its aliases expand to {nodes:,} values (at most {MAX_YAML_NODES:,}); a "
                              "config that large is not a config")
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(data, base_dir=path.resolve().parent, output=output)


MAX_YAML_NODES = 1_000_000


def yaml_nodes(text: str) -> int:
    """How many values a YAML document holds once its aliases are expanded, counted from its events (nothing is
    expanded): every alias counts the size of the node it names."""
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = [[None, 0]]  # per open collection: its anchor, its expanded size so far
    for event in yaml.parse(text):
        if isinstance(event, yaml.AliasEvent):
            stack[-1][1] += sizes.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            stack[-1][1] += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            stack.append([event.anchor, 1])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
            if anchor:
                sizes[anchor] = size
            stack[-1][1] += size
        if stack[0][1] > MAX_YAML_NODES or (len(stack) > 1 and stack[-1][1] > MAX_YAML_NODES):
            return max(stack[0][1], stack[-1][1])
    return stack[0][1]


def resolved_config(config: PipelineConfig) -> dict[str, Any]:
    """The config as it will run (defaults filled in, paths absolute): frozen into the run directory,
    where `curate run <run>/config.yaml` repeats the run."""
    data = config.model_dump(mode="json", exclude={"stages", "base_dir"})
    held = [data["heldout"]] if isinstance(config.heldout, InputSpec) else []
    target = data.get("target")
    targets = (target if isinstance(target, list) else [target]) if target else []
    for spec in data["inputs"] + targets + held:
        paths = [str(Path(config.resolve(p)).resolve()) for p in ([spec["path"]] if isinstance(spec["path"], str)
                                                                   else spec["path"])]
        spec["path"] = paths[0] if isinstance(spec["path"], str) else paths
    data["output"] = str(config.output_dir().resolve())
    data["stages"] = [{s.name: {"label": s.label, "from": list(s.inputs_from) if len(s.inputs_from) > 1
                                else s.inputs_from[0], **s.params}} for s in config.stage_specs()]
    return data
