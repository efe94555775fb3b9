"""Runs a kernel test file as a script in a fresh interpreter: Triton reads `TRITON_INTERPRET` when `@triton.jit`
runs (at import of the kernel module), so interpreter cases cannot share the test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_script(script: str | Path, args: list[str], env: dict[str, str], timeout: int) -> dict[str, Any]:
    """Runs `script` with `args` and `env` added; returns the JSON printed on its last line."""
    paths = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # `tests` imports as a package
    proc = subprocess.run([sys.executable, str(script), *args], cwd=REPO,
                          env={**os.environ, **env, "PYTHONPATH": paths},
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_growth(fn: Callable[[], Any]) -> tuple[Any, int]:
    """fn()'s result and how far it raised this process's peak RSS (Linux).

    Two meters, and the larger reading wins (each can only under-read): the kernel's high-water mark, reset to the
    current RSS first (`5` > /proc/self/clear_refs) so that memory freed before cannot hide what fn allocates, and
    the current RSS sampled every millisecond meanwhile. The high-water mark alone has read 0 on a busy machine: it
    is updated lazily, and a large buffer freed by munmap can leave it unchanged.
    """
    import resource
    import threading

    page = os.sysconf("SC_PAGE_SIZE")

    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    high_water = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # noqa: E731 (KiB on Linux)
    base_high, base = high_water(), current()
    sampled, done = [base], threading.Event()

    def sample() -> None:
        while not done.wait(0.001):
            sampled.append(current())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
        sampled.append(current())
    finally:
        done.set()
        sampler.join()
    return result, max(high_water() - base_high, max(sampled) - base)


def child_main(commands: dict[str, Callable[[list[str]], dict[str, Any]]]) -> None:
    """The script side: runs the command named by argv[1] with the rest of argv; prints its JSON result last."""
    print(json.dumps(commands[sys.argv[1]](sys.argv[2:])))


def compile_for_gpu(kernel: Any, signature: dict[str, str], constexprs: dict[str, Any], capability: int,
                    num_warps: int, num_stages: int) -> str | None:
    """Lowers a `@triton.jit` kernel to a cubin for sm_<capability> without a GPU (Triton's own compiler); None when
    it compiles, else the error. Catches what the interpreter forgives (globals in jit code, dtype errors)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    try:
        source = ASTSource(fn=kernel, signature={**signature, **dict.fromkeys(constexprs, "constexpr")},
                           constexprs=constexprs)
        compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                                  options={"num_warps": num_warps, "num_stages": num_stages})
        return None if compiled.asm.get("cubin") else "no cubin"
    except Exception as exc:  # report every failure, not just the first
        return f"{type(exc).__name__}: {str(exc)[:2000]}"
