"""What the stages that train comparison models (`evaluate`'s arms, `mixture_search`'s proxies) share: one tokenizer
for every training, the tokens each row's training example holds (so that budgets count what is trained on), and
what each training claims of the machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from curate.data.columns import TRAINING_COLUMNS
from curate.data.devices import cuda_available
from curate.models.finetune import FinetuneConfig
from curate.stages.base import Resources


def training_resources(config: FinetuneConfig, cpus: float | None = None) -> Resources:
    """What one comparison training claims: a GPU where it trains on one, else `cpus` (default every core: a
    CPU training uses them all, so one runs at a time per machine)."""
    gpu = config.device.startswith("cuda") or (config.device == "auto" and cuda_available())
    return Resources(cpus=cpus or (1.0 if gpu else float(os.cpu_count() or 1)), gpus=1 if gpu else 0, memory_gb=4.0)


def shared_tokenizer(config: FinetuneConfig, pool: Any, out_dir: Path, rows: int, seed: int) -> str | None:
    """The tokenizer every training uses: the named model's, the given one, or (scratch) one trained once on a
    seeded sample of `rows` rows of `pool` and kept in `out_dir/tokenizer`."""
    if config.init == "model":
        return config.model
    if config.tokenizer:
        return config.tokenizer
    from curate.models.lm_train import train_tokenizer

    folder = out_dir / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        n = pool.count()
        take = np.sort(np.random.default_rng(seed).permutation(n)[:rows])
        texts = pool.take(take, ["text"]).column("text").to_pylist()
        train_tokenizer([t or "" for t in texts], config.lm.vocab_size, folder)
    return str(folder.resolve())


def example_tokens(tokenizer: Any, dataset: Any, max_length: int,
                   match_on: Literal["tokens", "response"] = "tokens") -> np.ndarray:
    """Per row, the tokens (or supervised targets) its fine-tuning example has: cut to `max_length`, 0 for a row
    with nothing to learn (so that a budget counts what is trained on, not the raw text)."""
    from curate.models.lm_train import start_token_id
    from curate.models.sft_data import trained_tokens

    columns = [c for c in TRAINING_COLUMNS if c in dataset.schema.names]
    start, eos = start_token_id(tokenizer), tokenizer.eos_token_id
    pieces = [trained_tokens(batch.to_pylist(), tokenizer, max_length, start, eos)[0 if match_on == "tokens" else 1]
              for batch in dataset.iter_batches(columns=columns, batch_rows=4096)]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
