"""`color_filter`: CoLoR-Filter, conditional loss reduction (docs/methods.md §1).

Two auxiliary LMs score every row:
- the prior: `prior.model`, or a small LM trained from scratch (`prior.lm`) on a seeded random sample
  (`prior.fraction`, at most `prior.max_rows`) of the stage's input, standing in for D_prior;
- the conditional model: `conditional.model`, or the prior fine-tuned on the run's `target:` sample for
  `conditional.epochs` (1) with a fresh optimizer (`lr`, `warmup_steps`, `batch_size`) — a fine-tune of the
  prior, so the score is a loss *reduction* (§1.3). With several targets it trains on their weighted union.

`color_score = L_prior - L_cond` over the scored tokens (`reduction: mean`, the default for variable-length
SFT data, or `sum`); `part: response` scores the response given the prompt. Higher is better (§1.4).
Selection keeps k = int(N / `tau`) rows (`tau: auto`: the score quantile buckets the scaling law recommends for
`compute:`, docs/methods.md §8): `mode: global` the top k of all scores (§1.5); `mode: batched`
shuffles rows (seed) into windows of tau * `batch` rows and keeps the top 1/tau of each. Ties: lower position.
Adds `color_score` to every row; others are dropped with `not_selected` (rows without scored tokens with
`too_few_tokens`). Both models are saved under the run's `models/`; scores are kept under `scores/`, so a
new tau, mode or reduction re-selects without re-scoring.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curate.data.targets import TARGET_NAME, TARGET_WEIGHT, weighted_union
from curate.methods.scaling import ComputeParams, auto_budget_of_rows, needs_compute
from curate.methods.selection import top_k
from curate.models.lm_train import LMTrainConfig
from curate.models.locate import named_model_identity
from curate.stages.base import GlobalStage, Params, Rows, StageContext, register
from curate.stages.decision import Decision
from curate.stages.lm_scoring import (
    ScorerParams,
    needed_columns,
    sample_positions,
    score_table,
    training_texts,
)


class PriorParams(Params):
    """The prior model: given (`model`), or trained on a random sample of the input."""

    model: str | None = None
    fraction: float = Field(0.2, gt=0, le=1)
    max_rows: int | None = Field(50_000, ge=1)
    seed: int = 0
    lm: LMTrainConfig = LMTrainConfig()


class ConditionalParams(Params):
    """The conditional model: given (`model`), or the prior fine-tuned on the target (fresh optimizer)."""

    model: str | None = None
    epochs: float = Field(1.0, gt=0)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    batch_size: int = Field(16, ge=1)
    seed: int = 0


class ColorFilterParams(ScorerParams):
    prior: PriorParams = PriorParams()
    conditional: ConditionalParams = ConditionalParams()
    tau: float | Literal["auto"] = 7.0
    compute: ComputeParams | None = None  # the training budget behind `tau: auto` (curate.methods.scaling)
    mode: Literal["global", "batched"] = "global"
    batch: int = Field(1000, ge=1)
    reduction: Literal["mean", "sum"] = "mean"
    seed: int = 0

    @model_validator(mode="after")
    def _tau(self) -> ColorFilterParams:
        if self.tau != "auto" and self.tau < 1:
            raise ValueError(f"tau must be >= 1 or auto, got {self.tau}")
        if self.tau == "auto" and self.mode != "global":
            raise ValueError("tau: auto works with mode global")
        return needs_compute("tau")(self)


def color_scores(prior_loss: np.ndarray, conditional_loss: np.ndarray) -> np.ndarray:
    """CoLoR-Filter's score: prior loss minus conditional loss (higher: the target makes the row likelier)."""
    return np.asarray(prior_loss, np.float64) - np.asarray(conditional_loss, np.float64)


def color_select(scores: np.ndarray, tau: float, mode: Literal["global", "batched"] = "global",
                 batch: int = 1000, seed: int = 0) -> np.ndarray:
    """Positions kept: the global top int(N / tau), or the top 1/tau of each shuffled window of tau * batch."""
    n = len(scores)
    if mode == "global":
        return np.sort(top_k(scores, int(n / tau)))
    order = np.random.default_rng(seed).permutation(n)
    window = max(1, round(tau * batch))
    kept = [order[start:start + window][top_k(scores[order[start:start + window]],
                                              int(len(order[start:start + window]) / tau))]
            for start in range(0, n, window)]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)


def union_positions(target: Any, seed: int) -> np.ndarray | None:
    """The target rows the conditional model trains on: all of them, or with several targets their weighted union
    (each target's share of the rows proportional to its weight)."""
    columns = [c for c in (TARGET_NAME, TARGET_WEIGHT) if c in target.schema.names]
    if TARGET_NAME not in columns:
        return None
    table = target.to_table(columns=columns)
    if len(set(table.column(TARGET_NAME).to_pylist())) < 2:
        return None
    return weighted_union(table, seed)


@register
class ColorFilter(GlobalStage):
    name = "color_filter"
    exclusive = True  # trains with torch's process-wide random state (curate.engine.schedule)
    Params = ColorFilterParams
    adds = ("color_score",)
    report_score = "color_score"
    keep_summaries = True

    def configure(self) -> None:
        self.needs = needed_columns(self.params.part)

    def samples(self) -> tuple[str, ...]:
        return ("target",) if self.params.conditional.model is None else ()

    def summary_params(self) -> dict[str, Any]:
        p = self.params
        return {"part": p.part, "max_length": p.max_length, "prior": p.prior.model_dump(mode="json"),
                "conditional": p.conditional.model_dump(mode="json")}

    def models(self) -> dict[str, str]:
        named = {"prior.model": self.params.prior.model, "conditional.model": self.params.conditional.model}
        return {key: model for key, model in named.items() if model}

    def fingerprint_extra(self) -> dict[str, Any]:
        return {key.split(".")[0]: named_model_identity(model) for key, model in self.models().items()}

    def prepare(self, context: StageContext) -> dict[str, Any]:
        from curate.models.lm_train import train_lm

        p = self.params
        prior = p.prior.model
        if prior is None:
            positions = sample_positions(context.input.count(), p.prior.fraction, p.prior.max_rows, p.prior.seed)
            prior = str(train_lm(training_texts(context.input, positions), context.models_dir / "prior", p.prior.lm))
        conditional = p.conditional.model
        if conditional is None:
            if context.target is None:
                raise ValueError("color_filter needs the config's `target:` sample (or conditional.model)")
            target = training_texts(context.target, union_positions(context.target, p.conditional.seed))
            c = p.conditional
            tune = p.prior.lm.model_copy(update={"epochs": c.epochs, "lr": c.lr, "warmup_steps": c.warmup_steps,
                                                 "batch_size": c.batch_size, "seed": c.seed})
            conditional = str(train_lm(target, context.models_dir / "conditional", tune, init=prior))
        return {"prior": prior, "conditional": conditional}

    def setup(self) -> None:
        from curate.models.lm_scorer import LMScorer

        p = self.params
        options = {"device": p.device, "max_length": p.max_length, "token_budget": p.token_budget}
        self.scorers = {"prior": LMScorer(self.prepared.get("prior") or p.prior.model, **options),
                        "cond": LMScorer(self.prepared.get("conditional") or p.conditional.model, **options)}

    def summarize(self, table: pa.Table) -> pa.Table:
        columns: dict[str, Any] = {"id": table.column("id")}
        for prefix, scorer in self.scorers.items():
            columns.update(score_table(scorer, table, self.params.part, prefix))
        return pa.table(columns)

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        p = self.params
        get = lambda name: summary.column(name).to_numpy(zero_copy_only=False).astype(np.float64)  # noqa: E731
        score = color_scores(get(f"prior_nll_{p.reduction}"), get(f"cond_nll_{p.reduction}"))
        scored = np.flatnonzero((get("prior_tokens") > 0) & np.isfinite(score))
        tau, report = p.tau, None
        if tau == "auto":
            k, auto = auto_budget_of_rows(score[scored], rows, scored, p.compute, True, self.name)
            tau = len(scored) / max(k, 1)  # int(N / tau) = k
            report = {"auto_budget": auto | {"tau": tau}, "summary": {"auto_budget": auto | {"tau": tau}}}
        keep = scored[color_select(score[scored], tau, p.mode, p.batch, p.seed)]
        reason = np.full(summary.num_rows, "not_selected", dtype=object)
        reason[np.setdiff1d(np.arange(summary.num_rows), scored)] = "too_few_tokens"
        reason[keep] = None
        column = pa.array(score, pa.float64(), mask=~np.isfinite(score))
        return Decision(reason=pa.array(reason, pa.string()), score=column, adds={"color_score": column},
                        report=report)
