"""Stages by name. Importing this package registers every built-in stage."""

from curate.stages.base import (
    REGISTRY,
    Decision,
    GlobalStage,
    MapStage,
    Params,
    Resources,
    Stage,
    apply_decision,
    register,
)

__all__ = ["REGISTRY", "Decision", "GlobalStage", "MapStage", "Params", "Resources", "Stage",
           "apply_decision", "register"]

# Built-in stages register themselves on import.
from curate.stages import (  # noqa: F401
    clear,
    color_filter,
    dart,
    dedup,
    diversity,
    dsir,
    embed,
    evaluate,
    finetune,
    got_d,
    heuristics,
    language,
    mixture,
    normalize,
    perplexity,
    semdedup,
)
