"""Fault injection for the crash-recovery tests: named points in the runner where a run can be killed for real.

`crash_point(name, detail)` does nothing unless `CURATE_CRASH_AT` is set. With `CURATE_CRASH_AT=<name>:<n>` (or
`<name>@<prefix>:<n>`, matching only a `detail` that starts with `<prefix>`), the n-th time this process reaches a
matching point it sends itself SIGKILL: no `finally`, no flush, no clean-up, as when a machine dies. Points:

| name          | where                                                            | detail              |
|---------------|------------------------------------------------------------------|---------------------|
| `shard_write` | a shard's Parquet file is written, not yet renamed into place   | the shard name      |
| `task_done`   | a task's shards are in place, its receipt not yet written       | `<step folder>/<task>` |
| `prepare`     | a global stage's `prepare` (model training) returned, unrecorded | the step label      |
| `decide`      | a global decision is written, its marker not yet                 | the step label      |
| `train_step`  | an optimizer step of any training finished                       | the progress bar    |
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "CURATE_CRASH_AT"
_lock = threading.Lock()
_hits: dict[str, int] = {}


def crash_point(name: str, detail: str = "") -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.rpartition(":")
    point, _, prefix = point.partition("@")
    if point != name or not detail.startswith(prefix):
        return
    with _lock:
        _hits[spec] = _hits.get(spec, 0) + 1
        if _hits[spec] >= int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
