"""`evaluate`: does the selection beat a random subset of its pool on held-out target data? (docs/methods.md §13)

Arms, each trained `seeds` times with the fine-tuning stage's code and the `finetune:` sub-config:
- `selection`: the step named by `from:`;
- `random`: rows of `pool` in a seeded order, up to the selection's training tokens (`match_on`);
- `random_x2`, ... (`random_multiples`): the same order, up to 2x, ... the selection's tokens (the larger arms
  contain the smaller, so their losses differ by data added, not by another draw);
- `full` (`full: true`): the whole pool;
- `arms: {name: label}`: other selections of the run, side by side.
Seed s trains every arm from the same initial weights (init `seed + s`) for the same number of epochs over its
own data, so a larger arm takes more steps. Scratch models share one tokenizer, trained once on the pool, so
that every arm's loss counts the same tokens. Each arm x seed is its own task; a finished one is kept when an
interrupted evaluation resumes.

Measured on the run's held-out rows: mean NLL per supervised token, and, where held-out rows have a reference
answer (an `answer`, or GSM8K's `#### n` in the response), accuracy of greedy generations. Results:
`eval/<label>/results.json` (per arm: rows, tokens, per-seed losses, mean, std, 95% interval; the paired
selection-minus-random interval; data efficiency) and `loss.png`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from curate.data.columns import TRAINING_COLUMNS
from curate.data.dataset import atomic_write_text
from curate.data.errors import CurateError
from curate.methods import closed_loop
from curate.methods.leaks import Leak, act_on, find_leaks
from curate.models.finetune import METRICS_FILE, FinetuneConfig, finetune
from curate.models.locate import load_tokenizer, named_model_identity
from curate.stages.base import ArtifactStage, Params, StageContext, register
from curate.stages.training_tokens import example_tokens, shared_tokenizer, training_resources

HELDOUT_COLUMNS = (*TRAINING_COLUMNS, "answer")
RESERVED = ("selection", "random", "full")
ARMS_FILE = "arms.json"
RESULTS_FILE = "results.json"


class EvaluateParams(Params):
    pool: str  # the label of the step the selection was chosen from
    finetune: FinetuneConfig  # how every arm trains (its `seed` is replaced by the evaluation's seeds)
    arms: dict[str, str] = {}  # more selections to compare: name -> label
    full: bool = False
    random_multiples: list[float] = []
    seeds: int = Field(3, ge=1)
    seed: int = 0
    match_on: Literal["tokens", "response"] = "tokens"  # all tokens of `text`, or supervised tokens
    accuracy: Literal["auto", "on", "off"] = "auto"  # auto: when held-out rows have reference answers
    max_new_tokens: int = Field(256, ge=1)
    generation_batch: int = Field(64, ge=1)  # held-out prompts generated at once
    keep_models: bool = False  # keep each arm x seed's trained model (they can be large)
    tokenizer_rows: int = Field(20_000, ge=100)  # pool rows a scratch tokenizer is trained on
    leak: Leak = "exclude"  # training rows that repeat held-out rows: left out of every arm, `warn`, or `fail`

    @field_validator("random_multiples")
    @classmethod
    def _multiples(cls, value: list[float]) -> list[float]:
        if any(m <= 1 for m in value) or len(set(value)) != len(value):
            raise ValueError(f"random_multiples must be distinct numbers above 1 (the 1x arm is `random`), "
                             f"got {value}")
        return sorted(value)

    @model_validator(mode="after")
    def _arm_names(self) -> EvaluateParams:
        for name in self.arms:
            if name in RESERVED or name.startswith("random_x") or "/" in name:
                raise ValueError(f"arms: {name!r} is reserved or not a plain name; reserved: "
                                 f"{', '.join(RESERVED)}, random_x<m>")
        return self


def _multiple_name(m: float) -> str:
    return f"random_x{m:g}"


@register
class Evaluate(ArtifactStage):
    name = "evaluate"
    exclusive = True  # trains with torch's process-wide random state (curate.engine.schedule)
    Params = EvaluateParams
    artifact_root = "eval"
    needs = ("id", "text")
    uses = ("prompt", "response", "messages")

    def configure(self) -> None:
        self.resources = training_resources(self.params.finetune)

    def reads_steps(self) -> tuple[str, ...]:
        return (self.params.pool, *self.params.arms.values())

    def check_inputs(self, labels: list[str]) -> str | None:
        if len(labels) != 1:
            return (f"from: evaluate reads one selection, got {len(labels)} ({', '.join(labels)}); name the "
                    "others in `arms`")
        if labels[0] == self.params.pool:
            return f"pool: {self.params.pool!r} is the selection itself; name the step it was selected from"
        return None

    def samples(self) -> tuple[str, ...]:
        return ("heldout",)

    def models(self) -> dict[str, str]:
        model = self.params.finetune.model
        return {"finetune.model": model} if model else {}

    def fingerprint_extra(self) -> dict[str, Any]:
        model = self.params.finetune.model
        return {"model": named_model_identity(model)} if model else {}

    # -- the arms and their draws (once, before the trainings)

    def units(self, context: StageContext, out_dir: Path) -> list[str]:
        if context.heldout is None or not context.heldout.count():
            raise CurateError(f"{context.label}: there are no held-out rows to measure on; give the run a "
                              "`target:` (30% is held out) or `heldout:`")
        arms_file = out_dir / ARMS_FILE
        if not arms_file.is_file():
            arms = self._draw_arms(context, out_dir)
            atomic_write_text(arms_file, json.dumps(arms, indent=1))
        arms = json.loads(arms_file.read_text())["arms"]
        return [f"{arm}/seed-{s}" for s in range(self.params.seeds) for arm in arms]

    def _draw_arms(self, context: StageContext, out_dir: Path) -> dict[str, Any]:
        started = time.perf_counter()
        p = self.params
        datasets = dict(zip(context.input.labels, context.input.datasets, strict=True))
        selection_label = context.input.labels[0]
        leaks = find_leaks(datasets, context.heldout)
        act_on(leaks, p.leak, context.label)
        excluded = leaks.positions if p.leak == "exclude" else {label: np.zeros(0, np.int64) for label in datasets}
        tokenizer = self._shared_tokenizer(datasets[p.pool], out_dir)
        loaded = load_tokenizer(tokenizer, "tokenizer")
        counts = {label: self._count(loaded, datasets[label]) for label in datasets}
        for label, positions in excluded.items():  # a left-out row trains no arm: it has no tokens to count
            counts[label][positions] = 0
        budget = float(counts[selection_label].sum())
        if budget == 0:
            raise CurateError(f"{context.label}: the selection {selection_label!r} has no tokens to train on")
        pool_tokens = counts[p.pool]
        arms: dict[str, Any] = {"selection": self._whole("selection", selection_label, counts, budget, excluded)}
        draws = out_dir / "draws"
        draws.mkdir(exist_ok=True)
        for name, multiple in [("random", 1.0), *[(_multiple_name(m), m) for m in p.random_multiples]]:
            rows, tokens = [], []
            for s in range(p.seeds):
                order = np.random.default_rng([p.seed + s, 7]).permutation(len(pool_tokens))
                order = order[~np.isin(order, excluded[p.pool])]
                picked = closed_loop.random_prefix(pool_tokens, order, multiple * budget)
                np.save(draws / f"{name}-seed-{s}.npy", picked)
                rows.append(len(picked))
                tokens.append(int(pool_tokens[picked].sum()))
            arms[name] = {"label": p.pool, "kind": "random", "multiple": multiple, "rows": rows, "tokens": tokens,
                          "capped": bool(max(tokens) < multiple * budget * 0.99),
                          "left_out": len(excluded[p.pool])}
        if p.full:
            arms["full"] = self._whole("full", p.pool, counts, budget, excluded)
        for name, label in p.arms.items():
            arms[name] = self._whole("arm", label, counts, budget, excluded)
        return {"tokenizer": tokenizer, "match_on": p.match_on, "budget": budget, "arms": arms,
                "left_out": {label: positions.tolist() for label, positions in excluded.items() if len(positions)},
                "leak": leaks.record(p.leak), "seconds": round(time.perf_counter() - started, 3)}

    def _whole(self, kind: str, label: str, counts: dict[str, np.ndarray], budget: float,
               excluded: dict[str, np.ndarray]) -> dict[str, Any]:
        tokens = int(counts[label].sum())
        seeds = self.params.seeds
        rows = len(counts[label]) - len(excluded[label])
        return {"label": label, "kind": kind, "multiple": tokens / budget, "rows": [rows] * seeds,
                "tokens": [tokens] * seeds, "capped": False, "left_out": len(excluded[label])}

    def _count(self, tokenizer: Any, dataset: Any) -> np.ndarray:
        return example_tokens(tokenizer, dataset, self.params.finetune.max_length, self.params.match_on)

    def _shared_tokenizer(self, pool: Any, out_dir: Path) -> str | None:
        return shared_tokenizer(self.params.finetune, pool, out_dir, self.params.tokenizer_rows, self.params.seed)

    # -- one arm x seed

    def build_unit(self, context: StageContext, out_dir: Path, unit: str) -> dict[str, Any]:
        started = time.perf_counter()
        arm, seed_name = unit.split("/")
        s = int(seed_name.removeprefix("seed-"))
        plan = json.loads((out_dir / ARMS_FILE).read_text())
        spec = plan["arms"][arm]
        dataset = dict(zip(context.input.labels, context.input.datasets, strict=True))[spec["label"]]
        columns = [c for c in TRAINING_COLUMNS if c in dataset.schema.names]
        if spec["kind"] == "random":
            drawn = np.load(out_dir / "draws" / f"{arm}-seed-{s}.npy", allow_pickle=False)
            rows = dataset.take(drawn, columns).to_pylist()
        else:
            table = dataset.to_table(columns=columns)
            left_out = plan.get("left_out", {}).get(spec["label"], [])
            keep = np.ones(table.num_rows, bool)
            keep[np.array(left_out, np.int64)] = False
            rows = table.filter(pa.array(keep)).to_pylist()
        held_columns = [c for c in HELDOUT_COLUMNS if c in context.heldout.schema.names]
        heldout = context.heldout.to_table(columns=held_columns).to_pylist()
        config = self.params.finetune
        update: dict[str, Any] = {"seed": self.params.seed + s}
        if config.init == "scratch":
            update["tokenizer"] = plan["tokenizer"]
        config = config.model_copy(update=update)
        folder = out_dir / arm / seed_name
        measure = self._accuracy(heldout)
        metrics = finetune(rows, folder, config, heldout=heldout, name=f"{context.label} {arm} seed {s}",
                           measure=measure, save=self.params.keep_models)
        detail = json.loads((folder / METRICS_FILE).read_text())
        result = {
            "arm": arm, "seed": s, "rows": len(rows), "tokens": spec["tokens"][s],
            "trained_tokens": metrics["tokens"], "steps": metrics["steps"],
            "heldout_loss": metrics["heldout_loss_final"], "heldout_curve": detail["heldout_curve"],
            "accuracy": metrics.get("accuracy"), "accuracy_rows": metrics.get("accuracy_rows"),
            "accuracy_seconds": metrics.get("accuracy_seconds", 0.0),
            "train_seconds": metrics["train_seconds"], "seconds": round(time.perf_counter() - started, 3),
        }
        atomic_write_text(folder / "result.json", json.dumps(result, indent=1))
        return result

    def _accuracy(self, heldout: list[dict[str, Any]]) -> Any:
        from curate.methods.answers import reference_answer

        if self.params.accuracy == "off":
            return None
        scored = [(row, ref) for row in heldout if (ref := reference_answer(row)) is not None]
        if not scored:
            if self.params.accuracy == "on":
                raise CurateError("accuracy: on, but no held-out row has a reference answer (an `answer` column, "
                                  "or `#### n` at the end of its response)")
            return None
        p = self.params
        return lambda model, tokenizer: held_out_accuracy(model, tokenizer, scored, p.max_new_tokens,
                                                          p.generation_batch)

    # -- the table

    def combine(self, context: StageContext, out_dir: Path, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from curate.methods.plots import loss_curves_png

        plan = json.loads((out_dir / ARMS_FILE).read_text())
        summary = summarize_arms(plan, list(results.values()))
        summary["seconds_drawing_arms"] = plan["seconds"]
        atomic_write_text(out_dir / RESULTS_FILE, json.dumps(summary, indent=1))
        loss_curves_png(summary, out_dir / "loss.png")
        return {"results": RESULTS_FILE, "arms": {a: v["mean"] for a, v in summary["arms"].items()},
                "paired": {k: summary["paired"][k] for k in ("mean", "ci95", "excludes_zero")},
                "data_efficiency": summary["data_efficiency"], "overhead_share": summary["overhead_share"]}


def held_out_accuracy(model: Any, tokenizer: Any, scored: list[tuple[dict[str, Any], str]],
                      max_new_tokens: int, batch_size: int = 64) -> dict[str, Any]:
    """Greedy answers to the held-out prompts, checked against their reference answers."""
    started = time.perf_counter()
    from curate.methods.answers import final_answer, same_answer
    from curate.models.generate import greedy_generate
    from curate.models.lm_train import model_context, start_token_id
    from curate.models.sft_data import prompt_ids

    context = model_context(model) or 4096
    new = min(max_new_tokens, context // 2)
    start, eos = start_token_id(tokenizer), tokenizer.eos_token_id
    prompts = [prompt_ids(row, tokenizer, start) for row, _ in scored]
    kept = [i for i, ids in enumerate(prompts) if ids]
    cut = [prompts[i][-(context - new):] for i in kept]
    pad = next(i for i in (tokenizer.pad_token_id, eos, 0) if i is not None)
    device = str(next(model.parameters()).device)
    outputs = greedy_generate(model, cut, max_new_tokens=new, eos=eos, pad=pad, device=device,
                              batch_size=batch_size)
    texts = tokenizer.batch_decode(outputs, skip_special_tokens=True)
    correct = [same_answer(final_answer(t), scored[i][1]) for i, t in zip(kept, texts, strict=True)]
    return {"accuracy": float(np.mean(correct)) if correct else None, "accuracy_rows": len(correct),
            "accuracy_seconds": round(time.perf_counter() - started, 3),
            "generations": [{"reference": scored[i][1], "generated": t[:500]}
                            for i, t in list(zip(kept, texts, strict=True))[:5]]}


def summarize_arms(plan: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """results.json: per arm its sizes and per-seed metrics with mean/std/interval, the paired comparison of each
    arm with `random`, and data efficiency over the random arms."""
    arms: dict[str, Any] = {}
    for name, spec in plan["arms"].items():
        runs = sorted((r for r in results if r["arm"] == name), key=lambda r: r["seed"])
        losses = [r["heldout_loss"] for r in runs]
        entry = {"label": spec["label"], "kind": spec["kind"], "multiple": spec["multiple"],
                 "rows": spec["rows"], "tokens": spec["tokens"], "capped": spec["capped"],
                 "left_out": spec.get("left_out", 0),
                 "seeds": [r["seed"] for r in runs], "heldout_loss": losses, **closed_loop.summarize(losses),
                 "trained_tokens": [r["trained_tokens"] for r in runs], "steps": [r["steps"] for r in runs],
                 "train_seconds": [r["train_seconds"] for r in runs],
                 "curves": [r["heldout_curve"] for r in runs]}
        accuracy = [r["accuracy"] for r in runs]
        if any(a is not None for a in accuracy):
            entry["accuracy"] = {"values": accuracy, **closed_loop.summarize(accuracy)}
        arms[name] = entry
    random = arms["random"]["heldout_loss"]
    for name, entry in arms.items():
        if name != "random":
            entry["vs_random"] = closed_loop.paired(entry["heldout_loss"], random)
    # the whole pool is the largest random draw there is
    points = [(a["multiple"], a["mean"]) for a in arms.values() if a["kind"] in ("random", "full")]
    unit_seconds = sum(r["seconds"] for r in results) + plan["seconds"]
    # the trainings' loops (with their held-out loss points) and the accuracy generations are the work itself
    work_seconds = sum(r["train_seconds"] + r.get("accuracy_seconds", 0.0) for r in results)
    return {
        "arms": arms, "paired": arms["selection"]["vs_random"],
        "data_efficiency": closed_loop.data_efficiency(arms["selection"]["mean"], points),
        "budget_tokens": plan["budget"], "match_on": plan["match_on"], "leak": plan.get("leak"),
        "seconds": round(unit_seconds, 3), "train_and_measure_seconds": round(work_seconds, 3),
        "overhead_share": round((unit_seconds - work_seconds) / unit_seconds, 4) if unit_seconds else None,
    }
