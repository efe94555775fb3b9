"""The run directory layout (README: "The run directory and the data contract").

runs/<name>/
  config.yaml           the resolved config, frozen
  run.json              versions, fingerprints, timings, counts per stage
  stages/NN-<label>/    a Dataset per stage (kept rows)
  rejected/NN-<label>/  a Dataset of dropped rows with reasons
  target/               the target sample as selection stages see it (without the held-out rows)
  heldout/              held-out rows (`heldout:`, or split from the target): only measured on
  target_all/           the whole ingested target, when held-out rows are split from it
  heldout_split.json    the ids of both parts of such a split
  scores/<label>-<key>/ scorers' stored summaries (scores), keyed by what decides them: re-deciding is free
  models/<label>/       a fine-tuning step's model (an artifact step), or auxiliary models (`<label>-<key>/`)
  eval/<label>/         an evaluation step's results
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from curate.data.dataset import Dataset, atomic_write_text
from curate.data.errors import DatasetError

STAGE_DIR = re.compile(r"^(\d{2})-(\w+)$")
TABLES = "tables"  # a step folder's tables from its decision (`<label>_<name>` in SQL)


@dataclass(frozen=True)
class StageOutput:
    index: int
    label: str
    kept: Path
    rejected: Path


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stages = self.root / "stages"
        self.rejected = self.root / "rejected"
        self.target = self.root / "target"
        self.target_rejected = self.rejected / "target"
        self.heldout = self.root / "heldout"
        self.heldout_rejected = self.rejected / "heldout"
        self.target_all = self.root / "target_all"
        self.heldout_split = self.root / "heldout_split.json"
        self.heldout_overlap = self.root / "heldout_overlap.json"  # target rows left out because held out
        self.models = self.root / "models"
        self.scores = self.root / "scores"
        self.eval = self.root / "eval"

    @classmethod
    def open(cls, root: str | Path) -> RunDir:
        run = cls(root)
        if not run.stages.is_dir():
            raise DatasetError(f"{str(root)!r} is not a curate run directory (it has no stages/ folder)")
        return run

    def stage_dir(self, index: int, label: str) -> Path:
        return self.stages / f"{index:02d}-{label}"

    def rejected_dir(self, index: int, label: str) -> Path:
        return self.rejected / f"{index:02d}-{label}"

    def outputs(self, finished_only: bool = True) -> list[StageOutput]:
        """The stage outputs present, in pipeline order."""
        found = []
        for path in sorted(self.stages.glob("*")) if self.stages.is_dir() else []:
            match = STAGE_DIR.match(path.name)
            if match and (not finished_only or Dataset.exists(path)):
                index, label = int(match.group(1)), match.group(2)
                found.append(StageOutput(index, label, path, self.rejected_dir(index, label)))
        return found

    def write_config(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / "config.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    def write_run_json(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.root / "run.json", json.dumps(data, indent=1))

    def read_run_json(self) -> dict[str, Any]:
        path = self.root / "run.json"
        return json.loads(path.read_text()) if path.is_file() else {}
