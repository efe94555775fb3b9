"""`dart`: difficulty-aware rejection sampling of math responses (DART-Math, docs/methods.md §3).

Difficulty (`difficulty:`, one source): `probe: {n, smoothing}` samples n responses per query and takes the fail
rate (§3.3); `column: level` reads a column (MATH's `level`, GSM8K's `num_steps`); `loss: {model}` is the LM's mean
loss on the reference response given the prompt. Targets (§3.4): `uniform` gives every query `k_u` correct
responses; `prop2diff` gives t_i = max(1, ceil(k_p * d_i / max d)) over the solvable queries.

Modes:
- `synthesize`: rejection sampling with `generator:` (a local model, an endpoint, or a `finetune` step's model):
  rounds of `batch` samples for each query short of its target, at most `n_max` trials (probe samples count), each
  answer checked with math-verify against the row's `answer` (else its response's final answer) under a
  `time_limit`. The first t_i correct responses become new rows (`<id>#dart<k>`, `parent_id` = the query's id);
  the query's own row stays (`keep_original`). Every generation is stored as it arrives (`models/<label>/
  generations/`), so an interrupted or re-run step does not generate it again.
- `resample`: no generation; each row gets `repeats` = its target, which the mixture honours.

Every row gets `difficulty`, `dart_trials`, `dart_correct`, `dart_pass_rate` and `dart_stop` (`target_reached`,
`trial_cap`, `unsolved`, or `resampled`). A query never solved is dropped with `unsolved`; one without a reference
answer with `no_answer` (synthesize), one without a difficulty with `no_difficulty`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from curate.data.progress import progress
from curate.methods.dart import TARGET_REACHED, UNSOLVED, QueryState, fail_rates, prop2diff_targets, rejection_sample
from curate.models.generation import GeneratorRef, ResponseStore, Sampling, generate_stored, open_generator
from curate.stages.base import MapStage, ModelOrStep, Params, StageContext, register
from curate.stages.decision import PARENT_ID, Decision
from curate.stages.responses import reference_answers, render_prompts, with_responses


class ProbeDifficulty(Params):
    n: int = Field(64, ge=1)  # samples per query (§3.3's default; >= 32 unless smoothed, §3.9)
    smoothing: bool = False  # Laplace: pass rate (c+1)/(n+2)


class LossDifficulty(ModelOrStep):
    role = "the scoring LM"
    max_length: int = Field(1024, ge=2)
    device: str = "auto"


class DifficultyParams(Params):
    probe: ProbeDifficulty | None = None
    column: str | None = None
    loss: LossDifficulty | None = None

    @model_validator(mode="after")
    def _one(self) -> DifficultyParams:
        given = [k for k in ("probe", "column", "loss") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"name one difficulty source: probe, column or loss; got {given or 'none'}")
        return self


class DartParams(Params):
    mode: Literal["synthesize", "resample"] = "synthesize"
    strategy: Literal["uniform", "prop2diff"] = "prop2diff"
    k_u: int = Field(40, ge=1)
    k_p: int = Field(192, ge=1)
    n_max: int = Field(2048, ge=1)
    difficulty: DifficultyParams | None = None  # prop2diff and resample need one
    generator: GeneratorRef | None = None
    sampling: Sampling = Sampling(temperature=1.6, top_p=0.95, max_new_tokens=2048)  # §3.5; `n` is set per round
    batch: int = Field(64, ge=1)  # samples per query per round
    prompt_template: str = "{prompt}\n"
    answer_column: str = "answer"
    time_limit: float = Field(5.0, gt=0)  # seconds per answer check
    keep_original: bool = True
    dedupe: bool = True  # a correct response already kept for its query does not count twice

    @model_validator(mode="after")
    def _consistent(self) -> DartParams:
        needs_difficulty = self.mode == "resample" or self.strategy == "prop2diff"
        if needs_difficulty and self.difficulty is None:
            raise ValueError(f"mode {self.mode} with strategy {self.strategy} needs `difficulty:` "
                             "(probe: {n: ...}, column: <name>, or loss: {model: ...})")
        generates = self.mode == "synthesize" or (self.difficulty is not None and self.difficulty.probe is not None)
        if generates and self.generator is None:
            raise ValueError("sampling responses (mode synthesize, or difficulty.probe) needs `generator:`")
        return self


STATS = ("difficulty", "dart_trials", "dart_correct", "dart_pass_rate", "dart_stop")


@register
class Dart(MapStage):
    name = "dart"
    selection_reasons = ("not_selected", "replaced_by_samples")
    Params = DartParams
    output = "rows_added"
    needs = ("id", "prompt", "response")
    batch_rows = 4096

    def configure(self) -> None:
        p = self.params
        column = p.difficulty.column if p.difficulty is not None else None
        self.uses = tuple(c for c in ("text", p.answer_column, column) if c)
        self.adds = (*STATS, "repeats") if p.mode == "resample" else (*STATS, "response", "text")

    def model_steps(self) -> dict[str, str]:
        p = self.params
        found = {}
        if p.generator is not None and p.generator.model_from:
            found["generator.model_from"] = p.generator.model_from
        if p.difficulty is not None and p.difficulty.loss is not None and p.difficulty.loss.model_from:
            found["difficulty.loss.model_from"] = p.difficulty.loss.model_from
        return found

    def models(self) -> dict[str, str]:
        p = self.params
        named = {"generator.model": p.generator.model if p.generator else None,
                 "difficulty.loss.model": p.difficulty.loss.model if p.difficulty and p.difficulty.loss else None}
        return {k: v for k, v in named.items() if v}

    def fingerprint_extra(self) -> dict[str, Any]:
        from curate.models.locate import named_model_identity

        return {key: named_model_identity(model) for key, model in self.models().items()}

    # ------------------------------------------------------------- once per step: difficulty and targets

    def _generator_path(self, context: StageContext) -> str | None:
        from curate.models.finetune import finetuned_model  # torch: imported when a step runs, not at registration

        ref = self.params.generator
        if ref is None or ref.model_from is None:
            return None
        return str(finetuned_model(context.step_models[ref.model_from]))

    def prepare(self, context: StageContext) -> dict[str, Any]:
        p = self.params
        folder = context.models_dir
        folder.mkdir(parents=True, exist_ok=True)
        prepared: dict[str, Any] = {"generations": str(folder / "generations"),
                                    "generator_path": self._generator_path(context)}
        if p.difficulty is None:
            return prepared
        columns = ["id", "prompt", "response", *(c for c in self.uses if c in context.input.schema.names)]
        table = context.input.to_table(columns=list(dict.fromkeys(columns)))
        stats = self._difficulty(table, context, prepared)
        solvable = stats["pass_rate"] > 0 if "pass_rate" in stats else np.isfinite(stats["difficulty"])
        targets = np.full(table.num_rows, p.k_u, np.int64) if p.strategy == "uniform" else \
            prop2diff_targets(stats["difficulty"], p.k_p, solvable)
        out = pa.table({"id": table.column("id"), "difficulty": pa.array(stats["difficulty"], pa.float64()),
                        "target": pa.array(targets, pa.int64()),
                        **{k: pa.array(v) for k, v in stats.items() if k != "difficulty"}})
        pq.write_table(out, folder / "difficulty.parquet")
        (folder / "targets.json").write_text(json.dumps(_target_summary(targets, solvable), indent=1))
        return prepared | {"difficulty": str(folder / "difficulty.parquet")}

    def _difficulty(self, table: pa.Table, context: StageContext, prepared: dict[str, Any]) -> dict[str, np.ndarray]:
        source = self.params.difficulty
        if source.column is not None:
            values = pc.cast(table.column(source.column), pa.float64()).to_numpy(zero_copy_only=False)
            return {"difficulty": values.astype(np.float64)}
        if source.loss is not None:
            from curate.models.finetune import finetuned_model
            from curate.models.lm_scorer import LMScorer

            loss = source.loss
            model = loss.model or str(finetuned_model(context.step_models[loss.model_from]))
            scorer = LMScorer(model, device=loss.device, max_length=loss.max_length)
            scores = scorer.score(prompts=table.column("prompt").to_pylist(),
                                  responses=table.column("response").to_pylist())
            return {"difficulty": scores.mean}
        self.prepared = prepared
        self.ensure_setup()
        responses = self._probe(table)
        verdicts = self._check(table, responses)
        trials = np.array([len(r) for r in responses], np.int64)
        corrects = np.array([sum(v) for v in verdicts], np.int64)
        return {"difficulty": fail_rates(corrects, trials, source.probe.smoothing),
                "pass_rate": corrects / np.maximum(trials, 1), "probe_trials": trials, "probe_correct": corrects}

    # ------------------------------------------------------------- per worker

    def setup(self) -> None:
        from curate.methods.math_check import AnswerChecker

        p = self.params
        self.checker = AnswerChecker(p.time_limit)
        self.generator = None
        if p.generator is not None:
            self.generator = open_generator(p.generator, self.prepared.get("generator_path"))
        difficulty = self.prepared.get("difficulty")
        self.stats = pq.read_table(difficulty) if difficulty else None  # per id: difficulty, target, probe counts

    def _store(self, purpose: str, sampling: Sampling) -> ResponseStore:
        return ResponseStore.for_generation(self.prepared["generations"], purpose, self.generator, sampling)

    def _probe(self, table: pa.Table) -> list[list[str]]:
        n = self.params.difficulty.probe.n
        sampling = self.params.sampling.model_copy(update={"n": n})
        prompts = render_prompts(table, self.params.prompt_template)
        progress().start("dart:probe", f"dart (probe x{n})", table.num_rows, "queries")
        found = generate_stored(self.generator, self._store("probe", sampling), table.column("id").to_pylist(),
                                prompts, sampling, "dart:probe")
        progress().finish("dart:probe")
        return [[c.text for c in completions] for completions in found]

    def _check(self, table: pa.Table, responses: list[list[str]]) -> list[list[bool]]:
        answers = reference_answers(table, self.params.answer_column)
        return [[bool(answer) and self.checker.check(r, answer).correct for r in rs]
                for rs, answer in zip(responses, answers, strict=True)]

    def _row_stats(self, ids: list[str]) -> dict[str, np.ndarray]:
        """Difficulty, target and probe counts of these rows, from the prepared table (NaN / 0 when absent)."""
        n = len(ids)
        if self.stats is None:
            return {"difficulty": np.full(n, np.nan), "target": np.full(n, self.params.k_u, np.int64)}
        position = pc.index_in(pa.array(ids, pa.string()), self.stats.column("id")).to_numpy(zero_copy_only=False)
        found = {}
        for name in self.stats.column_names[1:]:
            values = self.stats.column(name).to_numpy(zero_copy_only=False)
            found[name] = values[position.astype(np.int64)]
        return found

    def process(self, table: pa.Table) -> Decision:
        ids = table.column("id").to_pylist()
        stats = self._row_stats(ids)
        difficulty = np.asarray(stats["difficulty"], np.float64)
        targets = np.asarray(stats["target"], np.int64)
        if self.params.mode == "resample":
            return self._resample(table, difficulty, targets, stats)
        return self._synthesize(table, difficulty, targets, stats)

    def _resample(self, table: pa.Table, difficulty: np.ndarray, targets: np.ndarray,
                  stats: dict[str, np.ndarray]) -> Decision:
        n = table.num_rows
        reason = np.full(n, None, dtype=object)
        reason[~np.isfinite(difficulty)] = "no_difficulty"
        trials = stats.get("probe_trials", np.zeros(n, np.int64))
        correct = stats.get("probe_correct", np.zeros(n, np.int64))
        if "pass_rate" in stats:
            reason[(np.asarray(stats["pass_rate"]) <= 0) & np.isfinite(difficulty)] = UNSOLVED
        adds = _stat_columns(difficulty, trials, correct, np.where(reason == None, "resampled", reason))  # noqa: E711
        adds["repeats"] = pa.array(np.where(reason == None, targets, 0), pa.int64())  # noqa: E711
        return Decision(reason=pa.array(reason, pa.string()), score=pa.array(difficulty, pa.float64()), adds=adds)

    def _synthesize(self, table: pa.Table, difficulty: np.ndarray, targets: np.ndarray,
                    stats: dict[str, np.ndarray]) -> Decision:
        p = self.params
        n, ids = table.num_rows, table.column("id").to_pylist()
        answers = reference_answers(table, p.answer_column)
        prompts = render_prompts(table, p.prompt_template)
        states = [QueryState(int(t)) for t in targets]
        if p.difficulty is not None and p.difficulty.probe is not None:  # probe samples count as trials
            probed = self._probe(table)  # stored in prepare: read back, not generated again
            for state, responses, verdicts in zip(states, probed, self._check(table, probed), strict=True):
                state.trials = len(responses)
                for response, good in zip(responses, verdicts, strict=True):
                    if good:
                        state.corrects += 1
                        if not (p.dedupe and response in state.correct):
                            state.correct.append(response)
        has_answer = np.array([bool(a) for a in answers])
        for i in np.flatnonzero(~has_answer):
            states[i].target = 0  # nothing to check against: no sampling
        store = self._store("dart", p.sampling.model_copy(update={"n": 1}))

        def draw(positions: list[int], round_: int, counts: list[int]) -> list[list[str]]:
            out: list[list[str]] = [[] for _ in positions]
            for count in sorted(set(counts)):
                group = [k for k, c in enumerate(counts) if c == count]
                sampling = p.sampling.model_copy(update={"n": count})
                keys = [f"{ids[positions[k]]}\0r{round_}\0n{count}" for k in group]
                found = generate_stored(self.generator, store, keys, [prompts[positions[k]] for k in group], sampling)
                for k, completions in zip(group, found, strict=True):
                    out[k] = [c.text for c in completions]
            return out

        def check(position: int, responses: list[str]) -> list[bool]:
            return [self.checker.check(r, answers[position]).correct for r in responses]

        rejection_sample(states, draw, check, p.n_max, p.batch, p.dedupe)
        reason = np.full(n, None, dtype=object)
        reason[~has_answer] = "no_answer"
        stop = np.array([s.stop for s in states], dtype=object)
        reason[has_answer & (stop == UNSOLVED)] = UNSOLVED
        reason[np.isnan(difficulty) & (targets == 0) & has_answer] = "no_difficulty"
        trials = np.array([s.trials for s in states], np.int64)
        correct = np.array([s.corrects for s in states], np.int64)
        stop[~has_answer] = None
        adds = _stat_columns(difficulty, trials, correct, stop)
        added = self._new_rows(table, states, reason, adds)
        if not p.keep_original:
            reason[reason == None] = "replaced_by_samples"  # noqa: E711
        return Decision(reason=pa.array(reason, pa.string()), score=pa.array(trials, pa.float64()), adds=adds,
                        added=added)

    def _new_rows(self, table: pa.Table, states: list[QueryState], reason: np.ndarray,
                  adds: dict[str, pa.Array]) -> pa.Table:
        parents, responses, ids = [], [], []
        for i, state in enumerate(states):
            if reason[i] is not None:
                continue
            for k, response in enumerate(state.kept()):
                parents.append(i)
                responses.append(response)
                ids.append(f"{table.column('id')[i].as_py()}#dart{k}")
        base = table.take(pa.array(parents, pa.int64()))
        for name, values in adds.items():
            base = base.append_column(name, values.take(pa.array(parents, pa.int64())))
        base = base.set_column(base.column_names.index("id"), "id", pa.array(ids, pa.string()))
        for name, values in with_responses(base, responses).items():
            index = base.column_names.index(name) if name in base.column_names else None
            base = base.set_column(index, name, values) if index is not None else base.append_column(name, values)
        parent_ids = table.column("id").take(pa.array(parents, pa.int64()))
        return base.append_column(PARENT_ID, parent_ids)


def _stat_columns(difficulty: np.ndarray, trials: np.ndarray, correct: np.ndarray, stop: np.ndarray
                  ) -> dict[str, pa.Array]:
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(trials > 0, correct / np.maximum(trials, 1), np.nan)
    return {"difficulty": pa.array(difficulty, pa.float64(), mask=~np.isfinite(difficulty)),
            "dart_trials": pa.array(trials, pa.int64()), "dart_correct": pa.array(correct, pa.int64()),
            "dart_pass_rate": pa.array(rate, pa.float64(), mask=~np.isfinite(rate)),
            "dart_stop": pa.array(list(stop), pa.string())}


def _target_summary(targets: np.ndarray, solvable: np.ndarray) -> dict[str, Any]:
    values, counts = np.unique(targets, return_counts=True)
    return {"queries": len(targets), "solvable": int(np.sum(solvable)), "total_target": int(targets.sum()),
            "targets": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
            "stop_values": [TARGET_REACHED, "trial_cap", UNSOLVED]}

