"""`dsir`: DSIR, data selection by importance resampling with hashed n-gram features (docs/methods.md §6.6).

1. `prepare` fits two bag-of-n-gram models over `num_buckets` hashed unigram + bigram buckets (`ngrams`,
   `curate.methods.ngram_features`): the target's, p_T (all its tokens, Laplace pseudo-count `smoothing` per bucket;
   with several targets the weighted mixture of each target's normalised model), and the raw pool's, q_R (the first
   `num_tokens_to_fit` tokens of the step's input: `auto` = 100,000 x buckets, `all`, or a number).
   It stores log p_T - log q_R (with the package's 1e-8 floors) for the workers.
2. Per shard, each row's log importance weight `dsir_logw` = Σ_k c_k(x) (log p_T(k) - log q_R(k)) over its
   features, and its word count (Σ_k c_k + n(n-1)/2) // n. These are the stored scores: a new budget or seed
   re-decides without hashing again.
3. The decision drops rows of fewer than `min_words` words (`too_few_words`; `auto`: the package's 100, lowered to
   the target's 5th-percentile length, recorded in the decision), then keeps `budget` rows (a count,
   or a fraction of all input rows, or `auto`: the log-weight quantile buckets the scaling law recommends for
   `compute:`, docs/methods.md §8) by Gumbel-top-k on `dsir_logw` with `seed` (sampling without replacement
   with probability ∝ w), or the deterministic top k with `top_k: true`. The rest: `not_selected`.

With several targets and `separate_targets: true`, each target has its own weights (`dsir_logw` is then the
weight under the target that chose the row, or the best one for rows not chosen); the budget is split by the
targets' `weight`s (`split_by: weights`) or their token counts (`split_by: tokens`, the package's default),
and each target picks in turn among the rows not yet chosen.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curate.data.errors import CurateError
from curate.data.targets import target_groups
from curate.methods.ngram_features import HashName, bucket_counts, hashed_ngrams
from curate.methods.scaling import ComputeParams, auto_budget, needs_compute
from curate.methods.selection import Budget, budget_to_k, gumbel_noise
from curate.methods.selection import top_k as top_k_positions
from curate.stages.base import GlobalStage, Params, Rows, StageContext, register
from curate.stages.decision import Decision

log = logging.getLogger("curate")
FLOOR = 1e-8  # the package's floor inside both logs
LOGW = "dsir_logw"


class DsirParams(Params):
    budget: Budget
    compute: ComputeParams | None = None  # the training budget behind `budget: auto` (curate.methods.scaling)
    column: str = "text"
    num_buckets: int = Field(10_000, ge=2)
    ngrams: int = Field(2, ge=1, le=5)
    hash: HashName = "sha256"  # the data-selection package's buckets; `fast`: 2x faster, other collisions
    smoothing: float = Field(0.0, ge=0)  # Laplace pseudo-count per bucket of the target model
    num_tokens_to_fit: Literal["auto", "all"] | int = "auto"
    # rows with fewer words are dropped (`too_few_words`); auto: the package's 100, lowered to the target's 5th
    # percentile so that rows as short as the target's are kept
    min_words: Literal["auto"] | Annotated[int, Field(ge=0)] = "auto"
    top_k: bool = False
    seed: int = 0
    separate_targets: bool = False
    split_by: Literal["weights", "tokens"] = "weights"

    _auto = model_validator(mode="after")(needs_compute("budget"))


DEFAULT_MIN_WORDS = 100  # the data-selection package's


def auto_min_words(target_words: np.ndarray) -> int:
    """`min_words: auto`: the package's 100, or the target's 5th-percentile length when its rows are shorter."""
    if not len(target_words):
        return DEFAULT_MIN_WORDS
    return int(min(DEFAULT_MIN_WORDS, np.floor(np.percentile(target_words, 5))))


def log_ratio(target_counts: np.ndarray, raw_counts: np.ndarray) -> np.ndarray:
    """log(p_T + 1e-8) - log(q_R + 1e-8) from count vectors (each normalised to a distribution)."""
    p = target_counts / max(target_counts.sum(), 1e-300)
    q = raw_counts / max(raw_counts.sum(), 1e-300)
    return np.log(p + FLOOR) - np.log(q + FLOOR)


def split_budget(k: int, proportions: np.ndarray) -> list[int]:
    """k split by proportions, floors, the remainder to the last (as the package)."""
    parts = [int(k * p) for p in proportions]
    parts[-1] += k - sum(parts)
    return parts


def select_rows(logw: np.ndarray, eligible: np.ndarray, parts: list[int], top_k: bool = False,
                seed: int = 0) -> np.ndarray:
    """The target (column of `logw`) that chose each row, -1 for none: target t in turn takes `parts[t]` of the
    eligible rows not yet chosen, by Gumbel-top-k on its log-weights (`seed`) or by plain top-k."""
    n = len(logw)
    rng = np.random.default_rng(seed)
    chosen_by = np.full(n, -1)
    open_rows = eligible.copy()
    for t, want in enumerate(parts):
        # one noise draw per target over all rows, in dataset order: the same seed picks the same rows
        keys = logw[:, t] + (0.0 if top_k else gumbel_noise(rng, n))
        picked = top_k_positions(np.where(open_rows, keys, -np.inf), want)
        chosen_by[picked] = t
        open_rows[picked] = False
    return chosen_by


@register
class Dsir(GlobalStage):
    name = "dsir"
    Params = DsirParams
    adds = (LOGW,)
    report_score = LOGW
    keep_summaries = True
    report_file = "dsir.json"

    def configure(self) -> None:
        self.needs = ("id", self.params.column)

    def samples(self) -> tuple[str, ...]:
        return ("target",)

    def summary_params(self) -> dict[str, Any]:
        p = self.params
        return self.config() | {"budget": None, "compute": None, "top_k": None, "seed": None, "min_words": None,
                                "split_by": None} | ({} if p.separate_targets else {"separate_targets": None})

    def _features(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        return hashed_ngrams(texts, p.num_buckets, p.ngrams, p.hash)

    def _counts(self, texts: pa.Array) -> np.ndarray:
        return bucket_counts(self._features(texts)[1], self.params.num_buckets)

    def prepare(self, context: StageContext) -> dict[str, Any]:
        p = self.params
        if context.target is None:
            raise CurateError("dsir needs the config's `target:` sample")
        target = context.target.to_table()
        if p.column not in target.column_names:
            raise CurateError(f"dsir: the target has no column {p.column!r} (`column`)")
        groups = target_groups(target)
        texts = target.column(p.column).combine_chunks()
        min_words = p.min_words if p.min_words != "auto" else auto_min_words(self._words(texts))
        counts = [self._counts(texts.take(pa.array(g.positions))) for g in groups]
        empty = [g.name for g, c in zip(groups, counts, strict=True) if not c.sum()]
        if empty:
            raise CurateError(f"dsir: target(s) {empty} have no words in column {p.column!r}")
        per_target = [c + float(p.smoothing) for c in counts]
        raw, tokens = self._raw_counts(context)
        if p.separate_targets:
            ratios = np.stack([log_ratio(c, raw) for c in per_target])
        else:
            weights = np.array([g.weight for g in groups]) / sum(g.weight for g in groups)
            mixture = sum(w * c / c.sum() for w, c in zip(weights, per_target, strict=True))
            ratios = log_ratio(mixture, raw)[None, :]
        context.models_dir.mkdir(parents=True, exist_ok=True)
        path = context.models_dir / "log_ratio.npy"
        np.save(path, ratios)
        return {"log_ratio": str(path), "targets": [g.name for g in groups], "min_words": min_words,
                "target_weights": [g.weight for g in groups],
                "target_tokens": [float(c.sum()) for c in counts],
                "raw_tokens_fit": int(tokens)}

    def _raw_counts(self, context: StageContext) -> tuple[np.ndarray, int]:
        """q_R's counts over the first `num_tokens_to_fit` features of the input (the package's rule)."""
        p = self.params
        limit = {"auto": 100_000 * p.num_buckets, "all": None}.get(p.num_tokens_to_fit, p.num_tokens_to_fit)
        counts = np.zeros(p.num_buckets, np.int64)
        for batch in context.input.iter_batches([p.column], batch_rows=8192):
            counts += self._counts(batch.column(p.column))
            if limit is not None and counts.sum() > limit:
                break
        return counts, int(counts.sum())

    def setup(self) -> None:
        self.ratios = np.load(self.prepared["log_ratio"], allow_pickle=False)

    def _words(self, texts: pa.Array | pa.ChunkedArray, features: tuple[np.ndarray, np.ndarray] | None = None
               ) -> np.ndarray:
        """Words per row, from its feature count: unigrams + bigrams + ... of `ngrams` orders."""
        doc, _ = features if features is not None else self._features(texts)
        order = self.params.ngrams
        return ((np.bincount(doc, minlength=len(texts)) + order * (order - 1) / 2) // order).astype(np.int64)

    def summarize(self, table: pa.Table) -> pa.Table:
        features = self._features(table.column(self.params.column))
        doc, bucket = features
        n = table.num_rows
        words = self._words(table.column(self.params.column), features)
        columns: dict[str, Any] = {"id": table.column("id"), "words": pa.array(words)}
        for t, ratio in enumerate(self.ratios):
            columns[f"logw_{t}"] = pa.array(np.bincount(doc, weights=ratio[bucket], minlength=n))
        return pa.table(columns)

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        p = self.params
        n = summary.num_rows
        logw = np.stack([summary.column(c).to_numpy() for c in summary.column_names if c.startswith("logw_")], 1)
        words = summary.column("words").to_numpy()
        min_words = p.min_words if p.min_words != "auto" else self.prepared["min_words"]
        eligible = words >= min_words
        auto = None
        if p.budget == "auto":
            live = np.flatnonzero(eligible)
            k, auto = auto_budget(logw.max(axis=1)[live], words[live], p.compute, True, self.name)
        else:
            k = budget_to_k(p.budget, n)
        names = self.prepared.get("targets", ["target"])
        if logw.shape[1] > 1:
            basis = self.prepared["target_weights" if p.split_by == "weights" else "target_tokens"]
            parts = split_budget(min(k, int(eligible.sum())), np.array(basis) / sum(basis))
        else:
            parts = [min(k, int(eligible.sum()))]
        chosen_by = select_rows(logw, eligible, parts, p.top_k, p.seed)
        kept = chosen_by >= 0
        score = np.where(kept, logw[np.arange(n), np.maximum(chosen_by, 0)], logw.max(axis=1))
        reason = np.full(n, "not_selected", dtype=object)
        reason[~eligible] = "too_few_words"
        reason[kept] = None
        report = {"rows": n, "eligible": int(eligible.sum()), "budget": k, "kept": int(kept.sum()),
                  "per_target": {names[t]: int((chosen_by == t).sum()) for t in range(len(parts))},
                  "min_words": min_words, "min_words_auto": p.min_words == "auto",
                  "mode": "top_k" if p.top_k else "gumbel_top_k", "seed": p.seed,
                  **{key: self.prepared.get(key) for key in ("raw_tokens_fit", "target_tokens")}}
        if k > report["eligible"]:
            log.warning("dsir: budget %d > %d rows with at least min_words=%d words; keeping %d", k,
                        report["eligible"], min_words, report["eligible"])
        if auto is not None:
            report["auto_budget"] = auto
        report["summary"] = {key: report[key] for key in ("budget", "kept", "eligible", "min_words", "mode",
                                                          "auto_budget")
                             if key in report}
        column = pa.array(score, pa.float64())
        return Decision(reason=pa.array(reason, pa.string()), score=column, adds={LOGW: column}, report=report)
