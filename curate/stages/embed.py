"""`embed`: sentence embeddings of one text column (map stage), cached by content hash.

Adds `embedding`: a fixed_size_list<float32, d> (or float16 with `dtype: float16`) of L2-normalised vectors
from a sentence-transformers model. Parameters:

| param            | default   | meaning |
|------------------|-----------|---------|
| `column`         | `text`    | the column to embed; `prompt` for instruction data (docs/methods.md §4.2: user turns) |
| `model`          | `default` | `default` = the packaged all-MiniLM-L6-v2 (offline), a local folder, a hub id, or |
|                  |           | `static` (below) / `static:<folder>` (a saved static model in model2vec's format) |
| `revision`       | null      | a hub id's branch, tag or commit (with `model: static`: the teacher's) |
| `teacher`        | null      | `model: static` only: the sentence transformer to distil (null: `default`) |
| `dims`           | null      | `model: static` only: dimensions kept by PCA (null: 256) |
| `batch_size`     | 64        | texts per forward pass; each table's texts are sorted by length first |
| `max_seq_length` | null      | tokens per text, longer ones are cut (null: the model's limit, 256 for MiniLM) |
| `prompt`         | ""        | text put before every input (e.g. "query: " for e5 models) |
| `prompt_name`    | null      | one of the model's configured prompts instead of `prompt` |
| `dtype`          | `float32` | `float16` halves the column on disk; vectors are computed and cached in float32 |
| `device`         | `auto`    | `auto` (a CUDA GPU when torch sees one), `cpu`, `cuda`, `cuda:N`, `mps` |
| `cache`          | true      | reuse and store vectors in the content-hash cache (`curate.models.embedding_cache`) |
| `empty_text`     | `reject`  | rows whose text is null, empty or white space: `reject`, or `embed` as "" |

`model: static` embeds a text as the mean of static token vectors (`curate.models.static_embedder`), distilled
once from `teacher` as model2vec does and cached under `$CURATE_CACHE_DIR/static/`: some 200x faster than MiniLM on
a CPU, at some cost in what selection keeps (docs/methods.md §4.2). It runs on the CPU whatever `device` says
(`device` is where the teacher runs while distilling); `batch_size` does not matter to it; `prompt_name` is refused.

Rows without a usable text are rejected by default, not embedded: a null (e.g. `column: prompt` on
plain-text rows) with reason `missing_field:<column>`, an empty or white-space text with `empty_text`.
Their vectors would all be the same meaningless point, which later stages (clustering, SemDeDup)
would treat as one giant cluster of duplicates. `empty_text: embed` keeps such rows and embeds "".

Work per table: hash the texts, look the unique ones up in the cache, embed only the missing ones in
one `encode` call (which sorts them by length into batches), store them, and scatter the vectors back
to the rows. Encode calls are serialised by a lock: the worker threads of a process share this stage
and its Hugging Face fast tokenizer, which fails ("Already borrowed") when used by two threads at once;
torch already uses every core inside one call. Cache lookups run outside the lock.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.data.arrays import matrix_to_column
from curate.data.devices import cuda_available
from curate.data.embedding import EMBEDDING
from curate.data.errors import CurateError
from curate.stages.base import MapStage, Params, Resources, register
from curate.stages.decision import Decision


class EmbedParams(Params):
    column: str = "text"
    model: str = "default"
    revision: str | None = None
    batch_size: int = Field(64, ge=1)
    max_seq_length: int | None = Field(None, ge=1)
    prompt: str = ""
    prompt_name: str | None = None
    dtype: Literal["float32", "float16"] = "float32"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    cache: bool = True
    empty_text: Literal["reject", "embed"] = "reject"
    teacher: str | None = None  # model: static
    dims: int | None = Field(None, ge=1)  # model: static

    @model_validator(mode="after")
    def _one_prompt(self) -> EmbedParams:
        if self.prompt and self.prompt_name:
            raise ValueError("give either prompt or prompt_name, not both")
        if (self.teacher is not None or self.dims is not None) and self.model != "static":
            raise ValueError(f"teacher and dims apply to model: static, not to model: {self.model!r}")
        if self.static and self.prompt_name is not None:
            raise ValueError("a static model has no named prompts: give prompt instead of prompt_name")
        if self.model.startswith("static:") and not self.model[len("static:"):]:
            raise ValueError("model: static:<folder> needs a folder after 'static:'")
        return self

    @property
    def static(self) -> bool:
        return self.model == "static" or self.model.startswith("static:")


def _wants_gpu(device: str, static: bool = False) -> bool:
    if device.startswith("cuda"):
        return True
    if device != "auto" or static:  # a static model embeds on the CPU
        return False
    return cuda_available()


@register
class Embed(MapStage):
    name = "embed"
    Params = EmbedParams
    adds = (EMBEDDING,)

    def configure(self) -> None:
        self.needs = ("id", self.params.column)
        # One GPU when the stage will use one, so Ray places one worker per GPU. With `device: auto` that is
        # decided where the plan is built; name `cuda` to ask a cluster for a GPU.
        p = self.params
        self.resources = Resources(cpus=1, gpus=1 if _wants_gpu(p.device, p.static) else 0, memory_gb=2.0)

    def __init__(self, params: Params | dict[str, Any] | None = None, /, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.embedder: Any = None
        self.cache: Any = None
        # texts seen; distinct texts found in the cache; distinct texts encoded (all texts without a cache)
        self.counts = {"rows": 0, "cached": 0, "embedded": 0}
        self._state_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    def check_input(self, schema: pa.Schema) -> None:
        """The named column must exist and hold strings (or only nulls)."""
        super().check_input(schema)
        kind = schema.field(self.params.column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
                or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(kind))):
            raise CurateError(f"stage 'embed': column {self.params.column!r} holds {kind}, not text; "
                              "set `column` to a string column")

    def models(self) -> dict[str, str]:
        p = self.params
        if p.model == "static":
            return {} if p.teacher in (None, "default") else {"teacher": p.teacher}
        if p.model.startswith("static:"):
            return {"model": p.model[len("static:"):]}
        return {} if p.model == "default" else {"model": p.model}

    def fingerprint_extra(self) -> dict[str, Any]:
        """The model's identity: re-training a model in place (same path) makes a re-run embed again."""
        from curate.models.embedder import model_identity

        p = self.params
        return {"model": model_identity(p.model, p.revision, p.teacher, p.dims)}

    def setup(self) -> None:
        """Load the model (and open the cache) once per worker process."""
        from curate.models.embedder import load_embedder
        from curate.models.embedding_cache import EmbeddingCache

        p = self.params
        embedder = load_embedder(p.model, p.device, p.max_seq_length, p.revision, p.prompt, p.prompt_name,
                                 p.teacher, p.dims)
        if p.cache and embedder.cacheable:
            self.cache = EmbeddingCache(embedder.namespace(), embedder.dim)
        self.embedder = embedder

    # ------------------------------------------------------------ embedding

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._encode_lock:
            return self.embedder.encode(texts, self.params.batch_size)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors (len(texts), d): cached ones looked up, the rest embedded once each."""
        self.ensure_setup()  # a public entry point: notebooks and benchmarks call it directly
        dim = self.embedder.dim
        if not texts:
            return np.zeros((0, dim), np.float32)
        if self.cache is None:
            with self._state_lock:
                self.counts["rows"] += len(texts)
                self.counts["embedded"] += len(texts)
            return self._encode(texts)
        from curate.models.embedding_cache import text_keys

        keys = text_keys(texts)
        # Unique keys with the position of their first text (a dict built from the reversed list keeps the
        # first occurrence), and each row's slot among them: duplicates are looked up and embedded once.
        first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))
        unique = list(first)
        slot = {k: i for i, k in enumerate(unique)}
        inverse = np.fromiter(map(slot.__getitem__, keys), dtype=np.intp, count=len(keys))
        hit, vectors = self.cache.get(unique)
        missing = np.flatnonzero(~hit)
        if len(missing):
            firsts = list(first.values())
            fresh = self._encode([texts[firsts[i]] for i in missing])
            vectors[missing] = fresh
            self.cache.put([unique[i] for i in missing], fresh)
        with self._state_lock:
            self.counts["rows"] += len(texts)
            self.counts["cached"] += len(unique) - len(missing)
            self.counts["embedded"] += len(missing)
        return vectors[inverse]

    def process(self, table: pa.Table) -> Decision:
        """Embed the rows' `column`; reject rows without a usable text (see the module doc)."""
        column = self.params.column
        values = table.column(column).combine_chunks() if table.num_rows else pa.array([], pa.string())
        if pa.types.is_null(values.type):
            values = values.cast(pa.string())
        n = len(values)
        present = pc.is_valid(values).to_numpy(zero_copy_only=False)
        nonblank = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0), False)
        nonblank = nonblank.to_numpy(zero_copy_only=False)
        if self.params.empty_text == "embed":
            usable = np.ones(n, dtype=bool)
            texts = pc.fill_null(values, "").to_pylist()
            reason = None
        else:
            usable = present & nonblank
            texts = values.filter(pa.array(usable)).to_pylist()
            codes = np.full(n, None, dtype=object)
            codes[~present] = f"missing_field:{column}"
            codes[present & ~nonblank] = "empty_text"
            reason = pa.array(codes, pa.string())
        dtype = np.float16 if self.params.dtype == "float16" else np.float32
        matrix = np.zeros((n, self.embedder.dim), dtype=dtype)
        matrix[usable] = self.embed_texts(texts)  # cast on output: the cache keeps float32
        embedding = matrix_to_column(matrix)
        if not usable.all():  # unembedded rows get a null vector, not zeros that look like data
            embedding = pa.FixedSizeListArray.from_arrays(embedding.values, self.embedder.dim,
                                                          mask=pa.array(~usable))
        return Decision(reason=reason, adds={EMBEDDING: embedding})
