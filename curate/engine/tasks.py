"""The units of work that executors run: plain top-level functions whose arguments pickle.

Every task of a step gets the step's `StepTask` (`curate.engine.step_task`) plus the unit it works on (a shard, an
input file); it finishes by writing a receipt, so an interrupted step redoes only the missing tasks. Placed
decisions (rows given output positions) are written by `curate.engine.placement`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.data.dataset import Dataset, atomic_write_text
from curate.data.errors import CurateError
from curate.data.faults import crash_point
from curate.data.hashing import fingerprint
from curate.data.inputs import StepInput
from curate.data.progress import progress
from curate.data.schemas import conform
from curate.data.shards import ShardWriter, readable_shard, write_shard
from curate.data.summaries import SummaryShards
from curate.engine.placement import check_positions, placed_schema, scatter_shard
from curate.engine.reuse import reuse_summary, store_summary_key
from curate.engine.step_task import RECEIPTS, StepTask, read_receipt, write_receipt
from curate.io.ingest import ingest_unit
from curate.io.sources import InputUnit
from curate.stages.base import Stage, StageContext
from curate.stages.decision import PARENT_ID, POSITION, Decision, apply_decision, set_column

log = logging.getLogger("curate")


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
    return write_receipt(task.out_dir, name, kept, rejected, rows_read, time.perf_counter() - start, key=key)


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
    return write_receipt(task.out_dir, ref, *infos, rows_in, time.perf_counter() - start, rows_kept, rows_added,
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
    stage = task.stage_class()(task.params)
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
    stored = Path(task.summary_dir) / target
    if stored.is_file():
        if readable_shard(stored):
            return target
        log.warning("%s: the stored summary %s is damaged (its Parquet footer does not read); summarizing the "
                    "shard again", task.label, stored)
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
    stage = task.stage_class()(task.params)
    stage.prepared = dict(task.prepared)
    step_input = task.input()
    stage.summaries = SummaryShards([Path(task.summary_dir) / _summary_name(r) for r in step_input.shard_names])
    summary = stage.summaries.read(getattr(stage, "decide_columns", None))  # the rest: by row (`summaries.take`)
    decision = stage.decide(summary, step_input)
    stage.check_decision(decision)
    info: dict[str, Any] = {"rows": summary.num_rows}
    if decision.positions is not None:
        info.update(check_positions(stage, decision))
        schema = placed_schema(stage, step_input.schema, decision)
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
    stage = task.stage_class()(task.params)
    if decision.positions is None:
        return _split_shard(task, stage, _decided(step_input, ref, decision, added), ref, out_name)
    return scatter_shard(task, stage, _decided(step_input, ref, decision), ref, out_name)


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
