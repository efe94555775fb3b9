"""Stages by name. Importing this package registers every built-in stage; each stage's class is here too, for
pipelines built in code (`Dedup(minhash={"threshold": 0.9})`)."""

from curate.stages.base import REGISTRY, GlobalStage, MapStage, Params, Resources, Stage, register

# Built-in stages register themselves on import.
from curate.stages.clear import Clear
from curate.stages.color_filter import ColorFilter
from curate.stages.dart import Dart
from curate.stages.decision import Decision, apply_decision
from curate.stages.decontaminate import Decontaminate
from curate.stages.dedup import Dedup
from curate.stages.diversity import KMeansDiversity
from curate.stages.dsir import Dsir
from curate.stages.embed import Embed
from curate.stages.evaluate import Evaluate
from curate.stages.finetune import Finetune
from curate.stages.got_d import GotD
from curate.stages.heuristics import Heuristics
from curate.stages.language import Language
from curate.stages.mixture import Mixture
from curate.stages.normalize import Normalize
from curate.stages.perplexity import Perplexity
from curate.stages.semdedup import SemDedup

STAGE_CLASSES = (Clear, ColorFilter, Dart, Decontaminate, Dedup, KMeansDiversity, Dsir, Embed, Evaluate, Finetune,
                 GotD, Heuristics, Language, Mixture, Normalize, Perplexity, SemDedup)

__all__ = ["REGISTRY", "STAGE_CLASSES", "Decision", "GlobalStage", "MapStage", "Params", "Resources", "Stage",
           "apply_decision", "register", *(cls.__name__ for cls in STAGE_CLASSES)]
