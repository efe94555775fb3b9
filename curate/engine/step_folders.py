"""A step's folders: made ready before it runs (a finished earlier version set aside for reuse, what a killed run
left removed), checked and sealed with their manifests when it ends, and removed when a later config drops the
step (only what curate wrote)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.data.artifacts import ARTIFACT_MANIFEST
from curate.data.columns import PARENT_ID
from curate.data.dataset import MANIFEST, META, Dataset, atomic_write_text, meta_dir, remove_dataset, write_manifest
from curate.data.errors import CurateError
from curate.data.hashing import file_sha256
from curate.data.inputs import StepInput
from curate.data.rundir import TABLES, RunDir
from curate.data.shards import ShardInfo, conform_shards
from curate.engine.plan import Plan, Step
from curate.engine.reuse import drop_previous, set_aside, write_record
from curate.engine.step_task import RECEIPTS, WORK, read_receipts
from curate.io.ingest import make_ids_unique
from curate.stages import REGISTRY

log = logging.getLogger("curate")
INGEST_COLUMNS = pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string())])
REJECTED_COLUMNS = pa.schema([("stage", pa.string()), ("reason", pa.string()), ("score", pa.float64())])


def reusable(step: Step, run: RunDir) -> bool:
    """Steps whose tasks may take over finished work of their previous version: the graph's row steps."""
    return step.kind in ("ingest", "map", "global") and step.rejected_dir is not None and (
        step.out_dir.parent == run.stages)


def bookkeeping_dir(step: Step) -> Path:
    """Where a step keeps its work files, task receipts and pending marker: a row step in its `.meta` folder (its
    own folder holds shards only), an artifact step in its own folder."""
    return step.out_dir if step.output == "artifacts" else meta_dir(step.out_dir)


def write_report_tables(folder: Path, tables: dict[str, list[dict[str, Any]]]) -> None:
    """A decision report's tables (lists of records) as `tables/<name>.parquet` in a step's `.meta` folder: SQL
    shows them as `<label>_<name>`."""
    for name, records in tables.items():
        (folder / TABLES).mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(records), folder / TABLES / f"{name}.parquet")


def prepare_folders(step: Step, run: RunDir) -> None:
    """Keep a half-done step's finished tasks only if it was started with the same fingerprint. A finished
    version with another fingerprint is set aside, for tasks that would compute what it holds
    (curate.engine.reuse)."""
    folders = [p for p in (step.out_dir, step.rejected_dir) if p is not None]
    pending = bookkeeping_dir(step) / "_pending.json"
    same = pending.is_file() and pending.read_text().strip() == step.fingerprint
    if not same and reusable(step, run):
        set_aside(run.root, folders)  # moves a finished version aside, removes an unfinished one
    elif not same:
        for path in folders:
            remove_dataset(path)
    for path in folders:
        path.mkdir(parents=True, exist_ok=True)
        if step.output == "artifacts":
            (path / ARTIFACT_MANIFEST).unlink(missing_ok=True)
        else:
            meta_dir(path).mkdir(exist_ok=True)
            (meta_dir(path) / MANIFEST).unlink(missing_ok=True)
        for partial in [*path.rglob(".*.tmp-*"), *meta_dir(path).rglob(".*.tmp-*")]:  # what a killed run was
            partial.unlink(missing_ok=True)  # writing: never read, now gone
    atomic_write_text(pending, step.fingerprint)


def finalize(step: Step, plan: Plan, run: RunDir, seconds: float) -> dict[str, Any]:
    """Check a step's counts and write its report, record and manifests (rejected first): the step is done."""
    receipts = read_receipts(step.out_dir)
    kept = [ShardInfo(**s) for r in receipts for s in r["kept"]]
    rejected = [ShardInfo(**s) for r in receipts for s in r["rejected"]]
    rows_in = sum(r["rows_in"] for r in receipts)
    rows_kept = sum(r.get("rows_kept", 0) for r in receipts)
    rows_added = sum(r.get("rows_added", 0) for r in receipts)
    renamed = 0
    if step.kind == "ingest":
        kept, renamed = make_ids_unique(str(step.out_dir), kept)
        # a run killed after renaming ids left shards whose receipts hold their old sha256: hash what is there
        kept = [ShardInfo(s.file, s.rows, file_sha256(str(step.out_dir / s.file))) for s in kept]
        rows_kept = sum(s.rows for s in kept)
        schema = None if kept else INGEST_COLUMNS
    else:
        schema = None if kept else StepInput.open(plan.input_dirs(step), step.parents).schema
    # shards written apart can disagree in kind on a column's type: the few that do are rewritten (idempotent,
    # so a finalize killed half-way redoes it)
    kept, rejected = conform_shards(step.out_dir, kept), conform_shards(step.rejected_dir, rejected)
    rows_out, rows_rejected = sum(s.rows for s in kept), sum(s.rows for s in rejected)
    if rows_in != rows_kept + rows_rejected or rows_out != rows_kept + rows_added:
        raise CurateError(f"{step.label}: {rows_in} rows read, {rows_kept} kept + {rows_rejected} rejected, "
                          f"{rows_out} written with {rows_added} added; the stage lost rows (a bug, please "
                          "report it)")
    if step.parents and rows_in != sum(Dataset.open(d).count() for d in plan.input_dirs(step)):
        raise CurateError(f"{step.label}: read {rows_in} rows, its input has a different count")
    if step.output == "rows_added":
        _check_added(step, kept, rows_added)
    reasons = Counter()
    for shard in rejected:
        column = pq.read_table(step.rejected_dir / shard.file, columns=["reason"]).column("reason")
        reasons.update(column.to_pylist())
    stats = {"rows_in": rows_in, "rows_out": rows_out, "rows_kept": rows_kept, "rows_rejected": rows_rejected,
             "rows_added": rows_added, "seconds": round(seconds, 3), "reasons": dict(reasons.most_common()),
             "ids_renamed": renamed}
    parents = [plan.step(p).fingerprint for p in step.parents]
    common = {"fingerprint": step.fingerprint, "parents": parents, "stage": step.label,
              "config": {"stage": step.stage, **step.params}, "stats": stats}
    meta = meta_dir(step.out_dir)
    report = meta / WORK / "report.json"
    name = (getattr(REGISTRY[step.stage], "report_file", None) or "decision.json") if step.stage in REGISTRY \
        else None
    if report.is_file() and name:  # before the manifests: a finished step always has its report
        shutil.copyfile(report, meta / name)
        content = json.loads(report.read_text())
        write_report_tables(meta, content.get("tables", {}))
        if content.get("summary"):  # a short account for the manifest (iterative kMQ's rounds)
            stats["decision"] = content["summary"]
    if reusable(step, run):  # the task keys, for the step's next version
        write_record(step.out_dir, receipts)
    write_manifest(step.rejected_dir, rejected, schema=None if rejected else REJECTED_COLUMNS, **common)
    done = write_manifest(step.out_dir, kept, schema=schema, **common)
    if step.kind != "ingest" and rows_out:
        _check_adds(step, done.schema)
    if reusable(step, run):
        drop_previous(run.root, [step.out_dir, step.rejected_dir])
    for leftover in (meta / WORK, meta / RECEIPTS):
        shutil.rmtree(leftover, ignore_errors=True)
    (meta / "_pending.json").unlink(missing_ok=True)
    log.info("%s: %d in, %d kept, %d rejected, %d added in %.1fs", step.label, rows_in, rows_kept,
             rows_rejected, rows_added, seconds)
    return stats

def _check_added(step: Step, shards: list[ShardInfo], rows_added: int) -> None:
    """Added rows name the row they come from, and every output id is unique."""
    tables = [pq.read_table(step.out_dir / s.file, columns=["id", PARENT_ID]) for s in shards]
    if not tables:
        return
    table = pa.concat_tables(tables)
    ids = table.column("id").combine_chunks()
    if pc.count_distinct(ids).as_py() != len(ids):
        raise CurateError(f"{step.label}: the output repeats ids (a stage must give added rows new ids)")
    named = len(ids) - table.column(PARENT_ID).null_count
    if named < rows_added:
        raise CurateError(f"{step.label}: {rows_added} rows added but only {named} name a `{PARENT_ID}` "
                          "(a bug in the stage)")

def _check_adds(step: Step, schema: pa.Schema) -> None:
    """The declaration is the truth: every column a stage declares in `adds` is in its output."""
    stage = step.instance()
    missing = [c for c in stage.adds if c not in schema.names and c not in stage.uses]
    if missing:
        raise CurateError(f"stage '{stage.name}' declares `adds` {list(stage.adds)} but its output lacks "
                          f"{missing} (a bug in the stage)")


def remove_stale_outputs(plan: Plan, run: RunDir) -> None:
    """Step folders of an earlier config that this plan no longer has (derived data only). Stored scores and
    models are kept for every stage still planned, so a changed decision can reuse them."""
    planned = {s.out_dir.name for s in plan.steps if s.output != "artifacts"}  # NN-<label>
    labels = {s.label for s in plan.steps}  # scores/, models/ and eval/ hold <label>-<key> or <label>
    step_folder = lambda name: name.removesuffix(META)  # noqa: E731  (a step folder, or its .meta folder)
    for folder, owner, kept in [(run.stages, step_folder, planned),
                                (run.rejected, step_folder, planned | {"target", "heldout"}),
                                (run.scores, _label_of, labels), (run.models, _label_of, labels),
                                (run.eval, _label_of, labels)]:
        for path in folder.glob("*") if folder.is_dir() else []:
            if not path.is_dir() or owner(path.name) in kept:
                continue
            if not _written_by_curate(path):
                log.warning("left %s: not a step of this config, but not written by curate either", path)
                continue
            log.info("removing %s: not a step of this config", path)
            shutil.rmtree(path)
    staged = any(s.kind in ("split", "exclude") for s in plan.samples)  # the target is read from target_all
    stale = ([run.heldout, run.heldout_rejected] if plan.heldout is None else []) + (
        [run.target_all] if not staged else [])
    for path in stale:
        remove_dataset(path)
    if plan.split is None:
        run.heldout_split.unlink(missing_ok=True)
    if not any(s.kind == "exclude" for s in plan.samples):
        run.heldout_overlap.unlink(missing_ok=True)


def _written_by_curate(path: Path) -> bool:
    """Whether a folder under a run's stages/, rejected/, models/, eval/ or scores/ is curate's: a dataset or its
    `.meta` folder, an artifact folder (its manifest, or the marker of an unfinished build), or a folder named by a
    stored key (`<label>-<16 hex digits>`)."""
    if path.name.endswith(META):
        return any((path / name).exists() for name in (MANIFEST, "_pending.json", RECEIPTS, WORK))
    return (Dataset.exists(path) or (meta_dir(path) / "_pending.json").is_file() or (path / ARTIFACT_MANIFEST).is_file()
            or (path / "_pending.json").is_file() or re.fullmatch(r".+-[0-9a-f]{16}", path.name) is not None)


def _label_of(name: str) -> str:
    """The stage label of a `scores/` or `models/` folder name: `<label>-<16 hex digits of key>`, or `<label>`."""
    return name[:-17] if re.fullmatch(r".+-[0-9a-f]{16}", name) else name
