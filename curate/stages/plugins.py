"""Plugins: modules that register custom stages when imported (a config's `plugins:`).

A plugin module is found on the Python path, or else in the config's folder, so a `my_filters.py` beside the
config works with `curate run` from anywhere. Worker processes (Ray) import the same modules before they look a
stage up, so a custom stage runs wherever built-in ones do.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path


def import_plugins(modules: Sequence[str], folder: str | Path | None = None) -> None:
    """Import `modules` (each at most once per process); `folder` is searched after the Python path."""
    if not modules:
        return
    if folder:
        path = str(Path(folder).resolve())
        if path not in sys.path:
            sys.path.append(path)  # appended: a module installed or on PYTHONPATH wins over a file of the same name
    for module in modules:
        importlib.import_module(module)
