"""Iterative kMQ (docs/methods.md §4.5): rounds of fine-tuning on what is selected, scoring it, and drawing more from
the clusters that score high.

Round 0 takes B/R rows with equal quotas per cluster, uniformly inside each. After round t (t < R - 1) the base
model is fine-tuned on S_t (from the base every time, as the paper's scripts do; `finetune:` settings), every row
of S_t is scored, cluster weights are the softmax of the clusters' mean scores (`empty_cluster_weight`, optional
shrinkage toward the mean of means), and round t + 1 draws `draw_size` cluster labels from those weights and
takes that many not-yet-selected rows per cluster, uniformly. Scores:
- `loss_gap` (offline default): the gold response's mean NLL under the base minus under the fine-tuned model;
- `perplexity`: the gold response's perplexity under the fine-tuned model;
- `reward`: r(x, y) - r(x, ŷ) with the named reward model, ŷ the fine-tuned model's greedy answer.

`train` and `score` are methods of `Rounds`, so that tests can stand in for the models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.data.columns import TRAINING_COLUMNS
from curate.methods.selection import allocate_quotas, cluster_weights, draw_size, next_round, segmented_top_k
from curate.models.finetune import FinetuneConfig

log = logging.getLogger("curate")


@dataclass
class RoundsResult:
    picked_in: np.ndarray  # int64 per row: the round that picked it, -1 if never
    scores: np.ndarray  # float64 per row: its score after the round that trained on it (NaN if never scored)
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per round: what was drawn, weights, training


class Rounds:
    """The rounds over fixed clusters (`labels`, -1: no embedding); rows come from `rows` (the step's input)."""

    def __init__(self, params: Any, rows: Any, n: int, models_dir: Path):
        self.params = params
        self.rows = rows
        self.n = n
        self.models_dir = Path(models_dir)

    # -- the pieces with models (tests replace these)

    def train(self, indices: np.ndarray, round_index: int) -> Path:
        """Fine-tune the base on the rows `indices`; returns the saved model's folder."""
        from curate.models.finetune import finetune

        folder = self.models_dir / f"round-{round_index}"
        if (folder / "metrics.json").is_file():  # a resumed decision: this round's model is there
            return folder
        config = self._round_config()
        finetune(self._rows(indices), folder, config, name=f"kMQ round {round_index}")
        return folder

    def score(self, indices: np.ndarray, model: Path) -> np.ndarray:
        """The score of each row of `indices` under the fine-tuned `model`."""
        from curate.models.lm_scorer import LMScorer

        p = self.params
        rows = self._rows(indices)
        tuned = LMScorer(model, device=p.finetune.device, max_length=p.finetune.max_length)
        if p.score == "perplexity":
            return np.exp(gold_losses(tuned, rows))
        if p.score == "loss_gap":
            base = LMScorer(self.base_model(), device=p.finetune.device, max_length=p.finetune.max_length)
            return gold_losses(base, rows) - gold_losses(tuned, rows)
        return reward_gap(tuned, rows, p.reward_model, p.max_new_tokens, p.finetune.device)

    # -- the method

    def run(self, labels: np.ndarray, k: int, budget: int, rng: np.random.Generator) -> RoundsResult:
        p = self.params
        n = len(labels)
        sizes = np.bincount(labels[labels >= 0], minlength=k)
        first = allocate_quotas(sizes, budget // p.rounds, "equal", p.redistribute)
        picked = segmented_top_k(rng.random(n), labels, first)
        result = RoundsResult(np.full(n, -1, np.int64), np.full(n, np.nan))
        result.picked_in[picked] = 0
        result.rounds.append({"round": 0, "picked": len(picked), "quotas": first.tolist()})
        per_round = draw_size(budget, p.rounds, k, p.draw_size)
        for t in range(p.rounds - 1):
            selected = np.flatnonzero(result.picked_in >= 0)
            model = self.train(selected, t)
            scores = np.asarray(self.score(selected, model), dtype=np.float64)
            result.scores[selected] = scores
            weights = cluster_weights(scores, labels[selected], k, p.empty_cluster_weight, p.shrinkage)
            new = next_round(labels, result.picked_in >= 0, weights, per_round, rng)
            result.picked_in[new] = t + 1
            counts = np.bincount(labels[selected], minlength=k)
            sums = np.bincount(labels[selected], weights=np.nan_to_num(scores), minlength=k)
            result.rounds.append({
                "round": t + 1, "trained_on": len(selected), "model": str(model), "draws": per_round,
                "picked": len(new), "weights": weights.tolist(), "scored": counts.tolist(),
                "mean_score": [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)],
                "picked_per_cluster": np.bincount(labels[new], minlength=k).tolist(),
                "train_loss": _train_loss(model),
            })
            log.info("kMQ round %d: trained on %d rows, weights %s, %d new rows", t + 1, len(selected),
                     np.round(weights, 3).tolist(), len(new))
        return result

    # -- helpers

    def _rows(self, indices: np.ndarray) -> list[dict[str, Any]]:
        columns = [c for c in TRAINING_COLUMNS if c in self.rows.schema.names]
        return self.rows.take(np.asarray(indices, np.int64), columns).to_pylist()

    def _round_config(self) -> FinetuneConfig:
        """Every round starts from the same base: the named model, or (scratch) one initial model saved once."""
        config = self.params.finetune
        if config.init == "model":
            return config
        return config.model_copy(update={"init": "model", "model": self.base_model(), "lm": config.lm,
                                         "lr": config.peak_lr(), "tokenizer": None})

    def base_model(self) -> str:
        config = self.params.finetune
        if config.init == "model":
            return str(config.model)
        folder = self.models_dir / "base"
        if not (folder / "config.json").is_file():
            from curate.models.finetune import save_initial_model

            everything = self.rows.take(np.arange(self.n), ["text"]).column("text").to_pylist()
            save_initial_model(config, [t or "" for t in everything], folder)
        return str(folder)


def _train_loss(model: Path) -> float | None:
    import json

    metrics = model / "metrics.json"
    return json.loads(metrics.read_text()).get("train_loss_final") if metrics.is_file() else None


def gold_losses(scorer: Any, rows: list[dict[str, Any]]) -> np.ndarray:
    """Mean NLL of each row's gold part: the response given the prompt, or the whole text of a plain row."""
    out = np.full(len(rows), np.nan)
    pairs = [i for i, r in enumerate(rows) if r.get("response") is not None]
    plain = [i for i, r in enumerate(rows) if r.get("response") is None]
    if pairs:
        got = scorer.score(prompts=[rows[i].get("prompt") or "" for i in pairs],
                           responses=[rows[i]["response"] for i in pairs])
        out[pairs] = got.mean
    if plain:
        out[plain] = scorer.score([rows[i].get("text") or "" for i in plain]).mean
    return out


def reward_gap(tuned: Any, rows: list[dict[str, Any]], reward_model: str, max_new_tokens: int,
               device: str) -> np.ndarray:
    """r(x, y) - r(x, ŷ): the gold response's reward minus that of the fine-tuned model's greedy answer."""
    from curate.models.generate import greedy_generate
    from curate.models.reward import RewardModel
    from curate.models.sft_data import prompt_ids

    tokenizer = tuned.tokenizer
    prompts = [prompt_ids(r, tokenizer, tuned.start_id) or [tuned.start_id] for r in rows]
    context = tuned.max_length
    new = min(max_new_tokens, context // 2)
    outputs = greedy_generate(tuned.model, [p[-(context - new):] for p in prompts], max_new_tokens=new,
                              eos=tokenizer.eos_token_id, pad=tuned.pad_id, device=tuned.device)
    answers = tokenizer.batch_decode(outputs, skip_special_tokens=True)
    questions = [r.get("prompt") or "" for r in rows]
    gold = [r.get("response") or r.get("text") or "" for r in rows]
    judge = RewardModel(reward_model, device=device)
    return judge.score(questions, gold) - judge.score(questions, answers)
