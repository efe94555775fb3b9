"""Static embedders: a text's vector is the mean of its tokens' vectors, looked up in a table (model2vec).

`embed: {model: static}` distils a table from a sentence transformer once (`curate.models.static_distill`:
`teacher`, default the packaged all-MiniLM-L6-v2; `dims`, default 256) and caches it; `model: static:<folder>`
loads a saved static model, e.g. one distilled with model2vec elsewhere. Folder layouts read (model2vec's
`load_pretrained`): model2vec's (`config.json`, `model.safetensors` with `embeddings` and optionally the
vocabulary-quantisation tensors `weights` and `mapping`, `tokenizer.json`), sentence-transformers' `StaticEmbedding`
(`embedding.weight`), at the top or in `0_StaticEmbedding/`.

Inference is numpy, as model2vec's `StaticModel.encode`: the text cut to `max_length x median token length`
characters, tokenised without special tokens (at most `max_length` tokens, default 512), unknown tokens left out,
the mean of the remaining tokens' vectors, L2-normalised. A text without any known token (e.g. "") gets the zero
vector. The mean is a sparse (texts x vocabulary) count matrix times the table, which needs no copy of a vector
per token; the table is held in float32. torch is not imported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.data.errors import CurateError
from curate.models.sentence_embedder import Embedder
from curate.models.static_distill import DEFAULT_DIMS

STATIC = "static"
PREFIX = "static:"
DEFAULT_MAX_LENGTH = 512  # tokens (model2vec's default)
CHUNK = 8192  # texts per sparse product, so that a large encode call holds one chunk's tokens at a time


def is_static(model: str) -> bool:
    """True for `static` and `static:<folder>`."""
    return model == STATIC or model.startswith(PREFIX)


def static_folder_name(model: str) -> str | None:
    """The folder of `static:<folder>`, None for `static`."""
    return model[len(PREFIX):] if model.startswith(PREFIX) else None


def _layout(folder: Path) -> tuple[Path, Path, Path, str]:
    """(tensors, tokenizer, config, name of the table tensor) of the first layout found in a folder."""
    for tensors, tokenizer, config, name in (
            ("model.safetensors", "tokenizer.json", "config.json", "embeddings"),
            ("model.safetensors", "tokenizer.json", "config_sentence_transformers.json", "embedding.weight"),
            ("0_StaticEmbedding/model.safetensors", "0_StaticEmbedding/tokenizer.json",
             "config_sentence_transformers.json", "embedding.weight")):
        paths = folder / tensors, folder / tokenizer, folder / config
        if all(p.is_file() for p in paths):
            return *paths, name
    raise CurateError(f"static model folder {str(folder)!r} has no model.safetensors + tokenizer.json + config.json "
                      "(model2vec's layout) nor a sentence-transformers StaticEmbedding")


class StaticModel:
    """A token-vector table and its tokenizer; `encode` gives L2-normalised float32 means (see the module doc)."""

    def __init__(self, vectors: np.ndarray, tokenizer: Any, max_length: int | None = DEFAULT_MAX_LENGTH):
        vocabulary = tokenizer.get_vocab(with_added_tokens=True)
        if len(vectors) != len(vocabulary):
            raise CurateError(f"static model: {len(vectors)} token vectors for a vocabulary of {len(vocabulary)}")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        self.max_length = max_length
        if max_length is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(max_length)
        self.unk_id = _unk_id(tokenizer)
        self.median_token_length = int(np.median([len(token) for token in vocabulary]))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int | None = None) -> StaticModel:
        """Load any layout of the module doc; `max_length` (tokens) defaults to the config's, else 512."""
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        tensors_path, tokenizer_path, config_path, name = _layout(Path(folder))
        tensors = load_file(str(tensors_path))
        vectors = tensors[name].astype(np.float32)
        if "mapping" in tensors:  # vocabulary quantisation: token -> row, and a weight per token
            vectors = vectors[tensors["mapping"].astype(np.int64)]
        if "weights" in tensors:
            vectors = vectors * tensors["weights"].astype(np.float32)[:, None]
        config = json.loads(config_path.read_text(encoding="utf-8"))
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        return cls(vectors, tokenizer, max_length or config.get("max_length", DEFAULT_MAX_LENGTH))

    def token_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat token ids, row offsets) of the texts, unknown tokens left out."""
        if self.max_length is not None:
            cut = self.max_length * self.median_token_length
            texts = [t[:cut] for t in texts]
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        ids = [e.ids for e in encodings]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((i for row in ids for i in row), dtype=np.int64, count=int(lengths.sum()))
        if self.unk_id is not None:
            known = flat != self.unk_id
            rows = np.repeat(np.arange(len(ids)), lengths)
            flat = flat[known]
            lengths = np.bincount(rows[known], minlength=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return flat, offsets

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised mean token vectors, float32 (len(texts), dim); zeros for a text without known tokens."""
        from scipy.sparse import csr_matrix

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), CHUNK):
            flat, offsets = self.token_ids(texts[start:start + CHUNK])
            counts = np.diff(offsets)
            rows = len(counts)
            weights = np.repeat(1.0 / np.maximum(counts, 1), counts).astype(np.float32)
            means = csr_matrix((weights, flat, offsets), shape=(rows, len(self.vectors))) @ self.vectors
            norms = np.linalg.norm(means, axis=1, keepdims=True)
            out[start:start + rows] = means / np.maximum(norms, 1e-32)
        return out


def _unk_id(tokenizer: Any) -> int | None:
    unk = getattr(tokenizer.model, "unk_token", None)
    if unk is not None:
        return tokenizer.token_to_id(unk)
    if hasattr(tokenizer.model, "unk_token"):
        return None
    return json.loads(tokenizer.to_str())["model"].get("unk_id")  # Unigram


@dataclass
class StaticEmbedder(Embedder):
    """An `Embedder` whose `model` is a `StaticModel` (CPU, numpy; `device` is where the teacher was distilled)."""

    def namespace(self) -> dict[str, Any]:
        return {"model": self.identity, "max_seq_length": self.max_seq_length, "prompt": self.prompt,
                "truncate_dim": None, "normalize": True, "dim": self.dim}

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised float32 vectors (len(texts), dim); `batch_size` does not matter here."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self.model.encode([self.prompt + t for t in texts] if self.prompt else list(texts))


def static_model_identity(model: str, teacher: str | None = None, dims: int | None = None,
                          revision: str | None = None) -> dict[str, Any]:
    """The identity of `static` (its teacher's identity and the distillation settings) or `static:<folder>`
    (the folder's content hash), without distilling or loading anything."""
    from curate.models.locate import folder_identity
    from curate.models.static_distill import DistillSettings, static_identity

    folder = static_folder_name(model)
    if folder is None:
        return static_identity(DistillSettings(teacher or "default", revision, dims or DEFAULT_DIMS))
    path = Path(folder).expanduser()
    return {"static_folder": folder_identity(path)} if path.is_dir() else {"static_folder": folder}


def load_static_embedder(model: str, teacher: str | None = None, dims: int | None = None, revision: str | None = None,
                         device: str = "auto", max_seq_length: int | None = None, prompt: str = "") -> StaticEmbedder:
    """`static` (distilled from `teacher` on `device` once, then cached) or `static:<folder>`."""
    from curate.models.locate import folder_identity
    from curate.models.static_distill import DistillSettings, distilled_folder

    name = static_folder_name(model)
    if name is None:
        folder, identity = distilled_folder(DistillSettings(teacher or "default", revision, dims or DEFAULT_DIMS),
                                            device)
    else:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise CurateError(f"embedding model {model!r}: no static model folder at {name!r} "
                              f"(resolved: {os.path.abspath(folder)!r})")
        identity = {"static_folder": folder_identity(folder)}
    static = StaticModel.from_folder(folder, max_seq_length)
    return StaticEmbedder(model=static, name=model, identity=identity, device="cpu", dim=static.dim,
                          max_seq_length=static.max_length, prompt=prompt)
