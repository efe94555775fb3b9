"""Benchmark: peak memory and time of per-token NLL through the chunked kernel path vs full logits, by vocab size.

    python benchmarks/bench_vocab_memory.py [--vocab 8192,32768,131072] [--tokens N] [--hidden H]
        [--dtype auto|float32|bfloat16|float16] [--chunk-size 4096] [--repeats 2] [--device auto|cpu|cuda]

Paths, on the same inputs (N tokens' hidden states (N, H), an LM head (V, H), labels):
  kernel     `token_nll(h, W, y)`: what the scorer calls; the torch reference (chunk_size tiles) on CPU,
             the Triton kernel on CUDA;
  reference  `token_nll_reference` (CUDA only; on CPU it IS the kernel path);
  full       `F.cross_entropy((h @ W.T).float(), y, reduction="none")`: fp32 logits for all N x V.
Every (vocab, path) runs in its own subprocess. Peak memory is what the path adds on top of its inputs: on CPU
the growth of the process's peak RSS after the inputs exist (the peak is reset first via /proc/self/clear_refs,
so set-up temporaries cannot hide it), on CUDA `torch.cuda.max_memory_allocated()` minus the allocated
memory before the call (after a warm-up call that compiles the kernel). Time: the best of `--repeats` calls
(CUDA: synchronised). Defaults: CPU fp32, 4,096 tokens, H = 512; CUDA bf16, 8,192 tokens, H = 768.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from memory import MIB, peak_rss, reset_peak_rss


def child(path: str, vocab: int, tokens: int, hidden_size: int, dtype: torch.dtype, chunk_size: int,
          repeats: int, device: str) -> dict[str, Any]:
    """One (path, vocab) measurement in this process: peak extra memory, best time, mean NLL."""
    from curate.kernels.chunked_ce import token_nll, token_nll_reference

    torch.manual_seed(0)
    hidden = torch.randn(tokens, hidden_size, device=device).to(dtype)
    weight = (torch.randn(vocab, hidden_size, device=device) * (2.0 / hidden_size**0.5)).to(dtype)
    labels = torch.randint(0, vocab, (tokens,), device=device)
    run = {
        "kernel": lambda: token_nll(hidden, weight, labels, chunk_size=chunk_size),
        "reference": lambda: token_nll_reference(hidden, weight, labels, chunk_size=chunk_size),
        "full": lambda: F.cross_entropy((hidden @ weight.T).float(), labels, reduction="none"),
    }[path]
    cuda = device == "cuda"
    if cuda:
        run()  # compile the Triton kernel / warm cuBLAS outside the measurement
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        torch.ones(64, 64) @ torch.ones(64, 64)  # load the BLAS before the baseline
        base = reset_peak_rss()
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        out = run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        if i == 0:
            # the first call's peak (CPU: later calls may reuse memory the allocator kept)
            peak = (torch.cuda.max_memory_allocated() if cuda else peak_rss()) - base
        mean_nll = out.float().mean().item()
        del out
    return {"path": path, "vocab": vocab, "peak_bytes": peak, "seconds": min(times), "mean_nll": mean_nll}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", default="8192,32768,131072")
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "<path>:<vocab>": run one measurement
    args = parser.parse_args()

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if cuda else "float32")
    dtype = getattr(torch, dtype_name)
    tokens = args.tokens or (8192 if cuda else 4096)
    hidden_size = args.hidden or (768 if cuda else 512)

    if args.child:
        path, vocab = args.child.split(":")
        result = child(path, int(vocab), tokens, hidden_size, dtype, args.chunk_size, args.repeats, device)
        print(json.dumps(result))
        return

    vocabs = [int(v) for v in args.vocab.split(",")]
    paths = ["kernel", "reference", "full"] if cuda else ["kernel", "full"]
    kernel_name = "Triton" if cuda else "torch reference"
    name = torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()}, " \
                                                     f"{os.cpu_count()} cores"
    print(f"device {device} ({name}), torch {torch.__version__}, dtype {dtype_name}, tokens {tokens}, "
          f"hidden {hidden_size}, chunk_size {args.chunk_size}, best of {args.repeats}; "
          f"kernel path = token_nll -> {kernel_name}; memory = extra peak over the inputs")
    results: dict[tuple[int, str], dict[str, Any]] = {}
    for vocab in vocabs:
        for path in paths:
            cmd = [sys.executable, __file__, "--child", f"{path}:{vocab}", "--tokens", str(tokens),
                   "--hidden", str(hidden_size), "--dtype", dtype_name, "--chunk-size", str(args.chunk_size),
                   "--repeats", str(args.repeats), "--device", device]
            # a fixed glibc mmap threshold: freed tiles leave RSS at once, so the peak counts live memory only
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if proc.returncode != 0:
                sys.exit(f"{path} at vocab {vocab} failed:\n{proc.stderr[-3000:]}")
            results[vocab, path] = json.loads(proc.stdout.strip().splitlines()[-1])

    print(f"\n{'vocab':>8} {'path':>10} {'peak MiB':>10} {'seconds':>9} {'mean NLL':>10}   fp32 logits MiB")
    for vocab in vocabs:
        for path in paths:
            r = results[vocab, path]
            print(f"{vocab:>8} {path:>10} {r['peak_bytes'] / MIB:>10.1f} {r['seconds']:>9.3f} {r['mean_nll']:>10.5f}"
                  f"   {tokens * vocab * 4 / MIB:.0f}")
    print()
    for vocab in vocabs:
        kernel, full = results[vocab, "kernel"], results[vocab, "full"]
        line = (f"vocab {vocab:>6}: memory full/kernel = {full['peak_bytes'] / max(kernel['peak_bytes'], 1):.1f}x, "
                f"time full/kernel = {full['seconds'] / kernel['seconds']:.2f}x")
        if cuda:
            ref = results[vocab, "reference"]
            line += (f", Triton vs torch reference: time {ref['seconds'] / kernel['seconds']:.2f}x faster, "
                     f"memory {ref['peak_bytes'] / max(kernel['peak_bytes'], 1):.1f}x less")
        # the paths must agree, or the comparison means nothing
        agree = abs(kernel["mean_nll"] - full["mean_nll"]) <= 1e-3 * abs(full["mean_nll"])
        print(line + ("" if agree else "   MISMATCH in mean NLL"))


if __name__ == "__main__":
    main()
