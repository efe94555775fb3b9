"""`classifier`: train a quality classifier on your own labels, score every row, keep by a rule (docs/methods.md §15).

1. `prepare` gets labels from one of three places (`labels:`):
   - `target`: the run's `target:` sample is positive, a seeded uniform sample of the step's input of the same size
     negative (DCLM's recipe, pointed at the user's own target); input rows whose text is a target text are never
     negatives (the model would learn "is this exact document");
   - `{column: name}`: the input rows that have a value there (0/1, booleans, classes with `positive:`, or grades);
   - `{annotate: {...}}`: an LLM grades a seeded sample of the input on a rubric (FineWeb-Edu's recipe) through the
     project's generators; answers are stored as they arrive (a killed run never asks again), parsed to the scale,
     and the ones without a score are counted and left out (`annotations.parquet`).
   It holds out a stratified `validation` share, trains `model:` on the rest (`fasttext`, `hashing` or
   `embedding_head`), and writes the model, `metrics.json` and the score percentiles to `models/<label>/`.
   With `apply: <path>` it trains nothing and uses a saved model (a folder written by a run, or a fastText `.bin`).
2. Per shard, each row's score (P(positive), or the predicted grade) is the stored summary: another keep rule
   re-decides at once, without scoring again.
3. The decision keeps rows by `keep:` (`top_fraction`, `threshold` or `pareto`); the rest are dropped as
   `not_selected` (a budget: top_fraction, pareto) or `below_threshold`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.data.embedding import EMBEDDING, embedding_matrix
from curate.data.errors import CurateError
from curate.data.hashing import file_sha256
from curate.methods.quality import (
    binary_metrics,
    graded_metrics,
    keep_mask,
    percentiles,
    stratified_split,
    warnings_for,
)
from curate.methods.quality_classifier import (
    ClassifierSpec,
    Kind,
    load_classifier,
    save_classifier,
    saved_kind,
    score_rows,
    train_classifier,
)
from curate.methods.selection import top_k
from curate.methods.text import as_text
from curate.models.locate import folder_identity, named_model_identity
from curate.stages.base import GlobalStage, Params, Rows, StageContext, register
from curate.stages.classifier_labels import AnnotateLabels, AnnotateParams, ColumnLabels, Labelled, labelled_rows
from curate.stages.decision import Decision
from curate.stages.embed import EmbedParams

log = logging.getLogger("curate")
EXAMPLES = 20  # kept and dropped rows shown in the decision report (§15.6)


class KeepParams(Params):
    """Exactly one rule: the `top_fraction` highest scores, scores ≥ `threshold`, or `pareto` with shape α."""

    top_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    threshold: float | None = None
    pareto: Annotated[float, Field(gt=0)] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _one(self) -> KeepParams:
        given = [k for k in ("top_fraction", "threshold", "pareto") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one keep rule of top_fraction, threshold, pareto; got {given or 'none'}")
        return self


class HashingParams(Params):
    num_buckets: int = Field(2**18, ge=2)
    ngrams: int = Field(1, ge=1, le=3)
    C: float = Field(1.0, gt=0)  # .inf: unregularised, as Spark's


class HeadParams(Params):
    C: float = Field(1.0, gt=0)
    ridge_lambda: float | None = Field(None, gt=0)  # graded labels: None picks λ by 5-fold CV


class FastTextParams(Params):
    lr: float = Field(0.1, gt=0)
    dim: int = Field(100, ge=2)
    epoch: int = Field(5, ge=1)
    wordNgrams: int = Field(2, ge=1, le=5)
    minCount: int = Field(1, ge=1)


class ClassifierParams(Params):
    labels: Literal["target"] | ColumnLabels | AnnotateLabels | None = None
    apply: str | None = None  # a saved classifier: a run's models/<label>/ folder or a fastText .bin
    # hashing: the best AUC and the fastest scoring of the three on real data, and the best with few labels
    # (benchmarks/bench_classifier.py); fasttext: DCLM's settings, for 100k+ labelled rows
    model: Kind = "hashing"
    column: str = "text"
    score_column: str = Field("quality_score", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    keep: KeepParams | None = KeepParams(top_fraction=0.1)  # None: score only
    validation: float = Field(0.1, ge=0, lt=1)
    max_per_class: int = Field(200_000, ge=1)
    seed: int = 0
    hashing: HashingParams = HashingParams()
    head: HeadParams = HeadParams()
    fasttext: FastTextParams = FastTextParams()
    embed: EmbedParams | None = None  # how target rows are embedded for `embedding_head`: default, the upstream embed

    @model_validator(mode="after")
    def _labels_or_apply(self) -> ClassifierParams:
        if (self.labels is None) == (self.apply is None):
            raise ValueError("give `labels:` (target, {column: ...} or {annotate: ...}) to train a classifier, or "
                             "`apply:` (a saved one), one of them")
        if isinstance(self.labels, AnnotateLabels) and self.keep is not None and self.keep.pareto is not None:
            raise ValueError("keep.pareto needs probabilities; graded labels (annotate) give grades: use "
                             "top_fraction or threshold")
        return self

    def spec(self, task: Literal["binary", "graded"], grades: tuple[float, ...]) -> ClassifierSpec:
        h, head = self.hashing, self.head
        return ClassifierSpec(kind=self.model, task=task, grades=grades, num_buckets=h.num_buckets, ngrams=h.ngrams,
                              C=h.C if self.model == "hashing" else head.C, ridge_lambda=head.ridge_lambda,
                              fasttext=self.fasttext.model_dump())


@register
class Classifier(GlobalStage):
    name = "classifier"
    Params = ClassifierParams
    report_score = "quality_score"
    keep_summaries = True
    report_file = "classifier.json"
    batch_rows = 16384

    def configure(self) -> None:
        p = self.params
        # a saved model's kind is read once, here: the shards are scored by whatever it is
        kind = saved_kind(p.apply) if p.apply is not None else p.model
        self.embeds = kind == "embedding_head"  # scores the `embedding` column, not text
        self.needs = ("id", EMBEDDING if self.embeds else p.column)
        self.adds = (p.score_column,)

    def samples(self) -> tuple[str, ...]:
        return ("target",) if self.params.labels == "target" else ()

    def files(self) -> dict[str, str]:
        return {"apply": self.params.apply} if self.params.apply else {}

    def _annotate(self) -> AnnotateParams | None:
        labels = self.params.labels
        return labels.annotate if isinstance(labels, AnnotateLabels) else None

    def models(self) -> dict[str, str]:
        a = self._annotate()
        return {"labels.generator.model": a.generator.model} if a and a.generator.model else {}

    def model_steps(self) -> dict[str, str]:
        a = self._annotate()
        return {"labels.generator.model_from": a.generator.model_from} if a and a.generator.model_from else {}

    def graph_defaults(self, readers: Any, ancestors: Any = ()) -> dict[str, Any]:
        if self.params.embed is not None or not self.embeds:
            return {}
        return next(({"embed": spec.params} for spec in ancestors if spec.name == "embed"), {})

    def fingerprint_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {key: named_model_identity(m) for key, m in self.models().items()}
        if self.params.apply:
            extra["apply"] = _path_identity(self.params.apply)
        return extra

    def summary_params(self) -> dict[str, Any]:
        return self.config() | {"keep": None}

    # ------------------------------------------------------------- training, once per run of the step

    def prepare(self, context: StageContext) -> dict[str, Any]:
        p = self.params
        if p.apply is not None:
            return {"model": p.apply, "trained": False}
        data = labelled_rows(p, context, self.embeds, self._embed_target)
        spec = p.spec(data.task, data.grades)
        model, metrics = _train_and_validate(spec, data, p)
        out = context.models_dir
        save_classifier(model, out, {"labels": data.source, "label_counts": data.counts})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        for warning in metrics["warnings"]:
            log.warning("classifier %s: %s", context.label, warning)
        return {"model": str(out), "trained": True, "metrics": metrics}

    def _embed_target(self, texts: list[str]) -> np.ndarray:
        from curate.stages.embed import Embed

        embedder = Embed(self.params.embed or EmbedParams(column=self.params.column))
        try:
            return embedder.embed_texts(texts)
        finally:
            embedder.teardown()

    # ------------------------------------------------------------- per worker

    def setup(self) -> None:
        self.model = load_classifier(self.prepared["model"])

    def summarize(self, table: pa.Table) -> pa.Table:
        if self.embeds:
            vectors, valid = embedding_matrix(table.column(EMBEDDING))
            scores = np.full(table.num_rows, np.nan)
            if valid.any():
                scores[valid] = score_rows(self.model, embeddings=vectors[valid])
        else:
            scores = score_rows(self.model, texts=table.column(self.params.column).combine_chunks())
        return pa.table({"id": table.column("id"), "score": pa.array(scores, pa.float64(),
                                                                     mask=~np.isfinite(scores))})

    # ------------------------------------------------------------- decision

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        p = self.params
        scores = summary.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
        n = len(scores)
        column = pa.array(scores, pa.float64(), mask=~np.isfinite(scores))
        report: dict[str, Any] = {"rows": n, "score_column": p.score_column, "trained": self.prepared.get("trained"),
                                  "model": self.prepared.get("model"), "metrics": self.prepared.get("metrics"),
                                  "percentiles": percentiles(scores)}
        if p.keep is None:
            report["kept"] = n
            return Decision(score=column, adds={p.score_column: column}, report=report)
        k = p.keep
        finite = scores[np.isfinite(scores)]
        if k.pareto is not None and len(finite) and (finite.min() < 0 or finite.max() > 1):
            raise CurateError("classifier: keep.pareto needs scores that are probabilities (a binary classifier); "
                              "use top_fraction or threshold for grades")
        keep = keep_mask(scores, k.top_fraction, k.threshold, k.pareto, k.seed)
        reason = np.where(keep, None, "below_threshold" if k.threshold is not None else "not_selected")
        report |= {"keep": k.model_dump(exclude_none=True), "kept": int(keep.sum()),
                   "keep_rate": float(keep.mean()) if n else None,
                   "examples": _examples(rows, p.column, scores, keep) if not self.embeds else None}
        report["summary"] = {key: report[key] for key in ("kept", "keep_rate")} | {
            "auc": (report["metrics"] or {}).get("validation", {}).get("roc_auc")}
        return Decision(reason=pa.array(reason.astype(object), pa.string()), score=column,
                        adds={p.score_column: column}, report=report)


def _train_and_validate(spec: ClassifierSpec, data: Labelled, p: ClassifierParams) -> tuple[Any, dict[str, Any]]:
    """The model trained on the rows outside a stratified validation share, and what that share says about it."""
    train, held = stratified_split(data.y, p.validation, p.seed) if p.validation else (np.arange(len(data.y)), None)
    pick = lambda idx: dict(texts=None if data.texts is None else data.texts.take(pa.array(idx)),  # noqa: E731
                            embeddings=None if data.vectors is None else data.vectors[idx])
    model = train_classifier(spec, data.y[train], p.seed, **pick(train))
    metrics: dict[str, Any] = {"task": spec.task, "kind": spec.kind, "train_rows": len(train),
                               "label_counts": data.counts, "source": data.source}
    if held is not None and len(held):
        predicted = score_rows(model, **pick(held))
        threshold = p.keep.threshold if p.keep is not None else None
        metrics["validation"] = binary_metrics(data.y[held], predicted) if spec.task == "binary" else \
            graded_metrics(data.y[held], predicted, data.scale, threshold)
    metrics["warnings"] = warnings_for(metrics.get("validation", {}), data.counts)
    return model, metrics


def _examples(rows: Rows, column: str, scores: np.ndarray, keep: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    """Up to 20 kept rows (highest scores) and 20 dropped ones (the highest below the cut): read the kept ones, a
    classifier learns style as much as quality (§15.8)."""
    out = {}
    for name, mask in (("kept", keep), ("dropped", ~keep & np.isfinite(scores))):
        where = np.flatnonzero(mask)
        chosen = where[top_k(scores[where], EXAMPLES)]
        table = rows.take(chosen, ["id", column])
        texts = pc.utf8_slice_codeunits(as_text(table.column(column)), 0, 300)
        out[name] = [{"id": i, "score": float(scores[c]), "text": t} for i, c, t in zip(
            table.column("id").to_pylist(), chosen, texts.to_pylist(), strict=True)]
    return out


def _path_identity(path: str) -> dict[str, Any]:
    """What a saved classifier's files hold, so that a retrained model re-scores the rows."""
    return folder_identity(path) if Path(path).is_dir() else {"sha256": file_sha256(path)}
