"""curate: data curation and selection for language-model training data.

From Python (README "From Python"): `open_run(path)` opens a run; `Pipeline(...)` builds one in code, from the stage
classes of `curate.stages` (also here: `curate.Dedup`). These names load on first use, so `import curate` stays
cheap; `Pipeline` and `step` live with the flows (`curate.flows.code_pipeline`), as they can run one.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from curate.dataset import Dataset

_LAZY = {"open_run": "curate.run_data", "Run": "curate.run_data", "StepData": "curate.run_data",
         "Pipeline": "curate.flows.code_pipeline", "step": "curate.flows.code_pipeline"}

__all__ = ["Dataset", "Pipeline", "Run", "StepData", "__version__", "open_run", "step"]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    stages = importlib.import_module("curate.stages")
    if name in stages.__all__ and name[:1].isupper():
        return getattr(stages, name)
    raise AttributeError(f"module 'curate' has no attribute {name!r}")
