"""Stage classes by name (`REGISTRY`), and each worker process's set-up stage instances.

A built-in stage's module loads the first time its name is looked up, so `curate --help` and `curate validate`
do not import torch; custom stages register with `@register` when their plugin module is imported. A worker
builds and sets up a stage once (`ready_stage`: models load once per process) and tears it down when the step
ends (`release_stages`).
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
from typing import TYPE_CHECKING, Any

from curate.data.hashing import canonical_json
from curate.data.heap import return_freed_memory

if TYPE_CHECKING:
    from curate.stages.base import Stage

# The built-in stages by name, with the module that defines (and registers) each: a stage's module (and what it
# imports: torch for the model stages) loads only when a config names it, so `curate --help` and `curate validate`
# start at once. Plugins register by import, as before.
BUILT_IN = {
    "classifier": "curate.stages.classifier", "clear": "curate.stages.clear",
    "color_filter": "curate.stages.color_filter", "dart": "curate.stages.dart",
    "decontaminate": "curate.stages.decontaminate", "dedup": "curate.stages.dedup",
    "kmeans_diversity": "curate.stages.diversity", "dsir": "curate.stages.dsir", "embed": "curate.stages.embed",
    "evaluate": "curate.stages.evaluate", "finetune": "curate.stages.finetune", "got_d": "curate.stages.got_d",
    "heuristics": "curate.stages.heuristics", "language": "curate.stages.language",
    "mixture": "curate.stages.mixture", "mixture_search": "curate.stages.mixture_search",
    "normalize": "curate.stages.normalize",
    "perplexity": "curate.stages.perplexity", "pii": "curate.stages.pii", "semdedup": "curate.stages.semdedup",
}


class Registry(dict):
    """Stage classes by name: a built-in stage's module is imported the first time its name is looked up."""

    def _load(self, name: object) -> None:
        if isinstance(name, str) and name in BUILT_IN and not dict.__contains__(self, name):
            importlib.import_module(BUILT_IN[name])

    def __getitem__(self, name: str) -> type[Stage]:
        self._load(name)
        return dict.__getitem__(self, name)

    def __contains__(self, name: object) -> bool:
        return name in BUILT_IN or dict.__contains__(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def load_all(self) -> Registry:
        """Every built-in stage loaded (for listings)."""
        for name in BUILT_IN:
            self._load(name)
        return self

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(dict.keys(self.load_all()))

    def keys(self):  # type: ignore[no-untyped-def]
        return dict.keys(self.load_all())

    def values(self):  # type: ignore[no-untyped-def]
        return dict.values(self.load_all())

    def items(self):  # type: ignore[no-untyped-def]
        return dict.items(self.load_all())

    def __len__(self) -> int:
        return len(dict.keys(self.load_all()))


REGISTRY: Registry = Registry()


def register(cls: type[Stage]) -> type[Stage]:
    if not cls.name or dict.__contains__(REGISTRY, cls.name):
        raise ValueError(f"stage name {cls.name!r} is empty or already registered")
    dict.__setitem__(REGISTRY, cls.name, cls)
    return cls


_ready: dict[str, Stage] = {}
_ready_lock = threading.Lock()


def ready_stage(name: str, params: dict[str, Any], prepared: dict[str, Any] | None = None) -> Stage:
    """The worker's instance of a stage, built and set up once per process (models load once).

    `prepared`: the stage's artifacts from `prepare`, set before `setup` so it can load them.
    """
    key = name + canonical_json(params) + canonical_json(prepared or {})
    with _ready_lock:
        stage = _ready.get(key)
        if stage is None:
            stage = REGISTRY[name](params)
            stage.prepared = dict(prepared or {})
            _ready[key] = stage
    stage.ensure_setup()  # outside the registry lock: one stage's slow setup does not block the others
    return stage


def release_stages(name: str | None = None) -> int:
    """Tear down this process's set-up instances (of stage `name`, or all): a step's models are freed when the
    step ends, not kept for the rest of the run. Returns how many were released."""
    with _ready_lock:
        keys = [k for k, s in _ready.items() if name is None or s.name == name]
        released = [_ready.pop(k) for k in keys]
    for stage in released:
        stage.teardown()
    if released:
        gc.collect()
        return_freed_memory()  # what the step's threads freed, so that later steps do not start above it
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return len(released)
