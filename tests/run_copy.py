"""A private copy of a module-scoped run, for tests that re-run it with new parameters (so that no other test
reads what one test rewrote, in any order)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml


def copy_run(run: Path, dest: Path) -> tuple[Path, dict[str, Any]]:
    """Copy `run` (modification times kept) to `dest/run`; return it and its frozen config pointed at the copy."""
    copy = dest / "run"
    shutil.copytree(run, copy)
    data = yaml.safe_load((copy / "config.yaml").read_text())
    data["output"] = str(copy)
    return copy, data
