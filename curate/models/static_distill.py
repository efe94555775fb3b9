"""Static embeddings distilled from a sentence transformer, as model2vec's `distill` does (no vocabulary given).

1. **Vocabulary**: the teacher's tokenizer without its post-processor, its padding and truncation, its added
   tokens other than the unknown and padding tokens (`[CLS]`, `[SEP]`, `[MASK]` go), and the tokens matching
   `\\[unused\\d+\\]`; the rest keep their order and are numbered again from 0. A byte-level pre-tokenizer adds a
   prefix space.
2. **Token vectors**: each kept token goes through the teacher alone, between the teacher's own start and end
   tokens (`[CLS] tok [SEP]`), in batches of 256; its vector is the mean of the last hidden states.
3. **PCA** to `dims` (default 256): centred, the eigenvectors of the covariance (largest first), each component's
   sign chosen so that its largest-magnitude score is positive (model2vec's `_pca_fit_transform`).
4. **Zipf / SIF weights**: the token of rank r (its position in the vocabulary, from 1) has probability
   p_r = (1 / (r + 1)) / sum, and its vector is multiplied by sif / (sif + p_r) (sif = 1e-4).
5. Stored as float16 in model2vec's folder format: `model.safetensors` (tensor `embeddings`), `tokenizer.json`,
   `config.json` (model2vec's keys) and `modules.json`, so model2vec's `StaticModel.from_pretrained` and
   sentence-transformers load it too.

Distilled models are cached under `$CURATE_CACHE_DIR/static/<key>/` (default `~/.cache/curate`), the key a hash
of `static_identity`: the teacher's identity (`curate.models.embedder.model_identity`: the packaged model's
version, a folder's content hash or a hub commit) and every distillation setting. A model is written into a
temporary folder next to its place and renamed into place when complete; a lock file makes a second process
wait for the first one's model instead of distilling it again (and the rename alone keeps a model whole should
two processes write one at once). Never pickled.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.data.errors import CurateError
from curate.data.hashing import fingerprint
from curate.data.progress import progress

log = logging.getLogger("curate")

FORMAT = 1  # bump when the distillation changes: models distilled before are then never reused
DEFAULT_DIMS = 256
SIF_COEFFICIENT = 1e-4
TOKEN_REMOVE_PATTERN = r"\[unused\d+\]"
BATCH = 256  # tokens per forward pass (model2vec's _DEFAULT_BATCH_SIZE)
LOCK_WAIT_S = 3600.0


@dataclass(frozen=True)
class DistillSettings:
    """What a distilled model depends on besides the teacher's weights."""

    teacher: str = "default"  # `default` (packaged all-MiniLM-L6-v2), a folder or a hub id
    revision: str | None = None  # of a hub teacher
    dims: int = DEFAULT_DIMS
    sif_coefficient: float = SIF_COEFFICIENT

    def recipe(self) -> dict[str, Any]:
        return {"format": FORMAT, "dims": self.dims, "sif_coefficient": self.sif_coefficient,
                "token_remove_pattern": TOKEN_REMOVE_PATTERN, "pooling": "mean", "dtype": "float16"}


def static_identity(settings: DistillSettings, teacher_identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """The identity of the model distilled with these settings (the embedding cache's and the folder's key)."""
    from curate.models.sentence_embedder import sentence_model_identity as model_identity

    teacher = teacher_identity or model_identity(settings.teacher, settings.revision)
    return {"static": {"teacher": teacher, **settings.recipe()}}


def cacheable_teacher(identity: dict[str, Any]) -> bool:
    """False for a hub teacher whose commit is unknown: its distilled model cannot be told apart from another's."""
    return not ("hub_id" in identity and identity.get("revision") is None)


def static_root() -> Path:
    from curate.models.embedding_cache import cache_root

    return cache_root() / "static"


def cached_folder(identity: dict[str, Any]) -> Path:
    """Where the model of a `static_identity` is (or will be) cached."""
    return static_root() / fingerprint(identity)


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("model.safetensors", "tokenizer.json", "config.json"))


# ---------------------------------------------------------------- the vocabulary


def _ordered_vocabulary(model: dict[str, Any]) -> list[str]:
    if model["type"] == "Unigram":
        return [entry[0] for entry in model["vocab"]]
    return [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]


def static_tokenizer(spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The static model's tokenizer (as tokenizer.json content) and its tokens by new id (step 1 of the module doc)."""
    spec = copy.deepcopy(spec)
    model = spec["model"]
    kind = model["type"]
    ordered = _ordered_vocabulary(model)
    if kind == "Unigram":
        unk = ordered[model["unk_id"]] if model.get("unk_id") is not None else None
    else:
        unk = model.get("unk_token")
    pad = (spec.get("padding") or {}).get("pad_token")
    added = [t["content"] for t in spec.get("added_tokens") or []]
    pattern = re.compile(TOKEN_REMOVE_PATTERN)
    removed = {t for t in added if t not in (unk, pad)} | {t for t in ordered if pattern.match(t)}
    kept = [t for t in ordered if t not in removed]
    kept += [t for t in added if t not in removed and t not in set(kept)]  # kept added tokens outside the vocab
    new_id = {t: i for i, t in enumerate(kept)}
    if kind == "Unigram":
        scores = dict(map(tuple, model["vocab"]))
        model["vocab"] = [[t, scores.get(t, 0.0)] for t in kept]
        model["unk_id"] = new_id.get(unk)
    else:
        model["vocab"] = new_id
    spec["added_tokens"] = [{**t, "id": new_id[t["content"]]} for t in spec.get("added_tokens") or []
                            if t["content"] in new_id]
    spec["post_processor"] = None
    spec["truncation"] = None
    spec["padding"] = None if pad not in new_id else {**spec["padding"], "strategy": "BatchLongest",
                                                         "pad_id": new_id[pad], "pad_type_id": 0}
    _prefix_space(spec.get("pre_tokenizer"))
    return spec, kept


def _prefix_space(node: Any) -> None:
    """model2vec sets `add_prefix_space` on a byte-level pre-tokenizer (so a text's first word is a word like any)."""
    if isinstance(node, dict):
        if node.get("type") == "ByteLevel" and "add_prefix_space" in node:
            node["add_prefix_space"] = True
        for value in node.get("pretokenizers") or []:
            _prefix_space(value)


def special_ids(spec: dict[str, Any]) -> tuple[list[int], list[int]]:
    """The ids the teacher's post-processor puts before and after a single text (e.g. [CLS] and [SEP])."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(json.dumps({**spec, "padding": None, "truncation": None}))
    bare = tokenizer.encode("hello", add_special_tokens=False).ids
    full = tokenizer.encode("hello", add_special_tokens=True).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    return [], []


# ---------------------------------------------------------------- vectors, PCA, weights


def token_vectors(model: Any, ids: list[list[int]], pad_id: int, device: str, key: str = "static-distill",
                  description: str = "distil static embeddings") -> np.ndarray:
    """The mean last hidden state of each id sequence, through a transformers model (step 2)."""
    import inspect

    import torch

    model = model.to(device).eval()
    with_types = "token_type_ids" in inspect.signature(model.forward).parameters
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(ids), model.config.hidden_size), np.float32)
    progress().start(key, description, len(ids), "tokens")
    try:
        for start in range(0, len(ids), BATCH):
            rows = order[start:start + BATCH]
            width = max(len(ids[i]) for i in rows)
            batch = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                batch[j, :len(ids[i])] = torch.tensor(ids[i])
                mask[j, :len(ids[i])] = 1
            inputs = {"input_ids": batch.to(device), "attention_mask": mask.to(device)}
            if with_types:
                inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
            with torch.inference_mode():
                hidden = model(**inputs).last_hidden_state.float()
                weights = (mask.float() / mask.sum(1, keepdim=True).clamp_min(1.0)).to(hidden.device)
                out[rows] = torch.bmm(weights[:, None, :], hidden).squeeze(1).cpu().numpy()
            progress().advance(key, len(rows))
    finally:
        progress().finish(key)
    return np.nan_to_num(out)


def zipf_sif_weights(n: int, sif_coefficient: float) -> np.ndarray:
    """sif / (sif + p_r) with Zipf probabilities p_r proportional to 1 / (r + 1), r = 1..n (step 4)."""
    inverse_rank = 1 / np.arange(2, n + 2)
    return sif_coefficient / (sif_coefficient + inverse_rank / inverse_rank.sum())


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """Scores on the first `dims` principal components, signs fixed (step 3; no reduction when dims >= the
    vectors' width, none at all when dims >= the number of vectors, as in model2vec)."""
    dims = min(dims, x.shape[1])
    if dims >= x.shape[0]:
        return x
    centred = x - x.mean(axis=0)
    _, vectors = np.linalg.eigh((centred.T @ centred) / (x.shape[0] - 1))
    components = vectors[:, ::-1][:, :dims].T
    scores = centred @ components.T
    biggest = np.argmax(np.abs(scores), axis=0)
    return scores * np.sign(scores[biggest, np.arange(scores.shape[1])])


# ---------------------------------------------------------------- distilling and saving


def _load_teacher(settings: DistillSettings, device: str) -> Any:
    """The teacher as an `Embedder` (a sentence transformer): tests replace this to see that it is not called."""
    from curate.models.sentence_embedder import load_sentence_embedder as load_embedder

    return load_embedder(settings.teacher, device, revision=settings.revision)


def distill(teacher: Any, settings: DistillSettings) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """(float16 vectors, tokenizer.json content, tokens) of the static model distilled from a loaded teacher."""
    module = teacher.model[0]  # the sentence transformer's Transformer module
    if not hasattr(module, "auto_model") or not getattr(getattr(module, "tokenizer", None), "is_fast", False):
        raise CurateError(f"static embeddings: the teacher {settings.teacher!r} is not a transformer with a fast "
                          "(tokenizer.json) tokenizer, which distillation needs")
    backend = module.tokenizer.backend_tokenizer
    teacher_spec = json.loads(backend.to_str())
    spec, tokens = static_tokenizer(teacher_spec)
    original = backend.get_vocab(with_added_tokens=True)
    before, after = special_ids(teacher_spec)
    ids = [[*before, original[t], *after] for t in tokens]
    pad = module.tokenizer.pad_token_id
    vectors = token_vectors(module.auto_model, ids, 0 if pad is None else pad, teacher.device)
    vectors = pca(vectors, settings.dims) * zipf_sif_weights(len(vectors), settings.sif_coefficient)[:, None]
    return vectors.astype(np.float16), spec, tokens


def write_static_model(folder: Path, vectors: np.ndarray, tokenizer: dict[str, Any], config: dict[str, Any]) -> None:
    """model2vec's folder layout: model.safetensors (`embeddings`), tokenizer.json, config.json, modules.json."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": np.ascontiguousarray(vectors)}, str(folder / "model.safetensors"))
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    config = {**config, "embedding_dtype": np.dtype(vectors.dtype).name}
    (folder / "config.json").write_text(json.dumps(config, indent=4), encoding="utf-8")
    modules = [{"idx": 0, "name": "0", "path": ".", "type": "sentence_transformers.models.StaticEmbedding"},
               {"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=4), encoding="utf-8")


def model_config(settings: DistillSettings, dim: int, identity: dict[str, Any]) -> dict[str, Any]:
    """config.json: model2vec's keys, plus what curate distilled it from."""
    return {"model_type": "model2vec", "architectures": ["StaticModel"], "tokenizer_name": settings.teacher,
            "apply_pca": settings.dims, "sif_coefficient": settings.sif_coefficient, "hidden_dim": dim,
            "seq_length": 1000000, "normalize": True, "pooling": "mean", "max_length": 512,
            "curate_identity": identity}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file across processes (flock; on systems without it, no lock: the rename still keeps
    every model whole)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        locked = True
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CurateError(f"waited {LOCK_WAIT_S:.0f} s for another process distilling into "
                                      f"{path.parent}; delete {path} if no process is") from None
                time.sleep(0.2)
            except OSError as error:  # a file system without locks (some network mounts): go on unlocked
                log.warning("static embeddings: cannot lock %s (%s); distilling without the lock", path, error)
                locked = False
                break
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


def save_atomically(folder: Path, write: Any) -> None:
    """`write(tmp)` into a temporary folder beside `folder`, then rename it into place; when another process got
    there first, its model stays and ours is discarded."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the model from other users of a shared cache
        write(tmp)
        for path in tmp.iterdir():
            os.chmod(path, 0o644)  # safetensors writes 0600
        if folder.exists() and not is_complete(folder):  # a damaged copy (files deleted by hand)
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not is_complete(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def distilled_folder(settings: DistillSettings, device: str = "auto") -> tuple[Path, dict[str, Any]]:
    """(folder, identity) of the static model for these settings: the cached one, or distilled now (the teacher on
    `device`) and cached."""
    from curate.models.sentence_embedder import sentence_model_identity as model_identity

    teacher_identity = model_identity(settings.teacher, settings.revision)
    teacher = None
    if not cacheable_teacher(teacher_identity):  # load (maybe download) it first: its commit is then known
        teacher = _load_teacher(settings, device)
        teacher_identity = teacher.identity
    identity = static_identity(settings, teacher_identity)
    if not cacheable_teacher(teacher_identity):
        raise CurateError(f"static embeddings: the commit of the hub teacher {settings.teacher!r} is unknown, so its "
                          "distilled model cannot be cached; name a local folder or a revision")
    folder = cached_folder(identity)
    if is_complete(folder):
        return folder, identity
    with _locked(folder.with_name(folder.name + ".lock")):
        if is_complete(folder):  # another process distilled it while we waited
            return folder, identity
        if teacher is None:
            teacher = _load_teacher(settings, device)
        start = time.perf_counter()
        log.info("distilling static embeddings from %r (%d dims); cached in %s", settings.teacher, settings.dims,
                 folder)
        vectors, tokenizer, tokens = distill(teacher, settings)
        config = model_config(settings, vectors.shape[1], identity)
        save_atomically(folder, lambda tmp: write_static_model(tmp, vectors, tokenizer, config))
        log.info("distilled %d token vectors of %d dims in %.1f s", len(tokens), vectors.shape[1],
                 time.perf_counter() - start)
    return folder, identity
