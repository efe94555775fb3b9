"""What happened in a run: its steps as a graph, rows per step, drop reasons, time, artifacts' metrics.

Read from `run.json` (the plan's graph and the last run's status) and each step's manifest; a step without a
finished manifest is left out. Runs written before the graph existed are read as a chain of their folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.data.artifacts import Artifacts
from curate.data.dataset import Dataset
from curate.data.rundir import RunDir


@dataclass
class StepSummary:
    index: int
    label: str
    stage: str  # registered stage name, or "ingest" / "split" / "exclude"
    kind: str  # ingest, split, exclude, map, global, artifact
    output: str  # rows, rows_added, artifacts
    parents: list[str]
    rows_in: int
    rows_out: int
    rows_rejected: int
    seconds: float
    status: str  # "ran", "skipped" (in the last run) or "" (unknown)
    reasons: dict[str, int] = field(default_factory=dict)
    rows_kept: int = 0
    rows_added: int = 0
    fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    rows: Path | None = None  # the dataset with the step's rows (an artifact step's: its input's)
    rejected: Path | None = None
    artifacts: Path | None = None
    sample: bool = False  # the run's target / heldout, not a stage of the graph


def _summary(entry: dict[str, Any], root: Path, status: dict[str, str]) -> StepSummary | None:
    folder = root / entry["folder"]
    rejected = root / entry["rejected"] if entry.get("rejected") else None
    artifacts = None
    if entry["output"] == "artifacts":
        if not Artifacts.exists(folder):
            return None
        manifest, artifacts = Artifacts.open(folder).manifest, folder
    elif Dataset.exists(folder):
        manifest = Dataset.open(folder).manifest
    else:
        return None
    stats = manifest.get("stats", {})
    sample = entry["kind"] in ("split", "exclude") or (entry["kind"] == "ingest" and entry["label"] != "ingest")
    return StepSummary(
        index=entry["index"], label=entry["label"], stage=entry["stage"], kind=entry["kind"],
        output=entry["output"], parents=list(entry["parents"]), rows_in=stats.get("rows_in", 0),
        rows_out=stats.get("rows_out", manifest.get("rows", 0)), rows_rejected=stats.get("rows_rejected", 0),
        seconds=stats.get("seconds", 0.0), status=status.get(entry["label"], ""), reasons=stats.get("reasons", {}),
        rows_kept=stats.get("rows_kept", stats.get("rows_out", 0)), rows_added=stats.get("rows_added", 0),
        fingerprint=manifest.get("fingerprint", ""), metrics=manifest.get("metrics", {}),
        rows=None if artifacts else folder, rejected=rejected if rejected and Dataset.exists(rejected) else None,
        artifacts=artifacts, sample=sample)


def _chain(run: RunDir) -> list[dict[str, Any]]:
    """The graph of a run written before run.json recorded one: its stage folders as a chain."""
    entries, previous = [], []
    if Dataset.exists(run.target):
        entries.append({"index": 0, "label": "target", "stage": "ingest", "kind": "ingest", "output": "rows",
                        "parents": [], "folder": "target", "rejected": "rejected/target"})
    for out in run.outputs():
        stage = Dataset.open(out.kept).manifest.get("config", {}).get("stage", out.label)
        entries.append({"index": out.index, "label": out.label, "stage": stage, "output": "rows",
                        "kind": "ingest" if stage == "ingest" else "", "parents": previous,
                        "folder": str(out.kept.relative_to(run.root)),
                        "rejected": str(out.rejected.relative_to(run.root))})
        previous = [out.label]
    return entries


def run_steps(run_dir: str | Path) -> list[StepSummary]:
    """One summary per finished step: the samples (target, heldout) first, then the graph in running order.
    An artifact step's `rows` is its input's dataset, so its SQL view shows what it was built from."""
    run = RunDir.open(run_dir)
    record = run.read_run_json()
    status = {s["label"]: s["status"] for s in record.get("steps", [])}
    entries = record.get("graph") or _chain(run)
    found: dict[str, StepSummary] = {}
    for entry in entries:
        summary = _summary(entry, run.root, status)
        if summary is None:
            continue
        if summary.artifacts is not None and summary.parents and summary.parents[0] in found:
            summary.rows = found[summary.parents[0]].rows
        found[summary.label] = summary
    return list(found.values())


def summarize_run(run_dir: str | Path) -> list[StepSummary]:
    """The steps of a run (see `run_steps`)."""
    return run_steps(run_dir)


def graph_lines(steps: list[StepSummary]) -> list[str]:
    """The graph as an indented tree: each step under the step it reads; a step that reads several appears under
    its first input and names the others (`<- a, b`)."""
    graph = [s for s in steps if not s.sample]
    children: dict[str, list[StepSummary]] = {}
    for s in graph:
        if s.parents:
            children.setdefault(s.parents[0], []).append(s)
    lines: list[str] = []

    def describe(s: StepSummary) -> str:
        what = f"{s.label} ({s.stage})" if s.stage != s.label else s.label
        if s.output == "artifacts":
            counts = f"{s.artifacts.parent.name}/{s.label}/" if s.artifacts else ""
        else:
            counts = f"{s.rows_in:,} -> {s.rows_out:,}" + (f" (+{s.rows_added:,} added)" if s.rows_added else "")
        merge = f"  <- {', '.join(s.parents)}" if len(s.parents) > 1 else ""
        return f"{what}: {counts}{merge}"

    def walk(s: StepSummary, prefix: str, branch: str) -> None:
        lines.append(prefix + branch + describe(s))
        below = children.get(s.label, [])
        inner = prefix + ("│  " if branch == "├─ " else "   " if branch else "")
        for i, child in enumerate(below):
            walk(child, inner, "└─ " if i == len(below) - 1 else "├─ ")

    for root in [s for s in graph if not s.parents]:
        walk(root, "", "")
    return lines


def evaluations(summaries: list[StepSummary]) -> dict[str, dict[str, Any]]:
    """The closed-loop results (`results.json`) of the run's `evaluate` steps, by label."""
    import json

    out = {}
    for s in summaries:
        if s.stage == "evaluate" and s.artifacts is not None and (s.artifacts / "results.json").is_file():
            out[s.label] = json.loads((s.artifacts / "results.json").read_text())
    return out


def leak_line(leak: dict[str, Any] | None) -> str | None:
    """One line on the training rows that repeat held-out rows (`curate.methods.leaks`), or None when there were
    none."""
    if not leak or not leak.get("rows"):
        return None
    where = ", ".join(f"{label}: {entry['rows']}" for label, entry in leak["by_input"].items() if entry["rows"])
    done = {"exclude": "left out of every arm", "warn": "trained on (leak: warn)"}.get(leak["action"], leak["action"])
    return f"leak check: {leak['rows']} training row(s) repeat held-out rows ({where}); {done}"
