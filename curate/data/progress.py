"""Progress reporting: tasks report rows as they go; the CLI shows bars, a notebook shows nothing.

Reports go to one process-wide reporter, so stage code never needs a handle to the UI. On engines
that run tasks in other processes the reports stay there (the task results still carry the counts).
"""

from __future__ import annotations

import threading


class Progress:
    """Base reporter: does nothing. Subclasses draw bars or log."""

    def start(self, key: str, description: str, total: int | None, unit: str = "rows") -> None:
        """A stage step begins; `total` units (rows, or e.g. training steps), when known."""

    def advance(self, key: str, rows: int) -> None:
        """`rows` more units done in step `key` (called from worker threads)."""

    def note(self, key: str, text: str) -> None:
        """A short status shown beside step `key`'s bar (a training loss)."""

    def finish(self, key: str) -> None:
        """The step is over."""


_reporter: Progress = Progress()
_lock = threading.Lock()


def set_progress(reporter: Progress | None) -> Progress:
    """Install a reporter (None restores the silent one); returns the previous one."""
    global _reporter
    with _lock:
        previous, _reporter = _reporter, reporter or Progress()
    return previous


def progress() -> Progress:
    return _reporter
