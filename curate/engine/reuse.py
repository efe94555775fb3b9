"""Reusing finished tasks when a step must run again: a scheduled re-run over a pool that grew.

A step whose fingerprint changed (a new input file changes every fingerprint downstream of it) runs again, but
most of its tasks see exactly what they saw before. Each task therefore has a *task key*: what decides its output
apart from the rest of the data (the stage, its parameters and preparation, the models it loads) plus the identity
of the one thing it reads (an input file's path, size and mtime; an input shard's SHA-256 and the step input's
schema). The finished version of a step is set aside under `<run>/_previous/` when its new version starts; a task
whose key matches a finished task there takes that task's shards (hard links, or copies across filesystems)
instead of computing them. Summaries of global stages that keep them (`scores/`) carry their key beside them, and
a summary with the same key in another `scores/<label>-*` folder is reused the same way. Decisions are always
made again, over all rows.

A shard rewritten after its task (ingest renames repeated ids) no longer matches its task's record and is made
again. `_previous/` is removed when the new version is complete; a run killed in the middle keeps it for the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

from curate.data.dataset import atomic_write_text, manifest_path, meta_dir, remove_dataset, side_path

PREVIOUS = "_previous"
RECORD = "_reuse.json"  # a finished step's task receipts (with their keys), kept for its next version
KEY_SUFFIX = ".key"


def previous_dir(run_root: Path, folder: Path) -> Path:
    """Where the finished version of `folder` (`stages/NN-label` or `rejected/NN-label`) waits."""
    return run_root / PREVIOUS / folder.parent.name / folder.name


def set_aside(run_root: Path, folders: list[Path]) -> None:
    """Move a step's finished folders aside for reuse; an unfinished one is dropped (the older finished one, if any,
    stays where it is)."""
    finished = all(manifest_path(f).is_file() for f in folders) and side_path(folders[0], RECORD).is_file()
    for folder in folders:
        if finished:
            target = previous_dir(run_root, folder)
            remove_dataset(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(target)
            if meta_dir(folder).is_dir():
                meta_dir(folder).rename(meta_dir(target))
        else:
            remove_dataset(folder)


def drop_previous(run_root: Path, folders: list[Path]) -> None:
    for folder in folders:
        previous = previous_dir(run_root, folder)
        remove_dataset(previous)
        for empty in (previous.parent, previous.parent.parent):  # _previous/stages, then _previous
            with contextlib.suppress(OSError):
                empty.rmdir()


def write_record(out_dir: Path, receipts: list[dict[str, Any]]) -> None:
    atomic_write_text(meta_dir(out_dir) / RECORD, json.dumps({r["task"]: r for r in receipts if r.get("key")}))


def _finished_tasks(previous_out: str) -> dict[str, dict[str, Any]]:
    """The finished tasks of a set-aside step whose shards are still as their tasks wrote them."""
    try:
        stat = side_path(previous_out, RECORD).stat()
    except OSError:
        return {}
    return _read_finished(previous_out, stat.st_ino, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _read_finished(previous_out: str, _inode: int, _mtime: int) -> dict[str, dict[str, Any]]:
    """(Read once per version of the record: a step's tasks all ask.)"""
    folder = Path(previous_out)
    try:
        record = json.loads(side_path(folder, RECORD).read_text())
        manifest = json.loads(manifest_path(folder).read_text())
    except (OSError, ValueError):
        return {}
    written = {s["file"]: s["sha256"] for s in manifest.get("shards", [])}
    return {name: r for name, r in record.items()
            if all(written.get(s["file"]) == s["sha256"] for s in r["kept"])}


def _link(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or no hard links: a copy
        shutil.copy2(source, target)


def reuse_task(previous_out: str, previous_rejected: str, out_dir: str, rejected_dir: str, name: str,
               key: str) -> dict[str, Any] | None:
    """Take the shards of the set-aside task `name` when its key is `key`; returns its receipt (None: run it)."""
    if not previous_out:
        return None
    entry = _finished_tasks(previous_out).get(name)
    if entry is None or entry.get("key") != key:
        return None
    pairs = [(Path(previous_out), Path(out_dir), entry["kept"]),
             (Path(previous_rejected), Path(rejected_dir), entry["rejected"])]
    if any(not (old / s["file"]).is_file() for old, _, shards in pairs for s in shards):
        return None
    for old, new, shards in pairs:
        for shard in shards:
            _link(old / shard["file"], new / shard["file"])
    return {**entry, "seconds": 0.0, "reused": True}


def store_summary_key(summary: Path, key: str) -> None:
    atomic_write_text(summary.with_name(summary.name + KEY_SUFFIX), key)


def reuse_summary(summary: Path, key: str, elsewhere: tuple[str, ...]) -> bool:
    """Link a summary with the same key from another summaries folder of the step into `summary`."""
    for folder in elsewhere:
        old = Path(folder) / summary.name
        marker = old.with_name(old.name + KEY_SUFFIX)
        if old.is_file() and marker.is_file() and marker.read_text() == key:
            _link(old, summary)
            store_summary_key(summary, key)
            return True
    return False
