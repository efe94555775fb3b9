"""The one training loop of curate: small auxiliary LMs (`train_lm`), `train-lm`, and fine-tuning (`finetune`).

A run is a fixed schedule of optimizer steps, each a list of micro-batches (built on demand from the step's
index, so a resumed run sees exactly the batches it would have seen). Per step: the micro-batches' summed
next-token NLL over their scored targets, divided once by the step's scored targets (so gradient accumulation
does not change the result), back-propagated; gradient clipping; AdamW; the learning rate from the schedule.

The loss takes the decoder's last hidden states and the LM head's weight through `kernels.train_loss`, which
never forms float32 logits for the whole batch; models whose logits are not `lm_head(hidden)` (soft-capping,
logit scales) use their own logits. With `select_scored`, only positions with a target go through the head
(prompt tokens and padding cost nothing there).

Checkpoints (`save_every`) hold the trainable weights, the optimizer, the RNG states and the step; a run that
finds one for the same `signature` resumes after it. Held-out loss (`evaluate`) is measured before the first
step, every `eval_every` steps and at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from curate.data.errors import CurateError
from curate.data.faults import crash_point
from curate.data.progress import progress
from curate.kernels.common import IGNORE_INDEX
from curate.kernels.train_loss import token_loss_sum
from curate.models.lm_head import HeadSplit

log = logging.getLogger("curate")
Schedule = Literal["cosine", "linear", "constant"]


@dataclass(frozen=True)
class MicroBatch:
    input_ids: torch.Tensor  # (rows, width)
    targets: torch.Tensor  # (rows, width): the token each position predicts, or IGNORE_INDEX
    attention_mask: torch.Tensor | None = None  # padding mask (token streams)
    position_ids: torch.Tensor | None = None  # restarting per packed example (attention stays inside each)
    tokens: int = 0  # real tokens, for tokens/s

    @property
    def scored(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class LoopConfig:
    steps: int
    lr: float
    schedule: Schedule = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # 0: off
    eval_every: int | None = None
    save_every: int | None = None
    log_every: int | None = None


@dataclass
class LoopResult:
    losses: list[float] = field(default_factory=list)  # training loss per step
    curve: list[dict[str, float]] = field(default_factory=list)  # held-out loss: step, tokens, loss
    tokens: int = 0  # real tokens trained on
    scored: int = 0  # supervised targets trained on
    seconds: float = 0.0
    resumed_from: int = 0  # the step a checkpoint resumed after (0: a fresh run)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float, schedule: Schedule) -> float:
    """The learning rate of `step` as a fraction of the peak: linear warm-up over `warmup` steps, then cosine or
    linear decay reaching `min_ratio` at the last step, or constant."""
    warmup = min(warmup, total)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress_ = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    decay = 0.5 * (1 + math.cos(math.pi * progress_)) if schedule == "cosine" else 1 - progress_
    return min_ratio + (1 - min_ratio) * decay


def bf16_autocast(device: str) -> bool:
    """Whether forward passes on `device` run under bf16 autocast: on CUDA GPUs that support bf16."""
    return device.startswith("cuda") and torch.cuda.is_bf16_supported()


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    # Weight decay on matrices only: decaying norms and biases pulls them towards 0 for no gain.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)


def batch_loss_sum(head: HeadSplit, batch: MicroBatch, select_scored: bool) -> torch.Tensor:
    """Summed NLL of a micro-batch's scored targets (autograd)."""
    targets = batch.targets
    kwargs: dict[str, Any] = {"input_ids": batch.input_ids, "use_cache": False}
    if batch.attention_mask is not None:
        kwargs["attention_mask"] = batch.attention_mask
    if batch.position_ids is not None:
        kwargs["position_ids"] = batch.position_ids
    if head.mode == "logits":
        logits = head.model(**kwargs).logits
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                                 ignore_index=IGNORE_INDEX, reduction="sum")
    hidden = head.decoder(**kwargs).last_hidden_state
    flat, labels = hidden.flatten(0, 1), targets.flatten()
    if select_scored:
        keep = labels != IGNORE_INDEX
        flat, labels = flat[keep], labels[keep]
    return token_loss_sum(flat, head.weight, labels, head.bias)


def backward_step(head: HeadSplit, micro: list[MicroBatch], select_scored: bool, autocast: bool,
                  on_tokens: Callable[[int], None] = lambda n: None) -> tuple[float, int, int]:
    """Accumulate one optimizer step's gradients over its micro-batches: each micro-batch's summed NLL divided by
    the whole step's scored targets, so the gradient does not depend on the split. Returns (the step's mean
    loss, its real tokens, its scored targets)."""
    scored = sum(b.scored for b in micro)
    total, tokens = 0.0, 0
    for batch in micro:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = batch_loss_sum(head, batch, select_scored)
        (loss / max(1, scored)).backward()
        total += float(loss.detach())
        tokens += batch.tokens
        on_tokens(batch.tokens)
    return total / max(1, scored), tokens, scored


@torch.no_grad()
def mean_loss(head: HeadSplit, batches: list[MicroBatch], autocast: bool) -> float:
    """Mean NLL per scored target over `batches` (held-out loss)."""
    total, count = 0.0, 0
    was_training = head.model.training
    head.model.eval()
    for batch in batches:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            total += float(batch_loss_sum(head, batch, select_scored=True))
        count += batch.scored
    head.model.train(was_training)
    return total / count if count else float("nan")


def signature_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class Checkpoints:
    """`step-NNNNNN.pt` files in a folder (only the newest is kept), for runs with the same signature."""

    def __init__(self, folder: Path, signature: str):
        self.folder = folder
        self.signature = signature

    def latest(self) -> Path | None:
        found = sorted(self.folder.glob("step-*.pt")) if self.folder.is_dir() else []
        return found[-1] if found else None

    def load(self) -> dict[str, Any] | None:
        path = self.latest()
        if path is None:
            return None
        try:  # tensors, numbers, strings, lists and dicts only: a checkpoint can never run code when loaded
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CurateError(f"{path} holds objects other than tensors and plain values; curate loads no such "
                              f"file (it may run code). Remove the folder to train again ({error})") from None
        if state.get("signature") != self.signature:
            raise CurateError(f"{self.folder} holds checkpoints of a different training run (another model, data "
                              "or configuration); use another output folder, or remove it")
        return state

    def save(self, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"step-{state['step']:06d}.pt"
        tmp = final.with_name(f".{final.name}.tmp")
        torch.save({**state, "signature": self.signature}, tmp)
        os.replace(tmp, final)  # a kill mid-write leaves the previous checkpoint intact
        for old in self.folder.glob("step-*.pt"):
            if old != final:
                old.unlink(missing_ok=True)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _restore(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise CurateError(f"checkpoint names parameters the model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def run_loop(head: HeadSplit, step_batches: Callable[[int], list[MicroBatch]], config: LoopConfig,
             optimizer: torch.optim.Optimizer, *, device: str, bar: str, total_tokens: int | None = None,
             evaluate: Callable[[], float] | None = None, checkpoints: Checkpoints | None = None,
             select_scored: bool = True) -> LoopResult:
    """Train `head.model` for `config.steps` optimizer steps (see the module docstring)."""
    model = head.model
    autocast = bf16_autocast(device)
    result = LoopResult()
    begin = 0
    state = checkpoints.load() if checkpoints is not None else None
    if state is not None:
        _restore(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        begin = state["step"]
        result = LoopResult(state["losses"], state["curve"], state["tokens"], state["scored"], state["seconds"],
                            resumed_from=begin)
        log.info("%s: resumed after step %d of %d", bar, begin, config.steps)
    started = time.perf_counter() - result.seconds
    model.train()
    if evaluate is not None and begin == 0:
        result.curve.append({"step": 0, "tokens": 0, "loss": evaluate()})
    key = f"train:{bar}"
    progress().start(key, bar[-24:], total_tokens, unit="tokens")
    progress().advance(key, result.tokens)
    every = config.log_every or max(1, config.steps // 10)
    for step in range(begin, config.steps):
        factor = lr_factor(step, config.steps, config.warmup_steps, config.min_lr_ratio, config.schedule)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * factor
        optimizer.zero_grad(set_to_none=True)
        loss, tokens, scored = backward_step(head, step_batches(step), select_scored, autocast,
                                             lambda n: progress().advance(key, n))
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
        optimizer.step()
        result.losses.append(loss)
        result.tokens += tokens
        result.scored += scored
        progress().note(key, f"loss {result.losses[-1]:.3f}")
        crash_point("train_step", bar)
        done = step + 1
        if evaluate is not None and config.eval_every and done % config.eval_every == 0 and done < config.steps:
            result.curve.append({"step": done, "tokens": result.tokens, "loss": evaluate()})
        if done % every == 0 or done == config.steps:
            log.info("%s: step %d/%d loss %.4f lr %.2e", bar, done, config.steps, result.losses[-1],
                     optimizer.param_groups[0]["lr"])
        if checkpoints is not None and config.save_every and done % config.save_every == 0 and done < config.steps:
            result.seconds = time.perf_counter() - started
            checkpoints.save({"step": done, "model": _trainable_state(model), "optimizer": optimizer.state_dict(),
                              "rng": torch.get_rng_state(),
                              "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                              "losses": result.losses, "curve": result.curve, "tokens": result.tokens,
                              "scored": result.scored, "seconds": result.seconds})
    if evaluate is not None:
        result.curve.append({"step": config.steps, "tokens": result.tokens, "loss": evaluate()})
    progress().finish(key)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
