"""What every task of a step is given (`StepTask`) and what it leaves behind when done (its receipt).

A task that writes shards finishes by writing a receipt (`_tasks/<name>.json` in the step folder's `.meta` folder)
after its shards are in place; a task whose receipt exists is done, so an interrupted step redoes only the missing
ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from curate.data.dataset import atomic_write_text, meta_dir
from curate.data.faults import crash_point
from curate.data.hashing import fingerprint
from curate.data.inputs import StepInput
from curate.data.shards import ShardInfo
from curate.engine.reuse import reuse_task
from curate.stages.base import REGISTRY, Stage, ready_stage
from curate.stages.plugins import import_plugins

RECEIPTS = "_tasks"
WORK = "_work"


@dataclass(frozen=True)
class StepTask:
    """What every task of one step needs: the stage and its parameters, where its input is, where it writes."""

    label: str
    stage: str
    params: dict[str, Any]
    inputs: tuple[str, ...] = ()  # dataset folders of the input steps, in `from:` order
    input_labels: tuple[str, ...] = ()
    out_dir: str = ""
    rejected_dir: str = ""
    work_dir: str = ""  # decisions and output buckets of a global step
    summary_dir: str = ""  # a global step's summaries (under scores/ when the stage keeps them)
    prepared: dict[str, Any] = field(default_factory=dict)  # the stage's `prepare` artifacts
    step_models: dict[str, str] = field(default_factory=dict)  # label -> folder of the models the stage loads
    key: str = ""  # progress bar
    # reuse (curate.engine.reuse): what decides a task's output besides its data, and where finished work may be found
    reuse_key: str = ""
    previous_out: str = ""
    previous_rejected: str = ""
    other_summaries: tuple[str, ...] = ()
    # custom stages: the config's plugin modules and its folder, imported in every worker before a stage lookup
    plugins: tuple[str, ...] = ()
    plugin_dir: str = ""

    def with_(self, **changes: Any) -> StepTask:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def input(self) -> StepInput:
        return StepInput.open(self.inputs, self.input_labels)

    def stage_class(self) -> type[Stage]:
        """The stage's class (a worker process imports the config's plugins first)."""
        import_plugins(self.plugins, self.plugin_dir)
        return REGISTRY[self.stage]

    def instance(self) -> Stage:
        """The worker's set-up instance of the stage (models load once per process)."""
        import_plugins(self.plugins, self.plugin_dir)
        return ready_stage(self.stage, self.params, self.prepared)

    def shard_key(self, step_input: StepInput, ref: str, what: str) -> str:
        """The task key of the `what` task ("map", "summary") on input shard `ref` (see `curate.engine.reuse`)."""
        if not self.reuse_key:
            return ""
        return fingerprint(self.reuse_key, what, self.prepared, ref, step_input.shard_sha256(ref),
                           step_input.schema.to_string(show_schema_metadata=False))

    def reused(self, name: str, key: str) -> dict[str, Any] | None:
        """The receipt of an identical task of the step's previous version, its shards taken over."""
        receipt = reuse_task(self.previous_out, self.previous_rejected, self.out_dir, self.rejected_dir, name, key)
        return store_receipt(self.out_dir, name, receipt) if receipt is not None else None


def _receipt_path(out_dir: str | Path, task: str) -> Path:
    return meta_dir(out_dir) / RECEIPTS / f"{task.replace(':', '_')}.json"


def read_receipt(out_dir: str | Path, task: str) -> dict[str, Any] | None:
    path = _receipt_path(out_dir, task)
    return json.loads(path.read_text()) if path.is_file() else None


def read_receipts(out_dir: str | Path) -> list[dict[str, Any]]:
    folder = meta_dir(out_dir) / RECEIPTS
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def write_receipt(out_dir: str | Path, task: str, kept: list[ShardInfo | None], rejected: list[ShardInfo | None],
                   rows_in: int, seconds: float, rows_kept: int | None = None, rows_added: int = 0,
                   **extra: Any) -> dict[str, Any]:
    kept = [s for s in kept if s is not None]
    rejected = [s for s in rejected if s is not None]
    receipt = {
        "task": task,
        "kept": [asdict(s) for s in kept],
        "rejected": [asdict(s) for s in rejected],
        "rows_in": rows_in,
        "rows_kept": sum(s.rows for s in kept) - rows_added if rows_kept is None else rows_kept,
        "rows_added": rows_added,
        "rows_rejected": sum(s.rows for s in rejected),
        "seconds": round(seconds, 3),
        **extra,
    }
    crash_point("task_done", f"{Path(out_dir).name}/{task}")
    return store_receipt(out_dir, task, receipt)


def store_receipt(out_dir: str | Path, task: str, receipt: dict[str, Any]) -> dict[str, Any]:
    path = _receipt_path(out_dir, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(receipt))
    return receipt
