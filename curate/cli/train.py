"""The training commands of the `curate` CLI: `train-lm` (a small LM from scratch) and `finetune` (any causal LM on
anything curate reads). Both train through `curate.models.train_loop`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from curate.cli.app import app, fail
from curate.data.errors import CurateError


def _option_errors(error: Any, names: dict[str, str]) -> CurateError:
    """A pydantic ValidationError as `--option: problem` lines (`names`: config field -> CLI option)."""
    parts = []
    for e in error.errors():
        field = ".".join(str(p) for p in e["loc"])
        option = names.get(field, field.split(".")[-1])
        message = e["msg"].removeprefix("Value error, ")
        parts.append(f"--{option.replace('_', '-')}: {message}" if e["loc"] else message)
    return CurateError("; ".join(parts))


@app.command("train-lm")
def train_lm_command(
    source: Path = typer.Argument(..., metavar="INPUT", help="a file, glob or folder in any input format, or a "
                                  "curate dataset folder"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the model and tokenizer"),
    field: str = typer.Option("text", "--field", help="column to train on (instruction rows' text is prompt + "
                              "blank line + response), or 'prompt+response' (joined by a newline)"),
    init: str = typer.Option(None, "--init", help="model to fine-tune (folder or hub id); default: from scratch"),
    steps: int = typer.Option(None, "--steps", help="optimizer steps (from scratch; default 200)"),
    epochs: float = typer.Option(None, "--epochs", help="passes over the data instead of --steps"),
    vocab_size: int = typer.Option(None, "--vocab-size", help="tokenizer vocabulary (default 8192)"),
    layers: int = typer.Option(None, "--layers", help="transformer layers (default 2)"),
    width: int = typer.Option(None, "--width", help="hidden size (default 128)"),
    heads: int = typer.Option(None, "--heads", help="attention heads (default 4)"),
    seq_len: int = typer.Option(None, "--seq-len", help="tokens per training sequence (default 128)"),
    batch_size: int = typer.Option(None, "--batch-size", help="sequences per step (default 16)"),
    lr: float = typer.Option(None, "--lr", help="peak learning rate (default 1e-3)"),
    seed: int = typer.Option(None, "--seed", help="seed (default 0)"),
    limit: int = typer.Option(None, "--limit", help="use the first N rows only"),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda (default auto)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log training progress"),
) -> None:
    """Train a small GPT-style LM (tokenizer included) on a text field, or fine-tune one with --init."""
    import pydantic

    from curate.cli.console import RichProgress, console
    from curate.io.texts import read_texts
    from curate.models.lm_train import LMTrainConfig, read_train_info, train_lm

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    chosen = {"steps": steps, "epochs": epochs, "vocab_size": vocab_size, "n_layer": layers, "n_embd": width,
              "n_head": heads, "seq_len": seq_len, "batch_size": batch_size, "lr": lr, "seed": seed,
              "device": device}
    try:
        config = LMTrainConfig(**{k: v for k, v in chosen.items() if v is not None})
        if limit is not None and limit < 1:
            raise CurateError("--limit must be at least 1")
        texts = read_texts(source, field, limit)
        with RichProgress():
            folder = train_lm(texts, out, config, init=init)
        info = read_train_info(folder)
    except pydantic.ValidationError as error:
        fail(_option_errors(error, {"n_layer": "layers", "n_embd": "width", "n_head": "heads"}))
    except CurateError as error:
        fail(error)
    console.print(f"model saved to {folder}: {info['texts']} texts, {info['tokens']} tokens, {info['steps']} steps, "
                  f"final loss {info['final_loss']:.4f}", highlight=False)


@app.command("finetune")
def finetune_command(
    source: Path = typer.Argument(..., metavar="DATA", help="rows to train on: a file, glob or folder in any input "
                                  "format, or a curate dataset folder (a run's stages/NN-mixture)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the fine-tuned model and metrics.json"),
    model: str = typer.Option(None, "--model", "-m", help="the model to fine-tune (a folder or hub id)"),
    scratch: bool = typer.Option(False, "--scratch", help="train a small GPT-2 and its tokenizer from nothing"),
    method: str = typer.Option("full", "--method", help="full or lora"),
    heldout: Path = typer.Option(None, "--heldout", help="rows to measure held-out loss on (any input format)"),
    heldout_fraction: float = typer.Option(None, "--heldout-fraction", help="hold out this share of DATA instead"),
    epochs: float = typer.Option(None, "--epochs", help="passes over the data (default 1)"),
    steps: int = typer.Option(None, "--steps", help="optimizer steps instead of --epochs"),
    lr: float = typer.Option(None, "--lr", help="peak learning rate (default 2e-4 LoRA, 5e-5 full, 1e-3 scratch)"),
    schedule: str = typer.Option(None, "--schedule", help="cosine (default), linear or constant"),
    batch_size: int = typer.Option(None, "--batch-size", help="packed sequences per step (default 8)"),
    batch_tokens: int = typer.Option(None, "--batch-tokens", help="or tokens per step"),
    grad_accum: int = typer.Option(None, "--grad-accum", help="micro-batches per step (default 1)"),
    max_length: int = typer.Option(None, "--max-length", help="tokens per sequence (default 1024)"),
    no_packing: bool = typer.Option(False, "--no-packing", help="one example per sequence"),
    lora_r: int = typer.Option(None, "--lora-r", help="LoRA rank (default 8)"),
    lora_alpha: float = typer.Option(None, "--lora-alpha", help="LoRA alpha (default 16)"),
    lora_dropout: float = typer.Option(None, "--lora-dropout", help="LoRA dropout (default 0.05)"),
    target_modules: str = typer.Option(None, "--target-modules", help="comma-separated module names, or all-linear"),
    merge: bool = typer.Option(False, "--merge", help="LoRA: also save the merged model in merged/"),
    eval_every: int = typer.Option(None, "--eval-every", help="steps between held-out measurements (default 50)"),
    save_every: int = typer.Option(None, "--save-every", help="steps between checkpoints (default 100)"),
    seed: int = typer.Option(None, "--seed", help="seed (default 0)"),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda (default auto)"),
    limit: int = typer.Option(None, "--limit", help="use the first N rows only"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log training progress"),
) -> None:
    """Fine-tune a causal LM (full or LoRA) on rows, outside a pipeline; an interrupted run resumes."""
    import numpy as np
    import pydantic

    from curate.cli.console import RichProgress, console
    from curate.io.texts import read_rows
    from curate.models.finetune import FinetuneConfig, finetune

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    lora = {k: v for k, v in {"r": lora_r, "alpha": lora_alpha, "dropout": lora_dropout, "merge": merge or None,
                              "target_modules": target_modules.split(",") if target_modules and
                              target_modules != "all-linear" else target_modules}.items() if v is not None}
    chosen = {"model": model, "init": "scratch" if scratch else None, "method": method, "epochs": epochs,
              "steps": steps, "lr": lr, "schedule": schedule, "batch_size": batch_size, "batch_tokens": batch_tokens,
              "grad_accum": grad_accum, "max_length": max_length, "packing": False if no_packing else None,
              "eval_every": eval_every, "save_every": save_every, "seed": seed, "device": device,
              "lora": lora or None}
    names = {"model": "model", "init": "scratch", "lora.r": "lora-r", "lora.alpha": "lora-alpha",
             "lora.dropout": "lora-dropout", "lora.target_modules": "target-modules"}
    try:
        config = FinetuneConfig(**{k: v for k, v in chosen.items() if v is not None})
        if limit is not None and limit < 1:
            raise CurateError("--limit must be at least 1")
        if heldout is not None and heldout_fraction is not None:
            raise CurateError("--heldout and --heldout-fraction: give one of them")
        if heldout_fraction is not None and not 0 < heldout_fraction < 1:
            raise CurateError(f"--heldout-fraction must be between 0 and 1, got {heldout_fraction}")
        rows = read_rows(source, limit).to_pylist()
        held = read_rows(heldout).to_pylist() if heldout is not None else None
        if heldout_fraction is not None:
            picked = set(np.random.default_rng(config.seed).permutation(len(rows))[
                : int(heldout_fraction * len(rows))].tolist())
            held = [r for i, r in enumerate(rows) if i in picked]
            rows = [r for i, r in enumerate(rows) if i not in picked]
        with RichProgress():
            metrics = finetune(rows, out, config, heldout=held, name=out.name)
    except pydantic.ValidationError as error:
        fail(_option_errors(error, names))
    except CurateError as error:
        fail(error)
    loss = (f", held-out loss {metrics['heldout_loss_initial']:.4f} -> {metrics['heldout_loss_final']:.4f}"
            if metrics["heldout_loss_final"] is not None else "")
    console.print(f"model saved to {out}: {metrics['examples']:,} examples, {metrics['steps']} steps, "
                  f"{metrics['tokens']:,} tokens at {metrics['tokens_per_second']:,.0f} tokens/s{loss}",
                  highlight=False)
