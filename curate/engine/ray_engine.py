"""The Ray engine: a run's tasks as Ray tasks, placed by each stage's declared `Resources`.

- `RayExecutor` is the `Executor` for `engine: {kind: ray, prefect: false}`: each call becomes one Ray task
  (`num_cpus`, `num_gpus`, `memory` from the stage), retried by curate's own rule (transient errors only) inside
  the task, so Ray's own retries are off. Results come back in call order; the first error cancels the rest.
- With Prefect (the default), the flow runs on `prefect_ray.RayTaskRunner` instead (`curate.flows.pipeline`),
  and the same resources travel as Ray remote options.
- `ray_cluster` joins or starts the cluster: `address: local` starts one on 127.0.0.1 for the run and stops it
  afterwards; `auto` or `ray://host:port` join an existing one and leave it running.

Workers read and write the run's folders directly, so every worker must see the same paths: one machine, or a
shared filesystem mounted at the same place on every node (README, "Ray").
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from curate.data.errors import ConfigError
from curate.engine.executors import with_retries
from curate.stages.base import Resources

log = logging.getLogger("curate")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ConfigError("engine.kind: ray needs Ray; install it with `pip install 'curate[ray]'`") from error
    return ray


def init_arguments(address: str, cpus: int | None) -> dict[str, Any]:
    """`ray.init` arguments: a private local cluster bound to 127.0.0.1, or the address of an existing one."""
    if address != "local":
        return {"address": address}
    return {"num_cpus": cpus or os.cpu_count() or 1, "_node_ip_address": "127.0.0.1", "include_dashboard": False,
            "configure_logging": False, "log_to_driver": False}


@contextlib.contextmanager
def ray_cluster(address: str = "local", cpus: int | None = None) -> Iterator[Any]:
    """Ray, initialised for the run; a cluster started here is shut down on the way out."""
    ray = _import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(**init_arguments(address, cpus))
        log.info("ray: %s (%s CPUs)", address, ray.cluster_resources().get("CPU"))
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def remote_options(resources: Resources | None) -> dict[str, Any]:
    """Ray's placement options for one task of a stage."""
    resources = resources or Resources()
    options: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus}
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * (1 << 30))
    return options


def _run_task(fn: Callable[..., Any], args: tuple, retries: int, name: str) -> Any:
    return with_retries(fn, args, retries, name)


class RayExecutor:
    """Runs each call as a Ray task on the current cluster (see `ray_cluster`)."""

    def __init__(self, retries: int = 2):
        self.retries = retries
        self._ray = _import_ray()
        self._remote = self._ray.remote(max_retries=0)(_run_task)

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], names: Sequence[str],
            resources: Resources | None = None) -> list[Any]:
        ray, options = self._ray, remote_options(resources)
        refs = [self._remote.options(name=name, **options).remote(fn, args, self.retries, name)
                for args, name in zip(calls, names, strict=True)]
        try:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)  # raises the task's error at once
        except BaseException as error:
            for ref in refs:
                ray.cancel(ref)
            cause = getattr(error, "cause", None)  # a RayTaskError wraps the task's own exception
            if isinstance(error, ray.exceptions.RayTaskError) and isinstance(cause, Exception):
                raise cause from None
            raise
        return ray.get(refs)

    def call(self, fn: Callable[..., Any], args: tuple, name: str) -> Any:
        return self.map(fn, [args], [name])[0]
