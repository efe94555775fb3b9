"""`perplexity`: score rows with a causal LM and keep them by perplexity (docs/methods.md §6.3-6.5).

Scorer: `model` (a local folder or hub id), or `reference: {...}` to train a small reference LM on a random
split of the input first, as "Perplexed by Perplexity" does (§6.4; `reference.holdout: true` drops the
training rows from the selection with reason `reference_split`). `part: text` scores every token;
`part: response` only the response given the prompt. `PPL = exp(mean NLL)` (natural log).

Decision (`mode`), over the rows' PPL, per group of `group_by` when set (percentiles per group):
- `band`: keep `min_ppl <= PPL <= max_ppl` (either bound may be null; both null keeps all: scoring only);
- `lowest` / `highest`: keep floor(`fraction` * n) rows of lowest / highest PPL (ties: lower position);
  `fraction: auto` keeps the PPL quantile buckets the scaling law recommends for `compute:` (§8,
  curate.methods.scaling);
- `middle`: keep the central `fraction` of the mass, ranks [50 - 50ρ, 50 + 50ρ] percent;
- `percentile_buckets`: CCNet buckets: `cutoffs` (percentiles, default 30 and 60) split rows into `buckets`
  (`head` < P30 <= `middle` < P60 <= `tail`); keep the `keep` buckets. Adds `ppl_bucket`.
Rows with fewer than `min_tokens` scored tokens are dropped with `too_few_tokens`. Adds `ppl` to every row.
Scores are kept under the run's `scores/`: a new decision (mode, fraction, bounds) does not re-score.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.methods.scaling import ComputeParams, auto_budget, needs_compute
from curate.methods.selection import fraction_to_k, top_k
from curate.models.lm_train import LMTrainConfig
from curate.models.locate import named_model_identity
from curate.stages.base import GlobalStage, Params, Rows, StageContext, register
from curate.stages.decision import Decision
from curate.stages.lm_scoring import (
    ScorerParams,
    load_positions,
    needed_columns,
    sample_positions,
    save_positions,
    score_table,
    training_texts,
)

Mode = Literal["band", "lowest", "highest", "middle", "percentile_buckets"]


class ReferenceParams(Params):
    """Train the scoring LM on a seeded random split of the input (§6.4)."""

    fraction: float = Field(0.1, gt=0, lt=1)
    max_rows: int | None = Field(50_000, ge=1)
    holdout: bool = True
    seed: int = 0
    lm: LMTrainConfig = LMTrainConfig()


class PerplexityParams(ScorerParams):
    model: str | None = None
    reference: ReferenceParams | None = None
    mode: Mode = "band"
    min_ppl: float | None = Field(None, ge=0)
    max_ppl: float | None = Field(None, ge=0)
    fraction: float | Literal["auto"] | None = Field(None)
    compute: ComputeParams | None = None  # the training budget behind `fraction: auto` (curate.methods.scaling)
    cutoffs: list[float] = [30.0, 60.0]
    buckets: list[str] = ["head", "middle", "tail"]
    keep: list[str] = ["head"]
    group_by: str | None = None
    min_tokens: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> PerplexityParams:
        if (self.model is None) == (self.reference is None):
            raise ValueError("give exactly one of `model` (a causal LM) or `reference` (train one on the input)")
        if self.mode in ("lowest", "highest", "middle") and self.fraction is None:
            raise ValueError(f"mode {self.mode!r} needs `fraction`")
        if isinstance(self.fraction, float) and not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1] or auto, got {self.fraction}")
        if self.fraction == "auto" and (self.mode not in ("lowest", "highest") or self.group_by):
            raise ValueError("fraction: auto works with mode lowest or highest, without group_by")
        needs_compute("fraction")(self)
        if self.mode == "percentile_buckets":
            if len(self.buckets) != len(self.cutoffs) + 1:
                raise ValueError(f"{len(self.cutoffs)} cutoffs make {len(self.cutoffs) + 1} buckets; "
                                 f"`buckets` names {len(self.buckets)}")
            if unknown := set(self.keep) - set(self.buckets):
                raise ValueError(f"keep names unknown buckets {sorted(unknown)}; buckets: {self.buckets}")
        return self


def ccnet_perplexity(line_log10_probs: list[float] | np.ndarray, line_words: list[int] | np.ndarray) -> float:
    """CCNet's document perplexity from per-line KenLM scores (§6.1): 10^(-Σ log10 P(line) / Σ (words + 1)),
    the +1 being each line's end-of-sentence token. CCNet rounds the result to 0.1."""
    lengths = np.asarray(line_words, np.float64) + 1
    return float(10 ** (-np.sum(line_log10_probs) / lengths.sum()))


def _pct(value: float) -> str:
    return f"p{value:g}"


def perplexity_select(ppl: np.ndarray, mode: Mode, *, min_ppl: float | None = None, max_ppl: float | None = None,
                      fraction: float | None = None, cutoffs: list[float] = (30.0, 60.0),
                      buckets: list[str] = ("head", "middle", "tail"), keep: list[str] = ("head",),
                      groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Reasons to drop (None keeps) for each PPL, and each row's bucket name (percentile_buckets only).

    Percentiles and fractions are taken within each group (all rows form one group when `groups` is None).
    """
    n = len(ppl)
    reason = np.full(n, None, dtype=object)
    bucket = np.full(n, None, dtype=object) if mode == "percentile_buckets" else None
    if mode == "band":
        if min_ppl is not None:
            reason[ppl < min_ppl] = "ppl_below_min"
        if max_ppl is not None:
            reason[ppl > max_ppl] = "ppl_above_max"
        return reason, bucket
    labels = np.zeros(n, np.int64) if groups is None else np.unique(groups, return_inverse=True)[1]
    for g in np.unique(labels):  # a loop over groups (languages, domains), not rows
        rows = np.flatnonzero(labels == g)
        values = ppl[rows]
        if mode in ("lowest", "highest"):
            k = fraction_to_k(fraction, len(rows))
            chosen = top_k(-values if mode == "lowest" else values, k)
            drop = np.ones(len(rows), bool)
            drop[chosen] = False
            label = f"ppl_above_{_pct(100 * fraction)}" if mode == "lowest" else \
                f"ppl_below_{_pct(100 * (1 - fraction))}"
            reason[rows[drop]] = label
        elif mode == "middle":
            order = np.lexsort((np.arange(len(rows)), values))  # ascending PPL, ties by position
            start = int(np.floor(len(rows) * (0.5 - fraction / 2)))
            stop = start + fraction_to_k(fraction, len(rows))
            reason[rows[order[:start]]] = f"ppl_below_{_pct(50 - 50 * fraction)}"
            reason[rows[order[stop:]]] = f"ppl_above_{_pct(50 + 50 * fraction)}"
        else:
            thresholds = np.percentile(values, cutoffs)
            names = np.array(buckets, dtype=object)[np.searchsorted(thresholds, values, side="right")]
            bucket[rows] = names
            dropped = ~np.isin(names, list(keep))
            reason[rows[dropped]] = np.char.add("ppl_bucket_", names[dropped].astype(str)).astype(object)
    return reason, bucket


@register
class Perplexity(GlobalStage):
    name = "perplexity"
    exclusive = True  # trains with torch's process-wide random state (curate.engine.schedule)
    selection_reasons = ("not_selected", "ppl_above_p", "ppl_below_p", "ppl_bucket_")
    Params = PerplexityParams
    adds = ("ppl",)
    report_score = "ppl"
    higher_is_better = False
    keep_summaries = True

    def configure(self) -> None:
        group = (self.params.group_by,) if self.params.group_by else ()
        self.needs = needed_columns(self.params.part) + group
        self.adds = ("ppl", "ppl_bucket") if self.params.mode == "percentile_buckets" else ("ppl",)

    def summary_params(self) -> dict[str, Any]:
        p = self.params
        return {"part": p.part, "max_length": p.max_length, "model": p.model,
                "reference": None if p.reference is None else p.reference.model_dump(mode="json")}

    def models(self) -> dict[str, str]:
        return {"model": self.params.model} if self.params.model else {}

    def fingerprint_extra(self) -> dict[str, Any]:
        return {key: named_model_identity(model) for key, model in self.models().items()}

    def prepare(self, context: StageContext) -> dict[str, Any]:
        ref = self.params.reference
        if ref is None:
            return {"model": self.params.model}
        from curate.models.lm_train import train_lm

        positions = sample_positions(context.input.count(), ref.fraction, ref.max_rows, ref.seed)
        model = train_lm(training_texts(context.input, positions), context.models_dir / "reference", ref.lm)
        holdout = save_positions(context.models_dir / "reference_split.parquet", positions) if ref.holdout else None
        return {"model": str(model), "holdout": holdout}

    def setup(self) -> None:
        from curate.models.lm_scorer import LMScorer

        p = self.params
        model = self.prepared.get("model") or p.model
        self.scorer = LMScorer(model, device=p.device, max_length=p.max_length, token_budget=p.token_budget)

    def summarize(self, table: pa.Table) -> pa.Table:
        columns: dict[str, Any] = {"id": table.column("id")}
        columns.update(score_table(self.scorer, table, self.params.part, "lm"))
        if self.params.group_by:
            columns["group"] = table.column(self.params.group_by)
        return pa.table(columns)

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        p = self.params
        n = summary.num_rows
        mean = summary.column("lm_nll_mean").to_numpy(zero_copy_only=False).astype(np.float64)
        tokens = summary.column("lm_tokens").to_numpy(zero_copy_only=False)
        ppl = np.exp(mean)
        reason = np.full(n, None, dtype=object)
        reason[tokens < p.min_tokens] = "too_few_tokens"
        reason[load_positions(self.prepared.get("holdout"))] = "reference_split"
        judged = np.flatnonzero(np.equal(reason, None))
        groups = None
        if p.group_by:  # as strings, nulls as "": np.unique cannot order None against values
            values = pc.fill_null(pc.cast(summary.column("group"), pa.string()), "")
            groups = values.to_numpy(zero_copy_only=False)[judged]
        fraction, report = p.fraction, None
        if fraction == "auto":
            k, auto = auto_budget(ppl[judged], tokens[judged], p.compute, p.mode == "highest", self.name)
            fraction, report = k / max(len(judged), 1), {"auto_budget": auto, "summary": {"auto_budget": auto}}
        chosen, bucket = perplexity_select(ppl[judged], p.mode, min_ppl=p.min_ppl, max_ppl=p.max_ppl,
                                           fraction=fraction, cutoffs=p.cutoffs, buckets=p.buckets,
                                           keep=p.keep, groups=groups)
        reason[judged] = chosen
        adds = {"ppl": pa.array(np.where(tokens > 0, ppl, np.nan), pa.float64(), mask=tokens == 0)}
        if bucket is not None:
            full = np.full(n, None, dtype=object)
            full[judged] = bucket
            adds["ppl_bucket"] = pa.array(full, pa.string())
        return Decision(reason=pa.array(reason, pa.string()), score=adds["ppl"], adds=adds, report=report)
