"""Fine-tuning a causal LM on rows curate reads: full or LoRA, with held-out loss, checkpoints and resume.

`finetune(rows, out_dir, config, heldout=...)` trains through the same loop as the small auxiliary LMs
(`curate.models.train_loop`): examples with loss masks (`curate.models.sft_data`), packed into `max_length` rows
with attention kept inside each example (one example per row for recurrent architectures, whose state would
cross examples: `curate.models.architecture`), a seeded order per epoch, `grad_accum` micro-batches per step. The
result is a Hugging Face folder in `out_dir` (`AutoModelForCausalLM.from_pretrained` loads it; with LoRA it holds
the adapter, which the same call loads onto its base model, and `merged/` the merged model when `merge: true`),
plus `metrics.json`: the training loss per step and the held-out loss curve (docs/methods.md §12).
"""

from __future__ import annotations

import json
import logging
import math
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
from pydantic import Field

from curate.data.errors import CurateError
from curate.models.architecture import architecture, lora_targets, packs_by_position
from curate.models.lm_train import LMTrainConfig, load_causal_lm, model_context, save_model, start_token_id
from curate.models.sft_data import Example, build_batch, encode_examples, pack_rows

log = logging.getLogger("curate")
METRICS_FILE = "metrics.json"
DEFAULT_MAX_LENGTH = 1024
CHECKPOINTS = "checkpoints"


class LoraSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str | None = None  # default: per architecture, else all-linear
    merge: bool = False  # also save the merged model in `merged/`


class FinetuneConfig(pydantic.BaseModel):
    """How to fine-tune (also the `finetune` stage's parameters)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    model: str | None = None  # a local folder or hub id
    init: Literal["model", "scratch"] = "model"  # scratch: a new tokenizer and GPT-2 of `lm`'s size
    tokenizer: str | None = None  # with init: scratch, a tokenizer folder to use instead of training one
    lm: LMTrainConfig = LMTrainConfig()
    method: Literal["full", "lora"] = "full"
    lora: LoraSettings = LoraSettings()
    epochs: float | None = Field(None, gt=0)  # default 1 when `steps` is not set
    steps: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)  # default: 2e-4 with LoRA, 5e-5 full, 1e-3 from scratch
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0)  # overrides warmup_ratio
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    batch_size: int | None = Field(None, ge=1)  # packed sequences per optimizer step (default 8)
    batch_tokens: int | None = Field(None, ge=1)  # or tokens per step: batch_tokens // max_length sequences
    grad_accum: int = Field(1, ge=1)  # micro-batches per step (same result, less memory)
    max_length: int | None = Field(None, ge=8)  # default 1024, or a scratch model's `lm.seq_len` when shorter
    packing: bool = True
    weight_decay: float = Field(0.0, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    eval_every: int | None = Field(50, ge=1)
    save_every: int | None = Field(100, ge=1)
    keep_checkpoints: bool = False
    seed: int = 0
    device: str = "auto"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _default_max_length(cls, data: Any) -> Any:
        """Without `max_length`: 1024 tokens, cut to the context of a model trained from scratch (`lm.seq_len`)."""
        if isinstance(data, dict) and data.get("max_length") is None:
            lm = data.get("lm")
            seq_len = (lm.get("seq_len") if isinstance(lm, dict) else getattr(lm, "seq_len", None)) or \
                LMTrainConfig.model_fields["seq_len"].default
            data = {**data, "max_length": min(DEFAULT_MAX_LENGTH, seq_len) if data.get("init") == "scratch"
                    else DEFAULT_MAX_LENGTH}
        return data

    @pydantic.field_validator("max_length")
    @classmethod
    def _fits_a_scratch_model(cls, value: int, info: pydantic.ValidationInfo) -> int:
        lm = info.data.get("lm")
        if info.data.get("init") == "scratch" and lm is not None and value > lm.seq_len:
            raise ValueError(f"{value} is longer than the scratch model's context (lm.seq_len {lm.seq_len}); lower "
                             "max_length or raise lm.seq_len")
        return value

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> FinetuneConfig:
        if self.init == "model" and not self.model:
            raise ValueError("give `model` (a folder or hub id), or `init: scratch` to train a small LM from nothing")
        if self.init == "scratch" and self.model:
            raise ValueError("`init: scratch` trains a new model: leave `model` out")
        if self.tokenizer and self.init != "scratch":
            raise ValueError("`tokenizer` is for `init: scratch`; a named model brings its own")
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give `epochs` or `steps`, not both")
        if self.batch_size is not None and self.batch_tokens is not None:
            raise ValueError("give `batch_size` or `batch_tokens`, not both")
        return self

    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if self.init == "scratch" else 2e-4 if self.method == "lora" else 5e-5

    def rows_per_step(self) -> int:
        if self.batch_tokens is not None:
            return max(1, self.batch_tokens // self.max_length)
        return self.batch_size or 8


def step_schedule(examples: Sequence[Example], config: FinetuneConfig, packing: bool) -> list[list[list[int]]]:
    """Packed rows (lists of example indices) per optimizer step: a seeded order per epoch, packed, then cut into
    steps of `rows_per_step` rows; `epochs` passes (a fraction of the last), or `steps` steps."""
    lengths = np.array([len(e) for e in examples])
    per_step = config.rows_per_step()
    epochs = config.epochs if config.epochs is not None or config.steps is not None else 1.0
    rows: list[list[int]] = []
    epoch = 0
    while True:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(examples))
        packed = pack_rows(lengths[order], config.max_length) if packing else [[i] for i in range(len(order))]
        packed = [[int(order[i]) for i in row] for row in packed]
        if config.steps is None and epoch + 1 > epochs:
            packed = packed[: math.ceil((epochs - epoch) * len(packed))]
        rows += packed
        epoch += 1
        if config.steps is not None and len(rows) >= config.steps * per_step:
            rows = rows[: config.steps * per_step]
            break
        if config.steps is None and epoch >= epochs:
            break
    return [rows[i: i + per_step] for i in range(0, len(rows), per_step)]


def micro_batches(examples: Sequence[Example], rows: Sequence[list[int]], parts: int, pad: int,
                   device: str) -> list[Any]:
    import torch

    from curate.models.train_loop import MicroBatch

    size = -(-len(rows) // parts)
    tensor = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    out = []
    for i in range(0, len(rows), size):
        packed = build_batch(examples, rows[i: i + size], pad)
        out.append(MicroBatch(tensor(packed.input_ids), tensor(packed.targets),
                              position_ids=tensor(packed.position_ids), tokens=packed.tokens))
    return out


def _packing_holds(head: Any, examples: Sequence[Example], pad: int, device: str) -> bool:
    """Whether this model keeps packed examples apart: the loss of two examples packed in one row must equal
    their losses one by one (a model that ignores the restarting position ids would mix them)."""
    from curate.models.train_loop import mean_loss

    probe = [Example(e.ids[:24], e.supervised[:24]) for e in examples[:2]]
    if len(probe) < 2 or any(e.scored == 0 for e in probe):
        return True
    packed = mean_loss(head, micro_batches(probe, [[0, 1]], 1, pad, device), autocast=False)
    alone = mean_loss(head, micro_batches(probe, [[0], [1]], 2, pad, device), autocast=False)
    return abs(packed - alone) <= 1e-4 * (1 + abs(alone))


def _lora(model: Any, settings: LoraSettings, name: str) -> Any:
    from peft import LoraConfig, get_peft_model

    kind = architecture(model)
    targets = lora_targets(model, settings.target_modules, name)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM",
                        fan_in_fan_out=kind == "gpt2")  # GPT-2's Conv1D stores weights transposed
    try:
        return get_peft_model(model, config)
    except ValueError as error:  # peft refuses some modules of some architectures (Mamba's out_proj, conv1d)
        raise CurateError(f"LoRA cannot adapt the {kind} model {name!r} with target modules {targets}: {error}. "
                          "Name other modules (`target_modules`) or use `method: full`") from None


def _build_model(config: FinetuneConfig, texts: list[str], out: Path, device: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, base name): loaded, or new from `config.lm` (its tokenizer trained on `texts`)."""
    import torch

    from curate.models.lm_train import _new_model, train_tokenizer

    torch.manual_seed(config.seed)
    if config.init == "scratch":
        if config.max_length > config.lm.seq_len:
            raise CurateError(f"max_length {config.max_length} is longer than the new model's context "
                              f"(lm.seq_len {config.lm.seq_len})")
        if config.tokenizer:  # shared by several runs, so that their losses count the same tokens
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
        else:
            tokenizer = train_tokenizer(texts, config.lm.vocab_size, out / "_tokenizer")
        return _new_model(tokenizer, config.lm), tokenizer, "scratch"
    lora_on_gpu = config.method == "lora" and device.startswith("cuda")
    # LoRA on a GPU: the frozen base in bf16 (half the memory); full fine-tuning keeps float32 master weights.
    dtype = torch.bfloat16 if lora_on_gpu and torch.cuda.is_bf16_supported() else None
    model, tokenizer = load_causal_lm(config.model, "model to fine-tune", dtype)
    source = Path(config.model).expanduser()
    return model, tokenizer, str(source.resolve()) if source.is_dir() else config.model


def save_initial_model(config: FinetuneConfig, texts: list[str], out_dir: str | Path) -> Path:
    """The model `finetune` would start from (scratch: a new GPT-2 and a tokenizer trained on `texts`), saved as a
    Hugging Face folder: a fixed base that several fine-tunes can start from."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, _ = _build_model(config, texts, out, "cpu")
    context = model_context(model)
    save_model(model, tokenizer, out, context)
    shutil.rmtree(out / "_tokenizer", ignore_errors=True)
    return out


def _peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak RSS (KiB on Linux)


def finetune(rows: Sequence[dict[str, Any]], out_dir: str | Path, config: FinetuneConfig,
             heldout: Sequence[dict[str, Any]] | None = None, name: str = "finetune",
             measure: Callable[[Any, Any], dict[str, Any]] | None = None, save: bool = True) -> dict[str, Any]:
    """Fine-tune on `rows` (dicts with `text`, and `prompt`/`response` or `messages`), measuring held-out loss
    on `heldout`; saves the model into `out_dir` (unless `save` is false) and returns the metrics (also in
    `out_dir/metrics.json`). `measure(model, tokenizer)`, called after training, adds its own metrics."""

    from curate.models.embedder import resolve_device
    from curate.models.lm_head import split_head
    from curate.models.locate import hf_quiet
    from curate.models.train_loop import (
        Checkpoints,
        LoopConfig,
        adamw,
        bf16_autocast,
        mean_loss,
        run_loop,
        signature_of,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    started = time.perf_counter()
    texts = [r.get("text") or "" for r in rows]
    model, tokenizer, base = _build_model(config, texts, out, device)
    start, eos = start_token_id(tokenizer), tokenizer.eos_token_id
    context = model_context(model)
    max_length = min(config.max_length, context) if context else config.max_length
    tokenizer.model_max_length = 1 << 60  # examples are cut to max_length here
    pad = next(i for i in (tokenizer.pad_token_id, eos, start, 0) if i is not None)
    # Packing relies on restarting position ids, which recurrent layers ignore: decided by the architecture
    # (a probe on a randomly initialised model would not see the mixing).
    positional = packs_by_position(model)
    if config.packing and not positional:
        log.warning("%s: the %s model %s carries state across packed examples; training one example per row",
                    name, architecture(model), base)
    if config.init == "scratch" and config.method == "lora":
        save_model(model, tokenizer, out / "base", context)  # the adapter needs its base saved beside it
        base = str((out / "base").resolve())
    if config.method == "lora":  # before the data is encoded: bad target modules fail before any work
        model = _lora(model, config.lora, base)
    examples, skipped = encode_examples(rows, tokenizer, max_length, start, eos)
    held, held_skipped = encode_examples(heldout or [], tokenizer, max_length, start, eos)
    if not examples:
        raise CurateError(f"{name}: none of the {len(rows)} rows has a token to train on")
    config = config.model_copy(update={"max_length": max_length})
    trainable = model.get_base_model() if config.method == "lora" else model
    model.to(device)
    head = split_head(trainable, tokenizer, base, start)
    with hf_quiet():
        packing = config.packing and positional and _packing_holds(head, examples, pad, device)
    if config.packing and positional and not packing:
        log.warning("%s: the model %s mixes packed examples (it does not follow restarting position ids); "
                    "training one example per row instead", name, base)
    steps = step_schedule(examples, config, packing)
    warmup = config.warmup_steps if config.warmup_steps is not None else int(config.warmup_ratio * len(steps))
    loop = LoopConfig(steps=len(steps), lr=config.peak_lr(), schedule=config.schedule, warmup_steps=warmup,
                      min_lr_ratio=config.min_lr_ratio, grad_clip=config.grad_clip, eval_every=config.eval_every,
                      save_every=config.save_every)
    optimizer = adamw(model, config.peak_lr(), config.weight_decay, (config.beta1, config.beta2))
    held_batches = _heldout_batches(held, max_length, packing, pad, device)
    autocast = bf16_autocast(device)
    evaluate = (lambda: mean_loss(head, held_batches, autocast)) if held_batches else None
    data_sig = _data_signature(examples)
    checkpoints = Checkpoints(out / CHECKPOINTS, signature_of(config.model_dump(mode="json"), base, data_sig))
    total = sum(len(examples[i]) for step in steps for row in step for i in row)
    with hf_quiet():
        result = run_loop(head, lambda s: micro_batches(examples, steps[s], config.grad_accum, pad, device), loop,
                          optimizer, device=device, bar=f"{name} ({config.method})", total_tokens=total,
                          evaluate=evaluate, checkpoints=checkpoints)
    parameters = sum(p.numel() for p in model.parameters())
    trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    measured = {}
    if measure is not None:
        with hf_quiet():
            measured = measure(model, tokenizer)
    saved = _save(model, tokenizer, out, config, base, context) if save else []
    if not config.keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    shutil.rmtree(out / "_tokenizer", ignore_errors=True)
    curve = result.curve
    metrics = {
        "model": base, "method": config.method, "device": device, "packing": packing,
        "examples": len(examples), "examples_skipped": skipped, "heldout_examples": len(held),
        "heldout_skipped": held_skipped, "steps": len(steps), "tokens": result.tokens,
        "supervised_tokens": result.scored, "seconds": round(time.perf_counter() - started, 3),
        "train_seconds": round(result.seconds, 3),
        "tokens_per_second": round(result.tokens / result.seconds, 1) if result.seconds else None,
        "parameters": parameters, "trainable_parameters": trainable_parameters,
        "train_loss_first": result.losses[0],
        "train_loss_final": float(np.mean(result.losses[-max(1, len(result.losses) // 10):])),
        "heldout_loss_initial": curve[0]["loss"] if curve else None,
        "heldout_loss_final": curve[-1]["loss"] if curve else None,
        "peak_memory_mb": round(_peak_memory_mb(device), 1), "resumed_from_step": result.resumed_from,
        "saved": saved, **measured,
    }
    detail = {**metrics, "config": config.model_dump(mode="json"), "train_loss": result.losses,
              "heldout_curve": curve}
    (out / METRICS_FILE).write_text(json.dumps(detail, indent=1), encoding="utf-8")
    log.info("%s: %d steps, %d tokens, held-out loss %s -> %s", name, len(steps), result.tokens,
             metrics["heldout_loss_initial"], metrics["heldout_loss_final"])
    return metrics


def _data_signature(examples: Sequence[Example]) -> str:
    """A hash of the training examples (all token ids and masks): checkpoints resume only on the same data."""
    import hashlib

    h = hashlib.sha256()
    for e in examples:
        h.update(e.ids.tobytes())
        h.update(np.packbits(e.supervised).tobytes())
    return h.hexdigest()


def _heldout_batches(held: Sequence[Example], max_length: int, packing: bool, pad: int, device: str) -> list[Any]:
    """Held-out examples in their order, packed as training packs them, 32 rows per batch."""
    rows = pack_rows([len(e) for e in held], max_length) if packing else [[i] for i in range(len(held))]
    return [b for i in range(0, len(rows), 32) for b in micro_batches(held, rows[i: i + 32], 1, pad, device)]


def _save(model: Any, tokenizer: Any, out: Path, config: FinetuneConfig, base: str, context: int | None) -> list[str]:
    """The trained model (LoRA: the adapter, and `merged/` with `merge: true`); returns the folders written."""
    from curate.models.locate import hf_bars_off

    if config.method == "full":
        save_model(model, tokenizer, out, context)
        return ["."]
    model.peft_config["default"].base_model_name_or_path = base  # an absolute folder, so it loads from anywhere
    with hf_bars_off():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    saved = ["."]
    if config.lora.merge:
        merged = model.merge_and_unload()
        save_model(merged, tokenizer, out / "merged", context)
        saved.append("merged")
    return saved


def finetuned_model(folder: str | Path) -> Path:
    """The model a `finetune` step saved in `folder`, ready for `from_pretrained`: `merged/` when LoRA was merged,
    else the folder itself (a full model, or an adapter that transformers loads onto its base)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CurateError(f"no fine-tuned model at {str(folder)!r}: has its finetune step run?")
    return folder / "merged" if (folder / "merged" / "config.json").is_file() else folder
