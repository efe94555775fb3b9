"""Executors run a stage's tasks; stage code never knows which one.

`ThreadExecutor` runs in-process (notebooks, `engine.prefect: false`); the Prefect flow in
`curate.flows` supplies an executor that turns each call into a Prefect task run. Every `map` receives the
stage's declared `Resources`, so that an executor can size its pool (threads) or place work (Ray).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Protocol

from curate.data.errors import CurateError
from curate.stages.base import Resources

log = logging.getLogger("curate")


class Executor(Protocol):
    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], names: Sequence[str],
            resources: Resources | None = None) -> list[Any]:
        """Run `fn(*args)` for each args tuple (in parallel, each with `resources`); results in order; raise the
        first error."""

    def call(self, fn: Callable[..., Any], args: tuple, name: str) -> Any:
        """Run one task (a global decision) and return its result."""


def is_transient(error: BaseException) -> bool:
    """Worth retrying: I/O hiccups, not bad configs or bad data (those fail the same way again)."""
    return isinstance(error, (OSError, TimeoutError, ConnectionError)) and not isinstance(error, CurateError)


def with_retries(fn: Callable[..., Any], args: tuple, retries: int, name: str) -> Any:
    for attempt in range(retries + 1):
        try:
            return fn(*args)
        except Exception as error:
            if attempt == retries or not is_transient(error):
                raise
            log.warning("task %s failed (%s); retry %d of %d", name, error, attempt + 1, retries)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def threads_for(workers: int, resources: Resources | None) -> int:
    """Parallel tasks on this machine: at most `workers`, and no more than its CPUs (and GPUs) can hold at the
    stage's declared need per task."""
    if resources is None:
        return workers
    fit = workers
    if resources.cpus > 1:
        fit = min(fit, max(1, int((os.cpu_count() or 1) // resources.cpus)))
    if resources.gpus > 0:
        try:
            import torch

            gpus = torch.cuda.device_count()
        except ImportError:
            gpus = 0
        fit = min(fit, max(1, int(gpus // resources.gpus)))
    return fit


class ThreadExecutor:
    def __init__(self, workers: int = 2, retries: int = 2):
        self.workers = workers
        self.retries = retries

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], names: Sequence[str],
            resources: Resources | None = None) -> list[Any]:
        workers = threads_for(self.workers, resources)
        if workers == 1 or len(calls) <= 1:
            return [with_retries(fn, args, self.retries, name) for args, name in zip(calls, names, strict=True)]
        with ThreadPoolExecutor(workers, thread_name_prefix="curate") as pool:
            futures = [pool.submit(with_retries, fn, args, self.retries, name)
                       for args, name in zip(calls, names, strict=True)]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            for future in futures:
                if future.done() and not future.cancelled() and future.exception() is not None:
                    raise future.exception()
            return [f.result() for f in futures]

    def call(self, fn: Callable[..., Any], args: tuple, name: str) -> Any:
        return with_retries(fn, args, self.retries, name)
