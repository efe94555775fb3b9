"""Finding and identifying models named by users: a local folder or a Hugging Face hub id.

- `model_source(name, role)`: where to load a name from, and how to name it in an error message;
- `load_named(load, role, what, hint)`: run a Hugging Face loader with its progress bars off, turning any failure
  into a `CurateError` that names the model first;
- `named_model_identity(name, revision)`: what identifies a model's outputs without loading it (a folder's content
  hash, or a hub id with the commit found in the local cache).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from curate.data.errors import CurateError

T = TypeVar("T")
SMALL_FILE = 1 << 20  # files up to this size are hashed whole (configs, tokenizers, vocabularies)
SAMPLES, SAMPLE_BYTES = 16, 1 << 16  # larger (weight) files: size + 16 blocks of 64 KiB spread over the file


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


def named_model_identity(model: str, revision: str | None = None) -> dict[str, Any]:
    """A local folder's content hash, or a hub id with the commit found in the local Hugging Face cache."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder_identity(folder)
    return {"hub_id": model, "revision": hub_commit(model, revision)}


class ModelSource(NamedTuple):
    source: str  # what to pass to a `from_pretrained`: a folder path or the hub id
    what: str  # how messages name the model
    hint: str  # added to a failure message
    hub: bool  # a hub id, not a local folder


def model_source(name: str, role: str) -> ModelSource:
    """Where to load a folder or hub id from. A name that can only be a path, or that names something that
    exists, must be a folder: a CurateError names the role if not."""
    path = Path(name).expanduser()
    if path.exists() or looks_like_path(name):
        if not path.is_dir():
            raise CurateError(f"{role}: no model folder at {name!r} (resolved: {str(path.resolve())!r})")
        return ModelSource(str(path), f"from the folder {name!r}", "", hub=False)
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    hint = (" HF_HUB_OFFLINE is set, so only models already in the local Hugging Face cache load."
            if offline else " A hub id needs network access unless the model is in the local Hugging Face cache.")
    return ModelSource(name, f"{name!r} (a hub id; no local folder has that name)", hint, hub=True)


@contextmanager
def hf_bars_off() -> Iterator[None]:
    """Silence transformers' progress bars ("Loading weights", ...): in a run they would cut through curate's own
    progress display, once per worker."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def hf_quiet() -> Iterator[None]:
    """transformers' warnings off (errors still shown): training packed rows without an attention mask is on
    purpose (position ids keep examples apart), so its advice to pass one would only confuse."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


# One model load at a time per process: transformers' loading swaps process-wide functions (`no_init_weights`
# replaces torch's init functions and `PreTrainedModel.init_weights`, then puts back what it found). Two threads
# loading at once (two steps of parallel branches) could leave them swapped for good, and every later model's
# missing weights (a tied LM head) uninitialised on the meta device.
MODEL_LOADING = threading.RLock()


def load_named(load: Callable[[], T], role: str, what: str, hint: str = "") -> T:
    """`load()` with transformers' bars off, one load at a time in the process; any failure becomes a CurateError
    naming the model, then the cause."""
    try:
        with MODEL_LOADING, hf_bars_off():
            return load()
    except Exception as error:  # any loader failure: name the model first, then the cause
        cause = " ".join(str(error).split())
        raise CurateError(f"could not load the {role} {what}.{hint} Cause: {type(error).__name__}: {cause}") from error


def load_tokenizer(name: str, role: str = "tokenizer") -> Any:
    """A tokenizer by folder or hub id, with no length limit (callers cut texts themselves); a CurateError naming
    it when it cannot be loaded."""
    from transformers import AutoTokenizer

    where = model_source(name, role)
    tokenizer = load_named(lambda: AutoTokenizer.from_pretrained(where.source), role, where.what, where.hint)
    tokenizer.model_max_length = 1 << 60
    return tokenizer
