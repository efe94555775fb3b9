"""Small causal LMs trained here, without downloads: a byte-level BPE tokenizer and a GPT-2 style model.

Used for the auxiliary models of CoLoR-Filter (docs/methods.md §1.3: a prior trained from scratch, and a
conditional model = the prior fine-tuned for one epoch on the target with a fresh optimizer) and for the
perplexity stage's reference model.

Tokenizer convention (GPT-2 style): one special token, `<|endoftext|>`, is BOS, EOS and padding at once;
the tokenizer adds no special tokens by itself. Training data are packed: every document is preceded by
the start token (BOS, or EOS where the tokenizer has no distinct BOS), followed by EOS where the two
differ, the documents are joined and cut into `seq_len` chunks. `LMScorer` prepends the same start token,
so the first real token of a scored text is predicted in the same context the model was trained in.

A trained folder holds the model and tokenizer (`save_pretrained`, loadable with `AutoModelForCausalLM` /
`AutoTokenizer`) and `curate_lm.json` (the config, the data size and the losses).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydantic
from pydantic import Field

from curate.data.errors import CurateError
from curate.models.locate import hf_bars_off, load_named, model_source

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger("curate")

SPECIAL_TOKEN = "<|endoftext|>"
INFO_FILE = "curate_lm.json"


class LMTrainConfig(pydantic.BaseModel):
    """Architecture, optimiser and schedule of a small GPT-2 style LM (also a nested stage parameter)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(8192, ge=258)  # byte-level BPE: 256 bytes + the special token at least
    n_layer: int = Field(2, ge=1)
    n_embd: int = Field(128, ge=8)
    n_head: int = Field(4, ge=1)
    seq_len: int = Field(128, ge=2)
    steps: int = Field(200, ge=1)  # optimizer steps when training from scratch
    epochs: float | None = Field(None, gt=0)  # when set: passes over the data instead of `steps`
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)  # 0 turns clipping off
    seed: int = 0
    device: str = "auto"

    @pydantic.model_validator(mode="after")
    def _heads_divide_width(self) -> LMTrainConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        return self


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (lossless on any UTF-8 text) and save it into `out_dir`.

    Returns a `PreTrainedTokenizerFast` whose single special token `<|endoftext|>` is BOS, EOS and PAD.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 258:
        raise CurateError(f"vocab_size {vocab_size} is too small: a byte-level tokenizer needs at least 258")
    backend = Tokenizer(models.BPE())
    # No normalizer and no prefix space: decode(encode(text)) gives back the exact text.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SPECIAL_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator((t for t in texts if t), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=SPECIAL_TOKEN, eos_token=SPECIAL_TOKEN,
                                        pad_token=SPECIAL_TOKEN, clean_up_tokenization_spaces=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return tokenizer


def model_context(model: Any) -> int | None:
    """The model's context length in tokens (GPT-2's `n_positions`, others' `max_position_embeddings`)."""
    config = getattr(model, "config", None)
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def start_token_id(tokenizer: Any) -> int | None:
    """The token put before every document: BOS, or EOS for GPT-2 style tokenizers that have no BOS."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def pack(token_lists: Sequence[Sequence[int]], start: int, eos: int | None, seq_len: int) -> np.ndarray:
    """Documents joined as `start doc [eos]`, cut into rows of `seq_len` (the last row padded with -1)."""
    tail = [eos] if eos is not None and eos != start else []
    pieces = [np.asarray([start, *ids, *tail], dtype=np.int64) for ids in token_lists if len(ids)]
    stream = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    rows = -(-len(stream) // seq_len)
    padded = np.full(rows * seq_len, -1, dtype=np.int64)
    padded[: len(stream)] = stream
    chunks = padded.reshape(rows, seq_len)
    # A last chunk with a single token has nothing to predict.
    return chunks if rows == 0 or (chunks[-1] >= 0).sum() >= 2 else chunks[:-1]


def lr_at(step: int, total: int, config: LMTrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay reaching `min_lr_ratio * lr` at the last step."""
    from curate.models.train_loop import lr_factor

    return config.lr * lr_factor(step, total, config.warmup_steps, config.min_lr_ratio, "cosine")


def _new_model(tokenizer: Any, config: LMTrainConfig) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tokenizer.eos_token_id
    gpt = GPT2Config(vocab_size=len(tokenizer), n_positions=config.seq_len, n_embd=config.n_embd,
                     n_layer=config.n_layer, n_head=config.n_head, bos_token_id=eos, eos_token_id=eos,
                     pad_token_id=eos, tie_word_embeddings=True,
                     # Small models on little data: dropout only slows the loss down, and without it a
                     # seed fixes the whole run.
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(gpt)


def load_causal_lm(model: str | Path, role: str = "language model", dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a local folder or a hub id, on CPU; a CurateError naming the model on failure.

    `dtype`: a torch dtype, or "auto" for the checkpoint's; None: float32.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = model_source(str(model), role)

    def load() -> tuple[Any, Any]:
        tokenizer = AutoTokenizer.from_pretrained(where.source)
        lm = AutoModelForCausalLM.from_pretrained(where.source, dtype=torch.float32 if dtype is None else dtype)
        return lm, tokenizer

    return load_named(load, role, where.what, where.hint)


def _batches(n_chunks: int, batch_size: int, steps: int, items: int | None, seed: int) -> list[np.ndarray]:
    """Chunk indices per step: a fresh seeded permutation per pass over the data, `items` chunks in all
    when given (epochs mode), else `steps` full batches."""
    rng = np.random.default_rng(seed)
    needed = items if items is not None else steps * batch_size
    order = np.concatenate([rng.permutation(n_chunks) for _ in range(-(-needed // n_chunks))])[:needed]
    return [order[i: i + batch_size] for i in range(0, needed, batch_size)]


def stream_batch(chunks: Any, index: np.ndarray, pad: int, device: str) -> Any:
    """One micro-batch of token-stream chunks (rows of a packed stream, -1 = padding): every real token after the
    first of its row is a target; documents in a row attend to each other (pretraining packing)."""
    import torch

    from curate.kernels.common import IGNORE_INDEX
    from curate.models.train_loop import MicroBatch

    batch = chunks[torch.from_numpy(index)]
    mask = batch >= 0
    ids = torch.where(mask, batch, torch.full_like(batch, pad))
    targets = torch.full_like(batch, IGNORE_INDEX)
    targets[:, :-1] = torch.where(mask[:, 1:], batch[:, 1:], torch.full_like(batch[:, 1:], IGNORE_INDEX))
    return MicroBatch(ids.to(device), targets.to(device), attention_mask=mask.long().to(device),
                      tokens=int(mask.sum()))


def save_model(model: Any, tokenizer: Any, out: Path, context: int | None) -> None:
    """The model and its tokenizer as a Hugging Face folder (`from_pretrained` loads it)."""
    tokenizer.model_max_length = context or tokenizer.model_max_length
    with hf_bars_off():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


def train_lm(texts: Sequence[str], out_dir: str | Path, config: LMTrainConfig = LMTrainConfig(),
             init: str | Path | None = None) -> Path:
    """Train a small causal LM on `texts` (from scratch, or continuing from `init` with a fresh optimizer)
    and save model, tokenizer and `curate_lm.json` into `out_dir`; returns `out_dir`.

    From scratch: a byte-level BPE tokenizer on `texts`, a GPT-2 model of `config`'s size, `config.steps`
    optimizer steps. With `init` (an HF folder or hub id): its model and tokenizer; the architecture fields
    of `config` are ignored. `config.epochs`, when set, replaces `steps` by that many passes over the chunks.
    Training runs through `curate.models.train_loop` (the fine-tuning stage's loop) on a packed token stream.
    """
    import torch

    from curate.models.embedder import resolve_device
    from curate.models.lm_head import split_head
    from curate.models.train_loop import LoopConfig, adamw, run_loop

    texts = [t for t in texts if t]
    if not texts:
        raise CurateError(f"train_lm: no non-empty training texts for the model in {str(out_dir)!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    started = time.perf_counter()
    torch.manual_seed(config.seed)  # the model's initial weights
    if init is None:
        tokenizer = train_tokenizer(texts, config.vocab_size, out)
        model = _new_model(tokenizer, config)
    else:
        model, tokenizer = load_causal_lm(init, "model to fine-tune (init)")
    start, eos = start_token_id(tokenizer), tokenizer.eos_token_id
    if start is None:
        raise CurateError(f"the tokenizer of {str(init)!r} has neither a BOS nor an EOS token to separate documents")
    context = model_context(model)
    if context is not None and config.seq_len > context:
        raise CurateError(f"seq_len {config.seq_len} is longer than the model's context ({context} tokens)")
    # Long documents are packed into seq_len chunks, so the tokenizer's length limit would only warn.
    tokenizer.model_max_length = 1 << 60
    token_lists = tokenizer(texts, add_special_tokens=False)["input_ids"]
    chunks = pack(token_lists, start, eos, config.seq_len)
    if not len(chunks):
        raise CurateError("train_lm: the training texts hold too few tokens to train on")
    items = math.ceil(config.epochs * len(chunks)) if config.epochs is not None else None
    batches = _batches(len(chunks), config.batch_size, config.steps, items, config.seed)

    model.to(device).train()
    optimizer = adamw(model, config.lr, config.weight_decay, (config.beta1, config.beta2))
    data = torch.from_numpy(chunks)
    pad = eos if eos is not None else start
    log.info("train_lm: %d texts, %d tokens, %d chunks of %d, %d steps on %s -> %s", len(texts),
             sum(map(len, token_lists)), len(chunks), config.seq_len, len(batches), device, out)
    head = split_head(model, tokenizer, str(init or out), start)
    loop = LoopConfig(steps=len(batches), lr=config.lr, warmup_steps=config.warmup_steps,
                      min_lr_ratio=config.min_lr_ratio, grad_clip=config.grad_clip)
    result = run_loop(head, lambda step: [stream_batch(data, batches[step], pad, device)], loop, optimizer,
                      device=device, bar=f"train {out.parent.name}/{out.name}", total_tokens=int((chunks >= 0).sum()
                      * len(batches) * config.batch_size / len(chunks)), select_scored=False)
    losses = result.losses
    save_model(model, tokenizer, out, context or config.seq_len)
    tail = losses[-max(1, len(losses) // 10):]
    info = {"config": config.model_dump(mode="json"), "init": None if init is None else str(init),
            "texts": len(texts), "tokens": int((chunks >= 0).sum()), "chunks": len(chunks),
            "steps": len(batches), "parameters": sum(p.numel() for p in model.parameters()),
            "first_loss": losses[0], "last_loss": losses[-1],
            "final_loss": float(np.mean(tail)),  # mean over the last 10% of steps: one batch is noisy
            "seconds": round(time.perf_counter() - started, 3), "device": device}
    (out / INFO_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
    log.info("train_lm: saved %s (final loss %.4f)", out, info["final_loss"])
    return out


def read_train_info(folder: str | Path) -> dict[str, Any]:
    """The `curate_lm.json` of a model trained by `train_lm`."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise CurateError(f"{str(folder)!r} holds no {INFO_FILE} (not a model trained by curate)")
    return json.loads(path.read_text(encoding="utf-8"))
