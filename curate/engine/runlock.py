"""One writer per run folder, and only folders curate made.

- A run folder carries curate's marker (`.curate-run`). `output:` may name a new folder, an empty one, or a run
  folder (one with the marker, or with a `run.json` that curate wrote before the marker existed); any other folder
  is refused before any work, so a careless `output: .` never mixes a run into a project's files.
- `RunLock` holds an advisory lock (`fcntl.flock` on `.curate-lock`) for as long as a run (or a report, or an
  export) uses the folder. A second process is refused with the holder's pid, host and start time. The operating
  system drops the lock of a process that dies, so a killed run never leaves a stale lock behind. On network file
  systems without `flock` support, the lock does not hold.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from curate._version import __version__
from curate.data.errors import CurateError

MARKER = ".curate-run"
LOCK = ".curate-lock"


def is_run_folder(path: str | Path) -> bool:
    """Whether `path` is a folder curate made: its marker, or the `run.json` of a version before the marker."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    try:
        return "curate_version" in json.loads((path / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def output_problem(path: str | Path) -> str | None:
    """Why `path` cannot take a run (a folder of other files), or None."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_dir():
        return f"output: {str(path)!r} is a file, not a folder"
    if is_run_folder(path):
        return None
    found = sorted(p.name for p in path.iterdir())
    if not found:
        return None
    listed = ", ".join(found[:5]) + (f", ... ({len(found)} entries)" if len(found) > 5 else "")
    return (f"output: {str(path)!r} is a folder of other files ({listed}), not a curate run; curate writes runs only "
            "into a new or empty folder, or one of its own runs")


def claim(path: str | Path) -> None:
    """Make `path` a run folder (it must pass `output_problem`)."""
    path = Path(path)
    if (problem := output_problem(path)) is not None:
        raise CurateError(problem)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).is_file():
        (path / MARKER).write_text(json.dumps({"curate": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}),
                                   encoding="utf-8")


@contextlib.contextmanager
def run_lock(path: str | Path, doing: str = "a run") -> Iterator[None]:
    """Hold the run folder's lock while the block runs; refuse at once when another process holds it."""
    path = Path(path)
    if not path.is_dir():
        raise CurateError(f"{str(path)!r} is not a run folder (it does not exist)")
    with open(path / LOCK, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            raise CurateError(
                f"{str(path)!r} is in use by another curate process ({holder.get('doing', 'a run')}, pid "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}); wait for "
                "it to finish, or give another output") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "doing": doing,
                                     "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
