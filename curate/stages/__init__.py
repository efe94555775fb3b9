"""Stages by name (`REGISTRY`), and each built-in stage's class for pipelines built in code
(`Dedup(minhash={"threshold": 0.9})`). A stage's module loads when its name or class is first asked for, so
importing this package is cheap."""

from typing import Any

from curate.stages.base import GlobalStage, MapStage, Params, Resources, Stage
from curate.stages.decision import Decision, apply_decision
from curate.stages.registry import BUILT_IN, REGISTRY, register

CLASS_NAMES = {"Classifier": "classifier", "Clear": "clear", "ColorFilter": "color_filter", "Dart": "dart",
               "Decontaminate": "decontaminate",
               "Dedup": "dedup", "KMeansDiversity": "kmeans_diversity", "Dsir": "dsir", "Embed": "embed",
               "Evaluate": "evaluate", "Finetune": "finetune", "GotD": "got_d", "Heuristics": "heuristics",
               "Language": "language", "Mixture": "mixture",
               "MixtureSearch": "mixture_search", "Normalize": "normalize", "Perplexity": "perplexity",
               "Pii": "pii", "SemDedup": "semdedup"}

__all__ = ["BUILT_IN", "REGISTRY", "STAGE_CLASSES", "Decision", "GlobalStage", "MapStage", "Params", "Resources",
           "Stage", "apply_decision", "register", *CLASS_NAMES]


def __getattr__(name: str) -> Any:
    if name in CLASS_NAMES:
        return REGISTRY[CLASS_NAMES[name]]
    if name == "STAGE_CLASSES":  # every built-in stage's class (loads them all)
        return tuple(REGISTRY[stage] for stage in CLASS_NAMES.values())
    raise AttributeError(f"module 'curate.stages' has no attribute {name!r}")
