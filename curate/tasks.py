"""The units of work that executors run: plain top-level functions whose arguments pickle.

Every task of a step gets the step's `StepTask` (a small named object) plus the unit it works on (a shard, an
input file, an output bucket). A task that writes shards finishes by writing a receipt (`_tasks/<name>.json` in the
step folder's `.meta` folder) after its shards are in place; a task whose receipt exists is done, so an interrupted
step redoes only the missing ones.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.dataset import Dataset, ShardInfo, ShardWriter, atomic_write_text, meta_dir, write_shard
from curate.errors import CurateError
from curate.faults import crash_point
from curate.hashing import fingerprint
from curate.inputs import StepInput
from curate.io.ingest import ingest_unit
from curate.io.sources import InputUnit
from curate.progress import progress
from curate.reuse import reuse_summary, reuse_task, store_summary_key
from curate.schemas import conform
from curate.stages.base import REGISTRY, Stage, StageContext, ready_stage
from curate.stages.decision import PARENT_ID, POSITION, REPEAT, Decision, apply_decision, set_column
from curate.summaries import SummaryShards

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
    # reuse (curate.reuse): what decides a task's output besides its data, and where finished work may be found
    reuse_key: str = ""
    previous_out: str = ""
    previous_rejected: str = ""
    other_summaries: tuple[str, ...] = ()

    def input(self) -> StepInput:
        return StepInput.open(self.inputs, self.input_labels)

    def instance(self) -> Stage:
        """The worker's set-up instance of the stage (models load once per process)."""
        return ready_stage(self.stage, self.params, self.prepared)

    def shard_key(self, step_input: StepInput, ref: str, what: str) -> str:
        """The task key of the `what` task ("map", "summary") on input shard `ref` (see `curate.reuse`)."""
        if not self.reuse_key:
            return ""
        return fingerprint(self.reuse_key, what, self.prepared, ref, step_input.shard_sha256(ref),
                           step_input.schema.to_string(show_schema_metadata=False))

    def reused(self, name: str, key: str) -> dict[str, Any] | None:
        """The receipt of an identical task of the step's previous version, its shards taken over."""
        receipt = reuse_task(self.previous_out, self.previous_rejected, self.out_dir, self.rejected_dir, name, key)
        return _store_receipt(self.out_dir, name, receipt) if receipt is not None else None


def _receipt_path(out_dir: str | Path, task: str) -> Path:
    return meta_dir(out_dir) / RECEIPTS / f"{task.replace(':', '_')}.json"


def read_receipt(out_dir: str | Path, task: str) -> dict[str, Any] | None:
    path = _receipt_path(out_dir, task)
    return json.loads(path.read_text()) if path.is_file() else None


def read_receipts(out_dir: str | Path) -> list[dict[str, Any]]:
    folder = meta_dir(out_dir) / RECEIPTS
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _write_receipt(out_dir: str | Path, task: str, kept: list[ShardInfo | None], rejected: list[ShardInfo | None],
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
    return _store_receipt(out_dir, task, receipt)


def _store_receipt(out_dir: str | Path, task: str, receipt: dict[str, Any]) -> dict[str, Any]:
    path = _receipt_path(out_dir, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(receipt))
    return receipt


def ingest_task(task: StepTask, unit: InputUnit, shard_rows: int) -> dict[str, Any]:
    name = f"unit-{unit.index:05d}"
    if (done := read_receipt(task.out_dir, name)) is not None:
        return done
    stat = os.stat(unit.path)
    key = fingerprint(task.reuse_key, asdict(unit), stat.st_size, stat.st_mtime_ns, shard_rows) if task.reuse_key \
        else ""
    if key and (done := task.reused(name, key)) is not None:
        return done
    start = time.perf_counter()
    kept, rejected, rows_read = ingest_unit(unit, task.out_dir, task.rejected_dir, shard_rows, task.label, task.key)
    return _write_receipt(task.out_dir, name, kept, rejected, rows_read, time.perf_counter() - start, key=key)


def _with_parent_id(table: pa.Table) -> pa.Table:
    return table if PARENT_ID in table.column_names else table.append_column(
        PARENT_ID, pa.nulls(table.num_rows, pa.string()))


def _split_shard(task: StepTask, stage: Stage, decided: Iterator[tuple[pa.Table, Decision]], ref: str,
                 out_name: str, key: str = "") -> dict[str, Any]:
    """Write one shard's kept rows (then its added rows) and its dropped rows, table by table, then the receipt."""
    start, rows_in, rows_kept, rows_added = time.perf_counter(), 0, 0, 0
    with ShardWriter(task.out_dir, out_name) as kept, ShardWriter(task.rejected_dir, out_name) as rejected:
        for table, decision in decided:
            stage.check_decision(decision)
            applied = apply_decision(table, decision, task.label, stage.rejected_reference)
            output = applied.kept
            if stage.output == "rows_added":
                output = _with_parent_id(output)
                if applied.added.num_rows:
                    extra = sorted(set(applied.added.column_names) - set(output.column_names))
                    if extra:
                        raise CurateError(f"stage '{stage.name}' added rows with columns {extra} its input lacks")
                    output = pa.concat_tables([output, conform(applied.added, output.schema)])
            kept.write(output)
            rejected.write(applied.rejected)
            rows_in += table.num_rows
            rows_kept += applied.kept_rows
            rows_added += applied.added.num_rows
            progress().advance(task.key, table.num_rows)
        infos = [kept.close()], [rejected.close()]
    return _write_receipt(task.out_dir, ref, *infos, rows_in, time.perf_counter() - start, rows_kept, rows_added,
                          key=key)


def map_task(task: StepTask, ref: str) -> dict[str, Any]:
    """Run a map stage on one shard: kept rows keep the shard's name, dropped rows go to rejected."""
    if (done := read_receipt(task.out_dir, ref)) is not None:
        return done
    step_input = task.input()
    key = task.shard_key(step_input, ref, "map")
    if key and (done := task.reused(ref, key)) is not None:
        return done
    stage = task.instance()
    reads = stage.reads(step_input.schema)

    def decided() -> Iterator[tuple[pa.Table, Decision]]:
        for table in step_input.iter_shard_batches(ref, batch_rows=stage.batch_rows):
            yield table, stage.process(table.select(reads))  # the stage sees only what it declares

    return _split_shard(task, stage, decided(), ref, step_input.output_name(ref), key)


def prepare_task(task: StepTask, target_dir: str | None, heldout_dir: str | None, models_dir: str) -> dict[str, Any]:
    """A stage's one-off preparation (e.g. training auxiliary models); its artifacts are stored with the summaries
    (a map step: in its work folder), so a resumed or re-decided run does not prepare again."""
    marker = Path(task.summary_dir) / "prepared.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    stage = REGISTRY[task.stage](task.params)
    prepared = stage.prepare(_context(task, target_dir, heldout_dir, models_dir))
    crash_point("prepare", task.label)
    atomic_write_text(marker, json.dumps(prepared))
    return prepared


def _context(task: StepTask, target_dir: str | None, heldout_dir: str | None, models_dir: str) -> StageContext:
    return StageContext(input=task.input(), target=Dataset.open(target_dir) if target_dir else None,
                        models_dir=Path(models_dir), label=task.label,
                        heldout=Dataset.open(heldout_dir) if heldout_dir else None, input_labels=task.input_labels,
                        step_models={label: Path(folder) for label, folder in task.step_models.items()})


def _summary_name(ref: str) -> str:
    return f"summary-{ref.replace(':', '_')}"


def summarize_task(task: StepTask, ref: str) -> str:
    """The map half of a global stage: the shard's summary (ids, signatures, scores)."""
    target = _summary_name(ref)
    if (Path(task.summary_dir) / target).is_file():
        return target
    step_input = task.input()
    key = task.shard_key(step_input, ref, "summary")
    if key and reuse_summary(Path(task.summary_dir) / target, key, task.other_summaries):
        return target
    stage = task.instance()
    pieces = []
    for table in step_input.iter_shard_batches(ref, stage.reads(step_input.schema), batch_rows=stage.batch_rows):
        pieces.append(stage.summarize(table))
        progress().advance(task.key, table.num_rows)
    write_shard(task.summary_dir, target, pa.concat_tables(pieces))
    if key:
        store_summary_key(Path(task.summary_dir) / target, key)
    return target


def decide_task(task: StepTask) -> dict[str, Any]:
    """The global half: one decision over all summaries, stored per shard for the apply tasks."""
    marker = Path(task.work_dir) / "_decided.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    # A fresh instance without setup(): deciding needs the summaries, not the stage's models.
    stage = REGISTRY[task.stage](task.params)
    stage.prepared = dict(task.prepared)
    step_input = task.input()
    stage.summaries = SummaryShards([Path(task.summary_dir) / _summary_name(r) for r in step_input.shard_names])
    summary = stage.summaries.read(getattr(stage, "decide_columns", None))  # the rest: by row (`summaries.take`)
    decision = stage.decide(summary, step_input)
    stage.check_decision(decision)
    info: dict[str, Any] = {"rows": summary.num_rows}
    if decision.positions is not None:
        info.update(_check_positions(stage, decision))
        schema = _placed_schema(stage, step_input.schema, decision)
        atomic_write_text(Path(task.work_dir) / "output_schema.json",
                          json.dumps({"arrow": schema.serialize().to_pybytes().hex()}))
    if decision.report is not None:
        atomic_write_text(Path(task.work_dir) / "report.json", json.dumps(decision.report, indent=1, default=str))
    stored = decision.to_table(summary.num_rows)
    added = decision.added
    sizes = step_input.shard_rows()
    for ref, offset in step_input.shard_offsets().items():
        rows = sizes[ref]
        name = step_input.output_name(ref)
        write_shard(task.work_dir, f"decision-{name}", stored.slice(offset, rows))
        if added is not None and added.num_rows:  # new rows go with their parent's shard, at its local position
            position = added.column(POSITION)
            mine = pc.and_(pc.greater_equal(position, offset), pc.less(position, offset + rows))
            local = added.filter(mine)
            write_shard(task.work_dir, f"added-{name}", set_column(local, POSITION, pc.subtract(
                local.column(POSITION), offset)))
    crash_point("decide", task.label)
    atomic_write_text(marker, json.dumps(info))
    return info


def _check_positions(stage: Stage, decision: Decision) -> dict[str, Any]:
    """Placed copies must fill output positions 0..n-1 exactly once, and dropped rows have none."""
    flat = pc.list_flatten(decision.positions).to_numpy(zero_copy_only=False).astype(np.int64)
    if not np.array_equal(np.sort(flat), np.arange(len(flat))):
        raise CurateError(f"stage '{stage.name}': its output positions are not 0..{len(flat) - 1}, each once (a bug)")
    counts = pc.list_value_length(decision.positions).to_numpy(zero_copy_only=False)
    if decision.reason is not None:
        dropped = pc.is_valid(decision.reason).to_numpy(zero_copy_only=False)
        if (counts[dropped] > 0).any() or (counts[~dropped] == 0).any():
            raise CurateError(f"stage '{stage.name}': a dropped row has output positions, or a kept row none (a bug)")
    return {"output_rows": len(flat), "shard_rows": stage.ordered_shard_rows()}


def _placed_schema(stage: Stage, schema: pa.Schema, decision: Decision) -> pa.Schema:
    """The schema of every output shard of a placed decision: fixed at decide time, so that output bytes do not
    depend on which rows a shard happens to hold."""
    fields = {f.name: f for f in schema}
    fields.update({name: pa.field(name, values.type) for name, values in decision.adds.items()})
    fields[REPEAT] = pa.field(REPEAT, pa.int64())
    fields.setdefault(PARENT_ID, pa.field(PARENT_ID, pa.string()))
    keep = stage.output_columns(list(fields))
    return pa.schema([fields[c] for c in (keep if keep is not None else fields)])


def _placed_output_schema(task: StepTask) -> pa.Schema:
    data = json.loads((Path(task.work_dir) / "output_schema.json").read_text())
    return pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(data["arrow"])))


def _decided(step_input: StepInput, ref: str, decision: Decision,
             added: pa.Table | None = None) -> Iterator[tuple[pa.Table, Decision]]:
    """The shard's batches, each with its slice of the decision (and the new rows whose parents it holds)."""
    offset = 0
    for table in step_input.iter_shard_batches(ref):
        part = decision.slice(offset, table.num_rows)
        if added is not None:
            position = added.column(POSITION)
            part.added = added.filter(pc.and_(pc.greater_equal(position, offset),
                                              pc.less(position, offset + table.num_rows)))
        yield table, part
        offset += table.num_rows


def apply_task(task: StepTask, ref: str) -> dict[str, Any]:
    """Apply a stored global decision to one shard (placed decisions write output buckets; see `gather_task`)."""
    if (done := read_receipt(task.out_dir, ref)) is not None:
        return done
    step_input = task.input()
    out_name = step_input.output_name(ref)
    decision = Decision.from_table(pq.read_table(Path(task.work_dir) / f"decision-{out_name}"))
    added_file = Path(task.work_dir) / f"added-{out_name}"
    added = pq.read_table(added_file) if added_file.is_file() else None
    stage = REGISTRY[task.stage](task.params)
    if decision.positions is None:
        return _split_shard(task, stage, _decided(step_input, ref, decision, added), ref, out_name)
    return _scatter_shard(task, stage, _decided(step_input, ref, decision), ref, out_name)


def _scatter_shard(task: StepTask, stage: Stage, decided: Iterator[tuple[pa.Table, Decision]], ref: str,
                   out_name: str) -> dict[str, Any]:
    """Placed rows go to the bucket files of the output shards they belong in; dropped rows to rejected."""
    info = json.loads((Path(task.work_dir) / "_decided.json").read_text())
    per_shard = info["shard_rows"]
    schema = _placed_output_schema(task).append(pa.field(POSITION, pa.int64()))
    start, rows_in, rows_kept, rows_added = time.perf_counter(), 0, 0, 0
    pieces: list[pa.Table] = []
    with ShardWriter(task.rejected_dir, out_name) as rejected:
        for table, decision in decided:
            applied = apply_decision(table, decision, task.label, stage.rejected_reference)
            placed = [t for t in (applied.kept, applied.added) if t.num_rows]
            pieces += [conform(t.select([c for c in schema.names if c in t.column_names]), schema) for t in placed]
            rejected.write(applied.rejected)
            rows_in += table.num_rows
            rows_kept += applied.kept_rows
            rows_added += applied.added.num_rows
            progress().advance(task.key, table.num_rows)
        buckets = []
        if pieces:
            rows = pa.concat_tables(pieces)
            bucket = rows.column(POSITION).to_numpy() // per_shard
            order = np.argsort(bucket, kind="stable")  # one take, then a zero-copy slice per bucket
            rows, bucket = rows.take(pa.array(order)), bucket[order]
            for b, first, count in zip(*np.unique(bucket, return_index=True, return_counts=True), strict=True):
                _write_ipc(Path(task.work_dir) / f"bucket-{b:05d}-{out_name.removesuffix('.parquet')}.arrow",
                           rows.slice(int(first), int(count)))
                buckets.append(int(b))
        done = rejected.close()
    return _write_receipt(task.out_dir, ref, [], [done], rows_in, time.perf_counter() - start, rows_kept,
                          rows_added, buckets=buckets)


def _write_ipc(path: Path, table: pa.Table) -> None:
    """A work file in Arrow's IPC format (uncompressed, memory-mapped when read): written under a temporary name."""
    tmp = path.with_name(f".{path.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    tmp.replace(path)


def gather_task(task: StepTask, bucket: int) -> dict[str, Any]:
    """Write output shard `bucket` of a placed decision: its rows from every bucket file, in position order."""
    name = f"gather-{bucket:05d}"
    if (done := read_receipt(task.out_dir, name)) is not None:
        return done
    start = time.perf_counter()
    schema = _placed_output_schema(task)
    files = sorted(Path(task.work_dir).glob(f"bucket-{bucket:05d}-*.arrow"))
    rows = pa.concat_tables([pa.ipc.open_file(pa.memory_map(str(f))).read_all() for f in files])
    rows = rows.take(pc.sort_indices(rows.column(POSITION))).drop_columns([POSITION])
    with ShardWriter(task.out_dir, f"part-{bucket:05d}.parquet", schema) as writer:
        writer.write(conform(rows, schema))
        info = writer.close()
    return _write_receipt(task.out_dir, name, [info], [], 0, time.perf_counter() - start, 0, 0)


def build_task(task: StepTask, target_dir: str | None, heldout_dir: str | None) -> dict[str, Any]:
    """Run an artifact stage's `build` into the step's folder; returns its metrics."""
    stage = task.instance()
    return stage.build(_context(task, target_dir, heldout_dir, task.out_dir), Path(task.out_dir))


def units_task(task: StepTask, target_dir: str | None, heldout_dir: str | None) -> list[str]:
    """An artifact stage's independent pieces (their shared files are written here)."""
    stage = task.instance()
    return stage.units(_context(task, target_dir, heldout_dir, task.out_dir), Path(task.out_dir))


def _unit_receipt(task: StepTask, unit: str) -> Path:
    return Path(task.out_dir) / RECEIPTS / f"unit-{unit.replace('/', '__').replace(':', '_')}.json"


def unit_task(task: StepTask, target_dir: str | None, heldout_dir: str | None, unit: str) -> dict[str, Any]:
    """One piece of an artifact build; its result is kept as a receipt, so a resumed step skips it."""
    receipt = _unit_receipt(task, unit)
    if receipt.is_file():
        return json.loads(receipt.read_text())
    stage = task.instance()
    result = stage.build_unit(_context(task, target_dir, heldout_dir, task.out_dir), Path(task.out_dir), unit)
    receipt.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(receipt, json.dumps(result))
    return result


def combine_task(task: StepTask, target_dir: str | None, heldout_dir: str | None,
                 results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The metrics of an artifact build made of units, from their results."""
    stage = task.instance()
    return stage.combine(_context(task, target_dir, heldout_dir, task.out_dir), Path(task.out_dir), results)
