"""The Prefect flow that runs a pipeline config: each stage's work becomes Prefect task runs.

- Map stages fan out one task run per shard (`heuristics[part-00003-0000]`); a global stage runs its
  summaries per shard, one `decide` task, then one apply task per shard.
- Failed tasks are retried when the error is transient (I/O), never for bad configs or data.
- Resume is curate's own (fingerprints and task receipts), so Prefect's result caching is off.
- Without a server Prefect starts a temporary local one (ephemeral mode); with `PREFECT_API_URL`
  set, runs are recorded there and show in its UI.
"""

from __future__ import annotations

import os

# Defaults that keep Prefect quiet and offline; a user's own settings win.
for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}.items():
    os.environ.setdefault(_key, _value)

from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from curate.engine.config import PipelineConfig, load_config, parse_config, resolved_config  # noqa: E402
from curate.engine.executors import is_transient, threads_for  # noqa: E402
from curate.engine.runner import Runner, StepResult  # noqa: E402
from curate.stages.base import Resources  # noqa: E402


def _retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as error:
        return is_transient(error)
    return False


class PrefectExecutor:
    """Runs each call as a Prefect task run on the flow's task runner (threads, or Ray with `on_ray`)."""

    def __init__(self, retries: int = 2, workers: int | None = None, on_ray: bool = False):
        self.retries = retries
        self.workers = workers
        self.on_ray = on_ray

    def _task(self, fn: Callable[..., Any]) -> Any:
        return task(fn, name=fn.__name__, retries=self.retries, retry_delay_seconds=1,
                    retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE, persist_result=False)

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], names: Sequence[str],
            resources: Resources | None = None) -> list[Any]:
        runnable = self._task(fn)
        if resources is not None:  # shown on the task runs in the UI; a Ray task runner places work by them
            runnable = runnable.with_options(tags={f"cpus={resources.cpus:g}", f"gpus={resources.gpus:g}"})
        if self.on_ray:  # Ray places each task by the stage's declared resources and queues the rest
            from prefect_ray.context import remote_options as ray_options

            from curate.engine.ray_engine import remote_options

            with ray_options(**remote_options(resources)):
                futures = [runnable.with_options(task_run_name=name).submit(*args)
                           for args, name in zip(calls, names, strict=True)]
            return [future.result() for future in futures]
        # At most as many in flight as the machine fits at the stage's declared need (one training per CPU box)
        window = threads_for(self.workers, resources) if self.workers else len(calls)
        futures: list[Any] = []
        for i, (args, name) in enumerate(zip(calls, names, strict=True)):
            if i >= window:
                futures[i - window].wait()
            futures.append(runnable.with_options(task_run_name=name).submit(*args))
        return [future.result() for future in futures]

    def call(self, fn: Callable[..., Any], args: tuple, name: str) -> Any:
        return self._task(fn).with_options(task_run_name=name)(*args)


@flow(name="curate-pipeline")
def curate_pipeline(config_path: str | None = None, output: str | None = None, workers: int | None = None,
                    config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run a pipeline: the config file at `config_path` (read at every run: a schedule picks up edits), or a
    resolved `config` mapping (`curate.engine.config.resolved_config`, as `curate.engine.run` passes it)."""
    loaded = load_config(config_path, output=output) if config is None else parse_config(config)
    executor = PrefectExecutor(loaded.engine.retries, workers or loaded.engine.workers,
                               on_ray=loaded.engine.kind == "ray")
    return [asdict(r) for r in Runner(loaded, executor).run()]


def task_runner(config: PipelineConfig, workers: int | None = None) -> Any:
    """The flow's task runner: a thread pool of `workers`, or Ray (a cluster of its own for `address: local`)."""
    if config.engine.kind != "ray":
        return ThreadPoolTaskRunner(max_workers=workers or config.engine.workers)
    from prefect_ray import RayTaskRunner

    from curate.engine.ray_engine import init_arguments

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = config.engine.address
    if address == "local":
        return RayTaskRunner(init_kwargs=init_arguments(address, config.engine.ray_cpus))
    return RayTaskRunner(address=address)


def run_flow(config: PipelineConfig) -> list[StepResult]:
    """Run a validated config as a Prefect flow run on the engine's task runner (`curate.engine.run` calls it)."""
    runnable = curate_pipeline.with_options(task_runner=task_runner(config), flow_run_name=f"curate-{config.name}")
    return [StepResult(**r) for r in runnable(config=resolved_config(config))]
