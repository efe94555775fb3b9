"""Stage `kmeans_diversity`: kMQ, k-means clustering + quality-weighted sampling per cluster (docs/methods.md §4.4).

Method (global stage):
1. FAISS k-means on the `embedding` column (`clusters` K, clamped to the number of rows with an
   embedding; see `curate.methods.kmeans`).
2. Budget B = `count`, or floor(`fraction` · N) with N = all input rows (give exactly one of the two); `fraction:
   auto` takes the rows of the `quality` buckets the scaling law recommends for `compute:` (docs/methods.md §8).
3. Per-cluster quotas b_j: `quota: equal` (the repo's code, b_j = min(floor(B/K), |C_j|)) or
   `proportional` (floor(B·|C_j|/N)); `redistribute: true` hands what small clusters leave unused to
   clusters with room (our improvement; off as in the repo). `cluster_weights` (K non-negative numbers,
   e.g. from `curate.methods.selection.cluster_weights` in the iterative variant, §4.5) replaces both: B cluster
   labels are drawn from Categorical(w) and b_j = min(m_j, |C_j|).
4. Inside each cluster, b_j rows without replacement with P ∝ exp(q / `temperature`), q the numeric
   column named by `quality` (Gumbel-top-k, all clusters in one sort; no exp is taken, so no overflow).
   No `quality` column: uniform sampling inside clusters (the "k-means-random" baseline).
   `quality_scale: zscore` standardises q over all rows first; null/NaN quality counts as the mean.

Parameters (defaults): clusters 1024, niter 300, nredo 5 (the kMQ config), seed 1234, spherical false,
init "kmeans++" (FAISS's "random" for repo parity), max_points_per_centroid 256 (FAISS's training
subsample), quota "equal", redistribute false, quality null, temperature 1.0, quality_scale "raw",
fraction / count (one required), cluster_weights null.

Output: every row gets `cluster` (int32; null for a row without an embedding). Rows not picked are
dropped with reason `not_selected`, score = their quality (null without one), and details
`cluster_size`, `cluster_quota`, `n_clusters` (the K actually used). Rows with a null embedding are
dropped with reason `missing_embedding`.

Determinism: all random numbers come from one `np.random.default_rng(seed)` in dataset order (one
Gumbel draw per input row, then the label draw for `cluster_weights`), and the summary is concatenated
in dataset order, so the same seed selects the same ids whatever the sharding or number of workers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.data.embedding import EMBEDDING, HoldsEmbeddings, check_embedding_type, embedding_matrix
from curate.data.errors import CurateError
from curate.methods.scaling import ComputeParams, auto_budget_of_rows, needs_compute
from curate.methods.selection import (
    allocate_quotas,
    fraction_to_k,
    gumbel_noise,
    quotas_from_weights,
    segmented_top_k,
)
from curate.models.finetune import FinetuneConfig
from curate.models.locate import named_model_identity
from curate.stages.base import GlobalStage, Rows, StageContext, register
from curate.stages.clustering import KMeansParams
from curate.stages.decision import Decision

log = logging.getLogger("curate")

_REASONS = pa.array([None, "not_selected", "missing_embedding"], pa.string())


class KMeansDiversityParams(KMeansParams):
    """kMQ settings (k-means defaults from the kMQ config); see the module docstring."""

    clusters: int = Field(1024, ge=1)
    niter: int = Field(300, ge=1)
    nredo: int = Field(5, ge=1)
    spherical: bool = False
    quota: Literal["equal", "proportional"] = "equal"
    redistribute: bool = False
    quality: str | None = None
    temperature: float = Field(1.0, gt=0)
    quality_scale: Literal["raw", "zscore"] = "raw"
    fraction: float | Literal["auto"] | None = None  # auto: the compute-aware share of the `quality` buckets
    compute: ComputeParams | None = None  # the training budget behind `fraction: auto` (curate.methods.scaling)
    count: int | None = Field(None, ge=0)
    cluster_weights: list[float] | None = None
    # iterative kMQ (§4.5): rounds > 1 fine-tunes and scores between rounds
    rounds: int = Field(1, ge=1)
    finetune: FinetuneConfig | None = None
    score: Literal["loss_gap", "perplexity", "reward"] = "loss_gap"
    reward_model: str | None = None
    max_new_tokens: int = Field(256, ge=1)  # score: reward (the fine-tuned model's answers)
    empty_cluster_weight: Literal["zero", "mean"] = "zero"
    shrinkage: float | None = Field(None, gt=0)  # n0: pull noisy cluster means toward the mean of means
    draw_size: Literal["budget", "repo"] = "budget"  # B/R per later round, or the repo's B/(R·K)

    @model_validator(mode="after")
    def _one_budget(self) -> KMeansDiversityParams:
        if (self.fraction is None) == (self.count is None):
            raise ValueError("give exactly one of 'fraction' and 'count'")
        if isinstance(self.fraction, float) and not 0 <= self.fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1] or auto, got {self.fraction}")
        if self.fraction == "auto" and not self.quality:
            raise ValueError("fraction: auto ranks rows by quality: name the `quality` column")
        needs_compute("fraction")(self)
        if self.rounds > 1:
            if self.finetune is None:
                raise ValueError("rounds > 1 fine-tunes between rounds: give `finetune` ({model: ...} or "
                                 "{init: scratch, ...})")
            if self.cluster_weights is not None:
                raise ValueError("rounds > 1 computes the cluster weights: leave `cluster_weights` out")
            if self.score == "reward" and not self.reward_model:
                raise ValueError("score: reward needs `reward_model` (a folder or hub id)")
        w = self.cluster_weights
        if w is not None:
            if len(w) != self.clusters:
                raise ValueError(f"cluster_weights has {len(w)} values for clusters={self.clusters}")
            if any(not np.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
                raise ValueError("cluster_weights must be finite, non-negative and not all zero")
        return self


def quality_log_weights(values: pa.Array | pa.ChunkedArray, temperature: float, scale: str) -> np.ndarray:
    """log w = q / temperature (q z-scored first for scale "zscore"); null or NaN q counts as the mean."""
    q = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    known = np.isfinite(q)
    mean = float(q[known].mean()) if known.any() else 0.0
    q = np.where(known, q, mean)
    if scale == "zscore":
        std = float(q.std())
        q = (q - mean) / std if std > 0 else np.zeros_like(q)
    return q / temperature


@register
class KMeansDiversity(HoldsEmbeddings, GlobalStage):
    name = "kmeans_diversity"
    Params = KMeansDiversityParams
    adds = ("cluster",)
    report_file = "rounds.json"  # iterative kMQ: per round, the weights, draws and training

    def configure(self) -> None:
        quality = self.params.quality
        self.needs = ("id", EMBEDDING) + ((quality,) if quality and quality not in ("id", EMBEDDING) else ())
        if self.params.rounds > 1:
            self.exclusive = True  # each round trains a model (curate.engine.schedule)
            self.needs += ("text",)
            self.uses = ("prompt", "response", "messages")
            self.adds = ("cluster", "kmq_round", "kmq_score")

    def models(self) -> dict[str, str]:
        p = self.params
        named = {"finetune.model": p.finetune.model} if p.rounds > 1 and p.finetune and p.finetune.model else {}
        return {**named, **({"reward_model": p.reward_model} if p.rounds > 1 and p.reward_model else {})}

    def fingerprint_extra(self) -> dict[str, Any]:
        return {key: named_model_identity(name) for key, name in self.models().items()}

    def prepare(self, context: StageContext) -> dict[str, Any]:
        return {"models": str(context.models_dir)} if self.params.rounds > 1 else {}

    def check_input(self, schema: pa.Schema) -> None:
        """The needed columns exist, embeddings are float lists and the quality column is numeric."""
        super().check_input(schema)
        check_embedding_type(self.name, schema)
        quality = self.params.quality
        if quality and not (pa.types.is_integer(schema.field(quality).type)
                            or pa.types.is_floating(schema.field(quality).type)
                            or pa.types.is_boolean(schema.field(quality).type)):
            raise CurateError(f"stage '{self.name}': quality column {quality!r} must be numeric, "
                              f"got {schema.field(quality).type}")

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        p = self.params
        n = summary.num_rows
        x, valid = embedding_matrix(summary.column(EMBEDDING), summary.column("id"))
        rng = np.random.default_rng(p.seed)
        noise = gumbel_noise(rng, n)  # first, one per row in dataset order: independent of sharding
        live = np.flatnonzero(valid)
        result = p.fit(x if len(live) == n else x[live], spherical=p.spherical)
        del x
        labels = np.full(n, -1, np.int64)
        labels[live] = result.assignment
        k = result.k
        sizes = np.bincount(result.assignment, minlength=k)
        auto = None
        if p.fraction == "auto":
            quality = pc.cast(summary.column(p.quality), pa.float64()).to_numpy(zero_copy_only=False)[live]
            budget, auto = auto_budget_of_rows(quality.astype(np.float64), rows, live, p.compute, True, self.name)
        else:
            budget = p.count if p.count is not None else fraction_to_k(p.fraction, n)
        if p.rounds > 1:
            return self._decide_rounds(labels, valid, k, budget, rows, rng)
        if p.cluster_weights is not None:
            if k != len(p.cluster_weights):
                raise CurateError(f"{self.name}: {len(p.cluster_weights)} cluster_weights but only {k} clusters "
                                  f"could be formed from {len(live)} rows")
            quotas = quotas_from_weights(np.array(p.cluster_weights), sizes, budget, rng)
        else:
            quotas = allocate_quotas(sizes, budget, p.quota, p.redistribute)
        if p.quality:
            log_w = quality_log_weights(summary.column(p.quality), p.temperature, p.quality_scale)
        else:
            log_w = np.zeros(n)
        chosen = segmented_top_k(log_w + noise, labels, quotas)
        log.info("%s: K=%d (asked %d) on %d rows, budget %d, quotas sum %d, selected %d", self.name, k,
                 p.clusters, len(live), budget, int(quotas.sum()), len(chosen))

        reason = np.where(valid, 1, 2).astype(np.int8)
        reason[chosen] = 0
        keep = reason == 0
        cluster = pa.array(labels.astype(np.int32), pa.int32(), mask=~valid)
        safe = np.maximum(labels, 0)
        per_row = lambda values: pa.array(  # noqa: E731
            values[safe].astype(np.int64), pa.int64(), mask=keep | ~valid)
        score = pa.nulls(n, pa.float64())
        if p.quality:  # the quality as stored (null stays null), on dropped rows only
            quality = pc.cast(summary.column(p.quality), pa.float64()).combine_chunks()
            score = pc.if_else(pa.array(keep), score, quality)
        return Decision(
            reason=_REASONS.take(pa.array(reason)),
            score=score,
            adds={"cluster": cluster},
            details={"cluster_size": per_row(sizes if k else np.zeros(1, np.int64)),
                     "cluster_quota": per_row(quotas if k else np.zeros(1, np.int64)),
                     "n_clusters": pa.array(np.full(n, k, np.int32), pa.int32(), mask=keep)},
            report=None if auto is None else {"auto_budget": auto, "summary": {"auto_budget": auto}},
        )

    def _decide_rounds(self, labels: np.ndarray, valid: np.ndarray, k: int, budget: int, rows: Rows,
                       rng: np.random.Generator) -> Decision:
        """Iterative kMQ: the rows picked over `rounds` rounds (see `curate.stages.diversity_rounds`)."""
        from curate.stages.diversity_rounds import Rounds

        n = len(labels)
        result = Rounds(self.params, rows, n, Path(self.prepared["models"])).run(labels, k, budget, rng)
        keep = result.picked_in >= 0
        reason = np.where(valid, 1, 2).astype(np.int8)
        reason[keep] = 0
        cluster = pa.array(labels.astype(np.int32), pa.int32(), mask=~valid)
        table = [{"round": r["round"], "cluster": j, "weight": r["weights"][j], "scored": r["scored"][j],
                  "mean_score": r["mean_score"][j], "picked": r["picked_per_cluster"][j]}
                 for r in result.rounds[1:] for j in range(k)]
        return Decision(
            reason=_REASONS.take(pa.array(reason)),
            adds={"cluster": cluster,
                  "kmq_round": pa.array(result.picked_in.astype(np.int16), pa.int16(), mask=~keep),
                  "kmq_score": pa.array(result.scores, pa.float64(), mask=np.isnan(result.scores))},
            report={"rounds": result.rounds, "tables": {"rounds": table},
                    "summary": {"rounds": [{k: r.get(k) for k in ("round", "trained_on", "picked", "train_loss")}
                                           | {"weights": [round(w, 4) for w in r.get("weights", [])]}
                                           for r in result.rounds]}},
        )
