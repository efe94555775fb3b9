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

from curate.config import load_config  # noqa: E402
from curate.executors import is_transient, threads_for  # noqa: E402
from curate.runner import Runner, StepResult  # noqa: E402
from curate.stages.base import Resources  # noqa: E402


def _retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as error:
        return is_transient(error)
    return False


class PrefectExecutor:
    """Runs each call as a Prefect task run on the flow's task runner."""

    def __init__(self, retries: int = 2, workers: int | None = None):
        self.retries = retries
        self.workers = workers

    def _task(self, fn: Callable[..., Any]) -> Any:
        return task(fn, name=fn.__name__, retries=self.retries, retry_delay_seconds=1,
                    retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE, persist_result=False)

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], names: Sequence[str],
            resources: Resources | None = None) -> list[Any]:
        runnable = self._task(fn)
        if resources is not None:  # shown on the task runs in the UI; a Ray task runner places work by them
            runnable = runnable.with_options(tags={f"cpus={resources.cpus:g}", f"gpus={resources.gpus:g}"})
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
def curate_pipeline(config_path: str, output: str | None = None, workers: int | None = None) -> list[dict[str, Any]]:
    """Run the pipeline config at `config_path` (optionally writing to `output`)."""
    config = load_config(config_path, output=output)
    results = Runner(config, PrefectExecutor(config.engine.retries, workers or config.engine.workers)).run()
    return [asdict(r) for r in results]


def run_flow(config_path: str, output: str | None = None, workers: int | None = None) -> list[StepResult]:
    """Validate, then run the config as a Prefect flow run with a thread pool of `workers`."""
    config = load_config(config_path, output=output)
    runnable = curate_pipeline.with_options(
        task_runner=ThreadPoolTaskRunner(max_workers=workers or config.engine.workers),
        flow_run_name=f"curate-{config.name}",
    )
    return [StepResult(**r) for r in runnable(config_path, output, workers)]
