"""`clear`: confidence-based filtering and correction of instruction data (CLEAR, docs/methods.md §2).

The base LM (`generator:`: a local folder or hub id, an OpenAI-compatible `endpoint`, or `model_from:` a finetune
step) rates each (prompt, response):
- observed consistency O: `k` sampled responses y'_j compared with the response y. s_j is NLI non-contradiction in
  both directions when `nli_model` is named (BSDetector), else ROUGE-L (the small-model variant, §2.4); r_j is
  whether the final answers agree. O = mean(alpha s_j + (1 - alpha) r_j). With `k: 0` (the log-prob variant: one
  forward pass) O is the row's likelihood confidence exp(-mean NLL of y given x), ranked within the dataset.
- self-reflection S: P(True) from the option letters' next-token probabilities after `n_reflections` reflection
  prompts (the second asks to check again): S = p(A) + 0.5 p(C), averaged.
- `clear_confidence` C = beta O + (1 - beta) S.

Auto-filter (`filter:`): rows with C < `threshold`, or the `drop_fraction` lowest, are dropped as `low_confidence`.
Auto-correct (`correct:`): the model of `model_from` (the finetune step trained on the filtered rows) or `model`
answers each kept prompt greedily; the base model judges old against new in both orders, and the response is
replaced only when both orders prefer the new one and their mean preference is >= `eta`. The old response goes to
`response_original`, with `change_reason` = `corrected`. A further round is one more finetune + clear step in the
config (CLEAR re-uses the fine-tunes the user runs anyway).

Every generation is stored as it arrives (`models/<label>/generations/`); scores are kept under `scores/`, so a new
threshold, fraction or eta re-decides without generating again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.methods.clear import (
    answers_agree,
    confidence,
    drop_mask,
    judge_preference,
    observed_consistency,
    rank_normalised,
    reflection_certainty,
    rouge_l,
)
from curate.models.generation import GeneratorRef, ResponseStore, Sampling, generate_stored, open_generator
from curate.stages.base import GlobalStage, ModelOrStep, Params, Rows, StageContext, register
from curate.stages.decision import Decision
from curate.stages.responses import render_prompts, with_responses

REFLECTIONS = (
    "Question: {prompt}\nProposed answer: {response}\nIs the proposed answer:\nA. Correct\nB. Incorrect\n"
    "C. I am not sure\nThe proposed answer is:",
    "Question: {prompt}\nProposed answer: {response}\nCheck the proposed answer again, step by step. Is it:\n"
    "A. Correct\nB. Incorrect\nC. I am not sure\nThe proposed answer is:",
)
JUDGE = ("Question: {prompt}\nResponse A: {a}\nResponse B: {b}\nWhich response answers the question better, A or B?\n"
         "The better response is:")
LETTERS = (" A", " B", " C")


class ConfidenceParams(Params):
    k: int = Field(5, ge=0)  # sampled responses per prompt (0: the log-prob variant)
    temperature: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(256, ge=1)
    alpha: float = Field(0.8, ge=0, le=1)
    beta: float = Field(0.7, ge=0, le=1)
    n_reflections: int = Field(2, ge=1, le=len(REFLECTIONS))
    nli_model: str | None = None  # e.g. microsoft/deberta-large-mnli; None: ROUGE-L (§2.4)
    seed: int = 0


class FilterParams(Params):
    threshold: float | None = 0.5
    drop_fraction: float | None = Field(None, ge=0, lt=1)


class CorrectParams(ModelOrStep):
    """The correcting model: usually `model_from` the finetune step trained on the filtered rows."""

    role = "the correcting model"
    eta: float = Field(0.8, ge=0, le=1)
    max_new_tokens: int = Field(256, ge=1)


class ClearParams(Params):
    generator: GeneratorRef
    confidence: ConfidenceParams = ConfidenceParams()
    filter: FilterParams | None = FilterParams()
    correct: CorrectParams | None = None
    prompt_template: str = "{prompt}\n"
    max_length: int = Field(1024, ge=2)  # tokens scored for the likelihood confidence

    @model_validator(mode="after")
    def _something(self) -> ClearParams:
        if self.filter is None and self.correct is None:
            raise ValueError("give `filter:`, `correct:` or both")
        return self


@register
class Clear(GlobalStage):
    name = "clear"
    Params = ClearParams
    needs = ("id", "prompt", "response")
    uses = ("text",)
    report_score = "clear_confidence"
    keep_summaries = True
    report_file = "clear.json"
    batch_rows = 1024

    def configure(self) -> None:
        correcting = ("response", "text", "response_original", "change_reason", "correction_confidence")
        self.adds = ("clear_confidence", *(correcting if self.params.correct is not None else ()))

    def summary_params(self) -> dict[str, Any]:
        p = self.params
        return {"generator": p.generator.model_dump(mode="json"), "confidence": p.confidence.model_dump(mode="json"),
                "correct": None if p.correct is None else p.correct.model_dump(mode="json", exclude={"eta"}),
                "prompt_template": p.prompt_template, "max_length": p.max_length}

    def model_steps(self) -> dict[str, str]:
        p = self.params
        found = {"generator.model_from": p.generator.model_from,
                 "correct.model_from": p.correct.model_from if p.correct else None}
        return {k: v for k, v in found.items() if v}

    def models(self) -> dict[str, str]:
        p = self.params
        found = {"generator.model": p.generator.model, "correct.model": p.correct.model if p.correct else None}
        return {k: v for k, v in found.items() if v}

    def fingerprint_extra(self) -> dict[str, Any]:
        from curate.models.locate import named_model_identity

        return {key: named_model_identity(model) for key, model in self.models().items()}

    def prepare(self, context: StageContext) -> dict[str, Any]:
        from curate.models.finetune import finetuned_model  # torch: imported when a step runs, not at registration

        p = self.params
        resolve = lambda label: str(finetuned_model(context.step_models[label])) if label else None  # noqa: E731
        return {"generations": str(context.models_dir / "generations"),
                "generator_path": resolve(p.generator.model_from),
                "corrector_path": resolve(p.correct.model_from) if p.correct else None}

    # ------------------------------------------------------------- per worker

    def setup(self) -> None:
        p = self.params
        self.generator = open_generator(p.generator, self.prepared.get("generator_path"))
        self.scorer = None
        if p.generator.endpoint is None:
            from curate.models.lm_scorer import LMScorer

            self.scorer = LMScorer(self.prepared.get("generator_path") or p.generator.model,
                                   device=p.generator.device, max_length=p.max_length)
        self.nli = None
        if p.confidence.nli_model:
            from curate.models.nli import NLIScorer

            self.nli = NLIScorer(p.confidence.nli_model, device=p.generator.device)
        self.corrector = None
        if p.correct is not None:
            ref = GeneratorRef(model=self.prepared.get("corrector_path") or p.correct.model,
                               device=p.generator.device, batch_tokens=p.generator.batch_tokens)
            self.corrector = open_generator(ref)

    def _stored(self, generator: Any, purpose: str, sampling: Sampling, keys: list[str],
                prompts: list[str]) -> list[list[str]]:
        folder = self.prepared.get("generations")
        store = ResponseStore.for_generation(folder, purpose, generator, sampling) if folder else None
        return [[c.text for c in cs] for cs in generate_stored(generator, store, keys, prompts, sampling)]

    def summarize(self, table: pa.Table) -> pa.Table:
        p, c = self.params, self.params.confidence
        ids = table.column("id").to_pylist()
        questions, responses = table.column("prompt").to_pylist(), table.column("response").to_pylist()
        columns: dict[str, Any] = {"id": table.column("id")}
        likelihood = np.full(len(ids), np.nan)
        if self.scorer is not None:
            likelihood = np.exp(-self.scorer.score(prompts=[p.prompt_template.format(prompt=q) for q in questions],
                                                   responses=responses).mean)
        columns["clear_likelihood"] = pa.array(likelihood, pa.float64(), mask=~np.isfinite(likelihood))
        observed = np.full(len(ids), np.nan)
        if c.k > 0:
            sampling = Sampling(n=c.k, temperature=c.temperature, max_new_tokens=c.max_new_tokens, seed=c.seed)
            samples = self._stored(self.generator, "consistency", sampling, ids,
                                   render_prompts(table, p.prompt_template))
            observed = self._consistency(responses, samples)
        columns["clear_observed"] = pa.array(observed, pa.float64(), mask=~np.isfinite(observed))
        reflections = [reflection_certainty(np.array(self.generator.option_logprobs(
            [template.format(prompt=q, response=r) for q, r in zip(questions, responses, strict=True)], LETTERS)))
            for template in REFLECTIONS[: c.n_reflections]]
        columns["clear_reflection"] = pa.array(np.mean(reflections, axis=0), pa.float64())
        if self.corrector is not None:
            columns.update(self._candidates(table, ids, questions, responses))
        return pa.table(columns)

    def _consistency(self, responses: list[str], samples: list[list[str]]) -> np.ndarray:
        alpha = self.params.confidence.alpha
        observed = np.full(len(responses), np.nan)
        for i, (response, drawn) in enumerate(zip(responses, samples, strict=True)):
            if not drawn:
                continue
            if self.nli is not None:
                forward = self.nli.contradiction([response] * len(drawn), drawn)
                backward = self.nli.contradiction(drawn, [response] * len(drawn))
                similarity = 1 - 0.5 * (forward + backward)
            else:
                similarity = np.array([rouge_l(response, d) for d in drawn])
            match = answers_agree([response] * len(drawn), drawn)
            observed[i] = observed_consistency(similarity[None, :], match[None, :], alpha)[0]
        return observed

    def _candidates(self, table: pa.Table, ids: list[str], questions: list[str],
                    responses: list[str]) -> dict[str, pa.Array]:
        p = self.params
        sampling = Sampling(n=1, temperature=0, max_new_tokens=p.correct.max_new_tokens)
        candidates = [c[0].strip() if c else "" for c in self._stored(
            self.corrector, "correction", sampling, ids, render_prompts(table, p.prompt_template))]
        judge = lambda a, b: np.array(self.generator.option_logprobs(  # noqa: E731
            [JUDGE.format(prompt=q, a=x, b=y) for q, x, y in zip(questions, a, b, strict=True)], LETTERS[:2]))
        new_second, new_first = judge_preference(judge(responses, candidates), judge(candidates, responses))
        return {"candidate": pa.array(candidates, pa.string()),
                "judge_new_second": pa.array(new_second, pa.float64()),
                "judge_new_first": pa.array(new_first, pa.float64())}

    # ------------------------------------------------------------- decision

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        p = self.params
        get = lambda name: summary.column(name).to_numpy(zero_copy_only=False).astype(np.float64)  # noqa: E731
        observed = get("clear_observed") if p.confidence.k > 0 else rank_normalised(get("clear_likelihood"))
        conf = confidence(observed, get("clear_reflection"), p.confidence.beta)
        conf = np.where(np.isfinite(conf), conf, get("clear_reflection") * (1 - p.confidence.beta))
        n = summary.num_rows
        drop = drop_mask(conf, p.filter.threshold, p.filter.drop_fraction) if p.filter else np.zeros(n, bool)
        reason = np.where(drop, "low_confidence", None).astype(object)
        score = pa.array(conf, pa.float64())
        adds: dict[str, pa.Array] = {"clear_confidence": score}
        report: dict[str, Any] = {"rows": n, "dropped": int(drop.sum()),
                                  "confidence": {"mean": float(np.nanmean(conf)) if n else None}}
        if p.correct is not None:
            adds.update(self._corrections(summary, rows, ~drop, report))
        return Decision(reason=pa.array(reason, pa.string()), score=score, adds=adds, report=report)

    def _corrections(self, summary: pa.Table, rows: Rows, kept: np.ndarray, report: dict[str, Any]
                     ) -> dict[str, pa.Array]:
        eta = self.params.correct.eta
        first = summary.column("judge_new_first").to_numpy(zero_copy_only=False)
        second = summary.column("judge_new_second").to_numpy(zero_copy_only=False)
        preference = (first + second) / 2
        current = rows.take(np.arange(summary.num_rows), ["prompt", "response", *(
            ["text"] if "text" in rows.schema.names else [])])
        candidates = summary.column("candidate").combine_chunks()
        differs = pc.and_(pc.not_equal(candidates, current.column("response").combine_chunks()),
                          pc.greater(pc.utf8_length(candidates), 0)).to_numpy(zero_copy_only=False)
        change = kept & differs & (first >= 0.5) & (second >= 0.5) & (preference >= eta)
        new = pc.if_else(pa.array(change), candidates, pa.nulls(len(change), pa.string()))
        replaced = with_responses(current, new)
        report["corrected"] = int(change.sum())
        report["corrected_fraction"] = float(change.sum() / max(kept.sum(), 1))
        original = pc.if_else(pa.array(change), current.column("response").combine_chunks(),
                              pa.nulls(len(change), pa.string()))
        return {"response": replaced["response"], "text": replaced["text"], "response_original": original,
                "change_reason": pa.array(np.where(change, "corrected", None).astype(object), pa.string()),
                "correction_confidence": pa.array(preference, pa.float64())}
