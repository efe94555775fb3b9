"""Which steps run at the same time: each step starts once the steps it reads have finished, as many at once as the
engine's workers hold at the steps' declared resources.

Independent branches (`got_d` and `dsir` after one `embed`; several selections, each with its own `evaluate`)
otherwise run one after another, and on a small machine half of it idles during a single-threaded step. Steps start
in plan order: a ready step that does not fit waits for room rather than being overtaken by a later ready one,
so a large step is never starved by small ones. A stage that marks itself `exclusive` (it trains with torch's
process-wide random state) runs with no other step beside it, so that its results do not depend on what else ran.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


@dataclass(frozen=True)
class Claim:
    """What a running step holds of the engine: worker slots and GPUs; `alone` holds everything."""

    slots: int = 1
    gpus: float = 0.0
    alone: bool = False


def claim_for(cpus: float, gpus: float, exclusive: bool, capacity: int) -> Claim:
    """A step's claim from its declared per-task resources: whole CPUs, at least one slot, at most all of them."""
    return Claim(slots=min(capacity, max(1, math.ceil(cpus))), gpus=gpus, alone=exclusive)


class StepScheduler(Generic[Item]):
    """Runs items (steps) on threads as their dependencies finish, within `capacity` slots and `gpus` GPUs.

    `depends(item)` names the items it waits for (by `key(item)`); items depending on names outside the list
    wait for nothing there. `run` is called on a worker thread (in a copy of the caller's context: a Prefect flow
    run's tasks stay in its flow); `done` is called on the caller's thread, in completion order. The first error
    stops new starts; running items finish, then it is raised."""

    def __init__(self, items: Sequence[Item], key: Callable[[Item], str], depends: Callable[[Item], Sequence[str]],
                 claim: Callable[[Item], Claim], capacity: int, gpus: float = 0.0) -> None:
        self.items = list(items)
        self.key = key
        names = {key(i) for i in self.items}
        self.depends = {key(i): {d for d in depends(i) if d in names} for i in self.items}
        self.claim = claim
        self.capacity = max(1, capacity)
        self.gpus = gpus

    def _fits(self, claim: Claim, running: list[Claim]) -> bool:
        if not running:
            return True  # a step larger than the whole engine still runs, alone
        if claim.alone or any(c.alone for c in running):
            return False
        slots_free = sum(c.slots for c in running) + claim.slots <= self.capacity
        gpus_free = claim.gpus == 0 or sum(c.gpus for c in running) + claim.gpus <= max(self.gpus, 1.0)
        return slots_free and gpus_free

    def run(self, run: Callable[[Item], Any], done: Callable[[Item, Any], None]) -> None:
        waiting = list(self.items)
        finished: set[str] = set()
        running: dict[Future, tuple[Item, Claim]] = {}
        error: BaseException | None = None
        with ThreadPoolExecutor(self.capacity, thread_name_prefix="curate-step") as pool:
            while waiting or running:
                for item in [i for i in waiting if self.depends[self.key(i)] <= finished] if error is None else []:
                    claim = self.claim(item)
                    if not self._fits(claim, [c for _, c in running.values()]):
                        break  # the first ready step that does not fit waits for room; later ones wait behind it
                    waiting.remove(item)
                    context = contextvars.copy_context()
                    running[pool.submit(context.run, run, item)] = (item, claim)
                if not running:
                    if error is not None or not waiting:
                        break
                    raise RuntimeError(f"step {self.key(waiting[0])!r} waits for steps that never run")
                completed, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in [f for f in running if f in completed]:
                    item, _ = running.pop(future)
                    if future.exception() is not None:
                        error = error or future.exception()
                        continue
                    finished.add(self.key(item))
                    done(item, future.result())
        if error is not None:
            raise error
