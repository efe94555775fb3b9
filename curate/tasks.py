"""The units of work that executors run: plain top-level functions with picklable arguments.

Each task that writes shards finishes by writing a receipt (`_tasks/<name>.json`) after its shards are
in place; a task whose receipt exists is done, so an interrupted stage redoes only missing shards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.dataset import Dataset, ShardInfo, ShardWriter, atomic_write_text, write_shard
from curate.io.ingest import ingest_unit
from curate.io.sources import InputUnit
from curate.progress import progress
from curate.stages.base import REGISTRY, Decision, StageContext, apply_decision, ready_stage

RECEIPTS = "_tasks"
WORK = "_work"


def _receipt_path(out_dir: str | Path, task: str) -> Path:
    return Path(out_dir) / RECEIPTS / f"{task}.json"


def read_receipt(out_dir: str | Path, task: str) -> dict[str, Any] | None:
    path = _receipt_path(out_dir, task)
    return json.loads(path.read_text()) if path.is_file() else None


def read_receipts(out_dir: str | Path) -> list[dict[str, Any]]:
    folder = Path(out_dir) / RECEIPTS
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _write_receipt(out_dir: str | Path, task: str, kept: list[ShardInfo | None],
                   rejected: list[ShardInfo | None], rows_in: int, seconds: float) -> dict[str, Any]:
    kept = [s for s in kept if s is not None]
    rejected = [s for s in rejected if s is not None]
    receipt = {
        "task": task,
        "kept": [asdict(s) for s in kept],
        "rejected": [asdict(s) for s in rejected],
        "rows_in": rows_in,
        "rows_out": sum(s.rows for s in kept),
        "rows_rejected": sum(s.rows for s in rejected),
        "seconds": round(seconds, 3),
    }
    path = _receipt_path(out_dir, task)
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps(receipt))
    return receipt


def ingest_task(unit: InputUnit, out_dir: str, rejected_dir: str, shard_rows: int, stage: str,
                key: str) -> dict[str, Any]:
    task = f"unit-{unit.index:05d}"
    if (done := read_receipt(out_dir, task)) is not None:
        return done
    start = time.perf_counter()
    kept, rejected, rows_read = ingest_unit(unit, out_dir, rejected_dir, shard_rows, stage, key)
    return _write_receipt(out_dir, task, kept, rejected, rows_read, time.perf_counter() - start)


def _split_shard(decided: Iterator[tuple[pa.Table, Decision]], label: str, shard: str, out_dir: str,
                 rejected_dir: str, key: str) -> dict[str, Any]:
    """Write the kept and the dropped rows of one shard, table by table, then the task's receipt."""
    start, rows_in = time.perf_counter(), 0
    with ShardWriter(out_dir, shard) as kept, ShardWriter(rejected_dir, shard) as rejected:
        for table, decision in decided:
            keep, drop = apply_decision(table, decision, label)
            kept.write(keep)
            rejected.write(drop)
            rows_in += table.num_rows
            progress().advance(key, table.num_rows)
        infos = [kept.close()], [rejected.close()]
    return _write_receipt(out_dir, shard, *infos, rows_in, time.perf_counter() - start)


def map_task(name: str, params: dict[str, Any], label: str, in_dir: str, shard: str, out_dir: str,
             rejected_dir: str, key: str) -> dict[str, Any]:
    """Run a map stage on one shard: kept rows keep the shard's name, dropped rows go to rejected."""
    if (done := read_receipt(out_dir, shard)) is not None:
        return done
    stage = ready_stage(name, params)
    tables = Dataset.open(in_dir).iter_shard_batches(shard, batch_rows=stage.batch_rows)
    return _split_shard(((t, stage.process(t)) for t in tables), label, shard, out_dir, rejected_dir, key)


def prepare_task(name: str, params: dict[str, Any], label: str, in_dir: str, target_dir: str | None,
                 models_dir: str, summary_dir: str) -> dict[str, Any]:
    """A global stage's one-off preparation (e.g. training auxiliary models); its artifacts are stored
    with the summaries, so a resumed or re-decided run does not prepare again."""
    marker = Path(summary_dir) / "prepared.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    stage = REGISTRY[name](params)
    target = Dataset.open(target_dir) if target_dir else None
    context = StageContext(input=Dataset.open(in_dir), target=target, models_dir=Path(models_dir), label=label)
    prepared = stage.prepare(context)
    atomic_write_text(marker, json.dumps(prepared))
    return prepared


def summarize_task(name: str, params: dict[str, Any], in_dir: str, shard: str, summary_dir: str,
                   key: str, prepared: dict[str, Any] | None = None) -> str:
    """The map half of a global stage: the shard's summary (ids, signatures, scores)."""
    target = f"summary-{shard}"
    if (Path(summary_dir) / target).is_file():
        return target
    stage = ready_stage(name, params, prepared)
    parent = Dataset.open(in_dir)
    pieces = []
    for table in parent.iter_shard_batches(shard, list(stage.needs), batch_rows=stage.batch_rows):
        pieces.append(stage.summarize(table))
        progress().advance(key, table.num_rows)
    write_shard(summary_dir, target, pa.concat_tables(pieces))
    return target


def decide_task(name: str, params: dict[str, Any], in_dir: str, summary_dir: str, work_dir: str,
                prepared: dict[str, Any] | None = None) -> None:
    """The global half: one decision over all summaries, stored per shard for the apply tasks."""
    marker = Path(work_dir) / "_decided.json"
    if marker.is_file():
        return
    # A fresh instance without setup(): deciding needs the summaries, not the stage's models.
    stage = REGISTRY[name](params)
    stage.prepared = dict(prepared or {})
    parent = Dataset.open(in_dir)
    summary = pa.concat_tables([pq.read_table(Path(summary_dir) / f"summary-{s}") for s in parent.shard_names])
    decision = stage.decide(summary, parent).to_table(summary.num_rows)
    for shard, offset in zip(parent.shards, parent.shard_offsets().values(), strict=True):
        write_shard(work_dir, f"decision-{shard.file}", decision.slice(offset, shard.rows))
    atomic_write_text(marker, json.dumps({"rows": summary.num_rows}))


def apply_task(label: str, in_dir: str, shard: str, work_dir: str, out_dir: str, rejected_dir: str,
               key: str) -> dict[str, Any]:
    """Apply a stored global decision to one shard."""
    if (done := read_receipt(out_dir, shard)) is not None:
        return done
    decision = Decision.from_table(pq.read_table(Path(work_dir) / f"decision-{shard}"))

    def decided() -> Iterator[tuple[pa.Table, Decision]]:
        offset = 0
        for table in Dataset.open(in_dir).iter_shard_batches(shard):
            yield table, decision.slice(offset, table.num_rows)
            offset += table.num_rows

    return _split_shard(decided(), label, shard, out_dir, rejected_dir, key)
