"""Find the files behind an input spec and tell their formats, before any work starts.

An input `path` is a file, a glob, a folder of files, or a Hugging Face `save_to_disk` folder
(a `Dataset`, or a `DatasetDict` with one sub-folder per split); `path` may also be a list of these.
Each file (each Arrow file of a Hugging Face folder) becomes one `InputUnit`: the unit of ingest work.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from curate.data.errors import ConfigError
from curate.io.specs import InputSpec

if TYPE_CHECKING:  # a run's config is made of input specs; this layer only reads its fields
    from curate.engine.config import PipelineConfig

COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
EXTENSIONS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv", ".tsv": "csv",
    ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
}


@dataclass(frozen=True)
class InputUnit:
    """One file to ingest, with everything a worker needs to read and map it."""

    index: int  # position in the run's list of units: names the output shards
    path: str
    format: str
    compression: str | None
    source: str  # value of the `source` column ("" = the data's own `source` column or the file stem)
    fields: tuple[tuple[str, str], ...]  # explicit field mapping (contract name, source column)
    split: str | None = None
    delimiter: str = ","
    target: str = ""  # the target this file belongs to (target files only): rows get `target_name`/`target_weight`
    target_weight: float = 1.0

    @property
    def stem(self) -> str:
        name = Path(self.path).name
        return re.sub(r"(\.[A-Za-z0-9]+)+$", "", name) or name


def _sniff(path: Path) -> tuple[str | None, str | None]:
    """(format, compression) from the file name; None where the name does not tell."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes = suffixes[:-1]
    return (EXTENSIONS.get(suffixes[-1]) if suffixes else None), compression


def _hf_arrow_files(folder: Path) -> list[tuple[str, str | None]]:
    """(arrow file, split) pairs of a Hugging Face save_to_disk folder, in order; [] if it is not one."""
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        return [(f, split) for split in splits for f, _ in _hf_arrow_files(folder / split)]
    state = folder / "state.json"
    if state.is_file():
        files = json.loads(state.read_text()).get("_data_files", [])
        return [(str(folder / f["filename"]), None) for f in files]
    return []


def _expand(pattern: str, resolve: Callable[[str], str]) -> list[Path]:
    resolved = resolve(pattern)
    matches = sorted(glob.glob(resolved)) or ([resolved] if Path(resolved).exists() else [])
    return [Path(m) for m in matches]


def units_for(spec: InputSpec, where: str, resolve: Callable[[str], str] = str, start: int = 0) -> list[InputUnit]:
    """The files of one input spec, its paths made absolute by `resolve` (a config's: against its folder). Raises
    ConfigError for paths that match nothing or unknown formats."""
    fields = tuple(sorted(spec.fields.items()))
    units: list[InputUnit] = []

    def add(path: str, fmt: str, compression: str | None, split: str | None = None) -> None:
        units.append(InputUnit(
            index=start + len(units), path=path, format=fmt, compression=compression,
            source=spec.source or "", fields=fields, split=split,
            delimiter="\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ",",
        ))

    for pattern in spec.paths():
        matches = _expand(pattern, resolve)
        if not matches:
            raise ConfigError(f"{where}.path: no file or folder matches {pattern!r}")
        for match in matches:
            if match.is_dir():
                hf = _hf_arrow_files(match)
                if hf:
                    for file, split in hf:
                        if spec.split is None or spec.split == split:
                            add(file, "hf", None, split)
                    continue
                if spec.format == "hf":
                    raise ConfigError(f"{where}.path: {str(match)!r} is not a Hugging Face save_to_disk folder")
                files = sorted(p for p in match.rglob("*") if p.is_file() and _sniff(p)[0]
                               and not any(part.startswith((".", "_")) for part in p.relative_to(match).parts))
                if not files:
                    raise ConfigError(f"{where}.path: folder {str(match)!r} holds no readable files "
                                      f"(known endings: {', '.join(EXTENSIONS)})")
                matches_in_dir = files
            else:
                matches_in_dir = [match]
            for file in matches_in_dir:
                fmt, compression = _sniff(file)
                fmt = fmt if spec.format == "auto" else spec.format
                if fmt is None:
                    raise ConfigError(
                        f"{where}.path: cannot tell the format of {file.name!r} from its name; "
                        f"set {where}.format to one of jsonl, json, parquet, csv, arrow, hf")
                add(str(file), fmt, compression)
    if spec.split is not None and not units:
        raise ConfigError(f"{where}.split: no split named {spec.split!r} in {spec.paths()}")
    return units


def target_units(config: PipelineConfig) -> list[InputUnit]:
    """The files of every target dataset, numbered in order, each tagged with its target's name and weight."""
    units: list[InputUnit] = []
    listed = isinstance(config.target, list)
    for i, spec in enumerate(config.targets()):
        found = units_for(spec, f"target[{i}]" if listed else "target", config.resolve, start=len(units))
        units += [replace(u, target=spec.name, target_weight=spec.weight) for u in found]  # targets() names them
    return units


def plan_units(config: PipelineConfig) -> list[InputUnit]:
    """All ingest units of a run's inputs, numbered in config order."""
    units: list[InputUnit] = []
    for i, spec in enumerate(config.inputs):
        units += units_for(spec, f"inputs[{i}]", config.resolve, start=len(units))
    return units
