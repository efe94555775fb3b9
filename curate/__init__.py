"""curate: data curation and selection for language-model training data.

From Python (README "From Python"): `open_run(path)` opens a run; `Pipeline(...)` builds one in code, from the stage
classes of `curate.stages` (also here: `curate.Dedup`). These names load on first use, so `import curate` stays
cheap; `Pipeline` and `step` live with the flows (`curate.pipeline`), as they can run one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from typing import Any

from curate._version import __version__
from curate.data.dataset import Dataset

_LAZY = {"open_run": "curate.inspect.run_data", "Run": "curate.inspect.run_data", "StepData": "curate.inspect.run_data",
         "Pipeline": "curate.pipeline", "step": "curate.pipeline"}

__all__ = ["Dataset", "Pipeline", "Run", "StepData", "__version__", "open_run", "step"]


# Module paths before the layered layout (0.1): importable for one more release, with a DeprecationWarning
# (README "Changelog").
MOVED = {
    "curate.errors": "curate.data.errors",
    "curate.faults": "curate.data.faults",
    "curate.progress": "curate.data.progress",
    "curate.hashing": "curate.data.hashing",
    "curate.arrays": "curate.data.arrays",
    "curate.schemas": "curate.data.schemas",
    "curate.dataset": "curate.data.dataset",
    "curate.inputs": "curate.data.inputs",
    "curate.summaries": "curate.data.summaries",
    "curate.targets": "curate.data.targets",
    "curate.rundir": "curate.data.rundir",
    "curate.artifacts": "curate.data.artifacts",
    "curate.embedding": "curate.data.embedding",
    "curate.token_count": "curate.models.token_count",
    "curate.generation": "curate.models.generation",
    "curate.selection": "curate.methods.selection",
    "curate.kmeans": "curate.methods.kmeans",
    "curate.ot": "curate.methods.ot",
    "curate.scaling": "curate.methods.scaling",
    "curate.scaling_fit": "curate.methods.scaling_fit",
    "curate.ngram_features": "curate.methods.ngram_features",
    "curate.text": "curate.methods.text",
    "curate.dedup": "curate.methods.dedup",
    "curate.clear": "curate.methods.clear",
    "curate.dart": "curate.methods.dart",
    "curate.math_check": "curate.methods.math_check",
    "curate.answers": "curate.methods.answers",
    "curate.closed_loop": "curate.methods.closed_loop",
    "curate.decontamination": "curate.methods.decontamination",
    "curate.eval_sets": "curate.methods.eval_sets",
    "curate.leaks": "curate.methods.leaks",
    "curate.config": "curate.engine.config",
    "curate.graph": "curate.engine.graph",
    "curate.plan": "curate.engine.plan",
    "curate.runner": "curate.engine.runner",
    "curate.tasks": "curate.engine.tasks",
    "curate.executors": "curate.engine.executors",
    "curate.ray_engine": "curate.engine.ray_engine",
    "curate.reuse": "curate.engine.reuse",
    "curate.heldout": "curate.engine.heldout",
    "curate.memory_estimate": "curate.engine.memory_estimate",
    "curate.drops": "curate.engine.drops",
    "curate.runlock": "curate.engine.runlock",
    "curate.run_data": "curate.inspect.run_data",
    "curate.notebook": "curate.inspect.notebook",
    "curate.hf_arrow": "curate.inspect.hf_arrow",
    "curate.sql": "curate.inspect.sql",
    "curate.summary": "curate.inspect.summary",
    "curate.report": "curate.inspect.report",
    "curate.plots": "curate.methods.plots",
    "curate.export": "curate.inspect.export",
    "curate.cli_budget": "curate.cli.budget",
    "curate.cli_eval": "curate.cli.evaluate",
    "curate.cli_serve": "curate.cli.serve",
    "curate.cli_train": "curate.cli.train",
    "curate.console": "curate.cli.console",
    "curate.sql_shell": "curate.cli.sql_shell",
    "curate.flows.code_pipeline": "curate.pipeline",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a module under its old path as the module at its new one (one module object, not a copy)."""

    @staticmethod
    def _target(name: str) -> str | None:
        for old, new in MOVED.items():
            if name == old or name.startswith(old + "."):
                return new + name[len(old):]
        return None

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if self._target(name) else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        new = self._target(spec.name)
        warnings.warn(f"{spec.name} is now {new}; the old path goes in the next release", DeprecationWarning,
                      stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module: Any) -> None:
        """The module at the new path is already executed."""


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())  # before the path finder: no second copy of a submodule


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    stages = importlib.import_module("curate.stages")
    if name in stages.__all__ and name[:1].isupper():
        return getattr(stages, name)
    raise AttributeError(f"module 'curate' has no attribute {name!r}")
