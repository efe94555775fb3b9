"""`mixture_search`: the weights of a mixture's parts that a small proxy model learns the target best from
(artifacts; RegMix, and CLIMB's rounds; docs/methods.md, Mixture search).

Parts: the input steps (`from: [a, b, c]`: sources, or selection methods' outputs), or one step split `by:` a
column. Every row's training tokens are counted with the proxies' tokenizer, which gives the parts' natural shares.
1. Proxies: `candidates` mixtures from RegMix's sampler (around the natural shares; seeded). Each trains one proxy
   (`proxy`: the fine-tuning settings; a tiny scratch GPT by default) on `tokens` training tokens drawn from the
   parts by its weights, and is measured on the run's target rows (never the held-out rows). `rounds` > 1 (CLIMB):
   each later round has half as many proxies, drawn from the regressor's best predicted mixtures, refitted on
   every proxy so far.
2. Regression: weights -> loss (`regressor`: LightGBM with CLIMB's settings, or ridge without intercept; `auto`
   picks by cross-validated Spearman), then the mean of the `search.top_k` best of `search.candidates` scored
   mixtures (RegMix). A regressor whose cross-validated rank correlation is below `min_rank_correlation` does not
   recommend: the natural mixture stays, and `search.json` says why.
3. Validation (always): the recommended, natural and uniform mixtures and the best single part each train `seeds`
   proxies and are measured on the held-out rows; the recommendation is kept only if it beats the natural mixture
   on the mean held-out loss, else the natural one stays.

Every proxy and validation training is a unit (`build_unit`): they run in parallel where the engine allows and a
killed search redoes only the unfinished ones. `search.json` holds `recommended`, `candidates`, `regressor` and
`validation`; `mixture: {from: [...], weights_from: <this step>}` builds the rows (`mixture.recommended_weights`).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.data.columns import TRAINING_COLUMNS
from curate.data.dataset import atomic_write_text
from curate.data.errors import CurateError
from curate.data.shards import write_shard
from curate.methods import closed_loop
from curate.methods.mixture_regression import cross_validated_predictions, make_regressor, spearman
from curate.methods.mixture_search import natural_shares, next_round, sample_weights, search
from curate.models.finetune import FinetuneConfig, finetune
from curate.models.lm_train import LMTrainConfig
from curate.models.locate import load_tokenizer
from curate.stages.base import ArtifactStage, Params, StageContext, register
from curate.stages.mixture import SEARCH_FILE, part_copies
from curate.stages.training_tokens import example_tokens, shared_tokenizer, training_resources

_ONE_TRAINING_AT_A_TIME = threading.Lock()  # per process: a training seeds torch's process-wide random state
PLAN_FILE = "search_plan.json"
ARMS = ("recommended", "natural", "uniform", "best_part")
TINY_PROXY = FinetuneConfig(init="scratch", lm=LMTrainConfig(vocab_size=2048, n_layer=2, n_embd=64, n_head=4,
                                                             seq_len=128),
                            epochs=1, max_length=128, batch_size=8, lr=2e-3, eval_every=None, save_every=None)


class SearchSettings(Params):
    candidates: int = Field(100_000, ge=100)  # mixtures the regressor scores
    top_k: int = Field(128, ge=1)  # the recommendation is the mean of the best top_k (RegMix)
    final: Literal["mean_top_k", "best"] = "mean_top_k"


class MixtureSearchParams(Params):
    by: str | None = None  # split the one input step by this column instead of mixing several steps
    tokens: int = Field(..., ge=1)  # training tokens of every proxy
    candidates: int = Field(64, ge=2)  # proxies of the first round
    rounds: int = Field(1, ge=1)  # CLIMB: later rounds of half as many proxies each, near the predicted best
    seeds: int = Field(3, ge=1)  # validation trainings per arm
    seed: int = 0
    proxy: FinetuneConfig = TINY_PROXY
    regressor: Literal["auto", "lightgbm", "linear"] = "auto"
    search: SearchSettings = SearchSettings()
    min_rank_correlation: float = Field(0.3, ge=-1, le=1)
    max_epochs: float = Field(15.0, gt=0)  # no part is repeated more than this (RegMix's E)
    objective_rows: int = Field(512, ge=1)  # target rows each proxy is measured on
    tokenizer_rows: int = Field(20_000, ge=100)
    # CPUs each proxy claims (default: the whole machine). Fewer lets Ray run several proxies at once, each in its
    # own process; in one process they still train one at a time (torch's random state is process-wide).
    proxy_cpus: float | None = Field(None, gt=0)


@dataclass
class _Drawn:
    """A search's parts (dataset, its rows in the part or None for all), each part's per-row training tokens, and
    the rows the proxies (target) and the validation trainings (held out) are measured on."""

    parts: list[tuple[Any, np.ndarray | None]]
    tokens: list[np.ndarray]
    target: list[dict[str, Any]]
    heldout: list[dict[str, Any]]


@register
class MixtureSearch(ArtifactStage):
    name = "mixture_search"
    exclusive = True  # trains with torch's process-wide random state (curate.engine.schedule)
    Params = MixtureSearchParams
    artifact_root = "models"
    inputs = "many"
    needs = ("id", "text")
    uses = ("prompt", "response", "messages")

    def configure(self) -> None:
        if self.params.by:
            self.needs = ("id", "text", self.params.by)
        self.resources = training_resources(self.params.proxy, self.params.proxy_cpus)

    def check_inputs(self, labels: list[str]) -> str | None:
        if self.params.by is not None:
            return None if len(labels) == 1 else (f"from: a search split `by: {self.params.by}` takes one input "
                                                  f"step, got {len(labels)}")
        if len(labels) < 2:
            return f"from: a mixture search takes several input steps (`from: [a, b]`) or `by:`; got {labels}"
        return None

    def samples(self) -> tuple[str, ...]:
        return ("target", "heldout")

    # -- the parts and the plan

    def _parts(self, context: StageContext) -> dict[str, tuple[Any, np.ndarray | None]]:
        """Part name -> (dataset, the rows of it that are the part, or None for all)."""
        if self.params.by is None:
            return {label: (data, None) for label, data in zip(context.input.labels, context.input.datasets,
                                                               strict=True)}
        data = context.input.datasets[0]
        values = pc.cast(data.to_table(columns=[self.params.by]).column(self.params.by), pa.string())
        values = pc.fill_null(values, "null").to_numpy(zero_copy_only=False)
        return {str(v): (data, np.flatnonzero(values == v)) for v in dict.fromkeys(values.tolist())}

    def _plan(self, context: StageContext, out_dir: Path) -> dict[str, Any]:
        path = out_dir / PLAN_FILE
        if path.is_file():
            return json.loads(path.read_text())
        if context.target is None or not context.target.count():
            raise CurateError(f"{context.label}: proxies are measured on the run's target rows; give it a `target:`")
        if context.heldout is None or not context.heldout.count():
            raise CurateError(f"{context.label}: the validation measures on held-out rows; give the run a "
                              "`target:` (30% is held out) or `heldout:`")
        p = self.params
        parts = self._parts(context)
        first = next(iter(parts.values()))[0]
        tokenizer = shared_tokenizer(p.proxy, first, out_dir, p.tokenizer_rows, p.seed)
        loaded = load_tokenizer(tokenizer, "tokenizer")
        counts_dir = out_dir / "counts"
        counts_dir.mkdir(exist_ok=True)
        totals = {}
        counted: dict[int, np.ndarray] = {}
        for k, (name, (data, rows)) in enumerate(parts.items()):
            if id(data) not in counted:  # parts split `by:` a column share one step: count it once
                counted[id(data)] = example_tokens(loaded, data, p.proxy.max_length)
            tokens = counted[id(data)]
            part = tokens if rows is None else tokens[rows]
            np.save(counts_dir / f"part-{k}.npy", part)
            totals[name] = int(part.sum())
        empty = [name for name, t in totals.items() if t == 0]
        if empty:
            raise CurateError(f"{context.label}: parts {empty} have no tokens to train on")
        shares = natural_shares(list(totals.values()))
        weights = sample_weights(shares, p.candidates, seed=p.seed, max_epochs=p.max_epochs)
        plan = {"parts": list(parts), "tokens": totals, "shares": shares.tolist(), "tokenizer": tokenizer,
                "rounds": [weights.tolist()], "search": None}
        atomic_write_text(path, json.dumps(plan, indent=1))
        return plan

    def units(self, context: StageContext, out_dir: Path) -> list[str]:
        plan = self._plan(context, out_dir)
        proxies = [f"proxy/r{r}-{k:03d}" for r, weights in enumerate(plan["rounds"]) for k in range(len(weights))]
        if not all(self._result(out_dir, unit) for unit in proxies):
            return proxies  # the round in flight
        measured = self._measured(out_dir, plan)
        shares = np.asarray(plan["shares"])
        if len(plan["rounds"]) < self.params.rounds:  # CLIMB: the next round near the predicted best
            regressor = self._regressor(*measured).fit(*measured)
            size = max(2, self.params.candidates >> len(plan["rounds"]))
            chosen = next_round(regressor, shares, size, seed=self.params.seed + len(plan["rounds"]),
                                max_epochs=self.params.max_epochs, exclude=measured[0])
            plan["rounds"].append(chosen.tolist())
            atomic_write_text(out_dir / PLAN_FILE, json.dumps(plan, indent=1))
            return self.units(context, out_dir)
        if plan["search"] is None:
            plan["search"] = self._search(*measured, shares, plan, out_dir)
            atomic_write_text(out_dir / PLAN_FILE, json.dumps(plan, indent=1))
        return proxies + [f"check/{arm}-seed-{s}" for arm in ARMS for s in range(self.params.seeds)]

    @staticmethod
    def _result(out_dir: Path, unit: str) -> dict[str, Any] | None:
        path = out_dir / unit / "result.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _measured(self, out_dir: Path, plan: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        weights = np.asarray([w for round_weights in plan["rounds"] for w in round_weights], np.float64)
        units = [f"proxy/r{r}-{k:03d}" for r, ws in enumerate(plan["rounds"]) for k in range(len(ws))]
        return weights, np.asarray([self._result(out_dir, u)["objective"] for u in units], np.float64)

    def _regressor(self, weights: np.ndarray, loss: np.ndarray) -> Any:
        return make_regressor(self.params.regressor, W=weights, y=loss, seed=self.params.seed)

    def _search(self, weights: np.ndarray, loss: np.ndarray, shares: np.ndarray, plan: dict[str, Any],
                out_dir: Path) -> dict[str, Any]:
        p = self.params
        started = time.perf_counter()
        regressor = self._regressor(weights, loss)
        chosen = regressor.describe()["kind"]  # `auto` compares once; the folds refit the kind it chose
        out_of_fold = cross_validated_predictions(weights, loss, lambda: make_regressor(chosen, seed=p.seed),
                                                  seed=p.seed)
        rank = spearman(loss, out_of_fold)
        regressor.fit(weights, loss)
        if hasattr(regressor, "model_text"):  # LightGBM's trees, in its own text format
            atomic_write_text(out_dir / "regressor.txt", regressor.model_text())
        found = search(regressor, shares, candidates=p.search.candidates, top_k=p.search.top_k,
                       final=p.search.final, seed=p.seed, max_epochs=p.max_epochs)
        predicts = bool(np.isfinite(rank) and rank >= p.min_rank_correlation)
        one_hot = np.eye(len(shares))
        best_part = int(np.argmin(regressor.predict(one_hot)))
        arms = {"recommended": found.weights.tolist() if predicts else shares.tolist(), "natural": shares.tolist(),
                "uniform": (np.ones(len(shares)) / len(shares)).tolist(), "best_part": one_hot[best_part].tolist()}
        return {"regressor": {**regressor.describe(), "cv_spearman": rank, "predicts": predicts},
                "out_of_fold": out_of_fold.tolist(),
                "predicted": float(found.predicted), "searched": found.weights.tolist(),
                "top": [{"weights": w.tolist(), "predicted": float(y)}
                        for w, y in zip(found.candidates[:20], found.predictions[:20], strict=True)],
                "best_part": plan["parts"][best_part], "arms": arms,
                "seconds": round(time.perf_counter() - started, 3)}

    # -- one proxy or validation training

    def build_unit(self, context: StageContext, out_dir: Path, unit: str) -> dict[str, Any]:
        started = time.perf_counter()
        p = self.params
        plan = json.loads((out_dir / PLAN_FILE).read_text())
        kind, name = unit.split("/")
        drawn = self._drawn(context, out_dir)
        if kind == "proxy":
            r, k = name.removeprefix("r").split("-")
            weights, seed = np.asarray(plan["rounds"][int(r)][int(k)]), p.seed
            measure_on = drawn.target
        else:
            arm, seed_name = name.rsplit("-seed-", 1)
            weights, seed = np.asarray(plan["search"]["arms"][arm]), p.seed + int(seed_name)
            measure_on = drawn.heldout
        rows, taken = self._mixture_rows(drawn, weights, seed)
        config = p.proxy.model_copy(update={"seed": seed, **({"tokenizer": plan["tokenizer"]}
                                                            if p.proxy.init == "scratch" else {})})
        folder = out_dir / unit
        with _ONE_TRAINING_AT_A_TIME:
            training_started = time.perf_counter()
            metrics = finetune(rows, folder, config, heldout=measure_on, name=f"{context.label} {unit}", save=False)
            training = time.perf_counter() - training_started
        result = {"unit": unit, "weights": weights.tolist(), "seed": seed, "rows": len(rows), "tokens": taken,
                  "objective": metrics["heldout_loss_final"], "train_seconds": metrics["train_seconds"],
                  "finetune_seconds": round(training, 3),
                  "seconds": round(time.perf_counter() - started, 3)}
        atomic_write_text(folder / "result.json", json.dumps(result, indent=1))
        return result

    @staticmethod
    def _rows(dataset: Any, limit: int | None, seed: int) -> list[dict[str, Any]]:
        columns = [c for c in TRAINING_COLUMNS if c in dataset.schema.names]
        n = dataset.count()
        if limit is None or n <= limit:
            return dataset.to_table(columns=columns).to_pylist()
        picked = np.sort(np.random.default_rng([seed, 3]).permutation(n)[:limit])
        return dataset.take(picked, columns).to_pylist()

    def _drawn(self, context: StageContext, out_dir: Path) -> _Drawn:
        """What every unit of this search reads alike, read once per worker (released when the step ends)."""
        with self._setup_lock:
            cached = getattr(self, "_drawn_for", None)
            if cached is None or cached[0] != out_dir:
                p = self.params
                parts = list(self._parts(context).values())
                tokens = [np.load(out_dir / "counts" / f"part-{k}.npy", allow_pickle=False) for k in range(len(parts))]
                drawn = _Drawn(parts, tokens, self._rows(context.target, p.objective_rows, p.seed),
                               self._rows(context.heldout, None, p.seed))
                self._drawn_for = cached = (out_dir, drawn)
            return cached[1]

    def _mixture_rows(self, drawn: _Drawn, weights: np.ndarray, seed: int) -> tuple[list[dict[str, Any]], int]:
        """The proxy's training rows: from each part, rows (repeated where needed, at most `max_epochs` passes)
        for its weight's share of `tokens`, in one seeded shuffled order."""
        p = self.params
        rows: list[dict[str, Any]] = []
        taken = 0
        for k, ((data, members), tokens) in enumerate(zip(drawn.parts, drawn.tokens, strict=True)):
            if weights[k] <= 0:
                continue
            rng = np.random.default_rng([seed, k])
            copies, _ = part_copies(tokens.astype(np.float64), np.ones(len(tokens), np.int64),
                                    weights[k] * p.tokens, math.ceil(p.max_epochs), rng)
            picked = np.repeat(np.arange(len(tokens)), copies)
            taken += int(tokens[picked].sum())
            positions = picked if members is None else members[picked]
            columns = [c for c in TRAINING_COLUMNS if c in data.schema.names]
            rows += data.take(positions, columns).to_pylist() if len(positions) else []
        order = np.random.default_rng([seed, 11]).permutation(len(rows))
        return [rows[i] for i in order], taken

    # -- the result

    def combine(self, context: StageContext, out_dir: Path, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        plan = json.loads((out_dir / PLAN_FILE).read_text())
        found = plan["search"]
        proxies = [r for u, r in results.items() if u.startswith("proxy/")]
        checks = {arm: [results[f"check/{arm}-seed-{s}"]["objective"] for s in range(self.params.seeds)]
                  for arm in ARMS}
        validation = {arm: {"heldout_loss": losses, **closed_loop.summarize(losses),
                            **({} if arm == "natural" else {"vs_natural": closed_loop.paired(losses,
                                                                                               checks["natural"])})}
                      for arm, losses in checks.items()}
        beats = (found["regressor"]["predicts"]
                 and validation["recommended"]["mean"] < validation["natural"]["mean"])
        chosen = found["arms"]["recommended"] if beats else found["arms"]["natural"]
        why = ("the recommended mixture beat the natural one on held-out loss" if beats else
               f"the regressor does not predict (cross-validated Spearman {found['regressor']['cv_spearman']:.3f} < "
               f"{self.params.min_rank_correlation})" if not found["regressor"]["predicts"] else
               "the recommended mixture did not beat the natural one on held-out loss: the natural one stays")
        parts = plan["parts"]
        train_seconds = sum(r["train_seconds"] for r in results.values())
        finetune_seconds = sum(r.get("finetune_seconds", r["train_seconds"]) for r in results.values())
        report = {"parts": parts, "tokens": plan["tokens"], "natural": dict(zip(parts, plan["shares"], strict=True)),
                  "recommended": dict(zip(parts, chosen, strict=True)), "kept": "recommended" if beats else "natural",
                  "why": why, "searched": dict(zip(parts, found["searched"], strict=True)),
                  "predicted_loss": found["predicted"], "regressor": found["regressor"],
                  "best_part": found["best_part"],
                  "candidates": [{"unit": r["unit"], "weights": dict(zip(parts, r["weights"], strict=True)),
                                  "loss": r["objective"], "predicted_out_of_fold": predicted, "tokens": r["tokens"]}
                                 for r, predicted in zip(proxies, found["out_of_fold"], strict=True)],
                  "validation": validation, "top_predicted": found["top"],
                  "seconds": {"training": round(train_seconds, 3), "finetune": round(finetune_seconds, 3),
                              "units": round(sum(r["seconds"] for r in results.values()), 3),
                              "search": found["seconds"]}}
        atomic_write_text(out_dir / SEARCH_FILE, json.dumps(report, indent=1))
        write_shard(out_dir, "candidates.parquet", self._candidates_table(parts, proxies, results))
        return {"search": SEARCH_FILE, "recommended": report["recommended"], "kept": report["kept"],
                "cv_spearman": found["regressor"]["cv_spearman"],
                "validation": {arm: v["mean"] for arm, v in validation.items()}}


    @staticmethod
    def _candidates_table(parts: list[str], proxies: list[dict[str, Any]],
                          results: dict[str, dict[str, Any]]) -> pa.Table:
        """One row per training, proxies and validation alike (SQL: `<label>_candidates`): its weight of every
        part, the loss it was measured with, and what it was measured on."""
        trainings = [*proxies, *(r for u, r in results.items() if u.startswith("check/"))]
        columns: dict[str, Any] = {
            "unit": [r["unit"] for r in trainings],
            "kind": ["proxy" if r["unit"].startswith("proxy/") else "validation" for r in trainings],
            "round": [int(r["unit"].split("/r")[1].split("-")[0]) if r["unit"].startswith("proxy/") else None
                      for r in trainings],
            "seed": [r["seed"] for r in trainings],
            "loss": [r["objective"] for r in trainings],
            "measured_on": ["target" if r["unit"].startswith("proxy/") else "heldout" for r in trainings],
            "tokens": [r["tokens"] for r in trainings], "train_seconds": [r["train_seconds"] for r in trainings]}
        for k, part in enumerate(parts):
            columns[f"w_{part}"] = [r["weights"][k] for r in trainings]
        return pa.table(columns)
