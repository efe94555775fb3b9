"""Benchmark: the training loss of a causal LM head, forward + backward, without full logits vs with, by vocab size.

    python benchmarks/bench_train_loss.py [--vocab 32768,131072] [--tokens N] [--hidden H]
        [--dtype auto|fp32|bf16] [--device auto|cpu|cuda] [--repeats R] [--tile-elements 16777216[,...]]
        [--skip-default-options-above V]

What is measured: `loss = f(hidden, weight, labels); loss.backward()` for the summed next-token NLL over the
labels that are not ignored (-100; a tenth of them are), with autograd to the hidden states (N, H) and to the
head's weight (V, H). Variants, on the same inputs:
  full           `token_loss_sum_reference`: full (N x V) logits, upcast to fp32, `F.cross_entropy(reduction="sum")`;
  torch-default  `F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())`: torch's chunked op with its
                 default ("auto") options;
  torch-chunked  the same torch op with chunks of `tile_elements // V` rows (the first `--tile-elements`);
  ours           curate's `token_loss_sum` (the one the trainer calls): a fused linear cross-entropy that forms
                 each chunk's logits once and computes the gradients in the forward, with chunks of
                 `tile_elements // V` rows (`--tile-elements`: several values give one "ours" row each);
  liger          CUDA only, when `liger_kernel` is importable: `LigerFusedLinearCrossEntropyLoss(reduction="sum")`.
Every (vocab, variant) runs in its own subprocess of this script, so that neither an earlier variant's peak nor
memory the allocator kept from it can hide a later one's; each child builds the inputs from the same seed, and
the script checks that their fingerprints agree. Peak memory is what the variant adds on top of its inputs,
including the gradients it produces (the weight gradient alone is V x H elements, shown apart): on CPU the growth
of the child's peak RSS over its RSS once the inputs exist (`memory.reset_peak_rss` first, and a fixed glibc mmap
threshold so that freed chunks leave RSS at once), on CUDA `torch.cuda.max_memory_allocated()` over the allocated
memory before the call (after `reset_peak_memory_stats`, and after a warm-up call that compiles kernels). Time:
the best of `--repeats` calls (CUDA: synchronised). Accuracy: each variant's loss and its gradients w.r.t.
hidden and weight against full's, max abs difference. Defaults: CPU fp32, 4,096 tokens, H = 512, 1 repeat;
CUDA bf16, 8,192 tokens, H = 768, 3 repeats. On CPU torch-default is skipped above vocab 65,536 (its auto
options take a few rows per chunk there and it runs for minutes); `--skip-default-options-above` moves that.

Goal: the loss's own extra memory (peak minus the weight gradient) flat in the vocab, and the whole peak of ours at
least 10x below full logits' at vocab 131,072.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from curate.kernels.common import IGNORE_INDEX
from curate.kernels.train_loss import TILE_ELEMENTS, chunk_rows, token_loss_sum, token_loss_sum_reference
from memory import MIB, peak_rss, reset_peak_rss

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
IGNORED_FRACTION = 0.1
GOAL_RATIO = 10.0  # full / ours peak memory at the largest vocab
FLAT = 1.5  # largest / smallest of ours' peak minus the weight gradient across the vocabs


def make_inputs(tokens: int, hidden_size: int, vocab: int, dtype: torch.dtype, device: str,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same inputs in every child: drawn on the CPU from one seed, logits of a realistic spread (std ~2)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, hidden_size, generator=g)
    weight = torch.randn(vocab, hidden_size, generator=g) * (2.0 / hidden_size**0.5)
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    labels[torch.rand(tokens, generator=g) < IGNORED_FRACTION] = IGNORE_INDEX
    hidden = hidden.to(device=device, dtype=dtype).requires_grad_()
    weight = weight.to(device=device, dtype=dtype).requires_grad_()
    return hidden, weight, labels.to(device)


def loss_fn(variant: str, warm_up: bool = False) -> Callable[..., torch.Tensor]:
    """The variant's loss as f(hidden, weight, labels); `warm_up`: for ours, chunks of 16 rows at vocab 1024, so
    that the warm-up on small inputs takes the chunked path too (its first call loads code and allocates)."""
    name, _, tile = variant.partition(":")
    if warm_up and name == "ours":
        tile = str(16 * 1024)
    if name == "full":
        return token_loss_sum_reference
    if name == "torch-default":
        options = torch.nn.LinearCrossEntropyOptions()
        return (lambda h, w, y: F.linear_cross_entropy(h, w, y, reduction="sum", ignore_index=IGNORE_INDEX,
                                                       options=options))
    if name == "ours":
        return lambda h, w, y: token_loss_sum(h, w, y, tile_elements=int(tile))
    if name == "torch-chunked":
        return (lambda h, w, y: F.linear_cross_entropy(
            h, w, y, reduction="sum", ignore_index=IGNORE_INDEX,
            options=torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk_rows(w.shape[0], int(tile)))))
    if name == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")

        def run(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = liger(w, h, y)
            return out[0] if isinstance(out, tuple) else out

        return run
    raise ValueError(f"unknown variant {variant!r}")


def rows_per_chunk(variant: str, tokens: int, hidden_size: int, vocab: int, dtype: torch.dtype,
                   device: str) -> int | None:
    """Rows per chunk the variant uses (None: not chunked by rows, or unknown)."""
    name, _, tile = variant.partition(":")
    if name in ("ours", "torch-chunked"):
        return min(tokens, chunk_rows(vocab, int(tile)))
    if name == "torch-default":
        try:  # private: how torch resolves its "auto" options for these shapes
            options = torch.nn.LinearCrossEntropyOptions()._adjust(tokens, hidden_size, vocab, dtype,
                                                                   torch.device(device))
            return options.batch_chunk_size
        except Exception:
            return None
    if name == "full":
        return tokens
    return None


def child(variant: str, vocab: int, tokens: int, hidden_size: int, dtype: torch.dtype, repeats: int,
          device: str, results: Path) -> dict[str, Any]:
    """One (variant, vocab) measurement in this process: peak extra memory, best time, differences to full."""
    cuda = device == "cuda"
    run = loss_fn(variant)
    hidden, weight, labels = make_inputs(tokens, hidden_size, vocab, dtype, device)
    fingerprint = [float(hidden.detach().double().sum()), float(weight.detach().double().sum()),
                   int(labels.sum())]

    forward_peaks = []

    def step() -> torch.Tensor:
        hidden.grad = weight.grad = None
        loss = run(hidden, weight, labels)
        if cuda:
            torch.cuda.synchronize()
        forward_peaks.append(torch.cuda.max_memory_allocated() if cuda else peak_rss())
        loss.backward()
        return loss.detach()

    if cuda:
        step()  # compiles Triton kernels, warms cuBLAS: outside the measurement
        hidden.grad = weight.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        # the same code path on small inputs: loads BLAS and the ops' code before the baseline
        small = make_inputs(64, hidden_size, 1024, dtype, device, seed=1)
        loss_fn(variant, warm_up=True)(*small).backward()
        del small
        base = reset_peak_rss()
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        loss = step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        if i == 0:
            # the first call's peak (later calls may reuse memory the allocator kept)
            peak = (torch.cuda.max_memory_allocated() if cuda else peak_rss()) - base
            forward_peak = forward_peaks[-1] - base

    mine = {"loss": loss.float().cpu(), "hidden": hidden.grad.float().cpu(), "weight": weight.grad.float().cpu()}
    result: dict[str, Any] = {"variant": variant, "vocab": vocab, "peak_bytes": peak,
                              "forward_peak_bytes": forward_peak, "seconds": min(times),
                              "loss": float(mine["loss"]), "fingerprint": fingerprint,
                              "rows": rows_per_chunk(variant, tokens, hidden_size, vocab, dtype, device)}
    full_file = results / f"full-{vocab}.pt"
    if variant == "full":
        torch.save(mine, full_file)
    else:  # after the measurement: loading full's gradients cannot move this variant's peak
        full = torch.load(full_file)
        for key in mine:
            result[f"diff_{key}"] = float((mine[key] - full[key]).abs().max())
        result["full_grad_max"] = float(full["hidden"].abs().max()), float(full["weight"].abs().max())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", default="32768,131072", help="comma-separated vocab sizes")
    parser.add_argument("--tokens", type=int, help="rows N (default: 4096 on CPU, 8192 on CUDA)")
    parser.add_argument("--hidden", type=int, help="hidden size H (default: 512 on CPU, 768 on CUDA)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="auto: fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, help="best of R calls (default: 1 on CPU, 3 on CUDA)")
    parser.add_argument("--tile-elements", default=str(TILE_ELEMENTS),
                        help="logits per chunk of ours; comma-separated values give one ours row each")
    parser.add_argument("--skip-default-options-above", type=int,
                        help="skip torch-default at vocab sizes above this (default: 65536 on CPU, none on CUDA)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "<variant>:<vocab>:<results folder>"
    args = parser.parse_args()

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    dtype_name = args.dtype if args.dtype != "auto" else ("bf16" if cuda else "fp32")
    dtype = DTYPES[dtype_name]
    tokens = args.tokens or (8192 if cuda else 4096)
    hidden_size = args.hidden or (768 if cuda else 512)
    repeats = args.repeats or (3 if cuda else 1)
    skip_above = args.skip_default_options_above
    if skip_above is None:
        skip_above = sys.maxsize if cuda else 65536

    if args.child:
        variant, vocab, folder = args.child.rsplit(":", 2)
        result = child(variant, int(vocab), tokens, hidden_size, dtype, repeats, device, Path(folder))
        print(json.dumps(result))
        return

    vocabs = [int(v) for v in args.vocab.split(",")]
    tiles = [int(t) for t in args.tile_elements.split(",")]
    ours = [f"ours:{t}" for t in tiles]
    variants = ["full", "torch-default", f"torch-chunked:{tiles[0]}", *ours]
    notes = []
    if cuda and importlib.util.find_spec("liger_kernel") is not None:
        variants.append("liger")
    elif cuda:
        notes.append("liger: skipped, the liger_kernel package is not importable")
    else:
        notes.append("liger: skipped, Liger Kernel runs on CUDA only")
    skipped = [v for v in vocabs if v > skip_above]
    if skipped:
        notes.append(f"torch-default: skipped at vocab {', '.join(map(str, skipped))} "
                     f"(above --skip-default-options-above {skip_above}: too slow here)")

    name = torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()}, " \
                                                     f"{os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"device {device} ({name}), torch {torch.__version__}, dtype {dtype_name}, tokens {tokens}, "
          f"hidden {hidden_size}, {IGNORED_FRACTION:.0%} of labels ignored, best of {repeats}; "
          f"forward + backward; memory = extra peak over the inputs, gradients included")
    for note in notes:
        print(note)

    def label(variant: str) -> str:
        name, _, tile = variant.partition(":")
        if tile and int(tile) & (int(tile) - 1) == 0:
            return f"{'ours' if name == 'ours' else 'torch'} 2^{int(tile).bit_length() - 1}"
        return variant.replace(":", " ")

    results: dict[tuple[int, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-loss-") as folder:
        for vocab in vocabs:
            for variant in variants:
                if variant == "torch-default" and vocab > skip_above:
                    continue
                cmd = [sys.executable, __file__, "--child", f"{variant}:{vocab}:{folder}", "--tokens", str(tokens),
                       "--hidden", str(hidden_size), "--dtype", dtype_name, "--repeats", str(repeats),
                       "--device", device]
                # a fixed glibc mmap threshold: freed chunks leave RSS at once, so the peak counts live memory only
                env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
                if proc.returncode != 0:
                    sys.exit(f"{variant} at vocab {vocab} failed:\n{proc.stderr[-3000:]}")
                results[vocab, variant] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"  done: vocab {vocab} {label(variant)} ({results[vocab, variant]['seconds']:.1f} s)",
                      flush=True)
    for vocab in vocabs:
        if len({json.dumps(r["fingerprint"]) for (v, _), r in results.items() if v == vocab}) != 1:
            sys.exit(f"the children's inputs differ at vocab {vocab}: the comparison means nothing")

    element = torch.tensor([], dtype=dtype).element_size()
    print(f"\n{'vocab':>7} {'variant':>13} {'rows':>5} {'peak MiB':>9} {'fwd':>7} {'W grad':>7} {'peak-W':>7}"
          f" {'seconds':>8}"
          f" {'|d loss|':>9} {'rel':>8} {'|d dh|':>8} {'|d dW|':>8}")
    for vocab in vocabs:
        w_grad = vocab * hidden_size * element
        for variant in variants:
            r = results.get((vocab, variant))
            if r is None:
                print(f"{vocab:>7} {label(variant):>13}  skipped")
                continue
            rows = "-" if r["rows"] is None else str(r["rows"])
            line = (f"{vocab:>7} {label(variant):>13} {rows:>5} {r['peak_bytes'] / MIB:>9.1f}"
                    f" {r['forward_peak_bytes'] / MIB:>7.1f} {w_grad / MIB:>7.0f}"
                    f" {(r['peak_bytes'] - w_grad) / MIB:>7.1f} {r['seconds']:>8.2f}")
            if variant == "full":
                line += f"   loss {r['loss']:.2f} (reference)"
            else:
                rel = r["diff_loss"] / max(abs(results[vocab, "full"]["loss"]), 1e-30)
                line += (f" {r['diff_loss']:>9.2e} {rel:>8.1e} {r['diff_hidden']:>8.1e} {r['diff_weight']:>8.1e}")
            print(line)
    scale = results[vocabs[-1], ours[0]]["full_grad_max"]
    print(f"(MiB: fwd = the peak at the end of the forward, W grad = the weight gradient (V x H), peak-W = the\n"
          f" loss's own extra memory; rows = rows per chunk; diffs: max abs against full, where the largest\n"
          f" |dh|, |dW| at vocab {vocabs[-1]} are {scale[0]:.2e}, {scale[1]:.2e})\n")

    for vocab in vocabs:
        full = results[vocab, "full"]
        for variant in ours:
            r = results[vocab, variant]
            line = (f"vocab {vocab:>6}, {label(variant)}: memory full/ours = "
                    f"{full['peak_bytes'] / max(r['peak_bytes'], 1):.1f}x, "
                    f"time full/ours = {full['seconds'] / r['seconds']:.2f}x")
            default = results.get((vocab, "torch-default"))
            if default is not None:
                line += (f"; torch-default/ours: memory {default['peak_bytes'] / max(r['peak_bytes'], 1):.2f}x, "
                         f"time {default['seconds'] / r['seconds']:.2f}x")
            liger = results.get((vocab, "liger"))
            if liger is not None:
                line += (f"; liger/ours: memory {liger['peak_bytes'] / max(r['peak_bytes'], 1):.2f}x, "
                         f"time {liger['seconds'] / r['seconds']:.2f}x")
            print(line)

    # the goal, for ours at the first --tile-elements value (the default: curate's TILE_ELEMENTS)
    main_ours = ours[0]
    own = {v: results[v, main_ours]["peak_bytes"] - v * hidden_size * element for v in vocabs}
    spread = max(own.values()) / max(min(own.values()), 1)
    largest = max(vocabs)
    ratio = results[largest, "full"]["peak_bytes"] / max(results[largest, main_ours]["peak_bytes"], 1)
    w_share = largest * hidden_size * element / max(results[largest, main_ours]["peak_bytes"], 1)
    print(f"\ngoal 1: the loss's own extra memory (peak minus the weight gradient) flat in the vocab, within {FLAT}x:"
          f" {', '.join(f'{v}: {b / MIB:.0f} MiB' for v, b in own.items())} -> {spread:.2f}x: "
          f"{('met' if spread <= FLAT else 'NOT met') if len(own) > 1 else 'needs two vocab sizes'}")
    verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
    if largest < 131072:
        verdict += f" at vocab {largest} (131072 not measured)"
    print(f"goal 2: peak of ours >= {GOAL_RATIO:.0f}x below full logits' at vocab 131072: at vocab {largest}, "
          f"{ratio:.1f}x ({results[largest, main_ours]['peak_bytes'] / MIB:.0f} MiB, of which the weight gradient "
          f"{largest * hidden_size * element / MIB:.0f} MiB = {w_share:.0%}): {verdict}")
    r = results[largest, main_ours]
    w_grad = largest * hidden_size * element
    backward_adds = r["peak_bytes"] - r["forward_peak_bytes"]
    if backward_adds >= 0.5 * w_grad:  # the forward's peak also held a chunk's temporaries, freed by then
        print(f"note: at vocab {largest} the backward of ours adds {backward_adds / MIB:.0f} MiB over the forward's"
              f" peak, about one more weight gradient ({w_grad / MIB:.0f} MiB): a second V x H buffer lives during"
              f" the backward")
    # the variants must agree, or the comparison means nothing
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for (vocab, variant), r in results.items():
        if variant != "full" and r["diff_loss"] > tol * abs(results[vocab, "full"]["loss"]):
            print(f"MISMATCH: {label(variant)} at vocab {vocab}: loss differs by {r['diff_loss']:.3g}")


if __name__ == "__main__":
    main()
