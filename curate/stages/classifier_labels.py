"""Where a `classifier` step's labels come from (docs/methods.md §15.3): the target against the pool, a column of the
rows, or an LLM grading a sample on a rubric. Each source ends as one `Labelled` set of texts (or embeddings)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from curate.data.embedding import EMBEDDING, embedding_matrix
from curate.data.errors import CurateError
from curate.methods.quality import parse_grade
from curate.methods.text import as_text, hash_strings
from curate.models.generation import GeneratorRef, ResponseStore, Sampling, generate_stored, open_generator
from curate.stages.base import Params, StageContext

log = logging.getLogger("curate")

# FineWeb-Edu's additive 0-5 rubric, paraphrased (docs/methods.md §15.2); `{text}` is the row's text
EDU_RUBRIC = """Below is an extract from a web page. Judge whether it would be useful for teaching at primary to
grade-school level, using this additive 5-point scale. Add points for each criterion the extract meets:
- Add 1 point if it gives some basic information relevant to educational topics, even if mixed with ads or other
  unrelated material.
- Add another point if it addresses elements relevant to education but does not align closely with educational
  standards: it may mix educational content with other material, or be superficial or disorganised.
- Award a third point if it is appropriate for educational use and introduces key concepts relevant to school
  curricula; it is coherent, like an introductory section of a textbook, though it may not be comprehensive.
- Grant a fourth point if it is highly relevant and beneficial for grade-school teaching, focused and clear, like
  a chapter of a textbook or a tutorial with exercises and solutions.
- Bestow a fifth point if it is outstanding for primary or grade-school teaching, with clear, detailed reasoning
  and no distracting content.

The extract:
{text}

After examining the extract, justify your total briefly (at most 100 words), then end with the line
"Educational score: <total points>".
"""


class ColumnLabels(Params):
    """Labels in a column of the rows: 0/1 or booleans, grades (numbers), or classes with `positive:` naming the one
    that counts as 1. Rows without a value are scored but not trained on."""

    column: str
    positive: str | int | float | bool | None = None
    graded: bool | None = None  # None: numbers with more than two values are grades


class AnnotateParams(Params):
    """An LLM grades a seeded `sample` of the input (`prompt`: a template with `{text}`; default the educational
    rubric); answers are parsed to `scale` (the last `score: <n>`), greedy, stored as they arrive."""

    generator: GeneratorRef
    prompt: str = EDU_RUBRIC
    scale: tuple[float, float] = (0.0, 5.0)
    sample: int = Field(2000, ge=2)
    max_chars: int = Field(2000, ge=1)  # each text is cut here before it goes in the prompt (FineWeb: ≤ 512 tokens)
    max_new_tokens: int = Field(256, ge=1)


class AnnotateLabels(Params):
    annotate: AnnotateParams


@dataclass
class Labelled:
    y: np.ndarray  # 0/1 or grades
    task: str  # binary | graded
    texts: pa.Array | None  # the training rows' texts (text models)
    vectors: np.ndarray | None  # or their embeddings (embedding_head)
    counts: dict[str, int]
    source: str
    grades: tuple[float, ...] = ()
    scale: tuple[float, float] = (0.0, 1.0)


def labelled_rows(p: Any, context: StageContext, embeds: bool,
                  embed_texts: Callable[[list[str]], np.ndarray]) -> Labelled:
    """The labelled training rows of a classifier step (`p`: its parameters)."""
    if p.labels == "target":
        return _target_vs_pool(p, context, embeds, embed_texts)
    if isinstance(p.labels, ColumnLabels):
        return _from_column(p, context, embeds)
    return _annotated(p, context, embeds)


def _features(table: pa.Table, column: str, embeds: bool) -> tuple[pa.Array | None, np.ndarray | None, np.ndarray]:
    """(texts, vectors, usable) of rows: embeddings where the model needs them, else texts."""
    if embeds:
        vectors, valid = embedding_matrix(table.column(EMBEDDING))
        return None, vectors, valid
    texts = as_text(table.column(column))
    return texts, None, np.ones(len(texts), bool)


def _text_keys(texts: pa.Array) -> np.ndarray:
    return hash_strings(pc.utf8_trim_whitespace(texts))


def _target_vs_pool(p: Any, context: StageContext, embeds: bool,
                    embed_texts: Callable[[list[str]], np.ndarray]) -> Labelled:
    if context.target is None:
        raise CurateError("classifier: labels: target needs the config's `target:` sample")
    target = context.target.to_table()
    if p.column not in target.column_names and not (embeds and EMBEDDING in target.column_names):
        raise CurateError(f"classifier: the target has no column {p.column!r} (`column`)")
    rng = np.random.default_rng(p.seed)
    if target.num_rows > p.max_per_class:
        target = target.take(pa.array(np.sort(rng.choice(target.num_rows, p.max_per_class, replace=False))))
    n_pos = target.num_rows
    target_texts = as_text(target.column(p.column)) if p.column in target.column_names else None
    # negatives: a seeded uniform sample of the pool, never a row whose text is a target text (§15.8)
    pool_rows = context.input.count()
    order = rng.permutation(pool_rows)
    known = np.unique(_text_keys(target_texts)) if target_texts is not None else np.zeros(0, np.uint64)
    columns = ["id", EMBEDDING if embeds else p.column, *([p.column] if embeds and target_texts is not None and
                                                            p.column in context.input.schema.names else [])]
    picked: list[pa.Table] = []
    have, start = 0, 0
    while have < n_pos and start < pool_rows:  # a few more than needed per read, for the rows skipped
        chunk = np.sort(order[start:start + 2 * (n_pos - have) + 16])
        start += len(chunk)
        rows = context.input.take(chunk, columns)
        if p.column in rows.column_names and len(known):
            rows = rows.filter(pa.array(~np.isin(_text_keys(as_text(rows.column(p.column))), known)))
        if embeds:
            rows = rows.filter(pa.array(embedding_matrix(rows.column(EMBEDDING))[1]))
        rows = rows.slice(0, n_pos - have)
        picked.append(rows)
        have += rows.num_rows
    negatives = pa.concat_tables(picked) if picked else None
    if not n_pos or negatives is None or not negatives.num_rows:
        raise CurateError(f"classifier: labels: target found {n_pos} target rows and "
                          f"{0 if negatives is None else negatives.num_rows} pool rows to train on")
    y = np.concatenate([np.ones(n_pos), np.zeros(negatives.num_rows)])
    counts = {"positive (target)": n_pos, "negative (pool)": negatives.num_rows}
    if embeds:
        if EMBEDDING in target.column_names:
            positive, valid = embedding_matrix(target.column(EMBEDDING))
            if not valid.all():
                raise CurateError("classifier: some target rows have no embedding")
        else:
            positive = embed_texts(target_texts.to_pylist())
        negative, _ = embedding_matrix(negatives.column(EMBEDDING))
        return Labelled(y, "binary", None, np.vstack([positive, negative]).astype(np.float32), counts,
                        "target_vs_pool")
    texts = pa.concat_arrays([target_texts, as_text(negatives.column(p.column))])
    return Labelled(y, "binary", texts, None, counts, "target_vs_pool")


def _from_column(p: Any, context: StageContext, embeds: bool) -> Labelled:
    spec: ColumnLabels = p.labels
    if spec.column not in context.input.schema.names:
        raise CurateError(f"classifier: labels.column {spec.column!r} is not a column of the input; it has "
                          f"{context.input.schema.names}")
    feature = EMBEDDING if embeds else p.column
    parts = []
    for batch in context.input.iter_batches([feature, spec.column], batch_rows=65536):
        parts.append(batch.filter(pc.is_valid(batch.column(spec.column))))
    table = pa.concat_tables(parts) if parts else pa.table({})
    if not table.num_rows:
        raise CurateError(f"classifier: no input row has a value in labels.column {spec.column!r}")
    raw = table.column(spec.column).combine_chunks()
    y, task, grades = _label_values(raw, spec)
    rng = np.random.default_rng(p.seed)
    keep = np.zeros(len(y), bool)
    for value in np.unique(y):  # at most max_per_class rows of each label value, seeded
        where = np.flatnonzero(y == value)
        keep[where if len(where) <= p.max_per_class else rng.choice(where, p.max_per_class, replace=False)] = True
    table, y = table.filter(pa.array(keep)), y[keep]
    scale = (float(y.min()), float(y.max())) if task == "graded" else (0.0, 1.0)
    return _labelled(table, y, p.column, embeds, task, f"column:{spec.column}", grades, scale)


def _labelled(table: pa.Table, y: np.ndarray, column: str, embeds: bool, task: str, source: str,
              grades: tuple[float, ...], scale: tuple[float, float], extra: dict[str, int] | None = None) -> Labelled:
    """Labelled rows from a table of them and their labels (rows without an embedding left out), counted by label."""
    texts, vectors, usable = _features(table, column, embeds)
    if not usable.all():
        y, vectors = y[usable], vectors[usable]
    counts = {f"{v:g}": int((y == v).sum()) for v in np.unique(y)} | (extra or {})
    return Labelled(y, task, texts, vectors, counts, source, grades, scale)


def _label_values(raw: pa.Array, spec: ColumnLabels) -> tuple[np.ndarray, str, tuple[float, ...]]:
    """(labels as floats, task, grades) of a label column's non-null values."""
    values = raw.to_numpy(zero_copy_only=False)
    if spec.positive is not None:
        return np.array([v == spec.positive for v in values], np.float64), "binary", ()
    if pa.types.is_boolean(raw.type):
        return values.astype(np.float64), "binary", ()
    if not (pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type)):
        distinct = pc.unique(raw).to_pylist()[:5]
        raise CurateError(f"classifier: labels.column holds {raw.type} values such as {distinct}: give "
                          "`labels.positive` (the value that counts as positive) or use a numeric column")
    y = values.astype(np.float64)
    distinct = np.unique(y)
    graded = spec.graded if spec.graded is not None else not set(distinct.tolist()) <= {0.0, 1.0}
    return y, ("graded" if graded else "binary"), tuple(distinct.tolist()) if graded else ()


def _annotated(p: Any, context: StageContext, embeds: bool) -> Labelled:
    a: AnnotateParams = p.labels.annotate
    n = context.input.count()
    rng = np.random.default_rng(p.seed)
    positions = np.sort(rng.choice(n, min(a.sample, n), replace=False))
    feature = [EMBEDDING] if embeds else []
    table = context.input.take(positions, list(dict.fromkeys(["id", p.column, *feature])))
    texts = pc.utf8_slice_codeunits(as_text(table.column(p.column)), 0, a.max_chars).to_pylist()
    prompts = [a.prompt.replace("{text}", t) for t in texts]
    model_path = None
    if a.generator.model_from:
        from curate.models.finetune import finetuned_model

        model_path = str(finetuned_model(context.step_models[a.generator.model_from]))
    generator = open_generator(a.generator, model_path)
    sampling = Sampling(n=1, temperature=0.0, max_new_tokens=a.max_new_tokens)
    prompt_hash = hashlib.sha256(a.prompt.encode()).hexdigest()[:16]
    store = ResponseStore.for_generation(context.models_dir / "annotations", "grade", generator, sampling,
                                         {"prompt": prompt_hash, "max_chars": a.max_chars})
    ids = table.column("id").to_pylist()
    answers = [c[0].text if c else "" for c in generate_stored(generator, store, ids, prompts, sampling)]
    grades = [parse_grade(answer, a.scale) for answer in answers]
    context.models_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "score": pa.array(grades, pa.float64()), "rationale": answers,
                             "model": [generator.name] * len(ids), "prompt_hash": [prompt_hash] * len(ids)}),
                   context.models_dir / "annotations.parquet")
    parsed = np.array([g is not None for g in grades], bool)
    failed = int((~parsed).sum())
    if failed:
        log.warning("classifier %s: %d of %d graded answers had no score on the scale %s (left out; see "
                    "annotations.parquet)", context.label, failed, len(grades), list(a.scale))
    if parsed.sum() < 2:
        raise CurateError(f"classifier: only {int(parsed.sum())} of {len(grades)} graded answers had a score")
    y = np.array([g for g in grades if g is not None], np.float64)
    return _labelled(table.filter(pa.array(parsed)), y, p.column, embeds, "graded", "annotate",
                     tuple(np.unique(y).tolist()), a.scale, {"unparsed": failed})
